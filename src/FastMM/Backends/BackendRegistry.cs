namespace FastMM.Backends;

/// <summary>
/// Creates a backend by name. A backend that is not available fails loudly with its reason; there is no fallback.
/// GPU backends live in their own assemblies (core has no GPU dependency) and add themselves with <see cref="Register"/>,
/// e.g. the CLI registers FastMM.Cuda's factory at startup.
/// </summary>
public static class BackendRegistry
{
    public static readonly string[] Names = ["cpu", "cuda", "ilgpu"];

    private static readonly Dictionary<string, Func<IBackend>> s_factories = new();
    private static readonly object s_gate = new();

    /// <summary>Makes <paramref name="name"/> (one of <see cref="Names"/>) create its backend with <paramref name="factory"/>; registering again replaces it.</summary>
    public static void Register(string name, Func<IBackend> factory)
    {
        string key = name.ToLowerInvariant();
        if (key == "cpu" || !Names.Contains(key)) throw new ArgumentException($"cannot register backend '{name}' (registrable: {string.Join(", ", Names.Where(n => n != "cpu"))})", nameof(name));
        lock (s_gate) s_factories[key] = factory;
    }

    public static IBackend Create(string name)
    {
        string key = name.ToLowerInvariant();
        if (key == "cpu") return new CpuBackend();
        if (!Names.Contains(key)) throw new FastMMException($"unknown backend '{name}' (choose one of: {string.Join(", ", Names)})");
        Func<IBackend>? factory;
        lock (s_gate) s_factories.TryGetValue(key, out factory);
        if (factory is null)
            throw new FastMMException($"backend '{key}' is not available: this build has no {key} backend registered; use --backend cpu");
        try
        {
            return factory();
        }
        catch (FastMMException e)
        {
            throw new FastMMException($"backend '{key}' is not available: {e.Message}", e);
        }
    }
}
