using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using FastMM.Quant;

namespace FastMM.Cpu;

/// <summary>The integer dot-product code a quantized product runs with (see <see cref="QuantGemm.Path"/>).</summary>
internal enum QuantPath
{
    Scalar,
    /// <summary>256-bit vpmaddubsw + vpmaddwd.</summary>
    Avx2,
    /// <summary>256-bit vpdpbusd (AVX-VNNI).</summary>
    AvxVnni,
    /// <summary>512-bit vpmaddubsw + vpmaddwd (AVX-512BW), two blocks per step.</summary>
    Avx512,
}

/// <summary>
/// Activation rows quantized per block of 32 (ggml's Q8 "vec_dot_type", with float scales). Row r holds its int8 values
/// q offset to unsigned bytes u = q + 128 at U + r·UStride (the unsigned operand of vpmaddubsw/vpdpbusd); per block b,
/// its scale d repeated 8 times (one per lane of a block's 8 int32 sums) at D8 + (r·Blocks + b)·8, and d·Σq at
/// ScaledSums + r·Blocks + b (the int4 formats' min multiplies it).
/// </summary>
internal readonly unsafe struct QuantizedRows(byte* u, float* d8, float* scaledSums, nint uStride, int blocks, SplitActivations split = default)
{
    public readonly byte* U = u;
    public readonly float* D8 = d8;
    public readonly float* ScaledSums = scaledSums;
    public readonly nint UStride = uStride;
    public readonly int Blocks = blocks;
    /// <summary>Row 0 rearranged for <see cref="Q4_0Gemv"/> when the caller built it (decode of Q4_0 weights); else null pointers.</summary>
    public readonly SplitActivations Split = split;

    public QuantizedRows From(int row) => new(U + row * UStride, D8 + (nint)row * Blocks * 8, ScaledSums + row * Blocks, UStride, Blocks,
                                              row == 0 ? Split : default);
}

/// <summary>
/// A weight format as the kernels decode it: groups of <see cref="SubBlocks"/>·32 weights share a header, and each
/// 32-weight sub-block decodes to 32 signed bytes v with weight = v·scale (+ residual min). 4-bit weights are decoded as
/// nibble − pivot: Q4_0's pivot is its 8; an int4 group's is −min / scale rounded into 0..15, which leaves a residual min
/// of at most scale/2 in the usual case (so the min never cancels against q·scale in float: the product keeps float
/// precision relative to the weights themselves, outlier groups included).
/// </summary>
internal unsafe interface IWeightBlocks
{
    static abstract int SubBlocks { get; }
    static abstract int GroupBytes { get; }
    /// <summary>Whether weights carry a pivot and residual min (the int4 formats): y += residualMin · d_x·Σq_x per block.</summary>
    static abstract bool HasMin { get; }
    /// <summary>|v| ≤ 15: vpmaddubsw of (q_x + 128) by v cannot saturate int16 (255·15·2 &lt; 32767), so no sign trick is needed.</summary>
    static abstract bool Small { get; }

    static abstract void Header(byte* group, out float scale, out int pivot, out float residualMin);
    /// <summary>The headers of 4 consecutive groups at once, lane i = group i, with exactly <see cref="Header"/>'s values.</summary>
    static abstract void Headers4(byte* group, out Vector128<float> scales, out Vector128<int> pivots, out Vector128<float> residualMins);

    /// <summary>Element i (0–31) of sub-block s, for the scalar path.</summary>
    static abstract int Decode(byte* group, int sub, int i, int pivot);
    /// <summary>Sub-block s of the group: 32 signed weights in element order (pivot: in every byte).</summary>
    static abstract Vector256<sbyte> Decode256(byte* group, int sub, Vector256<sbyte> pivot);
    /// <summary>Sub-block sub0 of group0 and sub1 of group1 as 64 signed weights (pivots: bytes 0–31, 32–63).</summary>
    static abstract Vector512<sbyte> Decode512(byte* group0, int sub0, byte* group1, int sub1, Vector512<sbyte> pivots);
}

