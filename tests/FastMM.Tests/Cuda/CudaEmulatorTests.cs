using FastMM.Cuda;
using FastMM.Cuda.Driver;
using FastMM.Tests.Support;

namespace FastMM.Tests.Cuda;

/// <summary>
/// The CUDA emulator (native/cuda-emu): the CUDA backend's host code and the kernels of kernels/*.cu, compiled as C++,
/// run on the CPU behind the driver API. The conformance suite and the end-to-end goldens include it as "cuda-emu"
/// (MachineBackends); these tests hold what is particular to it.
/// </summary>
public class CudaEmulatorTests
{
    [Fact]
    public void TheEmulatedDeviceNamesItself()
    {
        string? emulator = MachineBackends.CudaEmulator;
        if (emulator is null) return; // not built here (scripts/build-cuda-emu.sh); CI requires it
        using var backend = CudaBackend.Create(CudaDriver.LoadNamed(emulator));
        Assert.Equal("FastMM CUDA emulator (CPU)", backend.DeviceName);
        Assert.Equal("cuda", backend.Name);
    }

    [Fact]
    public void DecodeStepsAreCapturedOnceAndReplayed()
    {
        string? emulator = MachineBackends.CudaEmulator;
        if (emulator is null) return;
        using var backend = CudaBackend.Create(CudaDriver.LoadNamed(emulator));
        var results = FastMM.Backends.Conformance.Run(backend, "decode-steps", Random.Shared.Next());
        Assert.All(results, r => Assert.True(r.Passed, r.ToString()));
        var (replays, captures, eager) = backend.StepCounts;
        Assert.Equal(0, eager);
        Assert.True(replays > captures && captures > 0, $"{replays} replays, {captures} captures");
    }

    [Fact]
    public void ADriverLibraryNamedByTheVariableThatIsMissingIsOneClearError()
    {
        var e = Assert.Throws<FastMMException>(() => CudaDriver.LoadNamed("/nonexistent/libfastmm_cuda_emu.so"));
        Assert.Equal("cuda: FASTMM_CUDA_DRIVER names /nonexistent/libfastmm_cuda_emu.so, which could not be loaded " +
                     "(no such file; scripts/build-cuda-emu.sh builds the emulator)", e.Message);
    }
}
