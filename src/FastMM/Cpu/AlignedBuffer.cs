using System.Runtime.CompilerServices;

namespace FastMM.Cpu;

/// <summary>
/// A grow-only float scratch area on the pinned object heap, 64-byte aligned so SIMD loads never split cache lines.
/// Pinned arrays never move, so the pointer stays valid for the buffer's lifetime without a fixed block.
/// </summary>
internal sealed unsafe class AlignedBuffer
{
    private float[] _array = [];
    private float* _ptr;
    private int _capacity;

    public int Capacity => _capacity;

    /// <summary>A pointer to at least <paramref name="floats"/> floats; reallocates (losing contents) only when growing.</summary>
    public float* Get(int floats)
    {
        if (floats > _capacity) Allocate(floats);
        return _ptr;
    }

    private void Allocate(int floats)
    {
        int capacity = Math.Max(floats, _capacity + _capacity / 2);
        _array = GC.AllocateUninitializedArray<float>(capacity + 16, pinned: true);
        float* p = (float*)Unsafe.AsPointer(ref _array[0]);
        _ptr = (float*)(((nuint)p + 63) & ~(nuint)63);
        _capacity = capacity;
    }

    /// <summary>Allocates an exact-size aligned block (for long-lived data such as packed weights).</summary>
    public static AlignedBuffer Exact(int floats)
    {
        var b = new AlignedBuffer();
        b._array = GC.AllocateUninitializedArray<float>(Math.Max(floats, 1) + 16, pinned: true);
        float* p = (float*)Unsafe.AsPointer(ref b._array[0]);
        b._ptr = (float*)(((nuint)p + 63) & ~(nuint)63);
        b._capacity = floats;
        return b;
    }
}