/// <summary>Q8_0: fp16 d, then 32 int8 (GGUF).</summary>
internal unsafe struct Q8_0Blocks : IWeightBlocks
{
    public static int SubBlocks => 1;
    public static int GroupBytes => 34;
    public static bool HasMin => false;
    public static bool Small => false;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Header(byte* group, out float scale, out int pivot, out float residualMin) { scale = Fp16.Load(group); pivot = 0; residualMin = 0f; }
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Headers4(byte* group, out Vector128<float> scales, out Vector128<int> pivots, out Vector128<float> residualMins)
    {
        scales = Fp16.Widen(Vector128.Create((int)*(short*)group, *(short*)(group + 34), *(short*)(group + 68), *(short*)(group + 102)));
        pivots = default; residualMins = default;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Decode(byte* group, int sub, int i, int pivot) => ((sbyte*)group)[2 + i];
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<sbyte> Decode256(byte* group, int sub, Vector256<sbyte> pivot) => Vector256.Load((sbyte*)group + 2);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<sbyte> Decode512(byte* group0, int sub0, byte* group1, int sub1, Vector512<sbyte> pivots)
        => Avx512F.InsertVector256(Vector256.Load((sbyte*)group0 + 2).ToVector512Unsafe(), Vector256.Load((sbyte*)group1 + 2), 1);
}

/// <summary>Q4_0: fp16 d, then 16 bytes of nibbles (GGUF); weight = (q − 8)·d.</summary>
internal unsafe struct Q4_0Blocks : IWeightBlocks
{
    public static int SubBlocks => 1;
    public static int GroupBytes => 18;
    public static bool HasMin => false;
    public static bool Small => true;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Header(byte* group, out float scale, out int pivot, out float residualMin) { scale = Fp16.Load(group); pivot = 8; residualMin = 0f; }
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Headers4(byte* group, out Vector128<float> scales, out Vector128<int> pivots, out Vector128<float> residualMins)
    {
        scales = Fp16.Widen(Vector128.Create((int)*(short*)group, *(short*)(group + 18), *(short*)(group + 36), *(short*)(group + 54)));
        pivots = default; residualMins = default;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Decode(byte* group, int sub, int i, int pivot) => Nibbles.Get(group + 2, i) - 8;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<sbyte> Decode256(byte* group, int sub, Vector256<sbyte> pivot) => Nibbles.Unpack256(group + 2).AsSByte() - Vector256.Create((sbyte)8);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<sbyte> Decode512(byte* group0, int sub0, byte* group1, int sub1, Vector512<sbyte> pivots)
        => Nibbles.Unpack512(group0 + 2, group1 + 2).AsSByte() - Vector512.Create((sbyte)8);
}

/// <summary>int4-gN groups (N = 32·TGroup.Count): fp16 scale, fp16 min, then 16 bytes of nibbles per sub-block; weight = q·scale + min.</summary>
internal unsafe struct Int4Blocks<TGroup> : IWeightBlocks where TGroup : struct, IRows
{
    public static int SubBlocks => TGroup.Count;
    public static int GroupBytes => 4 + 16 * TGroup.Count;
    public static bool HasMin => true;
    public static bool Small => true;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Header(byte* group, out float scale, out int pivot, out float residualMin)
    {
        scale = Fp16.Load(group);
        float min = Fp16.Load(group + 2), t = -min / scale; // NaN (scale = min = 0) takes the last branch
        pivot = t >= 15f ? 15 : t > 0f ? (int)(t + 0.5f) : 0;
        residualMin = min + pivot * scale; // pivot·scale is exact (4-bit × fp16)
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Headers4(byte* group, out Vector128<float> scales, out Vector128<int> pivots, out Vector128<float> residualMins)
    {
        int gb = GroupBytes;
        var raw = Vector128.Create(*(int*)group, *(int*)(group + gb), *(int*)(group + 2 * gb), *(int*)(group + 3 * gb)); // scale | min << 16
        scales = Fp16.Widen((raw << 16) >> 16);
        var mins = Fp16.Widen(raw >> 16);
        // x86 max/min return the second operand for a NaN, so NaN (scale = min = 0) → pivot 0, as in Header.
        var t = Sse.Min(Sse.Max((Vector128<float>.Zero - mins) / scales, Vector128<float>.Zero), Vector128.Create(15f));
        var pivot = Sse41.RoundToNegativeInfinity(t + Vector128.Create(0.5f));
        pivots = Sse2.ConvertToVector128Int32WithTruncation(pivot);
        residualMins = mins + pivot * scales;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Decode(byte* group, int sub, int i, int pivot) => Nibbles.Get(group + 4 + 16 * sub, i) - pivot;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<sbyte> Decode256(byte* group, int sub, Vector256<sbyte> pivot) => Nibbles.Unpack256(group + 4 + 16 * sub).AsSByte() - pivot;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<sbyte> Decode512(byte* group0, int sub0, byte* group1, int sub1, Vector512<sbyte> pivots)
        => Nibbles.Unpack512(group0 + 4 + 16 * sub0, group1 + 4 + 16 * sub1).AsSByte() - pivots;
}

/// <summary>
/// One weight row's group headers, decoded before its dot products (4 groups per step instead of one at a time inside the
/// hot loop): Scales[g], Pivots[g] (the pivot byte repeated 4 times, ready to broadcast), ResidualMins[g].
/// </summary>
internal readonly unsafe struct RowHeaders
{
    public readonly float* Scales, ResidualMins;
    public readonly int* Pivots;

    [ThreadStatic] private static AlignedBuffer? t_buffer;

    private RowHeaders(float* scales, int* pivots, float* residualMins) { Scales = scales; Pivots = pivots; ResidualMins = residualMins; }

    /// <summary>Room for <paramref name="groups"/> headers in this thread's buffer (rounded up to whole steps of 4).</summary>
    public static RowHeaders For(int groups)
    {
        int padded = (groups + 3) & ~3;
        float* p = (t_buffer ??= new AlignedBuffer()).Get(3 * padded);
        return new RowHeaders(p, (int*)(p + padded), p + 2 * padded);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Decode<TB>(byte* row, int groups) where TB : struct, IWeightBlocks
    {
        int g = 0;
        for (; g + 4 <= groups; g += 4, row += 4 * TB.GroupBytes)
        {
            TB.Headers4(row, out var scales, out var pivots, out var residualMins);
            scales.Store(Scales + g);
            if (TB.HasMin)
            {
                (pivots * 0x01010101).Store(Pivots + g); // a pivot (0..15) times 0x01010101 fills its int32 with 4 copies
                residualMins.Store(ResidualMins + g);
            }
        }
        for (; g < groups; g++, row += TB.GroupBytes)
        {
            TB.Header(row, out Scales[g], out int pivot, out ResidualMins[g]);
            Pivots[g] = pivot * 0x01010101;
        }
    }
}

/// <summary>GGUF's nibble packing of 32 weights in 16 bytes: element j in the low nibble of byte j, element j+16 in the high nibble.</summary>
internal static unsafe class Nibbles
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Get(byte* p, int i) => i < 16 ? p[i] & 0x0F : p[i - 16] >> 4;

    /// <summary>32 nibbles as bytes in element order: the 16 bytes in both lanes, the upper lane shifted down by 4, then masked.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<byte> Unpack256(byte* p)
        => Avx2.ShiftRightLogicalVariable(Avx2.BroadcastVector128ToVector256(p).AsUInt32(), Vector256.Create(0u, 0, 0, 0, 4, 4, 4, 4)).AsByte()
           & Vector256.Create((byte)0x0F);

    /// <summary>Two sub-blocks (at p0, p1) unpacked as <see cref="Unpack256"/> into one vector: 64 weights in element order.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<byte> Unpack512(byte* p0, byte* p1)
        => Avx512F.ShiftRightLogicalVariable(
               Avx512F.InsertVector256(Avx2.BroadcastVector128ToVector256(p0).ToVector512Unsafe(), Avx2.BroadcastVector128ToVector256(p1), 1).AsUInt64(),
               Vector512.Create(0ul, 0, 4, 4, 0, 0, 4, 4)).AsByte()
           & Vector512.Create((byte)0x0F);
}

/// <summary>
/// How a 256-bit kernel forms the 8 int32 lane sums of a block's signed weights v times its activations q, read as
/// u = q + 128. Per weight block, <see cref="Prepare"/> computes what every activation row shares; <see cref="Dot"/> then
/// costs one or a few instructions per row. Every lane sum is exact.
/// </summary>
internal interface IDot256
{
    static abstract Vector256<int> Prepare<TB>(Vector256<sbyte> v, out Vector256<byte> absV) where TB : struct, IWeightBlocks;
    static abstract Vector256<int> Dot<TB>(Vector256<sbyte> v, Vector256<byte> absV, Vector256<int> prepared, Vector256<byte> u) where TB : struct, IWeightBlocks;
}

/// <summary>
/// vpmaddubsw + vpmaddwd. Small weights: Σ u·v − 128·Σv (the int16 pairs of u·v stay below 7,650). Q8_0's full-range
/// weights: |v| · (q with v's sign), ggml's trick (pairs ≤ 128·127·2 = 32,512, no saturation).
/// </summary>
internal struct MaddDot : IDot256
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> Prepare<TB>(Vector256<sbyte> v, out Vector256<byte> absV) where TB : struct, IWeightBlocks
    {
        if (TB.Small)
        {
            absV = default;
            return Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(Vector256.Create((byte)128), v), Vector256.Create((short)1));
        }
        absV = Avx2.Abs(v);
        return default;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> Dot<TB>(Vector256<sbyte> v, Vector256<byte> absV, Vector256<int> prepared, Vector256<byte> u) where TB : struct, IWeightBlocks
    {
        if (TB.Small)
            return Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(u, v), Vector256.Create((short)1)) - prepared;
        var q = (u ^ Vector256.Create((byte)0x80)).AsSByte();
        return Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(absV, Avx2.Sign(q, v)), Vector256.Create((short)1));
    }
}

/// <summary>vpdpbusd (no intermediate saturation): the accumulator starts at −128·Σv, so one instruction per row gives Σ q·v.</summary>
internal struct VnniDot : IDot256
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> Prepare<TB>(Vector256<sbyte> v, out Vector256<byte> absV) where TB : struct, IWeightBlocks
    {
        absV = default;
        return Vector256<int>.Zero - AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, Vector256.Create((byte)128), v);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> Dot<TB>(Vector256<sbyte> v, Vector256<byte> absV, Vector256<int> prepared, Vector256<byte> u) where TB : struct, IWeightBlocks
        => AvxVnni.MultiplyWideningAndAdd(prepared, u, v);
}

