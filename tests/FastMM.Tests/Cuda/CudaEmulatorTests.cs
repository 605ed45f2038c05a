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
        // The step after fusion (FuseRecorded): per layer the QKV GEMV with its norm, RoPE with the KV append, the
        // attention with its merge and quantization, O with the residual add, the norm before the (F32, unfusable)
        // gate/up GEMV, gate/up, down with SwiGLU and the residual add: 7; plus the embedding gather, the final norm,
        // the LM head and the one copy of the staged uploads.
        Assert.Equal(2 * 7 + 4, backend.OpsPerStep);
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
    public unsafe void ThePoolsReservationIsGivenBackWhenTheDeviceRunsOutOfMemory()
    {
        string? emulator = MachineBackends.CudaEmulator;
        if (emulator is null) return;
        // A private copy of the emulator: its own device, whose memory limit no other test sees.
        string copy = Path.Combine(Path.GetTempPath(), $"fastmm-emu-{Guid.NewGuid():N}.so");
        File.Copy(emulator, copy);
        try
        {
            var driver = CudaDriver.LoadNamed(copy);
            var setLimit = (delegate* unmanaged<ulong, void>)System.Runtime.InteropServices.NativeLibrary.GetExport(
                System.Runtime.InteropServices.NativeLibrary.Load(copy), "fastmm_emu_set_memory_limit");
            using var backend = CudaBackend.Create(driver);
            setLimit(64 << 20);
            // 40 MiB of activations, freed: the pool keeps them reserved (its release threshold is unlimited) ...
            using (backend.Zeros(10 << 20)) { }
            using (backend.Zeros(10 << 20)) { } // ... and serves the next activation from that reservation
            // ... so 40 MiB more for weights fit in the 64 MiB device only once the pool has given its reservation back.
            using (backend.Context.Allocate(40 << 20)) { }
            // More than the device holds is still the driver's error, named.
            var e = Assert.Throws<CudaException>(() => backend.Context.Allocate(80 << 20));
            Assert.Equal(CuResult.CUDA_ERROR_OUT_OF_MEMORY, e.Result);
            Assert.StartsWith("cuMemAlloc(83886080 bytes) failed", e.Message);
        }
        finally
        {
            File.Delete(copy);
        }
    }

    [Fact]
    public void APrefillAttentionLaunchWithTooLittleDynamicSharedMemoryFailsInsteadOfOverrunningIt()
    {
        string? emulator = MachineBackends.CudaEmulator;
        if (emulator is null) return;
        using var context = CudaContext.Open(CudaDriver.LoadNamed(emulator));
        using var module = context.LoadModule(CudaKernels.ReadImages(typeof(CudaKernels).Assembly)["attention"], "attention.fatbin");
        using var stream = context.CreateStream();
        var hd128 = module.GetFunction(CudaKernelNames.AttentionPrefillHd128);
        // Past what a block may have: the driver's refusal, named.
        var tooMuch = Assert.Throws<CudaException>(() => hd128.UseDynamicSharedMemory(300_000));
        Assert.Contains("cuFuncSetAttribute(attention_prefill_hd128, MAX_DYNAMIC_SHARED_SIZE_BYTES, 300000)", tooMuch.Message);
        // Less than the kernel's two-stage ring: the kernel stops the launch before it touches shared memory.
        var hd64 = module.GetFunction(CudaKernelNames.AttentionPrefillHd64);
        hd64.UseDynamicSharedMemory(CudaKernelNames.DynamicSharedBytes[CudaKernelNames.AttentionPrefillHd64] - 16);
        KernelArg none = KernelArg.Pointer(0);
        var tooLittle = Assert.Throws<CudaException>(() => hd64.Launch(stream, 1, 128, none, 64, none, none, none, none, 1, 1, 1, 1, 64, 0.125f, 0));
        Assert.Contains("less dynamic shared memory than its layout needs", tooLittle.Message);
    }

    [Fact]
    public void ADriverLibraryNamedByTheVariableThatIsMissingIsOneClearError()
    {
        var e = Assert.Throws<FastMMException>(() => CudaDriver.LoadNamed("/nonexistent/libfastmm_cuda_emu.so"));
        Assert.Equal("cuda: FASTMM_CUDA_DRIVER names /nonexistent/libfastmm_cuda_emu.so, which could not be loaded " +
                     "(no such file; scripts/build-cuda-emu.sh builds the emulator)", e.Message);
    }
}
