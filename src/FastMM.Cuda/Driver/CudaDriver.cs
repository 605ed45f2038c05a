using System.Runtime.InteropServices;

namespace FastMM.Cuda.Driver;

/// <summary>
/// The CUDA driver API entry points FastMM uses, bound at load time from libcuda through <see cref="NativeLibrary"/>
/// (unmanaged function pointers, no DllImport: a missing library or symbol is one clear error up front instead of a
/// DllNotFoundException at the first call). Handles are raw here; <see cref="CudaContext"/> and the SafeHandles in
/// CudaHandles.cs own them. Signatures follow cuda.h for 64-bit hosts (CUdeviceptr and size_t are 64-bit).
/// </summary>
public sealed unsafe class CudaDriver
{
    /// <summary>Tried in order: many hosts ship only the versioned name.</summary>
    public static readonly string[] LibraryNames = ["libcuda.so.1", "libcuda.so"];

    /// <summary>
    /// Names a driver library to use instead of <see cref="LibraryNames"/>: the CUDA emulator
    /// (build/cuda-emu/libfastmm_cuda_emu.so, scripts/build-cuda-emu.sh), which runs the kernels on the CPU for tests.
    /// Only that library is then tried, and its device names itself.
    /// </summary>
    public const string LibraryVariable = "FASTMM_CUDA_DRIVER";

    private static readonly Lazy<CudaDriver> s_default = new(() =>
        Environment.GetEnvironmentVariable(LibraryVariable) is { Length: > 0 } path ? LoadNamed(path) : Load(LibraryNames));

    /// <summary>
    /// The driver from <see cref="LibraryNames"/> (or the library <see cref="LibraryVariable"/> names), loaded once per
    /// process (a failure is remembered too).
    /// </summary>
    public static CudaDriver Default => s_default.Value;

    public string LibraryName { get; }