/// <summary>
/// Dot products of quantized weight rows with quantized activation rows. Each call computes a tile of 1–4 activation
/// rows × a run of weight rows, so a weight block is decoded once per tile and the activation tile stays in L1.
/// Per block b of 32 the integer dot Σ v·q_x is exact in every int32 lane; the float work is
/// acc += float(dot) · d_x · scale, plus residualMin · d_x·Σq_x for the int4 formats.
/// </summary>
internal static unsafe class QuantKernels
{
    public static void Run<TB>(QuantPath path, int xRows, byte* w, nint rowBytes, int wRows, in QuantizedRows x, float* y, nint ldy, float* bias)
        where TB : struct, IWeightBlocks
    {
        switch (path)
        {
            case QuantPath.Avx512: ByRows<Avx512Kernel<TB>>(xRows, w, rowBytes, wRows, x, y, ldy, bias); break;
            case QuantPath.AvxVnni: ByRows<Avx256Kernel<TB, VnniDot>>(xRows, w, rowBytes, wRows, x, y, ldy, bias); break;
            case QuantPath.Avx2: ByRows<Avx256Kernel<TB, MaddDot>>(xRows, w, rowBytes, wRows, x, y, ldy, bias); break;
            default: ByRows<ScalarKernel<TB>>(xRows, w, rowBytes, wRows, x, y, ldy, bias); break;
        }
    }

