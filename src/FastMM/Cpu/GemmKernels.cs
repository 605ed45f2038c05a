using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace FastMM.Cpu;

/// <summary>A compile-time row count: kernels generic over it are specialised per count, so unused accumulators vanish.</summary>
internal interface IRows { static abstract int Count { get; } }
internal struct R1 : IRows { public static int Count => 1; }
internal struct R2 : IRows { public static int Count => 2; }
internal struct R3 : IRows { public static int Count => 3; }
internal struct R4 : IRows { public static int Count => 4; }
internal struct R5 : IRows { public static int Count => 5; }
internal struct R6 : IRows { public static int Count => 6; }
internal struct R7 : IRows { public static int Count => 7; }
internal struct R8 : IRows { public static int Count => 8; }
internal struct R9 : IRows { public static int Count => 9; }
internal struct R10 : IRows { public static int Count => 10; }
internal struct R11 : IRows { public static int Count => 11; }
internal struct R12 : IRows { public static int Count => 12; }

/// <summary>
/// Register-blocked GEMM micro-kernels. Each computes a rows × 32 tile of C from a packed A micro-panel
/// (kc steps of <c>rows</c> consecutive floats) and a packed B panel (kc steps of 32 consecutive floats):
/// C = acc (+ bias) when <c>accumulate</c> is false, C += acc otherwise.
/// </summary>
internal static unsafe class GemmKernels
{
    /// <summary>Width of a packed B panel (two AVX-512 vectors); every path reads this layout.</summary>
    public const int PanelWidth = 32;

    /// <summary>Largest tile height per level: as many rows as fit the register file (AVX-512: 24 accumulators of 32).</summary>
    public static int MaxRows(SimdLevel level) => level switch
    {
        SimdLevel.Avx512 => 12,
        SimdLevel.Avx2 => 6,
        _ => 4,
    };

    /// <summary>rows × 32 tile at the given level; rows ≤ <see cref="MaxRows"/>.</summary>
    public static void Tile(SimdLevel level, int rows, int kc, float* a, float* b, float* c, nint ldc, float* bias, bool accumulate)
    {
        switch (level)
        {
            case SimdLevel.Avx512: Tile512(rows, kc, a, b, c, ldc, bias, accumulate); break;
            case SimdLevel.Avx2:
                // Two 16-wide halves of the panel; the A micro-panel is re-read from L1.
                Tile256(rows, kc, a, b, c, ldc, bias, accumulate);
                Tile256(rows, kc, a, b + 16, c + 16, ldc, bias == null ? null : bias + 16, accumulate);
                break;
            case SimdLevel.Vector128:
                for (int q = 0; q < PanelWidth; q += 8)
                    Tile128(rows, kc, a, b + q, c + q, ldc, bias == null ? null : bias + q, accumulate);
                break;
            default: TileScalar(rows, kc, a, b, c, ldc, bias, accumulate); break;
        }
    }

    // ---------------- AVX-512: up to 12 rows × 32 columns (24 zmm accumulators) ----------------

    private static void Tile512(int rows, int kc, float* a, float* b, float* c, nint ldc, float* bias, bool acc)
    {
        switch (rows)
        {
            case 1: Tile512<R1>(kc, a, b, c, ldc, bias, acc); break;
            case 2: Tile512<R2>(kc, a, b, c, ldc, bias, acc); break;
            case 3: Tile512<R3>(kc, a, b, c, ldc, bias, acc); break;
            case 4: Tile512<R4>(kc, a, b, c, ldc, bias, acc); break;
            case 5: Tile512<R5>(kc, a, b, c, ldc, bias, acc); break;
            case 6: Tile512<R6>(kc, a, b, c, ldc, bias, acc); break;
            case 7: Tile512<R7>(kc, a, b, c, ldc, bias, acc); break;
            case 8: Tile512<R8>(kc, a, b, c, ldc, bias, acc); break;
            case 9: Tile512<R9>(kc, a, b, c, ldc, bias, acc); break;
            case 10: Tile512<R10>(kc, a, b, c, ldc, bias, acc); break;
            case 11: Tile512<R11>(kc, a, b, c, ldc, bias, acc); break;
            case 12: Tile512<R12>(kc, a, b, c, ldc, bias, acc); break;
            default: throw new ArgumentOutOfRangeException(nameof(rows));
        }
    }