    private CudaDriver(string libraryName, nint library)
    {
        LibraryName = libraryName;
        void* Bind(string symbol)
        {
            if (!NativeLibrary.TryGetExport(library, symbol, out nint address))
                throw new FastMMException($"cuda: {libraryName} has no {symbol} (the NVIDIA driver is too old; CUDA 11.4 or newer is needed)");
            return (void*)address;
        }

        cuGetErrorName = (delegate* unmanaged<CuResult, byte**, CuResult>)Bind("cuGetErrorName");
        cuGetErrorString = (delegate* unmanaged<CuResult, byte**, CuResult>)Bind("cuGetErrorString");
        cuInit = (delegate* unmanaged<uint, CuResult>)Bind("cuInit");
        cuDriverGetVersion = (delegate* unmanaged<int*, CuResult>)Bind("cuDriverGetVersion");
        cuDeviceGetCount = (delegate* unmanaged<int*, CuResult>)Bind("cuDeviceGetCount");
        cuDeviceGet = (delegate* unmanaged<int*, int, CuResult>)Bind("cuDeviceGet");
        cuDeviceGetName = (delegate* unmanaged<byte*, int, int, CuResult>)Bind("cuDeviceGetName");
        cuDeviceGetAttribute = (delegate* unmanaged<int*, CuDeviceAttribute, int, CuResult>)Bind("cuDeviceGetAttribute");
        cuDeviceTotalMem = (delegate* unmanaged<nuint*, int, CuResult>)Bind("cuDeviceTotalMem_v2");
        cuDevicePrimaryCtxRetain = (delegate* unmanaged<nint*, int, CuResult>)Bind("cuDevicePrimaryCtxRetain");
        cuDevicePrimaryCtxRelease = (delegate* unmanaged<int, CuResult>)Bind("cuDevicePrimaryCtxRelease_v2");
        cuCtxSetCurrent = (delegate* unmanaged<nint, CuResult>)Bind("cuCtxSetCurrent");
        cuCtxPushCurrent = (delegate* unmanaged<nint, CuResult>)Bind("cuCtxPushCurrent_v2");
        cuCtxPopCurrent = (delegate* unmanaged<nint*, CuResult>)Bind("cuCtxPopCurrent_v2");
        cuCtxSynchronize = (delegate* unmanaged<CuResult>)Bind("cuCtxSynchronize");
        cuStreamCreate = (delegate* unmanaged<nint*, uint, CuResult>)Bind("cuStreamCreate");
        cuStreamDestroy = (delegate* unmanaged<nint, CuResult>)Bind("cuStreamDestroy_v2");
        cuStreamSynchronize = (delegate* unmanaged<nint, CuResult>)Bind("cuStreamSynchronize");
        cuStreamBeginCapture = (delegate* unmanaged<nint, CuStreamCaptureMode, CuResult>)Bind("cuStreamBeginCapture_v2");
        cuStreamEndCapture = (delegate* unmanaged<nint, nint*, CuResult>)Bind("cuStreamEndCapture");
        cuEventCreate = (delegate* unmanaged<nint*, uint, CuResult>)Bind("cuEventCreate");
        cuEventRecord = (delegate* unmanaged<nint, nint, CuResult>)Bind("cuEventRecord");
        cuEventSynchronize = (delegate* unmanaged<nint, CuResult>)Bind("cuEventSynchronize");
        cuEventElapsedTime = (delegate* unmanaged<float*, nint, nint, CuResult>)Bind("cuEventElapsedTime");
        cuEventDestroy = (delegate* unmanaged<nint, CuResult>)Bind("cuEventDestroy_v2");
        cuModuleLoadData = (delegate* unmanaged<nint*, void*, CuResult>)Bind("cuModuleLoadData");
        cuModuleUnload = (delegate* unmanaged<nint, CuResult>)Bind("cuModuleUnload");
        cuModuleGetFunction = (delegate* unmanaged<nint*, nint, byte*, CuResult>)Bind("cuModuleGetFunction");
        cuLaunchKernel = (delegate* unmanaged<nint, uint, uint, uint, uint, uint, uint, uint, nint, void**, void**, CuResult>)Bind("cuLaunchKernel");
        cuFuncSetAttribute = (delegate* unmanaged<nint, CuFunctionAttribute, int, CuResult>)Bind("cuFuncSetAttribute");
        cuMemAlloc = (delegate* unmanaged<ulong*, nuint, CuResult>)Bind("cuMemAlloc_v2");
        cuMemFree = (delegate* unmanaged<ulong, CuResult>)Bind("cuMemFree_v2");
        cuMemFreeAsync = (delegate* unmanaged<ulong, nint, CuResult>)Bind("cuMemFreeAsync");
        cuMemPoolCreate = (delegate* unmanaged<nint*, CuMemPoolProps*, CuResult>)Bind("cuMemPoolCreate");
        cuMemPoolDestroy = (delegate* unmanaged<nint, CuResult>)Bind("cuMemPoolDestroy");
        cuMemPoolSetAttribute = (delegate* unmanaged<nint, CuMemPoolAttribute, void*, CuResult>)Bind("cuMemPoolSetAttribute");
        cuMemPoolTrimTo = (delegate* unmanaged<nint, nuint, CuResult>)Bind("cuMemPoolTrimTo");
        cuMemAllocFromPoolAsync = (delegate* unmanaged<ulong*, nuint, nint, nint, CuResult>)Bind("cuMemAllocFromPoolAsync");
        cuMemAllocHost = (delegate* unmanaged<void**, nuint, CuResult>)Bind("cuMemAllocHost_v2");
        cuMemFreeHost = (delegate* unmanaged<void*, CuResult>)Bind("cuMemFreeHost");
        cuMemcpyHtoDAsync = (delegate* unmanaged<ulong, void*, nuint, nint, CuResult>)Bind("cuMemcpyHtoDAsync_v2");
        cuMemcpyDtoHAsync = (delegate* unmanaged<void*, ulong, nuint, nint, CuResult>)Bind("cuMemcpyDtoHAsync_v2");
        cuMemcpyDtoDAsync = (delegate* unmanaged<ulong, ulong, nuint, nint, CuResult>)Bind("cuMemcpyDtoDAsync_v2");
        cuMemsetD8Async = (delegate* unmanaged<ulong, byte, nuint, nint, CuResult>)Bind("cuMemsetD8Async");
        cuGraphInstantiateWithFlags = (delegate* unmanaged<nint*, nint, ulong, CuResult>)Bind("cuGraphInstantiateWithFlags");
        cuGraphLaunch = (delegate* unmanaged<nint, nint, CuResult>)Bind("cuGraphLaunch");
        cuGraphDestroy = (delegate* unmanaged<nint, CuResult>)Bind("cuGraphDestroy");
        cuGraphExecDestroy = (delegate* unmanaged<nint, CuResult>)Bind("cuGraphExecDestroy");
    }

    /// <summary>Loads the first of <paramref name="names"/> that exists and binds every entry point, or fails naming what is missing.</summary>
    public static CudaDriver Load(IReadOnlyList<string> names)
    {
        foreach (string name in names)
            if (NativeLibrary.TryLoad(name, out nint library))
                return new CudaDriver(name, library);
        string others = names.Count > 1 ? $" (also tried {string.Join(", ", names.Skip(1))})" : "";
        throw new FastMMException($"cuda: {names[0]} not found{others}: the NVIDIA driver is not installed on this machine");
    }

