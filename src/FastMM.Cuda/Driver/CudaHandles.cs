using System.Runtime.InteropServices;

namespace FastMM.Cuda.Driver;

/// <summary>
/// A driver object that belongs to a context. It keeps the context alive (SafeHandle reference counting) and makes
/// it current around its own release, because a finalizer runs on a thread where no context is current.
/// </summary>
public abstract class CudaHandle : SafeHandle
{
    private protected readonly CudaDriver Driver;
    private protected readonly PrimaryContextHandle Context;

    private protected CudaHandle(PrimaryContextHandle context) : base(0, ownsHandle: true)
    {
        Driver = context.Driver;
        Context = context;
    }

    /// <summary>Takes ownership of a handle the driver just created; only then is the context pinned for its release.</summary>
    private protected void Own(nint created)
    {
        bool added = false;
        Context.DangerousAddRef(ref added);
        SetHandle(created);
    }

    public override bool IsInvalid => handle == 0;

    protected sealed override unsafe bool ReleaseHandle()
    {
        nint popped;
        bool pushed = Driver.cuCtxPushCurrent(Context.DangerousGetHandle()) == CuResult.CUDA_SUCCESS;
        CuResult result = Destroy();
        if (pushed) Driver.cuCtxPopCurrent(&popped);
        Context.DangerousRelease();
        return result == CuResult.CUDA_SUCCESS;
    }

    /// <summary>Frees the object; the owning context is current.</summary>
    private protected abstract CuResult Destroy();
}

/// <summary>A device's primary context, retained once; released (cuDevicePrimaryCtxRelease) when the last user lets go.</summary>
public sealed class PrimaryContextHandle : SafeHandle
{
    internal CudaDriver Driver { get; }
    public int Device { get; }

    internal unsafe PrimaryContextHandle(CudaDriver driver, int device) : base(0, ownsHandle: true)
    {
        Driver = driver;
        Device = device;
        nint context;
        driver.Check(driver.cuDevicePrimaryCtxRetain(&context, device), "cuDevicePrimaryCtxRetain");
        SetHandle(context);
    }

    public override bool IsInvalid => handle == 0;
    protected override unsafe bool ReleaseHandle() => Driver.cuDevicePrimaryCtxRelease(Device) == CuResult.CUDA_SUCCESS;
}

/// <summary>Device memory from cuMemAlloc, freed with cuMemFree: long-lived buffers (weights, KV cache).</summary>
public sealed class DeviceMemory : CudaHandle
{
    public long Bytes { get; }
    public ulong Pointer => (ulong)handle;

    internal unsafe DeviceMemory(PrimaryContextHandle context, long bytes) : base(context)
    {
        Bytes = bytes;
        ulong pointer;
        Driver.Check(Driver.cuMemAlloc(&pointer, (nuint)Math.Max(bytes, 1)), $"cuMemAlloc({bytes} bytes)");
        Own((nint)pointer);
    }

    private protected override unsafe CuResult Destroy() => Driver.cuMemFree((ulong)handle);
}

/// <summary>
/// A stream-ordered memory pool of one device (cuMemPoolCreate) that keeps what it has reserved across
/// synchronisations. A pool's default release threshold is 0: at every stream or event synchronisation it would
/// return its free memory to the OS, and the next op's allocations would have to map fresh physical pages, once per
/// image encode or prompt. FastMM's own pool (not the device's default one, which other CUDA code in the process may
/// share) holds on to its peak instead, as PyTorch's caching allocator does; an allocation that finds the device full
/// trims it and tries again (<see cref="CudaContext"/>), and destroying it returns everything.
/// </summary>
public sealed class CudaMemoryPool : CudaHandle
{
    internal unsafe CudaMemoryPool(PrimaryContextHandle context) : base(context)
    {
        var props = new CuMemPoolProps { AllocationType = 1, LocationType = 1, LocationId = context.Device };
        nint pool;
        Driver.Check(Driver.cuMemPoolCreate(&pool, &props), "cuMemPoolCreate");
        Own(pool);
        ulong keepAll = ulong.MaxValue;
        Driver.Check(Driver.cuMemPoolSetAttribute(pool, CuMemPoolAttribute.ReleaseThreshold, &keepAll), "cuMemPoolSetAttribute(release threshold)");
    }

    /// <summary>Returns the pool's free reservation to the device (allocations in use, and frees still pending on a stream, stay).</summary>
    public unsafe void Trim() => Driver.Check(Driver.cuMemPoolTrimTo(handle, 0), "cuMemPoolTrimTo");

    // Allocations still outstanding keep the pool's memory until they are freed (the driver defers the release).
    private protected override unsafe CuResult Destroy() => Driver.cuMemPoolDestroy(handle);
}

/// <summary>
/// Device memory from FastMM's stream-ordered pool (cuMemAllocFromPoolAsync), freed in stream order (cuMemFreeAsync):
/// activations that live for a few kernels, with no device-wide synchronisation on free.
/// </summary>
public sealed class StreamMemory : CudaHandle
{
    private readonly CudaStream _stream;
    public long Bytes { get; }
    public ulong Pointer => (ulong)handle;

    internal unsafe StreamMemory(PrimaryContextHandle context, CudaMemoryPool pool, CudaStream stream, long bytes) : base(context)
    {
        _stream = stream;
        Bytes = bytes;
        ulong pointer;
        Driver.Check(Driver.cuMemAllocFromPoolAsync(&pointer, (nuint)Math.Max(bytes, 1), pool.DangerousGetHandle(), stream.DangerousGetHandle()),
            $"cuMemAllocFromPoolAsync({bytes} bytes)");
        bool added = false;
        stream.DangerousAddRef(ref added);  // the free is ordered on this stream: keep it alive until then
        Own((nint)pointer);
    }

