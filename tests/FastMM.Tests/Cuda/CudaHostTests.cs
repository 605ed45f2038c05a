using System.Runtime.InteropServices;
using System.Text.RegularExpressions;
using FastMM.Backends;
using FastMM.Cuda;
using FastMM.Cuda.Driver;

namespace FastMM.Tests.Cuda;

/// <summary>
/// The CUDA host layer without a GPU: a requested CUDA backend fails with the driver's own reason (never a CPU
/// fallback), driver error codes are named as the driver names them, and the kernel names the host launches are
/// exactly the entry points of kernels/*.cu.
/// </summary>
[Collection("cli")] // the CLI test sets the process-wide thread count
public class CudaHostTests
{
    private static bool DriverLibraryPresent => CudaDriver.LibraryNames.Any(n => NativeLibrary.TryLoad(n, out _));

    [Fact]
    public void RegistryCreateFailsWithTheDriversReasonWhenNoGpuIsUsable()
    {
        CudaBackend.Register();
        IBackend? backend = null;
        var error = Record.Exception(() => backend = BackendRegistry.Create("cuda"));
        if (error is null)
        {
            // A machine with a usable GPU: then it must really be the CUDA backend.
            using (backend) Assert.Equal("cuda", backend!.Name);
            return;
        }
        var e = Assert.IsType<FastMMException>(error);
        Assert.StartsWith("backend 'cuda' is not available: ", e.Message);
        if (!DriverLibraryPresent)
            Assert.EndsWith("cuda: libcuda.so.1 not found (also tried libcuda.so): the NVIDIA driver is not installed on this machine", e.Message);
        else
        {
            // The driver is installed but finds no device (this project's CI machines): cuInit's own error.
            var inner = Assert.IsType<CudaException>(e.InnerException);
            Assert.Equal("cuInit", inner.Call);
            Assert.Matches(@"^backend 'cuda' is not available: cuInit failed: CUDA_ERROR_[A-Z_]+ \(\d+\): \S.*$", e.Message);
        }
    }

    [Fact]
    public void CliBackendCudaIsAnErrorNamingTheDriversReason()
    {
        var (code, output, err) = Cli.CliTests.Run("embed", "--model", Support.TestPaths.Model("tiny-clip"), "--text", "hi", "--backend", "cuda");
        if (code == 0) return; // a usable GPU
        Assert.Equal(1, code);
        Assert.Equal("", output);
        Assert.Matches(@"^error: backend 'cuda' is not available: (cuInit failed: CUDA_ERROR_[A-Z_]+ \(\d+\)|cuda: libcuda\.so\.1 not found)", err.Trim());
    }

    [Fact]
    public void MissingDriverLibraryIsNamed()
    {
        var e = Assert.Throws<FastMMException>(() => CudaDriver.Load(["libfastmm-absent-driver.so.1", "libfastmm-absent-driver.so"]));
        Assert.Equal("cuda: libfastmm-absent-driver.so.1 not found (also tried libfastmm-absent-driver.so): the NVIDIA driver is not installed on this machine", e.Message);
    }

    [Fact]
    public void RegistryRefusesUnknownOptionsAndTheCpuSlot()
    {
        CudaBackend.Register();
        // cuda takes one option, eager; anything else is refused before a device is looked for.
        var e = Assert.Throws<FastMMException>(() => BackendRegistry.Create("cuda:1"));
        Assert.Equal("backend 'cuda' is not available: cuda: unknown option '1' (choose cuda, or cuda:eager to run decode steps op by op)", e.Message);
        Assert.Throws<ArgumentException>(() => BackendRegistry.Register("cpu", () => new CpuBackend()));
        Assert.Throws<ArgumentException>(() => BackendRegistry.Register("tpu", () => new CpuBackend()));
    }

