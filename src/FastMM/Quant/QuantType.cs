using FastMM.Cpu;

namespace FastMM.Quant;

/// <summary>How a Linear weight is stored: plain floating point, or a block-quantized format (see <see cref="QuantFormats"/>).</summary>
public enum QuantType
{
    F32,
    F16,
    BF16,
    /// <summary>GGUF Q8_0: blocks of 32, fp16 scale + 32 int8.</summary>
    Q8_0,
    /// <summary>GGUF Q4_0: blocks of 32, fp16 scale + 16 bytes of nibbles, value = (q − 8)·d.</summary>
    Q4_0,
    /// <summary>Asymmetric INT4 in groups of 32 (byte-identical to GGUF Q4_1).</summary>
    Int4G32,
    /// <summary>Asymmetric INT4 in groups of 64.</summary>
    Int4G64,
    /// <summary>Asymmetric INT4 in groups of 128 (the usual AWQ/GPTQ group size).</summary>
    Int4G128,
}

/// <summary>The format table (ggml's type-traits pattern): one <see cref="QuantFormat"/> per <see cref="QuantType"/>, looked up by type or scheme name.</summary>
public static class QuantFormats
{
    private static readonly QuantFormat[] Table =
    [
        new F32Format(),
        new F16Format(),
        new BF16Format(),
        new Q8_0Format(),
        new Q4_0Format(),
        new Int4Format<Int4Blocks<R1>>(QuantType.Int4G32),
        new Int4Format<Int4Blocks<R2>>(QuantType.Int4G64),
        new Int4Format<Int4Blocks<R4>>(QuantType.Int4G128),
    ];

    static QuantFormats()
    {
        for (int i = 0; i < Table.Length; i++)
            if ((int)Table[i].Type != i) throw new InvalidOperationException($"format table entry {i} is {Table[i].Type}");
    }

    public static IReadOnlyList<QuantFormat> All => Table;

    /// <summary>The scheme names, as <see cref="Parse"/> accepts them.</summary>
    public static IEnumerable<string> Names => Table.Select(f => f.Name);

    public static QuantFormat Get(QuantType type) => Table[(int)type];

    /// <summary>Maps a scheme name ("q4_0", "int4-g128", "f16", case-insensitive) to its format, or fails listing the valid names.</summary>
    public static QuantFormat Parse(string name)
    {
        foreach (var f in Table)
            if (string.Equals(f.Name, name, StringComparison.OrdinalIgnoreCase)) return f;
        throw new FastMMException($"unknown quantization scheme '{name}' (valid: {string.Join(", ", Names)})");
    }
}
