using System.Runtime.InteropServices;

namespace FastMM;

/// <summary>
/// A read-only view of a stored tensor (e.g. one entry of a memory-mapped safetensors file):
/// its name, element type, shape and raw little-endian bytes. The bytes stay owned by the file.
/// </summary>
public readonly unsafe struct TensorData
{
    private readonly byte* _ptr;

    public string Name { get; }
    public DType DType { get; }
    public int[] Shape { get; }
    public long ByteLength { get; }

    /// <summary>The file's own name for the dtype (e.g. "U8" when <see cref="DType"/> is Unsupported).</summary>
    public string StoredTypeName { get; }

    public TensorData(string name, DType dtype, int[] shape, byte* ptr, long byteLength, string? storedTypeName = null)
    {
        Name = name; DType = dtype; Shape = shape; _ptr = ptr; ByteLength = byteLength;
        StoredTypeName = storedTypeName ?? dtype.ToString();
    }

    public long ElementCount => Tensor.Product(Shape);

    public ReadOnlySpan<byte> Bytes => new(_ptr, checked((int)ByteLength));

    /// <summary>Converts (F32/F16/BF16) to F32 into <paramref name="dst"/>.</summary>
    public void ToFloat(Span<float> dst)
    {
        long n = ElementCount;
        if (dst.Length != n) throw new ArgumentException($"{Name}: destination has {dst.Length} elements, tensor has {n}");
        switch (DType)
        {
            case DType.F32:
                new ReadOnlySpan<float>(_ptr, (int)n).CopyTo(dst);
                break;
            case DType.F16:
                System.Numerics.Tensors.TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(_ptr, (int)n), dst);
                break;
            case DType.BF16:
                {
                    var src = new ReadOnlySpan<ushort>(_ptr, (int)n);
                    var bits = MemoryMarshal.Cast<float, uint>(dst);
                    for (int i = 0; i < src.Length; i++) bits[i] = (uint)src[i] << 16;
                    break;
                }
            default:
                throw new FastMMException($"tensor '{Name}': dtype {StoredTypeName} cannot be used as floating-point weights (F32, F16, BF16 are supported)");
        }
    }

    public float[] ToFloatArray()
    {
        var a = new float[ElementCount];
        ToFloat(a);
        return a;
    }

    public string ShapeString => "[" + string.Join(", ", Shape) + "]";
}
