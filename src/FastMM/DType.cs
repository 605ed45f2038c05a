namespace FastMM;

/// <summary>Element types of stored weights and of tensors. Compute on the CPU backend is F32.</summary>
public enum DType
{
    F32,
    F16,
    BF16,
    I32,
    I64,
    /// <summary>A stored type the file format knows but FastMM does not compute with (e.g. U8, F64); using it is an error.</summary>
    Unsupported,
}

public static class DTypeInfo
{
    public static int SizeOf(DType t) => t switch
    {
        DType.F32 or DType.I32 => 4,
        DType.F16 or DType.BF16 => 2,
        DType.I64 => 8,
        DType.Unsupported => throw new FastMMException("unsupported dtype has no element size"),
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };
}
