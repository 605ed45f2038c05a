using System.Runtime.InteropServices;

namespace FastMM.Cuda.Driver;

/// <summary>
/// One GPU and its primary context (the context the CUDA runtime would use too, so FastMM can share a device with
/// other CUDA code in the process). Creates the streams, memory, events and modules that belong to it.
/// </summary>
public sealed unsafe class CudaContext : IDisposable
{
    public CudaDriver Driver { get; }
    public PrimaryContextHandle Handle { get; }
    public int Device => Handle.Device;
    public string DeviceName { get; }
    public int ComputeCapability { get; }
    public int Multiprocessors { get; }
    public long TotalMemory { get; }
    public int DriverVersion { get; }
    private readonly CudaMemoryPool _pool;

    private CudaContext(CudaDriver driver, int device)
    {
        Driver = driver;
        int version, major, minor, sms;
        nuint total;
        byte* name = stackalloc byte[256];
        driver.Check(driver.cuDriverGetVersion(&version), "cuDriverGetVersion");
        driver.Check(driver.cuDeviceGetName(name, 256, device), "cuDeviceGetName");
        driver.Check(driver.cuDeviceGetAttribute(&major, CuDeviceAttribute.ComputeCapabilityMajor, device), "cuDeviceGetAttribute");
        driver.Check(driver.cuDeviceGetAttribute(&minor, CuDeviceAttribute.ComputeCapabilityMinor, device), "cuDeviceGetAttribute");
        driver.Check(driver.cuDeviceGetAttribute(&sms, CuDeviceAttribute.MultiprocessorCount, device), "cuDeviceGetAttribute");
        driver.Check(driver.cuDeviceTotalMem(&total, device), "cuDeviceTotalMem");
        DriverVersion = version;
        DeviceName = Marshal.PtrToStringUTF8((nint)name) ?? "";
        ComputeCapability = major * 10 + minor;
        Multiprocessors = sms;
        TotalMemory = (long)total;
        Handle = new PrimaryContextHandle(driver, device);
        try
        {
            MakeCurrent();
            _pool = new CudaMemoryPool(Handle);
        }
        catch
        {
            Handle.Dispose();
            throw;
        }
    }

    /// <summary>cuInit, then device <paramref name="ordinal"/>'s primary context; every failure names the driver's reason.</summary>
    public static CudaContext Open(CudaDriver driver, int ordinal = 0)
    {
        driver.Check(driver.cuInit(0), "cuInit");
        int count, device;
        driver.Check(driver.cuDeviceGetCount(&count), "cuDeviceGetCount");
        if (ordinal < 0 || ordinal >= count) throw new FastMMException($"cuda: device {ordinal} requested, {count} present");
        driver.Check(driver.cuDeviceGet(&device, ordinal), "cuDeviceGet");
        return new CudaContext(driver, device);
    }

    /// <summary>Binds the context to the calling thread (driver calls act on the current context).</summary>
    public void MakeCurrent() => Driver.Check(Driver.cuCtxSetCurrent(Handle.DangerousGetHandle()), "cuCtxSetCurrent");

    public CudaStream CreateStream() => new(Handle);
    public CudaEvent CreateEvent() => new(Handle);
    public DeviceMemory Allocate(long bytes) => TrimmingPoolWhenFull(() => new DeviceMemory(Handle, bytes));
    /// <summary>Stream-ordered memory from this context's pool, which keeps its peak reserved between synchronisations.</summary>
    public StreamMemory AllocateOnStream(CudaStream stream, long bytes) => TrimmingPoolWhenFull(() => new StreamMemory(Handle, _pool, stream, bytes));

    /// <summary>
    /// Runs an allocation; if the device is out of memory, waits for the device's work (so that pending stream-ordered
    /// frees complete), gives the pool's free reservation back and tries once more (as PyTorch's allocator frees its
    /// cache on an out-of-memory error). The second failure is the caller's.
    /// </summary>
    private T TrimmingPoolWhenFull<T>(Func<T> allocate)
    {
        try { return allocate(); }
        catch (CudaException e) when (e.Result == CuResult.CUDA_ERROR_OUT_OF_MEMORY)
        {
            Driver.Check(Driver.cuCtxSynchronize(), "cuCtxSynchronize");
            _pool.Trim();
            return allocate();
        }
    }
    public PinnedHostMemory AllocatePinned(long bytes) => new(Handle, bytes);
    public CudaModule LoadModule(ReadOnlySpan<byte> image, string name) => new(Handle, image, name);

    public void CopyToDevice(ulong dst, ReadOnlySpan<byte> src, CudaStream stream)
    {
        // From pageable memory the driver stages the bytes before returning, so `src` may be reused at once.
        fixed (byte* p = src) Driver.Check(Driver.cuMemcpyHtoDAsync(dst, p, (nuint)src.Length, stream.DangerousGetHandle()), "cuMemcpyHtoDAsync");
    }

    /// <summary>Host-to-device copy from raw (pinned) host memory: capturable into a graph, which then reads that memory at launch.</summary>
    public void CopyToDevice(ulong dst, void* src, long bytes, CudaStream stream)
        => Driver.Check(Driver.cuMemcpyHtoDAsync(dst, src, (nuint)bytes, stream.DangerousGetHandle()), "cuMemcpyHtoDAsync");

    public void CopyToHost(void* dst, ulong src, long bytes, CudaStream stream)
        => Driver.Check(Driver.cuMemcpyDtoHAsync(dst, src, (nuint)bytes, stream.DangerousGetHandle()), "cuMemcpyDtoHAsync");

    public void CopyOnDevice(ulong dst, ulong src, long bytes, CudaStream stream)
        => Driver.Check(Driver.cuMemcpyDtoDAsync(dst, src, (nuint)bytes, stream.DangerousGetHandle()), "cuMemcpyDtoDAsync");

    public void Fill(ulong dst, long bytes, byte value, CudaStream stream)
        => Driver.Check(Driver.cuMemsetD8Async(dst, value, (nuint)bytes, stream.DangerousGetHandle()), "cuMemsetD8Async");

    public void Clear(ulong dst, long bytes, CudaStream stream)
        => Driver.Check(Driver.cuMemsetD8Async(dst, 0, (nuint)bytes, stream.DangerousGetHandle()), "cuMemsetD8Async");

    public override string ToString()
        => $"{DeviceName} (sm_{ComputeCapability}, {Multiprocessors} SMs, {TotalMemory >> 20} MiB, driver {DriverVersion / 1000}.{DriverVersion % 1000 / 10})";

    public void Dispose()
    {
        _pool.Dispose();
        Handle.Dispose();
    }
}
