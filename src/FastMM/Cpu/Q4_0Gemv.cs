using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace FastMM.Cpu;

/// <summary>
/// One activation row arranged for <see cref="Q4_0Gemv"/>, per chunk of 4 blocks (128 elements):
/// <list type="bullet">
/// <item><c>Split</c>: 128 signed bytes, first the elements 0–15 of blocks 0–3 (16 each), then their elements 16–31 —
/// the order in which a Q4_0 chunk's low and high nibbles sit once its four 16-byte nibble runs are put side by side;</item>
/// <item><c>Scales</c>: 16 floats, the block's activation scale in each of its 4 int32 lanes;</item>
/// <item><c>Offsets</c>: 16 int32, 8 × the sum of the 8 activations that land in that lane (Q4_0's nibble − 8, moved to
/// the activations so the nibbles stay unsigned).</item>
/// </list>
/// A last, partial chunk is zero-padded, so a padded block's product is exactly zero.
/// Built once per call (all weight rows share it), in the activation quantization step.
/// </summary>
internal readonly unsafe struct SplitActivations(sbyte* split, float* scales, int* offsets)
{
    public readonly sbyte* Split = split;
    public readonly float* Scales = scales;
    public readonly int* Offsets = offsets;

    public static int Chunks4(int blocks) => (blocks + 3) / 4;

    /// <summary>Floats of scratch a row of <paramref name="blocks"/> blocks needs (split bytes, scales, offsets).</summary>
    public static int FloatsFor(int blocks) => Chunks4(blocks) * (32 + 16 + 16);

    /// <summary>Arranges activation row 0 of <paramref name="x"/> (u = q + 128, d per block) into <paramref name="scratch"/> (64-byte aligned).</summary>
    public static SplitActivations Build(in QuantizedRows x, float* scratch)
    {
        int blocks = x.Blocks, chunks = Chunks4(blocks);
        var split = (sbyte*)scratch;
        float* scales = scratch + 32 * chunks;
        int* offsets = (int*)(scales + 16 * chunks);
        var flip = Vector128.Create((byte)0x80);
        var ones = Vector128.Create((byte)1);
        var pairs = Vector128.Create((short)1);
        for (int b = 0; b < 4 * chunks; b++)
        {
            int c = b >> 2, slot = b & 3;
            sbyte* lo = split + 128 * c + 16 * slot, hi = lo + 64;
            if (b >= blocks)
            {
                Vector128<sbyte>.Zero.Store(lo);
                Vector128<sbyte>.Zero.Store(hi);
                Vector128<float>.Zero.Store(scales + 4 * b);
                Vector128<int>.Zero.Store(offsets + 4 * b);
                continue;
            }
            byte* u = x.U + 32 * b;
            var qLo = (Vector128.Load(u) ^ flip).AsSByte();
            var qHi = (Vector128.Load(u + 16) ^ flip).AsSByte();
            qLo.Store(lo);
            qHi.Store(hi);
            Vector128.Create(x.D8[8 * b]).Store(scales + 4 * b);
            // Sums of each lane's 4 low + 4 high activations: vpmaddubsw by ones (pairs), vpmaddwd by ones (quads).
            var quads = Sse2.MultiplyAddAdjacent(Ssse3.MultiplyAddAdjacent(ones, qLo) + Ssse3.MultiplyAddAdjacent(ones, qHi), pairs);
            (quads << 3).Store(offsets + 4 * b);
        }
        return new SplitActivations(split, scales, offsets);
    }
}

/// <summary>
/// Decode GEMV (one activation row) over GGUF Q4_0 weights as stored, 128 weights per step with AVX-512 VBMI: two
/// overlapping loads and one vpermt2b gather a chunk's four 16-byte nibble runs out of its 72 bytes, a second vpermt2b
/// puts each block's fp16 scale in its 4 lanes; nibbles stay unsigned (0–15) against signed activations
/// (vpmaddubsw, then vpmaddwd), and the −8 comes back as a per-lane integer offset. About 16 instructions per 128
/// weights per row, against ~40 for the general two-block kernel, so decode stops being instruction-bound.
/// </summary>
internal static unsafe class Q4_0Gemv
{
    private const int ChunkBytes = 72; // 4 blocks × 18
    private static readonly float TwoPow112 = BitConverter.Int32BitsToSingle((127 + 112) << 23);

    public static bool IsSupported => Avx512Vbmi.IsSupported && Avx512BW.IsSupported;

    // vpermt2b table = [chunk bytes 0–63 | chunk bytes 8–71]: index i < 64 reads byte i, i ≥ 64 reads byte i − 56.
    private static readonly Vector512<byte> s_nibbleIndex = NibbleIndex();
    private static readonly Vector512<byte> s_scaleIndex = ScaleIndex();

    private static Vector512<byte> NibbleIndex()
    {
        var idx = new byte[64];
        for (int b = 0; b < 4; b++)
            for (int j = 0; j < 16; j++)
            {
                int at = 18 * b + 2 + j;
                idx[16 * b + j] = (byte)(at < 64 ? at : at + 56);
            }
        return Vector512.Create(idx);
    }

    private static Vector512<byte> ScaleIndex()
    {
        // Lane 4b+i gets block b's fp16 scale in its upper 16 bits (bytes 2, 3), so an arithmetic shift sign-extends it.
        var idx = new byte[64];
        for (int lane = 0; lane < 16; lane++)
        {
            int at = 18 * (lane / 4);
            idx[4 * lane] = idx[4 * lane + 1] = idx[4 * lane + 2] = (byte)at;
            idx[4 * lane + 3] = (byte)(at + 1);
        }
        return Vector512.Create(idx);
    }