    /// <summary>The driver library at <paramref name="path"/> (what <see cref="LibraryVariable"/> names), or an error naming it.</summary>
    public static CudaDriver LoadNamed(string path)
    {
        if (!NativeLibrary.TryLoad(path, out nint library))
            throw new FastMMException($"cuda: {LibraryVariable} names {path}, which could not be loaded " +
                (File.Exists(path) ? "(not a shared library for this machine)" : "(no such file; scripts/build-cuda-emu.sh builds the emulator)"));
        return new CudaDriver(path, library);
    }

    /// <summary>Throws a <see cref="CudaException"/> naming the call and the driver's error unless <paramref name="result"/> is success.</summary>
    public void Check(CuResult result, string call)
    {
        if (result != CuResult.CUDA_SUCCESS) throw new CudaException(call, result, CudaErrors.Name(this, result), CudaErrors.Description(this, result));
    }

    // ---- entry points (names as in cuda.h, without the _v2 suffixes) ----
    internal readonly delegate* unmanaged<CuResult, byte**, CuResult> cuGetErrorName;
    internal readonly delegate* unmanaged<CuResult, byte**, CuResult> cuGetErrorString;
    internal readonly delegate* unmanaged<uint, CuResult> cuInit;
    internal readonly delegate* unmanaged<int*, CuResult> cuDriverGetVersion;
    internal readonly delegate* unmanaged<int*, CuResult> cuDeviceGetCount;
    internal readonly delegate* unmanaged<int*, int, CuResult> cuDeviceGet;
    internal readonly delegate* unmanaged<byte*, int, int, CuResult> cuDeviceGetName;
    internal readonly delegate* unmanaged<int*, CuDeviceAttribute, int, CuResult> cuDeviceGetAttribute;
    internal readonly delegate* unmanaged<nuint*, int, CuResult> cuDeviceTotalMem;
    internal readonly delegate* unmanaged<nint*, int, CuResult> cuDevicePrimaryCtxRetain;
    internal readonly delegate* unmanaged<int, CuResult> cuDevicePrimaryCtxRelease;
    internal readonly delegate* unmanaged<nint, CuResult> cuCtxSetCurrent;
    internal readonly delegate* unmanaged<nint, CuResult> cuCtxPushCurrent;
    internal readonly delegate* unmanaged<nint*, CuResult> cuCtxPopCurrent;
    internal readonly delegate* unmanaged<CuResult> cuCtxSynchronize;
    internal readonly delegate* unmanaged<nint*, uint, CuResult> cuStreamCreate;
    internal readonly delegate* unmanaged<nint, CuResult> cuStreamDestroy;
    internal readonly delegate* unmanaged<nint, CuResult> cuStreamSynchronize;
    internal readonly delegate* unmanaged<nint, CuStreamCaptureMode, CuResult> cuStreamBeginCapture;
    internal readonly delegate* unmanaged<nint, nint*, CuResult> cuStreamEndCapture;
    internal readonly delegate* unmanaged<nint*, uint, CuResult> cuEventCreate;
    internal readonly delegate* unmanaged<nint, nint, CuResult> cuEventRecord;
    internal readonly delegate* unmanaged<nint, CuResult> cuEventSynchronize;
    internal readonly delegate* unmanaged<float*, nint, nint, CuResult> cuEventElapsedTime;
    internal readonly delegate* unmanaged<nint, CuResult> cuEventDestroy;
    internal readonly delegate* unmanaged<nint*, void*, CuResult> cuModuleLoadData;
    internal readonly delegate* unmanaged<nint, CuResult> cuModuleUnload;
    internal readonly delegate* unmanaged<nint*, nint, byte*, CuResult> cuModuleGetFunction;
    internal readonly delegate* unmanaged<nint, uint, uint, uint, uint, uint, uint, uint, nint, void**, void**, CuResult> cuLaunchKernel;
    internal readonly delegate* unmanaged<nint, CuFunctionAttribute, int, CuResult> cuFuncSetAttribute;
    internal readonly delegate* unmanaged<ulong*, nuint, CuResult> cuMemAlloc;
    internal readonly delegate* unmanaged<ulong, CuResult> cuMemFree;
    internal readonly delegate* unmanaged<ulong, nint, CuResult> cuMemFreeAsync;
    internal readonly delegate* unmanaged<nint*, CuMemPoolProps*, CuResult> cuMemPoolCreate;
    internal readonly delegate* unmanaged<nint, CuResult> cuMemPoolDestroy;
    internal readonly delegate* unmanaged<nint, CuMemPoolAttribute, void*, CuResult> cuMemPoolSetAttribute;
    internal readonly delegate* unmanaged<nint, nuint, CuResult> cuMemPoolTrimTo;
    internal readonly delegate* unmanaged<ulong*, nuint, nint, nint, CuResult> cuMemAllocFromPoolAsync;
    internal readonly delegate* unmanaged<void**, nuint, CuResult> cuMemAllocHost;
    internal readonly delegate* unmanaged<void*, CuResult> cuMemFreeHost;
    internal readonly delegate* unmanaged<ulong, void*, nuint, nint, CuResult> cuMemcpyHtoDAsync;
    internal readonly delegate* unmanaged<void*, ulong, nuint, nint, CuResult> cuMemcpyDtoHAsync;
    internal readonly delegate* unmanaged<ulong, ulong, nuint, nint, CuResult> cuMemcpyDtoDAsync;
    internal readonly delegate* unmanaged<ulong, byte, nuint, nint, CuResult> cuMemsetD8Async;
    internal readonly delegate* unmanaged<nint*, nint, ulong, CuResult> cuGraphInstantiateWithFlags;
    internal readonly delegate* unmanaged<nint, nint, CuResult> cuGraphLaunch;
    internal readonly delegate* unmanaged<nint, CuResult> cuGraphDestroy;
    internal readonly delegate* unmanaged<nint, CuResult> cuGraphExecDestroy;
}