    private static void ByRows<K>(int xRows, byte* w, nint rowBytes, int wRows, in QuantizedRows x, float* y, nint ldy, float* bias) where K : struct, ITileKernel
    {
        switch (xRows)
        {
            case 1: K.Run<R1>(w, rowBytes, wRows, x, y, ldy, bias); break;
            case 2: K.Run<R2>(w, rowBytes, wRows, x, y, ldy, bias); break;
            case 3: K.Run<R3>(w, rowBytes, wRows, x, y, ldy, bias); break;
            case 4: K.Run<R4>(w, rowBytes, wRows, x, y, ldy, bias); break;
            default: throw new ArgumentOutOfRangeException(nameof(xRows));
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Put(float* y, int j, float v, float* bias) => y[j] = bias == null ? v : v + bias[j];

    /// <summary>Lane sum in 6 instructions (Vector256.Sum takes ~12): halve, halve, then movhlps and movshdup.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sum(Vector256<float> v)
    {
        var s4 = v.GetLower() + v.GetUpper();
        var s2 = s4 + Sse.MoveHighToLow(s4, s4);
        return (s2 + Sse3.MoveHighAndDuplicate(s2)).ToScalar();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sum(Vector512<float> v) => Sum(v.GetLower() + v.GetUpper());

    /// <summary>acc += float(dot) · d8 · scale: d8 holds the activation block's scale once per lane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Scale256(Vector256<float> acc, Vector256<int> dot, float* d8, Vector256<float> scale)
        => Fma.MultiplyAdd(Avx.ConvertToVector256Single(dot) * Vector256.Load(d8), scale, acc);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Scale512(Vector512<float> acc, Vector512<int> dot, float* d8, Vector512<float> scale)
        => Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(dot) * Vector512.Load(d8), scale, acc);

    /// <summary>
    /// 16 int32 lane sums of two blocks' signed weights v times activations read as u = q + 128 (lanes 0–7 the first block).
    /// Small weights: Σ u·v − 128·Σv, with <paramref name="prepared"/> = 128·Σv per lane. Q8_0: |v| times q carrying v's sign;
    /// AVX-512 has no vpsignb, so the sign moves by a masked negate (<paramref name="negative"/> marks v &lt; 0).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<int> Dot512<TB>(Vector512<sbyte> v, Vector512<byte> absV, Vector512<sbyte> negative, Vector512<int> prepared, Vector512<byte> u, Vector512<short> ones)
        where TB : struct, IWeightBlocks
    {
        if (TB.Small)
            return Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(u, v), ones) - prepared;
        var q = (u ^ Vector512.Create((byte)0x80)).AsSByte();
        var signed = Vector512.ConditionalSelect(negative, -q, q);
        return Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(absV, signed), ones);
    }
}

