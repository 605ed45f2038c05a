using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using FastMM.Cpu;

namespace FastMM.Quant;

/// <summary>
/// One weight storage format as data: a block of <see cref="BlockElements"/> consecutive elements of a row is stored in
/// <see cref="BlockBytes"/> bytes, and the format knows how to quantize and dequantize a row. Plain formats
/// (f32, f16, bf16) are blocks of one element. A row of K elements takes K / BlockElements blocks, so K must be a multiple
/// of the block size.
/// </summary>
public abstract class QuantFormat
{
    public QuantType Type { get; }
    /// <summary>The scheme name ("q4_0", "int4-g128", "f16", ...).</summary>
    public string Name { get; }
    public int BlockElements { get; }
    public int BlockBytes { get; }
    public double BitsPerWeight => 8.0 * BlockBytes / BlockElements;

    /// <summary>The largest |value| the format can hold (its fp16 scale or storage type bounds it); quantizing larger weights fails.</summary>
    internal abstract float MaxMagnitude { get; }

    private protected QuantFormat(QuantType type, string name, int blockElements, int blockBytes)
    {
        Type = type; Name = name; BlockElements = blockElements; BlockBytes = blockBytes;
    }

    /// <summary>Bytes of one row of <paramref name="columns"/> elements (a multiple of <see cref="BlockElements"/>).</summary>
    public long RowBytes(int columns) => (long)(columns / BlockElements) * BlockBytes;

    /// <summary>Fails with a <see cref="FastMMException"/> naming the sizes unless rows of <paramref name="columns"/> elements are whole blocks.</summary>
    public void CheckColumns(int rows, int columns, string? name = null)
    {
        if (rows < 1 || columns < 1)
            throw new FastMMException($"{Label(name)}a {rows}x{columns} matrix cannot be stored as {Name}: both sizes must be at least 1");
        if (columns % BlockElements != 0)
            throw new FastMMException($"{Label(name)}cannot store a {rows}x{columns} matrix as {Name}: in_features {columns} is not a multiple of its block size {BlockElements} (keep this matrix in f32 or f16)");
    }

    internal static string Label(string? name) => name is null ? "" : $"tensor '{name}': ";

    /// <summary>Quantizes one row (src.Length a multiple of <see cref="BlockElements"/>) into <see cref="RowBytes"/> bytes.</summary>
    public abstract void QuantizeRow(ReadOnlySpan<float> src, Span<byte> dst);

    /// <summary>Reconstructs one row from its bytes.</summary>
    public abstract void DequantizeRow(ReadOnlySpan<byte> src, Span<float> dst);

    private protected void CheckRow(int elements, int bytes)
    {
        if (elements % BlockElements != 0 || bytes != RowBytes(elements))
            throw new ArgumentException($"{Name}: a row of {elements} elements does not match {bytes} bytes");
    }
}

/// <summary>A format the integer kernels compute with directly: blocks of 32 (or groups of 32-element sub-blocks) with fp16 scales.</summary>
public abstract unsafe class BlockQuantFormat : QuantFormat
{
    /// <summary>The activation block the kernels quantize X into (ggml's Q8 "vec_dot_type"): every format here uses 32.</summary>
    internal const int ActivationBlock = 32;

    private protected BlockQuantFormat(QuantType type, string name, int blockElements, int blockBytes)
        : base(type, name, blockElements, blockBytes) { }

    /// <summary>
    /// The format's dot routine (ggml's vec_dot): for each of <paramref name="wRows"/> weight rows (row j at
    /// w + j·rowBytes) and each of the first <paramref name="xRows"/> (1–4) activation rows of <paramref name="x"/>,
    /// y[r·ldy + j] = Σ W·X (+ bias[j]).
    /// </summary>
    internal abstract void Dot(QuantPath path, int xRows, byte* w, nint rowBytes, int wRows, in QuantizedRows x, float* y, nint ldy, float* bias);

    /// <summary>Whether a one-row product on the AVX-512 path wants <see cref="QuantizedRows.Split"/> built (its decode GEMV reads it).</summary>
    internal virtual bool UsesSplitActivations => false;
}