    [Theory]
    [InlineData(CuResult.CUDA_ERROR_NO_DEVICE, "CUDA_ERROR_NO_DEVICE")]
    [InlineData(CuResult.CUDA_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY")]
    [InlineData(CuResult.CUDA_ERROR_NO_BINARY_FOR_GPU, "CUDA_ERROR_NO_BINARY_FOR_GPU")]
    [InlineData((CuResult)12345, "CUresult 12345")]
    public void ErrorNamesWithoutADriverComeFromCudaH(CuResult code, string name) => Assert.Equal(name, CudaErrors.Name(null, code));

    [Fact]
    public void CudaExceptionNamesCallCodeAndDescription()
    {
        var e = new CudaException("cuInit", CuResult.CUDA_ERROR_NO_DEVICE, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected");
        Assert.Equal("cuInit failed: CUDA_ERROR_NO_DEVICE (100): no CUDA-capable device is detected", e.Message);
        Assert.IsAssignableFrom<FastMMException>(e);
    }

    [Fact]
    public void DriverNamesEveryCodeAsCudaHDoes()
    {
        if (!DriverLibraryPresent) return; // covered by ErrorNamesWithoutADriverComeFromCudaH
        var driver = CudaDriver.Default;
        foreach (var code in Enum.GetValues<CuResult>())
            Assert.Equal(code.ToString(), CudaErrors.Name(driver, code));
        var e = Assert.Throws<CudaException>(() => driver.Check(CuResult.CUDA_ERROR_OUT_OF_MEMORY, "cuMemAlloc(64 bytes)"));
        Assert.Equal("cuMemAlloc(64 bytes) failed: CUDA_ERROR_OUT_OF_MEMORY (2): out of memory", e.Message);
    }

    /// <summary>The checkout's kernels/*.cu, copied next to the test assembly.</summary>
    private static string KernelsFolder => Path.Combine(AppContext.BaseDirectory, "kernels");

    private static readonly Regex EntryPoint = new(@"extern\s+""C""\s+__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)\s*\(", RegexOptions.Compiled);

    [Theory]
    [InlineData(1024, 768, 132, 12, 16, 128)]   // SigLIP-B/16-512 o_proj / fc2: 48 large tiles would idle 84 SMs
    [InlineData(1024, 3072, 132, 24, 8, 256)]   // fc1: 192 large tiles
    [InlineData(1024, 2304, 132, 18, 8, 256)]   // fused qkv: 144
    [InlineData(1024, 768, 46, 6, 8, 256)]      // a smaller GPU fills with the large tiles sooner
    [InlineData(9, 40, 132, 1, 1, 128)]
    [InlineData(9, 16891, 132, 132, 1, 256)]    // the conformance suite's large-tile case
    public void TensorCoreGemmTakesLargeTilesOnlyWhenTheyFillTheGpu(int m, int n, int sms, int gridX, int gridY, int threads)
    {
        var (grid, t) = CudaBackend.TensorCoreTiles(m, n, sms);
        Assert.Equal((gridX, gridY, threads), ((int)grid.X, (int)grid.Y, t));
    }

    [Theory]
    [InlineData(4096, 32, 1, 132, 128)]   // the prefill target's shape: 1,024 blocks of 128 rows
    [InlineData(1024, 12, 1, 132, 64)]    // SigLIP-B/16-512: 96 blocks of 128 rows would idle SMs
    [InlineData(1024, 12, 8, 132, 128)]   // the same at batch 8
    [InlineData(512, 9, 1, 132, 64)]      // a SmolLM2-135M prompt
    public void PrefillAttentionTakes128RowBlocksOnlyWhenTheyFillTheGpu(int tq, int heads, int batch, int sms, int rows)
        => Assert.Equal(rows, CudaBackend.PrefillRowsPerBlock(tq, heads, batch, sms));

    [Fact]
    public unsafe void MemoryPoolPropsHaveCudaHsLayout()
    {
        // cuMemPoolCreate reads 88 bytes: allocType, handleTypes, location {type, id}, then a pointer at offset 16.
        Assert.Equal(88, sizeof(CuMemPoolProps));
        Assert.Equal(16, (int)System.Runtime.InteropServices.Marshal.OffsetOf<CuMemPoolProps>(nameof(CuMemPoolProps.Win32SecurityAttributes)));
        Assert.Equal(12, (int)System.Runtime.InteropServices.Marshal.OffsetOf<CuMemPoolProps>(nameof(CuMemPoolProps.LocationId)));
    }

    [Fact]
    public void HostNameTableIsExactlyTheKernelEntryPoints()
    {
        var inSources = Directory.EnumerateFiles(KernelsFolder, "*.cu")
            .ToDictionary(f => Path.GetFileNameWithoutExtension(f), f => EntryPoint.Matches(File.ReadAllText(f)).Select(m => m.Groups[1].Value).Order().ToArray());
        Assert.Equal(inSources.Keys.Order(), CudaKernelNames.ByFile.Keys.Order());
        foreach (var (file, entries) in inSources)
        {
            Assert.NotEmpty(entries);
            Assert.True(entries.SequenceEqual(CudaKernelNames.ByFile[file].Order()),
                $"kernels/{file}.cu defines [{string.Join(", ", entries)}], the host table has [{string.Join(", ", CudaKernelNames.ByFile[file].Order())}]");
        }
        var all = CudaKernelNames.ByFile.Values.SelectMany(e => e).ToArray();
        Assert.Equal(all.Length, all.Distinct().Count());
    }

    [Fact]
    public void MissingKernelImagesAreNamed()
    {
        var e = Assert.Throws<FastMMException>(() => CudaKernels.ReadImages(typeof(object).Assembly));
        Assert.Contains("cuda: this build has no compiled kernels for attention.fatbin, elementwise.fatbin", e.Message);
        Assert.Contains("scripts/check-kernels.sh", e.Message);
    }

    [Fact]
    public void EmbeddedKernelImagesAreAllOrNothing()
    {
        var assembly = typeof(CudaKernels).Assembly;
        if (!assembly.GetManifestResourceNames().Any(n => n.StartsWith(CudaKernels.ResourcePrefix))) return; // built without kernels
        var images = CudaKernels.ReadImages(assembly);
        foreach (var (file, bytes) in images)
            Assert.True(BitConverter.ToUInt32(bytes, 0) == 0xBA55ED50u, $"{file}.fatbin does not start with the fatbin magic");
    }
}