/// <summary>A kernel specialised per activation-row count R (1–4): unused accumulators vanish at JIT time.</summary>
internal unsafe interface ITileKernel
{
    static abstract void Run<R>(byte* w, nint rowBytes, int wRows, in QuantizedRows x, float* y, nint ldy, float* bias) where R : struct, IRows;
}

internal unsafe struct ScalarKernel<TB> : ITileKernel where TB : struct, IWeightBlocks
{
    public static void Run<R>(byte* w, nint rowBytes, int wRows, in QuantizedRows x, float* y, nint ldy, float* bias) where R : struct, IRows
    {
        int groups = x.Blocks / TB.SubBlocks;
        for (int j = 0; j < wRows; j++)
        {
            byte* row = w + j * rowBytes;
            for (int r = 0; r < R.Count; r++)
            {
                var xr = x.From(r);
                float sum = 0f, mins = 0f;
                for (int g = 0; g < groups; g++)
                {
                    byte* group = row + g * TB.GroupBytes;
                    TB.Header(group, out float scale, out int pivot, out float residualMin);
                    for (int sb = 0; sb < TB.SubBlocks; sb++)
                    {
                        int b = g * TB.SubBlocks + sb;
                        byte* u = xr.U + 32 * b;
                        int dot = 0;
                        for (int i = 0; i < 32; i++) dot += TB.Decode(group, sb, i, pivot) * (u[i] - 128);
                        sum += dot * xr.D8[8 * b] * scale;
                        if (TB.HasMin) mins += residualMin * xr.ScaledSums[b];
                    }
                }
                QuantKernels.Put(y + r * ldy, j, sum + mins, bias);
            }
        }
    }
}

