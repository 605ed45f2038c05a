using FastMM.Backends;
using FastMM.Cuda;
using FastMM.Cuda.Driver;
using FastMM.Ilgpu;

namespace FastMM.Tests.Support;

/// <summary>
/// The backends this machine has, by registry name: ILGPU's CPU accelerator everywhere, and CUDA plus ILGPU-on-CUDA
/// where the driver reports a device. Only "no driver" and "cuInit failed" count as having no GPU: any other failure
/// on a GPU machine keeps the GPU backends in the list, so their tests fail instead of disappearing.
/// </summary>
internal static class MachineBackends
{
    private static readonly Lazy<bool> s_cuda = new(() =>
    {
        try
        {
            using var context = CudaContext.Open(CudaDriver.Default, 0);
            return true;
        }
        catch (CudaException e) when (e.Call == "cuInit") { return false; }
        catch (FastMMException e) when (e.Message.Contains("not found")) { return false; }
        catch (Exception) { return true; }
    });

    public static bool HasCudaGpu => s_cuda.Value;

    /// <summary>
    /// The CUDA emulator (scripts/build-cuda-emu.sh, copied next to the test assembly when the build found it): the
    /// CUDA backend's host code and kernels run on the CPU as "cuda-emu". CI builds it and sets FASTMM_REQUIRE_CUDA_EMU=1,
    /// so there a missing emulator fails the tests that use it instead of leaving it out.
    /// </summary>
    public static string? CudaEmulator
    {
        get
        {
            string path = Path.Combine(AppContext.BaseDirectory, "cuda-emu", "libfastmm_cuda_emu.so");
            if (File.Exists(path) || Environment.GetEnvironmentVariable("FASTMM_REQUIRE_CUDA_EMU") == "1") return path;
            return null;
        }
    }

    /// <summary>Every non-reference backend to hold to the CPU reference here.</summary>
    public static IReadOnlyList<string> Names =>
        [.. HasCudaGpu ? new[] { "ilgpu:cpu", "ilgpu:cuda", "cuda" } : ["ilgpu:cpu"], .. CudaEmulator is null ? Array.Empty<string>() : ["cuda-emu"]];

    public static IBackend Create(string name)
    {
        if (name == "cuda-emu") return CudaBackend.Create(CudaDriver.LoadNamed(CudaEmulator!));
        CudaBackend.Register();
        IlgpuBackend.Register();
        return BackendRegistry.Create(name);
    }
}

/// <summary>One instance per backend name for a test class (ILGPU compiles each kernel once per context); xunit runs a class's tests one at a time.</summary>
public sealed class BackendCache : IDisposable
{
    private readonly Dictionary<string, IBackend> _backends = new();

    public IBackend Get(string name)
    {
        if (!_backends.TryGetValue(name, out var b)) _backends[name] = b = MachineBackends.Create(name);
        return b;
    }

    public void Dispose()
    {
        foreach (var b in _backends.Values) b.Dispose();
    }
}
