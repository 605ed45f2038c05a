using System.Runtime.InteropServices;

namespace FastMM.Cuda.Driver;

/// <summary>Grid or block dimensions of a launch.</summary>
public readonly record struct Dim3(uint X, uint Y = 1, uint Z = 1)
{
    public static implicit operator Dim3(int x) => new((uint)x);
}

/// <summary>
/// One kernel argument as the 8 bytes cuLaunchKernel reads from: the driver copies sizeof(parameter) bytes, so an
/// int or float sits in the low 4 bytes (little-endian) and pointers, long long and double use all 8.
/// </summary>
[StructLayout(LayoutKind.Sequential, Size = 8)]
public readonly struct KernelArg
{
    private readonly ulong _bits;
    private KernelArg(ulong bits) => _bits = bits;

    /// <summary>The 8 bytes as passed (a pointer, or an int/float in the low 4 bytes).</summary>
    internal ulong Bits => _bits;

    /// <summary>The argument read back as the int it was made from (the low 4 bytes).</summary>
    internal int Int32 => (int)(uint)_bits;

    public static implicit operator KernelArg(int v) => new((uint)v);
    public static implicit operator KernelArg(long v) => new((ulong)v);
    public static implicit operator KernelArg(float v) => new(BitConverter.SingleToUInt32Bits(v));
    public static implicit operator KernelArg(double v) => new(BitConverter.DoubleToUInt64Bits(v));
    /// <summary>A device pointer (0 passes a null pointer).</summary>
    public static KernelArg Pointer(ulong devicePointer) => new(devicePointer);
}

/// <summary>A kernel entry point of a loaded <see cref="CudaModule"/>.</summary>
public sealed unsafe class CudaFunction
{
    private readonly CudaDriver _driver;
    private readonly nint _function;
    // Keeps the module (and so this function) loaded while the function is in use.
    private readonly CudaModule _module;
    public string Name { get; }
    /// <summary>Dynamic shared memory every launch of this function gets (<see cref="UseDynamicSharedMemory"/>).</summary>
    public int DynamicSharedBytes { get; private set; }

    internal CudaFunction(CudaDriver driver, CudaModule module, nint function, string name)
    {
        _driver = driver; _module = module; _function = function; Name = name;
    }

    /// <summary>
    /// Gives every later launch <paramref name="bytes"/> of dynamic shared memory, raising the function's limit
    /// (48 KB by default) when it asks for more; a device with less shared memory per block fails here, naming it.
    /// </summary>
    public void UseDynamicSharedMemory(int bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        if (bytes > 48 * 1024)
            _driver.Check(_driver.cuFuncSetAttribute(_function, CuFunctionAttribute.MaxDynamicSharedSizeBytes, bytes),
                $"cuFuncSetAttribute({Name}, MAX_DYNAMIC_SHARED_SIZE_BYTES, {bytes})");
        DynamicSharedBytes = bytes;
    }

    public void Launch(CudaStream stream, Dim3 grid, Dim3 block, params ReadOnlySpan<KernelArg> args)
    {
        if (grid.X == 0 || grid.Y == 0 || grid.Z == 0) return;  // nothing to do; the driver rejects empty grids
        void** pointers = stackalloc void*[Math.Max(args.Length, 1)];
        fixed (KernelArg* values = args)
        {
            for (int i = 0; i < args.Length; i++) pointers[i] = values + i;
            _driver.Check(_driver.cuLaunchKernel(_function, grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z, (uint)DynamicSharedBytes,
                stream.DangerousGetHandle(), pointers, null), $"cuLaunchKernel({Name})");
        }
        GC.KeepAlive(_module);
    }
}