internal unsafe struct Avx256Kernel<TB, TD> : ITileKernel where TB : struct, IWeightBlocks where TD : struct, IDot256
{
    public static void Run<R>(byte* w, nint rowBytes, int wRows, in QuantizedRows x, float* y, nint ldy, float* bias) where R : struct, IRows
    {
        int n = R.Count, blocks = x.Blocks, groups = blocks / TB.SubBlocks;
        nint us = x.UStride, ds = (nint)blocks * 8;
        var headers = RowHeaders.For(groups);
        for (int j = 0; j < wRows; j++)
        {
            byte* group = w + j * rowBytes, u = x.U;
            float* d = x.D8, s = x.ScaledSums;
            headers.Decode<TB>(group, groups);
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
            float m0 = 0f, m1 = 0f, m2 = 0f, m3 = 0f;
            for (int g = 0; g < groups; g++, group += TB.GroupBytes)
            {
                var scale = Vector256.Create(headers.Scales[g]);
                var pivot = TB.HasMin ? Vector256.Create(headers.Pivots[g]).AsSByte() : default;
                for (int sb = 0; sb < TB.SubBlocks; sb++, u += 32, d += 8, s++)
                {
                    var v = TB.Decode256(group, sb, pivot);
                    var prepared = TD.Prepare<TB>(v, out var absV);
                    a0 = QuantKernels.Scale256(a0, TD.Dot<TB>(v, absV, prepared, Vector256.Load(u)), d, scale);
                    if (n > 1) a1 = QuantKernels.Scale256(a1, TD.Dot<TB>(v, absV, prepared, Vector256.Load(u + us)), d + ds, scale);
                    if (n > 2) a2 = QuantKernels.Scale256(a2, TD.Dot<TB>(v, absV, prepared, Vector256.Load(u + 2 * us)), d + 2 * ds, scale);
                    if (n > 3) a3 = QuantKernels.Scale256(a3, TD.Dot<TB>(v, absV, prepared, Vector256.Load(u + 3 * us)), d + 3 * ds, scale);
                    if (TB.HasMin)
                    {
                        float residualMin = headers.ResidualMins[g];
                        m0 += residualMin * s[0];
                        if (n > 1) m1 += residualMin * s[blocks];
                        if (n > 2) m2 += residualMin * s[2 * blocks];
                        if (n > 3) m3 += residualMin * s[3 * blocks];
                    }
                }
            }
            QuantKernels.Put(y, j, QuantKernels.Sum(a0) + m0, bias);
            if (n > 1) QuantKernels.Put(y + ldy, j, QuantKernels.Sum(a1) + m1, bias);
            if (n > 2) QuantKernels.Put(y + 2 * ldy, j, QuantKernels.Sum(a2) + m2, bias);
            if (n > 3) QuantKernels.Put(y + 3 * ldy, j, QuantKernels.Sum(a3) + m3, bias);
        }
    }
}

