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
    public unsafe void TheKernelsAgreeWithTheCpuWithEveryBlocksThreadsRunInReverseOrder()
    {
        // Threads switch only at barriers, from index 0 up: a read of another thread's write with no barrier between
        // them is seen wrong in one order or the other, so the suite runs in the reverse order here too.
        string? emulator = MachineBackends.CudaEmulator;
        if (emulator is null) return;
        using var backend = CudaBackend.Create(CudaDriver.LoadNamed(emulator));
        var setOrder = (delegate* unmanaged<int, void>)System.Runtime.InteropServices.NativeLibrary.GetExport(
            System.Runtime.InteropServices.NativeLibrary.Load(emulator), "fastmm_emu_set_thread_order");
        setOrder(1);
        try
        {
            int seed = Random.Shared.Next();
            foreach (string check in FastMM.Backends.Conformance.Checks)
                Assert.All(FastMM.Backends.Conformance.Run(backend, check, seed), r => Assert.True(r.Passed, $"reverse order, seed {seed}: {r}"));
        }
        finally
        {
            setOrder(0);
        }
    }

    [Fact]
    public void ADriverLibraryNamedByTheVariableThatIsMissingIsOneClearError()
    {
        var e = Assert.Throws<FastMMException>(() => CudaDriver.LoadNamed("/nonexistent/libfastmm_cuda_emu.so"));
        Assert.Equal("cuda: FASTMM_CUDA_DRIVER names /nonexistent/libfastmm_cuda_emu.so, which could not be loaded " +
                     "(no such file; scripts/build-cuda-emu.sh builds the emulator)", e.Message);
    }
}