    private static void Tile512<R>(int kc, float* a, float* b, float* c, nint ldc, float* bias, bool acc) where R : struct, IRows
    {
        int n = R.Count;
        Vector512<float> x0 = default, y0 = default, x1 = default, y1 = default, x2 = default, y2 = default,
            x3 = default, y3 = default, x4 = default, y4 = default, x5 = default, y5 = default,
            x6 = default, y6 = default, x7 = default, y7 = default, x8 = default, y8 = default,
            x9 = default, y9 = default, x10 = default, y10 = default, x11 = default, y11 = default;
        for (int k = 0; k < kc; k++)
        {
            Vector512<float> b0 = Vector512.Load(b), b1 = Vector512.Load(b + 16), s;
            s = Vector512.Create(a[0]); x0 = Avx512F.FusedMultiplyAdd(s, b0, x0); y0 = Avx512F.FusedMultiplyAdd(s, b1, y0);
            if (n > 1) { s = Vector512.Create(a[1]); x1 = Avx512F.FusedMultiplyAdd(s, b0, x1); y1 = Avx512F.FusedMultiplyAdd(s, b1, y1); }
            if (n > 2) { s = Vector512.Create(a[2]); x2 = Avx512F.FusedMultiplyAdd(s, b0, x2); y2 = Avx512F.FusedMultiplyAdd(s, b1, y2); }
            if (n > 3) { s = Vector512.Create(a[3]); x3 = Avx512F.FusedMultiplyAdd(s, b0, x3); y3 = Avx512F.FusedMultiplyAdd(s, b1, y3); }
            if (n > 4) { s = Vector512.Create(a[4]); x4 = Avx512F.FusedMultiplyAdd(s, b0, x4); y4 = Avx512F.FusedMultiplyAdd(s, b1, y4); }
            if (n > 5) { s = Vector512.Create(a[5]); x5 = Avx512F.FusedMultiplyAdd(s, b0, x5); y5 = Avx512F.FusedMultiplyAdd(s, b1, y5); }
            if (n > 6) { s = Vector512.Create(a[6]); x6 = Avx512F.FusedMultiplyAdd(s, b0, x6); y6 = Avx512F.FusedMultiplyAdd(s, b1, y6); }
            if (n > 7) { s = Vector512.Create(a[7]); x7 = Avx512F.FusedMultiplyAdd(s, b0, x7); y7 = Avx512F.FusedMultiplyAdd(s, b1, y7); }
            if (n > 8) { s = Vector512.Create(a[8]); x8 = Avx512F.FusedMultiplyAdd(s, b0, x8); y8 = Avx512F.FusedMultiplyAdd(s, b1, y8); }
            if (n > 9) { s = Vector512.Create(a[9]); x9 = Avx512F.FusedMultiplyAdd(s, b0, x9); y9 = Avx512F.FusedMultiplyAdd(s, b1, y9); }
            if (n > 10) { s = Vector512.Create(a[10]); x10 = Avx512F.FusedMultiplyAdd(s, b0, x10); y10 = Avx512F.FusedMultiplyAdd(s, b1, y10); }
            if (n > 11) { s = Vector512.Create(a[11]); x11 = Avx512F.FusedMultiplyAdd(s, b0, x11); y11 = Avx512F.FusedMultiplyAdd(s, b1, y11); }
            a += n; b += PanelWidth;
        }
        Store512(c, x0, y0, bias, acc);
        if (n > 1) Store512(c + ldc, x1, y1, bias, acc);
        if (n > 2) Store512(c + 2 * ldc, x2, y2, bias, acc);
        if (n > 3) Store512(c + 3 * ldc, x3, y3, bias, acc);
        if (n > 4) Store512(c + 4 * ldc, x4, y4, bias, acc);
        if (n > 5) Store512(c + 5 * ldc, x5, y5, bias, acc);
        if (n > 6) Store512(c + 6 * ldc, x6, y6, bias, acc);
        if (n > 7) Store512(c + 7 * ldc, x7, y7, bias, acc);
        if (n > 8) Store512(c + 8 * ldc, x8, y8, bias, acc);
        if (n > 9) Store512(c + 9 * ldc, x9, y9, bias, acc);
        if (n > 10) Store512(c + 10 * ldc, x10, y10, bias, acc);
        if (n > 11) Store512(c + 11 * ldc, x11, y11, bias, acc);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store512(float* c, Vector512<float> lo, Vector512<float> hi, float* bias, bool acc)
    {
        if (acc) { lo += Vector512.Load(c); hi += Vector512.Load(c + 16); }
        else if (bias != null) { lo += Vector512.Load(bias); hi += Vector512.Load(bias + 16); }
        Vector512.Store(lo, c);
        Vector512.Store(hi, c + 16);
    }

    // ---------------- AVX2 + FMA: up to 6 rows × 16 columns (12 ymm accumulators) ----------------

    private static void Tile256(int rows, int kc, float* a, float* b, float* c, nint ldc, float* bias, bool acc)
    {
        switch (rows)
        {
            case 1: Tile256<R1>(kc, a, b, c, ldc, bias, acc); break;
            case 2: Tile256<R2>(kc, a, b, c, ldc, bias, acc); break;
            case 3: Tile256<R3>(kc, a, b, c, ldc, bias, acc); break;
            case 4: Tile256<R4>(kc, a, b, c, ldc, bias, acc); break;
            case 5: Tile256<R5>(kc, a, b, c, ldc, bias, acc); break;
            case 6: Tile256<R6>(kc, a, b, c, ldc, bias, acc); break;
            default: throw new ArgumentOutOfRangeException(nameof(rows));
        }
    }

    private static void Tile256<R>(int kc, float* a, float* b, float* c, nint ldc, float* bias, bool acc) where R : struct, IRows
    {
        int n = R.Count;
        Vector256<float> x0 = default, y0 = default, x1 = default, y1 = default, x2 = default, y2 = default,
            x3 = default, y3 = default, x4 = default, y4 = default, x5 = default, y5 = default;
        for (int k = 0; k < kc; k++)
        {
            Vector256<float> b0 = Vector256.Load(b), b1 = Vector256.Load(b + 8), s;
            s = Vector256.Create(a[0]); x0 = Fma.MultiplyAdd(s, b0, x0); y0 = Fma.MultiplyAdd(s, b1, y0);
            if (n > 1) { s = Vector256.Create(a[1]); x1 = Fma.MultiplyAdd(s, b0, x1); y1 = Fma.MultiplyAdd(s, b1, y1); }
            if (n > 2) { s = Vector256.Create(a[2]); x2 = Fma.MultiplyAdd(s, b0, x2); y2 = Fma.MultiplyAdd(s, b1, y2); }
            if (n > 3) { s = Vector256.Create(a[3]); x3 = Fma.MultiplyAdd(s, b0, x3); y3 = Fma.MultiplyAdd(s, b1, y3); }
            if (n > 4) { s = Vector256.Create(a[4]); x4 = Fma.MultiplyAdd(s, b0, x4); y4 = Fma.MultiplyAdd(s, b1, y4); }
            if (n > 5) { s = Vector256.Create(a[5]); x5 = Fma.MultiplyAdd(s, b0, x5); y5 = Fma.MultiplyAdd(s, b1, y5); }
            a += n; b += PanelWidth;
        }
        Store256(c, x0, y0, bias, acc);
        if (n > 1) Store256(c + ldc, x1, y1, bias, acc);
        if (n > 2) Store256(c + 2 * ldc, x2, y2, bias, acc);
        if (n > 3) Store256(c + 3 * ldc, x3, y3, bias, acc);
        if (n > 4) Store256(c + 4 * ldc, x4, y4, bias, acc);
        if (n > 5) Store256(c + 5 * ldc, x5, y5, bias, acc);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store256(float* c, Vector256<float> lo, Vector256<float> hi, float* bias, bool acc)
    {
        if (acc) { lo += Vector256.Load(c); hi += Vector256.Load(c + 8); }
        else if (bias != null) { lo += Vector256.Load(bias); hi += Vector256.Load(bias + 8); }
        Vector256.Store(lo, c);
        Vector256.Store(hi, c + 8);
    }

    // ---------------- Vector128 (SSE/NEON, or software): up to 4 rows × 8 columns ----------------

    private static void Tile128(int rows, int kc, float* a, float* b, float* c, nint ldc, float* bias, bool acc)
    {
        switch (rows)
        {
            case 1: Tile128<R1>(kc, a, b, c, ldc, bias, acc); break;
            case 2: Tile128<R2>(kc, a, b, c, ldc, bias, acc); break;
            case 3: Tile128<R3>(kc, a, b, c, ldc, bias, acc); break;
            case 4: Tile128<R4>(kc, a, b, c, ldc, bias, acc); break;
            default: throw new ArgumentOutOfRangeException(nameof(rows));
        }
    }

    private static void Tile128<R>(int kc, float* a, float* b, float* c, nint ldc, float* bias, bool acc) where R : struct, IRows
    {
        int n = R.Count;
        Vector128<float> x0 = default, y0 = default, x1 = default, y1 = default, x2 = default, y2 = default, x3 = default, y3 = default;
        for (int k = 0; k < kc; k++)
        {
            Vector128<float> b0 = Vector128.Load(b), b1 = Vector128.Load(b + 4), s;
            s = Vector128.Create(a[0]); x0 = Vector128.MultiplyAddEstimate(s, b0, x0); y0 = Vector128.MultiplyAddEstimate(s, b1, y0);
            if (n > 1) { s = Vector128.Create(a[1]); x1 = Vector128.MultiplyAddEstimate(s, b0, x1); y1 = Vector128.MultiplyAddEstimate(s, b1, y1); }
            if (n > 2) { s = Vector128.Create(a[2]); x2 = Vector128.MultiplyAddEstimate(s, b0, x2); y2 = Vector128.MultiplyAddEstimate(s, b1, y2); }
            if (n > 3) { s = Vector128.Create(a[3]); x3 = Vector128.MultiplyAddEstimate(s, b0, x3); y3 = Vector128.MultiplyAddEstimate(s, b1, y3); }
            a += n; b += PanelWidth;
        }
        Store128(c, x0, y0, bias, acc);
        if (n > 1) Store128(c + ldc, x1, y1, bias, acc);
        if (n > 2) Store128(c + 2 * ldc, x2, y2, bias, acc);
        if (n > 3) Store128(c + 3 * ldc, x3, y3, bias, acc);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store128(float* c, Vector128<float> lo, Vector128<float> hi, float* bias, bool acc)
    {
        if (acc) { lo += Vector128.Load(c); hi += Vector128.Load(c + 4); }
        else if (bias != null) { lo += Vector128.Load(bias); hi += Vector128.Load(bias + 4); }
        Vector128.Store(lo, c);
        Vector128.Store(hi, c + 4);
    }

    // ---------------- Scalar reference path ----------------

    private static void TileScalar(int rows, int kc, float* a, float* b, float* c, nint ldc, float* bias, bool acc)
    {
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < PanelWidth; j++)
            {
                float s = 0;
                for (int k = 0; k < kc; k++) s = MathF.FusedMultiplyAdd(a[k * rows + i], b[k * PanelWidth + j], s);
                float* dst = c + i * ldc + j;
                *dst = acc ? *dst + s : bias != null ? s + bias[j] : s;
            }
    }
}