/// <summary>fp16 helpers for the block scales.</summary>
internal static unsafe class Fp16
{
    private const float TwoPow112 = 5.192296858534828e33f; // 2^112 re-biases a half's exponent (15) to a float's (127)

    /// <summary>
    /// The fp16 at p as a float, exact for every finite half (subnormals included): the half's bits shifted into float
    /// position give value·2^−112, and the sign extension of the 16-bit load supplies the sign bit. Cheaper than a Half cast in the kernels.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Load(byte* p) => BitConverter.Int32BitsToSingle((*(short*)p << 13) & unchecked((int)0x8FFFE000)) * TwoPow112;

    /// <summary>fp16 values held sign-extended in int32 lanes, as floats: <see cref="Load"/>'s bit moves on 4 lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Widen(Vector128<int> halves)
        => ((halves << 13) & Vector128.Create(unchecked((int)0x8FFFE000))).AsSingle() * TwoPow112;

    public static void Store(Span<byte> dst, Half h) => MemoryMarshal.Write(dst, BitConverter.HalfToUInt16Bits(h));

    public static float Read(ReadOnlySpan<byte> src) => (float)MemoryMarshal.Read<Half>(src);

    /// <summary>The largest half ≤ v.</summary>
    public static Half RoundDown(float v) { Half h = (Half)v; return (float)h > v ? Half.BitDecrement(h) : h; }

    /// <summary>The smallest half ≥ v.</summary>
    public static Half RoundUp(float v) { Half h = (Half)v; return (float)h < v ? Half.BitIncrement(h) : h; }
}

// ---------------- plain storage formats ----------------

internal sealed class F32Format() : QuantFormat(QuantType.F32, "f32", 1, 4)
{
    internal override float MaxMagnitude => float.MaxValue;
    public override void QuantizeRow(ReadOnlySpan<float> src, Span<byte> dst) { CheckRow(src.Length, dst.Length); MemoryMarshal.AsBytes(src).CopyTo(dst); }
    public override void DequantizeRow(ReadOnlySpan<byte> src, Span<float> dst) { CheckRow(dst.Length, src.Length); src.CopyTo(MemoryMarshal.AsBytes(dst)); }
}

internal sealed class F16Format() : QuantFormat(QuantType.F16, "f16", 1, 2)
{
    internal override float MaxMagnitude => (float)Half.MaxValue;
    public override void QuantizeRow(ReadOnlySpan<float> src, Span<byte> dst) { CheckRow(src.Length, dst.Length); TensorPrimitives.ConvertToHalf(src, MemoryMarshal.Cast<byte, Half>(dst)); }
    public override void DequantizeRow(ReadOnlySpan<byte> src, Span<float> dst) { CheckRow(dst.Length, src.Length); TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<byte, Half>(src), dst); }
}

internal sealed class BF16Format() : QuantFormat(QuantType.BF16, "bf16", 1, 2)
{
    internal override float MaxMagnitude => float.MaxValue;

    /// <summary>Round to nearest even on the upper 16 bits, as PyTorch's float → bfloat16.</summary>
    public override void QuantizeRow(ReadOnlySpan<float> src, Span<byte> dst)
    {
        CheckRow(src.Length, dst.Length);
        var bits = MemoryMarshal.Cast<float, uint>(src);
        var outBits = MemoryMarshal.Cast<byte, ushort>(dst);
        for (int i = 0; i < bits.Length; i++)
        {
            uint u = bits[i];
            outBits[i] = float.IsNaN(src[i]) ? (ushort)0x7FC0 : (ushort)((u + 0x7FFFu + ((u >> 16) & 1)) >> 16);
        }
    }

    public override void DequantizeRow(ReadOnlySpan<byte> src, Span<float> dst)
    {
        CheckRow(dst.Length, src.Length);
        var inBits = MemoryMarshal.Cast<byte, ushort>(src);
        var bits = MemoryMarshal.Cast<float, uint>(dst);
        for (int i = 0; i < inBits.Length; i++) bits[i] = (uint)inBits[i] << 16;
    }
}

// ---------------- block formats ----------------