/// <summary>Two 32-weight sub-blocks per step; an odd last block (only with one sub-block per group) goes through the 256-bit code.</summary>
internal unsafe struct Avx512Kernel<TB> : ITileKernel where TB : struct, IWeightBlocks
{
    public static void Run<R>(byte* w, nint rowBytes, int wRows, in QuantizedRows x, float* y, nint ldy, float* bias) where R : struct, IRows
    {
        int n = R.Count, blocks = x.Blocks, sub = TB.SubBlocks, groups = blocks / sub;
        nint us = x.UStride, ds = (nint)blocks * 8;
        var headers = RowHeaders.For(groups);
        var offset = Vector512.Create((byte)128);
        var ones = Vector512.Create((short)1);
        for (int j = 0; j < wRows; j++)
        {
            byte* group = w + j * rowBytes, u = x.U;
            float* d = x.D8, s = x.ScaledSums;
            headers.Decode<TB>(group, groups);
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
            Vector128<float> m0 = default, m1 = default, m2 = default, m3 = default;
            for (int b = 0; b + 2 <= blocks; b += 2, u += 64, d += 16, s += 2)
            {
                // Sub-blocks b and b+1: groups g and g+1 when a group is one sub-block, else both in group g.
                int g = b / sub, within = b & (sub - 1); // sub is a power of two
                Vector512<float> scales;
                Vector512<sbyte> pivots = default;
                Vector128<float> residualMins = default;
                if (sub == 1)
                {
                    scales = Avx512F.InsertVector256(Vector256.Create(headers.Scales[g]).ToVector512Unsafe(), Vector256.Create(headers.Scales[g + 1]), 1);
                    if (TB.HasMin)
                    {
                        pivots = Avx512F.InsertVector256(Vector256.Create(headers.Pivots[g]).ToVector512Unsafe(), Vector256.Create(headers.Pivots[g + 1]), 1).AsSByte();
                        residualMins = Vector128.CreateScalar(*(double*)(headers.ResidualMins + g)).AsSingle(); // [r_g, r_g+1, 0, 0]
                    }
                }
                else
                {
                    scales = Vector512.Create(headers.Scales[g]);
                    if (TB.HasMin)
                    {
                        pivots = Vector512.Create(headers.Pivots[g]).AsSByte();
                        residualMins = Vector128.Create(headers.ResidualMins[g]);
                    }
                }
                byte* g1 = sub == 1 ? group + TB.GroupBytes : group;
                var v = TB.Decode512(group, within, g1, sub == 1 ? 0 : within + 1, pivots);
                if (sub == 1) group += 2 * TB.GroupBytes;
                else if (within + 2 == sub) group += TB.GroupBytes;

                Vector512<byte> absV = default;
                Vector512<sbyte> negative = default;
                Vector512<int> prepared = default;
                if (TB.Small) prepared = Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(offset, v), ones);
                else { absV = Avx512BW.Abs(v); negative = Vector512.LessThan(v, Vector512<sbyte>.Zero); }
                a0 = QuantKernels.Scale512(a0, QuantKernels.Dot512<TB>(v, absV, negative, prepared, Vector512.Load(u), ones), d, scales);
                if (n > 1) a1 = QuantKernels.Scale512(a1, QuantKernels.Dot512<TB>(v, absV, negative, prepared, Vector512.Load(u + us), ones), d + ds, scales);
                if (n > 2) a2 = QuantKernels.Scale512(a2, QuantKernels.Dot512<TB>(v, absV, negative, prepared, Vector512.Load(u + 2 * us), ones), d + 2 * ds, scales);
                if (n > 3) a3 = QuantKernels.Scale512(a3, QuantKernels.Dot512<TB>(v, absV, negative, prepared, Vector512.Load(u + 3 * us), ones), d + 3 * ds, scales);
                if (TB.HasMin)
                {
                    // [r, r', ·, ·] · [s_b, s_b+1, 0, 0]: the pair's min terms.
                    m0 = Fma.MultiplyAdd(residualMins, Vector128.CreateScalar(*(double*)s).AsSingle(), m0);
                    if (n > 1) m1 = Fma.MultiplyAdd(residualMins, Vector128.CreateScalar(*(double*)(s + blocks)).AsSingle(), m1);
                    if (n > 2) m2 = Fma.MultiplyAdd(residualMins, Vector128.CreateScalar(*(double*)(s + 2 * blocks)).AsSingle(), m2);
                    if (n > 3) m3 = Fma.MultiplyAdd(residualMins, Vector128.CreateScalar(*(double*)(s + 3 * blocks)).AsSingle(), m3);
                }
            }
            float t0 = m0[0] + m0[1], t1 = m1[0] + m1[1], t2 = m2[0] + m2[1], t3 = m3[0] + m3[1];
            if ((blocks & 1) != 0)
            {
                // The odd block (its own group): 256-bit vpmaddubsw (AVX-512 implies AVX2), folded into the float sums.
                int g = groups - 1;
                var scale = Vector256.Create(headers.Scales[g]);
                var v = TB.Decode256(group, 0, TB.HasMin ? Vector256.Create(headers.Pivots[g]).AsSByte() : default);
                var prepared = MaddDot.Prepare<TB>(v, out var absV);
                t0 += QuantKernels.Sum(QuantKernels.Scale256(default, MaddDot.Dot<TB>(v, absV, prepared, Vector256.Load(u)), d, scale));
                if (n > 1) t1 += QuantKernels.Sum(QuantKernels.Scale256(default, MaddDot.Dot<TB>(v, absV, prepared, Vector256.Load(u + us)), d + ds, scale));
                if (n > 2) t2 += QuantKernels.Sum(QuantKernels.Scale256(default, MaddDot.Dot<TB>(v, absV, prepared, Vector256.Load(u + 2 * us)), d + 2 * ds, scale));
                if (n > 3) t3 += QuantKernels.Sum(QuantKernels.Scale256(default, MaddDot.Dot<TB>(v, absV, prepared, Vector256.Load(u + 3 * us)), d + 3 * ds, scale));
                if (TB.HasMin)
                {
                    float residualMin = headers.ResidualMins[g];
                    t0 += residualMin * s[0];
                    if (n > 1) t1 += residualMin * s[blocks];
                    if (n > 2) t2 += residualMin * s[2 * blocks];
                    if (n > 3) t3 += residualMin * s[3 * blocks];
                }
            }
            QuantKernels.Put(y, j, QuantKernels.Sum(a0) + t0, bias);
            if (n > 1) QuantKernels.Put(y + ldy, j, QuantKernels.Sum(a1) + t1, bias);
            if (n > 2) QuantKernels.Put(y + 2 * ldy, j, QuantKernels.Sum(a2) + t2, bias);
            if (n > 3) QuantKernels.Put(y + 3 * ldy, j, QuantKernels.Sum(a3) + t3, bias);
        }
    }
}
