namespace FastMM.Backends;

/// <summary>
/// Creates a backend by name. A backend that is not available fails loudly with its reason; there is no fallback.
/// GPU backends live in their own assemblies (core has no GPU dependency) and add themselves with <see cref="Register"/>,
/// e.g. the CLI registers FastMM.Cuda's factory at startup. A name may carry an option after a colon ("ilgpu:cpu",
/// "cuda:1") that is handed to the factory.
/// </summary>
public static class BackendRegistry
{
    public static readonly string[] Names = ["cpu", "cuda", "ilgpu"];

    private static readonly Dictionary<string, (Func<string?, IBackend> Create, bool TakesOption)> s_factories = new();
    private static readonly object s_gate = new();

    /// <summary>Makes <paramref name="name"/> (one of <see cref="Names"/>) create its backend with <paramref name="factory"/>; registering again replaces it.</summary>
    public static void Register(string name, Func<IBackend> factory) => Register(name, _ => factory(), takesOption: false);

    /// <summary>As <see cref="Register(string, Func{IBackend})"/> for a factory that reads the option after "name:" (null when there is none).</summary>
    public static void Register(string name, Func<string?, IBackend> factory) => Register(name, factory, takesOption: true);

    private static void Register(string name, Func<string?, IBackend> factory, bool takesOption)
    {
        string key = name.ToLowerInvariant();
        if (key == "cpu" || !Names.Contains(key)) throw new ArgumentException($"cannot register backend '{name}' (registrable: {string.Join(", ", Names.Where(n => n != "cpu"))})", nameof(name));
        lock (s_gate) s_factories[key] = (factory, takesOption);
    }

    public static IBackend Create(string name)
    {
        int colon = name.IndexOf(':');
        string key = (colon < 0 ? name : name[..colon]).ToLowerInvariant();
        string? option = colon < 0 ? null : name[(colon + 1)..];
        if (key == "cpu") return option is null ? new CpuBackend() : throw new FastMMException($"backend 'cpu' takes no option (got '{option}')");
        if (!Names.Contains(key)) throw new FastMMException($"unknown backend '{name}' (choose one of: {string.Join(", ", Names)})");
        (Func<string?, IBackend> Create, bool TakesOption) factory;
        bool found;
        lock (s_gate) found = s_factories.TryGetValue(key, out factory);
        if (!found)
            throw new FastMMException($"backend '{key}' is not available: this build has no {key} backend registered; use --backend cpu");
        if (option is not null && !factory.TakesOption) throw new FastMMException($"backend '{key}' takes no option (got '{option}')");
        try
        {
            return factory.Create(option);
        }
        catch (FastMMException e)
        {
            throw new FastMMException($"backend '{key}' is not available: {e.Message}", e);
        }
    }
}