    /// <summary>y[j] = Σ W[j]·x (+ bias[j]) for <paramref name="wRows"/> rows of Q4_0 at <paramref name="w"/>.</summary>
    public static void Run(byte* w, nint rowBytes, int wRows, int blocks, in SplitActivations x, float* y, float* bias)
        => Rows(w, rowBytes, wRows, blocks, x.Split, x.Offsets, x.Scales, y, bias);

    /// <summary>
    /// The loops read only locals (no struct passed by reference, the tables hoisted): otherwise the JIT keeps the
    /// accumulators on the stack and re-checks the class initialiser every chunk.
    /// </summary>
    private static void Rows(byte* w, nint rowBytes, int wRows, int blocks, sbyte* xs, int* offsets, float* scales, float* y, float* bias)
    {
        int full = blocks / 4, rest = blocks % 4;
        Vector512<byte> nibbleIndex = s_nibbleIndex, scaleIndex = s_scaleIndex;
        // A partial last chunk (1–3 blocks, at most 54 bytes) is read with a masked load: bytes past the row are neither
        // read nor faulted on, and come in as zeros (zero scale, zero nibbles against zero activations: exactly nothing).
        // Only a fourth block reads the second load, so a partial chunk passes zeros for it.
        var headMask = Vector512.LessThan(Vector512<byte>.Indices, Vector512.Create((byte)(18 * rest)));
        nint ahead = 2 * rowBytes;
        int j = 0;
        for (; j + 2 <= wRows; j += 2)
        {
            byte* r0 = w + j * rowBytes, r1 = r0 + rowBytes;
            Vector512<float> a0 = default, a1 = default;
            int c = 0;
            for (; c < full; c++, r0 += ChunkBytes, r1 += ChunkBytes)
            {
                // The kernel now outruns the hardware prefetcher on weights streamed from memory: fetch the next pair's
                // bytes at this position (a chunk spans up to two cache lines).
                Sse.Prefetch0(r0 + ahead);
                Sse.Prefetch0(r0 + ahead + 64);
                Sse.Prefetch0(r1 + ahead);
                Sse.Prefetch0(r1 + ahead + 64);
                a0 = Chunk(Vector512.Load(r0), Vector512.Load(r0 + 8), xs, offsets, scales, c, nibbleIndex, scaleIndex, a0);
                a1 = Chunk(Vector512.Load(r1), Vector512.Load(r1 + 8), xs, offsets, scales, c, nibbleIndex, scaleIndex, a1);
            }
            if (rest != 0)
            {
                a0 = Chunk(Avx512BW.MaskLoad(r0, headMask, default), default, xs, offsets, scales, c, nibbleIndex, scaleIndex, a0);
                a1 = Chunk(Avx512BW.MaskLoad(r1, headMask, default), default, xs, offsets, scales, c, nibbleIndex, scaleIndex, a1);
            }
            QuantKernels.Put(y, j, QuantKernels.Sum(a0), bias);
            QuantKernels.Put(y, j + 1, QuantKernels.Sum(a1), bias);
        }
        if (j < wRows)
        {
            byte* r0 = w + j * rowBytes;
            Vector512<float> a0 = default;
            int c = 0;
            for (; c < full; c++, r0 += ChunkBytes)
                a0 = Chunk(Vector512.Load(r0), Vector512.Load(r0 + 8), xs, offsets, scales, c, nibbleIndex, scaleIndex, a0);
            if (rest != 0)
                a0 = Chunk(Avx512BW.MaskLoad(r0, headMask, default), default, xs, offsets, scales, c, nibbleIndex, scaleIndex, a0);
            QuantKernels.Put(y, j, QuantKernels.Sum(a0), bias);
        }
    }

    /// <summary>One chunk of one row: <paramref name="head"/> = its bytes 0–63, <paramref name="body"/> = bytes 8–71.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Chunk(Vector512<byte> head, Vector512<byte> body, sbyte* split, int* offsets, float* scales, int c,
                                          Vector512<byte> nibbleIndex, Vector512<byte> scaleIndex, Vector512<float> acc)
    {
        var nibbles = Avx512Vbmi.PermuteVar64x8x2(head, nibbleIndex, body);
        var low = nibbles & Vector512.Create((byte)0x0F);
        var high = Avx512BW.ShiftRightLogical(nibbles.AsUInt16(), 4).AsByte() & Vector512.Create((byte)0x0F);
        sbyte* xs = split + 128 * c;
        var pairs = Avx512BW.MultiplyAddAdjacent(low, Vector512.Load(xs)) + Avx512BW.MultiplyAddAdjacent(high, Vector512.Load(xs + 64));
        var dot = Avx512BW.MultiplyAddAdjacent(pairs, Vector512.Create((short)1)) - Vector512.Load(offsets + 16 * c);
        // fp16 → float for normal and subnormal scales: sign-extended (h << 13) with the exponent's top bits cleared, × 2^112.
        var halves = Avx512Vbmi.PermuteVar64x8x2(head, scaleIndex, body).AsInt32();
        var scale = (Avx512F.ShiftRightArithmetic(halves, 3) & Vector512.Create(unchecked((int)0x8FFFE000))).AsSingle() * Vector512.Create(TwoPow112);
        return Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(dot), scale * Vector512.Load(scales + 16 * c), acc);
    }
}