/// <summary>
/// GGUF Q8_0, byte for byte: blocks of 32 elements, each 34 bytes = fp16 d, then 32 int8 q; value = q·d.
/// Quantized as ggml's quantize_row_q8_0_ref: d = amax / 127, q = roundf(x / d) (ties away from zero).
/// </summary>
internal sealed unsafe class Q8_0Format() : BlockQuantFormat(QuantType.Q8_0, "q8_0", 32, 34)
{
    internal override float MaxMagnitude => 65504f * 127f;

    public override void QuantizeRow(ReadOnlySpan<float> src, Span<byte> dst)
    {
        CheckRow(src.Length, dst.Length);
        for (int b = 0; b < src.Length / 32; b++)
        {
            var x = src.Slice(b * 32, 32);
            var block = dst.Slice(b * 34, 34);
            float amax = 0f;
            foreach (float v in x) amax = Math.Max(amax, MathF.Abs(v));
            float d = amax / 127f;
            float id = d != 0f ? 1f / d : 0f;
            Fp16.Store(block, (Half)d);
            for (int j = 0; j < 32; j++) block[2 + j] = (byte)(sbyte)MathF.Round(x[j] * id, MidpointRounding.AwayFromZero);
        }
    }

    public override void DequantizeRow(ReadOnlySpan<byte> src, Span<float> dst)
    {
        CheckRow(dst.Length, src.Length);
        for (int b = 0; b < dst.Length / 32; b++)
        {
            var block = src.Slice(b * 34, 34);
            float d = Fp16.Read(block);
            for (int j = 0; j < 32; j++) dst[b * 32 + j] = (sbyte)block[2 + j] * d;
        }
    }

    internal override void Dot(QuantPath path, int xRows, byte* w, nint rowBytes, int wRows, in QuantizedRows x, float* y, nint ldy, float* bias)
        => QuantKernels.Run<Q8_0Blocks>(path, xRows, w, rowBytes, wRows, x, y, ldy, bias);
}

/// <summary>
/// GGUF Q4_0, byte for byte: blocks of 32 elements, each 18 bytes = fp16 d, then 16 bytes holding element j in the low
/// nibble of byte j and element j+16 in the high nibble; value = (q − 8)·d. Quantized as ggml's quantize_row_q4_0_ref:
/// max = the element of largest |x| (with its sign), d = max / −8, q = min(15, (int)(x/d + 8.5)).
/// </summary>
internal sealed unsafe class Q4_0Format() : BlockQuantFormat(QuantType.Q4_0, "q4_0", 32, 18)
{
    internal override float MaxMagnitude => 65504f * 8f;

    public override void QuantizeRow(ReadOnlySpan<float> src, Span<byte> dst)
    {
        CheckRow(src.Length, dst.Length);
        for (int b = 0; b < src.Length / 32; b++)
        {
            var x = src.Slice(b * 32, 32);
            var block = dst.Slice(b * 18, 18);
            float amax = 0f, max = 0f;
            foreach (float v in x)
                if (amax < MathF.Abs(v)) { amax = MathF.Abs(v); max = v; }
            float d = max / -8f;
            float id = d != 0f ? 1f / d : 0f;
            Fp16.Store(block, (Half)d);
            for (int j = 0; j < 16; j++)
            {
                int q0 = Math.Min(15, (int)(x[j] * id + 8.5f)), q1 = Math.Min(15, (int)(x[16 + j] * id + 8.5f));
                block[2 + j] = (byte)(q0 | (q1 << 4));
            }
        }
    }

    public override void DequantizeRow(ReadOnlySpan<byte> src, Span<float> dst)
    {
        CheckRow(dst.Length, src.Length);
        for (int b = 0; b < dst.Length / 32; b++)
        {
            var block = src.Slice(b * 18, 18);
            float d = Fp16.Read(block);
            for (int j = 0; j < 16; j++)
            {
                dst[b * 32 + j] = ((block[2 + j] & 0x0F) - 8) * d;
                dst[b * 32 + 16 + j] = ((block[2 + j] >> 4) - 8) * d;
            }
        }
    }