    private protected override unsafe CuResult Destroy()
    {
        CuResult result = Driver.cuMemFreeAsync((ulong)handle, _stream.DangerousGetHandle());
        _stream.DangerousRelease();
        return result;
    }
}

/// <summary>Page-locked host memory (cuMemAllocHost): the fast path for device↔host copies.</summary>
public sealed unsafe class PinnedHostMemory : CudaHandle
{
    public long Bytes { get; }
    public void* Pointer => (void*)handle;

    internal PinnedHostMemory(PrimaryContextHandle context, long bytes) : base(context)
    {
        Bytes = bytes;
        void* pointer;
        Driver.Check(Driver.cuMemAllocHost(&pointer, (nuint)Math.Max(bytes, 1)), $"cuMemAllocHost({bytes} bytes)");
        Own((nint)pointer);
    }

    public Span<T> AsSpan<T>(int count) where T : unmanaged
    {
        if ((long)count * sizeof(T) > Bytes) throw new ArgumentOutOfRangeException(nameof(count));
        return new Span<T>(Pointer, count);
    }

    private protected override CuResult Destroy() => Driver.cuMemFreeHost((void*)handle);
}

/// <summary>A stream: kernels and copies on it run in order. Can record its work into a CUDA graph.</summary>
public sealed unsafe class CudaStream : CudaHandle
{
    internal CudaStream(PrimaryContextHandle context) : base(context)
    {
        nint stream;
        Driver.Check(Driver.cuStreamCreate(&stream, 1 /* CU_STREAM_NON_BLOCKING: no implicit sync with stream 0 */), "cuStreamCreate");
        Own(stream);
    }

    public void Synchronize() => Driver.Check(Driver.cuStreamSynchronize(handle), "cuStreamSynchronize");

    /// <summary>From here until <see cref="EndCapture"/>, work issued on this stream is recorded, not run.</summary>
    public void BeginCapture(CuStreamCaptureMode mode = CuStreamCaptureMode.ThreadLocal)
        => Driver.Check(Driver.cuStreamBeginCapture(handle, mode), "cuStreamBeginCapture");

    public CudaGraph EndCapture()
    {
        nint graph;
        Driver.Check(Driver.cuStreamEndCapture(handle, &graph), "cuStreamEndCapture");
        return new CudaGraph(Context, graph);
    }

    private protected override CuResult Destroy() => Driver.cuStreamDestroy(handle);
}

/// <summary>An event on a stream's timeline: completion waits and GPU-side timing.</summary>
public sealed unsafe class CudaEvent : CudaHandle
{
    internal CudaEvent(PrimaryContextHandle context) : base(context)
    {
        nint ev;
        Driver.Check(Driver.cuEventCreate(&ev, 0 /* CU_EVENT_DEFAULT: timing enabled */), "cuEventCreate");
        Own(ev);
    }

    public void Record(CudaStream stream) => Driver.Check(Driver.cuEventRecord(handle, stream.DangerousGetHandle()), "cuEventRecord");
    public void Synchronize() => Driver.Check(Driver.cuEventSynchronize(handle), "cuEventSynchronize");

    /// <summary>Milliseconds between two recorded events (both complete).</summary>
    public float ElapsedSince(CudaEvent start)
    {
        float ms;
        Driver.Check(Driver.cuEventElapsedTime(&ms, start.DangerousGetHandle(), handle), "cuEventElapsedTime");
        return ms;
    }

    private protected override CuResult Destroy() => Driver.cuEventDestroy(handle);
}

/// <summary>A loaded module (PTX or fatbin image); its functions live as long as it does.</summary>
public sealed unsafe class CudaModule : CudaHandle
{
    internal CudaModule(PrimaryContextHandle context, ReadOnlySpan<byte> image, string name) : base(context)
    {
        // cuModuleLoadData reads a PTX image up to its NUL terminator; a fatbin carries its own size.
        byte[] terminated = new byte[image.Length + 1];
        image.CopyTo(terminated);
        nint module;
        fixed (byte* p = terminated) Driver.Check(Driver.cuModuleLoadData(&module, p), $"cuModuleLoadData({name})");
        Own(module);
    }

    public CudaFunction GetFunction(string name)
    {
        nint function;
        byte[] utf8 = System.Text.Encoding.UTF8.GetBytes(name + "\0");
        fixed (byte* p = utf8) Driver.Check(Driver.cuModuleGetFunction(&function, handle, p), $"cuModuleGetFunction({name})");
        return new CudaFunction(Driver, this, function, name);
    }

    private protected override CuResult Destroy() => Driver.cuModuleUnload(handle);
}

/// <summary>A recorded graph of stream work; instantiate it once, launch it many times.</summary>
public sealed unsafe class CudaGraph : CudaHandle
{
    internal CudaGraph(PrimaryContextHandle context, nint graph) : base(context) => Own(graph);

    public CudaGraphExec Instantiate() => new(Context, this);

    private protected override CuResult Destroy() => Driver.cuGraphDestroy(handle);
}

/// <summary>An executable graph (cuGraphInstantiateWithFlags).</summary>
public sealed unsafe class CudaGraphExec : CudaHandle
{
    internal CudaGraphExec(PrimaryContextHandle context, CudaGraph graph) : base(context)
    {
        nint exec;
        Driver.Check(Driver.cuGraphInstantiateWithFlags(&exec, graph.DangerousGetHandle(), 0), "cuGraphInstantiateWithFlags");
        Own(exec);
    }

    public void Launch(CudaStream stream) => Driver.Check(Driver.cuGraphLaunch(handle, stream.DangerousGetHandle()), "cuGraphLaunch");

    private protected override CuResult Destroy() => Driver.cuGraphExecDestroy(handle);
}
