namespace FastMM.Backends;

/// <summary>Creates a backend by name. A backend that is not available fails loudly; there is no fallback.</summary>
public static class BackendRegistry
{
    public static readonly string[] Names = ["cpu", "cuda", "ilgpu"];

    public static IBackend Create(string name) => name.ToLowerInvariant() switch
    {
        "cpu" => new CpuBackend(),
        "cuda" => throw new FastMMException("backend 'cuda' is not available: this build has no CUDA backend yet (kernels/ is empty); use --backend cpu"),
        "ilgpu" => throw new FastMMException("backend 'ilgpu' is not available: this build has no ILGPU backend yet; use --backend cpu"),
        _ => throw new FastMMException($"unknown backend '{name}' (choose one of: {string.Join(", ", Names)})"),
    };
}