/// <summary>CUdevice_attribute values FastMM reads.</summary>
public enum CuDeviceAttribute
{
    MultiprocessorCount = 16,
    ComputeCapabilityMajor = 75,
    ComputeCapabilityMinor = 76,
}

/// <summary>CUfunction_attribute values FastMM sets.</summary>
public enum CuFunctionAttribute
{
    MaxDynamicSharedSizeBytes = 8,
}

/// <summary>CUmemPool_attribute values FastMM sets.</summary>
public enum CuMemPoolAttribute
{
    /// <summary>cuuint64_t: bytes the pool keeps reserved across a synchronisation instead of returning them to the OS.</summary>
    ReleaseThreshold = 4,
}

/// <summary>
/// CUmemPoolProps (cuda.h, 88 bytes on 64-bit hosts): pinned device memory on one device, no shareable handles;
/// the trailing fields (maxSize, usage, reserved) stay zero, which every driver since 11.2 reads as "defaults".
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = 88)]
public struct CuMemPoolProps
{
    [FieldOffset(0)] public int AllocationType;     // CU_MEM_ALLOCATION_TYPE_PINNED = 1
    [FieldOffset(4)] public int HandleTypes;        // CU_MEM_HANDLE_TYPE_NONE = 0
    [FieldOffset(8)] public int LocationType;       // CU_MEM_LOCATION_TYPE_DEVICE = 1
    [FieldOffset(12)] public int LocationId;        // the device ordinal
    [FieldOffset(16)] public nint Win32SecurityAttributes;
}

/// <summary>CUstreamCaptureMode.</summary>
public enum CuStreamCaptureMode
{
    Global = 0,
    ThreadLocal = 1,
    Relaxed = 2,
}

/// <summary>Error names and descriptions: the driver's own (cuGetErrorName/String), else the names of cuda.h.</summary>
public static unsafe class CudaErrors
{
    /// <summary>"CUDA_ERROR_NO_DEVICE" for 100; the driver's name when it knows the code, else ours, else "CUresult N".</summary>
    public static string Name(CudaDriver? driver, CuResult result)
    {
        if (driver is not null)
        {
            byte* text = null;
            if (driver.cuGetErrorName(result, &text) == CuResult.CUDA_SUCCESS && text != null) return Marshal.PtrToStringUTF8((nint)text)!;
        }
        return Enum.IsDefined(result) ? result.ToString() : $"CUresult {(int)result}";
    }

    /// <summary>The driver's sentence for the code (e.g. "no CUDA-capable device is detected"), or null without a driver.</summary>
    public static string? Description(CudaDriver? driver, CuResult result)
    {
        if (driver is null) return null;
        byte* text = null;
        return driver.cuGetErrorString(result, &text) == CuResult.CUDA_SUCCESS && text != null ? Marshal.PtrToStringUTF8((nint)text) : null;
    }
}

/// <summary>A failed driver call: "cuInit failed: CUDA_ERROR_NO_DEVICE (100): no CUDA-capable device is detected".</summary>
public sealed class CudaException : FastMMException
{
    public CuResult Result { get; }
    public string Call { get; }

    public CudaException(string call, CuResult result, string name, string? description)
        : base($"{call} failed: {name} ({(int)result}){(description is null ? "" : ": " + description)}")
    {
        Call = call;
        Result = result;
    }
}