    internal override bool UsesSplitActivations => Q4_0Gemv.IsSupported;

    internal override void Dot(QuantPath path, int xRows, byte* w, nint rowBytes, int wRows, in QuantizedRows x, float* y, nint ldy, float* bias)
    {
        if (xRows == 1 && path == QuantPath.Avx512 && x.Split.Split != null)
            Q4_0Gemv.Run(w, rowBytes, wRows, x.Blocks, x.Split, y, bias);
        else
            QuantKernels.Run<Q4_0Blocks>(path, xRows, w, rowBytes, wRows, x, y, ldy, bias);
    }
}

/// <summary>
/// Asymmetric group-wise INT4 (AWQ/GPTQ-style, GGUF Q4_1 generalised to a group of G = 32, 64 or 128 elements).
/// Byte layout of one group, 4 + G/2 bytes:
/// <code>
///   [0..1]  fp16 scale
///   [2..3]  fp16 min
///   [4 + 16·s .. 4 + 16·s + 15]  sub-block s (elements 32·s … 32·s + 31 of the group), s = 0 … G/32 − 1:
///           element 32·s + j in the low nibble of byte j, element 32·s + j + 16 in the high nibble
/// </code>
/// value = q·scale + min, q in 0..15 (int4-g32 is byte-identical to Q4_1). Quantization keeps every element within
/// the representable range after fp16 rounding: min is rounded down to fp16, scale = (max − min)/15 rounded up, so the
/// reconstruction error of every element is at most scale/2.
/// </summary>
internal sealed unsafe class Int4Format<TBlocks>(QuantType type) : BlockQuantFormat(type, $"int4-g{TBlocks.SubBlocks * 32}", TBlocks.SubBlocks * 32, TBlocks.GroupBytes)
    where TBlocks : struct, IWeightBlocks
{
    internal override float MaxMagnitude => 65504f;

    public override void QuantizeRow(ReadOnlySpan<float> src, Span<byte> dst)
    {
        CheckRow(src.Length, dst.Length);
        int g = BlockElements;
        for (int b = 0; b < src.Length / g; b++)
        {
            var x = src.Slice(b * g, g);
            var block = dst.Slice(b * BlockBytes, BlockBytes);
            float min = TensorPrimitives.Min(x), max = TensorPrimitives.Max(x);
            Half minH = Fp16.RoundDown(min);
            float m = (float)minH;
            Half scaleH = Fp16.RoundUp((max - m) / 15f);
            float scale = (float)scaleH;
            float id = scale != 0f ? 1f / scale : 0f;
            Fp16.Store(block, scaleH);
            Fp16.Store(block[2..], minH);
            for (int s = 0; s < g / 32; s++)
                for (int j = 0; j < 16; j++)
                {
                    int q0 = Math.Clamp((int)MathF.Round((x[32 * s + j] - m) * id), 0, 15);
                    int q1 = Math.Clamp((int)MathF.Round((x[32 * s + 16 + j] - m) * id), 0, 15);
                    block[4 + 16 * s + j] = (byte)(q0 | (q1 << 4));
                }
        }
    }

    public override void DequantizeRow(ReadOnlySpan<byte> src, Span<float> dst)
    {
        CheckRow(dst.Length, src.Length);
        int g = BlockElements;
        for (int b = 0; b < dst.Length / g; b++)
        {
            var block = src.Slice(b * BlockBytes, BlockBytes);
            float scale = Fp16.Read(block), min = Fp16.Read(block[2..]);
            var y = dst.Slice(b * g, g);
            for (int s = 0; s < g / 32; s++)
                for (int j = 0; j < 16; j++)
                {
                    byte v = block[4 + 16 * s + j];
                    y[32 * s + j] = (v & 0x0F) * scale + min;
                    y[32 * s + 16 + j] = (v >> 4) * scale + min;
                }
        }
    }

    internal override void Dot(QuantPath path, int xRows, byte* w, nint rowBytes, int wRows, in QuantizedRows x, float* y, nint ldy, float* bias)
        => QuantKernels.Run<TBlocks>(path, xRows, w, rowBytes, wRows, x, y, ldy, bias);
}
