using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace FastMM.Cpu;

/// <summary>
/// Symmetric int8 rows and their products with F32 vectors, for the int8 KV cache: a row is stored as q = clamp(round(x / s), ±127)
/// with s = max|x| / 127 (round half to even, as the CUDA kernel's __float2int_rn), and read back as s·q. SIMD-dispatched on
/// <see cref="CpuFeatures.Level"/> (AVX-512, AVX2, portable Vector128), with a scalar tail.
/// </summary>
public static unsafe class Int8Kernels
{
    private const int Step = 16;

    /// <summary>Quantizes x into q (same length) and returns its scale s; an all-zero row gets s = 0 and zeros.</summary>
    public static float Quantize(ReadOnlySpan<float> x, Span<sbyte> q)
    {
        if (q.Length != x.Length) throw new ArgumentException("Quantize: x and q differ in length");
        var level = CpuFeatures.Level;
        fixed (float* px = x) fixed (sbyte* pq = q)
        {
            int n = x.Length;
            float absMax = AbsMax(level, px, n);
            if (absMax == 0f) { q.Clear(); return 0f; }
            // A NaN or ∞ in x makes the scale non-finite, so the row reads back as NaN: poisoned, as in the F32 cache, not hidden.
            float scale = absMax / 127f;
            int i = 0;
            if (level >= SimdLevel.Avx512)
            {
                var s = Vector512.Create(scale);
                for (; i <= n - Step; i += Step)
                    Avx512F.ConvertToVector128SByte(Vector512.ConvertToInt32(Clamp127(Vector512.Round(Vector512.Load(px + i) / s)))).Store(pq + i);
            }
            else if (level >= SimdLevel.Avx2)
            {
                var s = Vector256.Create(scale);
                for (; i <= n - Step; i += Step)
                {
                    var lo = Vector256.ConvertToInt32(Clamp127(Vector256.Round(Vector256.Load(px + i) / s)));
                    var hi = Vector256.ConvertToInt32(Clamp127(Vector256.Round(Vector256.Load(px + i + 8) / s)));
                    var shorts = Vector256.Narrow(lo, hi);
                    Vector128.Narrow(shorts.GetLower(), shorts.GetUpper()).Store(pq + i);
                }
            }
            else if (level >= SimdLevel.Vector128)
            {
                var s = Vector128.Create(scale);
                for (; i <= n - Step; i += Step)
                {
                    var a = Vector128.ConvertToInt32(Clamp127(Vector128.Round(Vector128.Load(px + i) / s)));
                    var b = Vector128.ConvertToInt32(Clamp127(Vector128.Round(Vector128.Load(px + i + 4) / s)));
                    var c = Vector128.ConvertToInt32(Clamp127(Vector128.Round(Vector128.Load(px + i + 8) / s)));
                    var d = Vector128.ConvertToInt32(Clamp127(Vector128.Round(Vector128.Load(px + i + 12) / s)));
                    Vector128.Narrow(Vector128.Narrow(a, b), Vector128.Narrow(c, d)).Store(pq + i);
                }
            }
            for (; i < n; i++) pq[i] = (sbyte)Math.Clamp(MathF.Round(px[i] / scale), -127f, 127f);
            return scale;
        }
    }

    private static float AbsMax(SimdLevel level, float* x, int n)
    {
        int i = 0;
        float max = 0f;
        // Vector Max propagates NaN (IEEE maximum), as MathF.Max does, so a NaN is never dropped.
        if (level >= SimdLevel.Avx512 && n >= 16)
        {
            var m = Vector512<float>.Zero;
            for (; i <= n - 16; i += 16) m = Vector512.Max(m, Vector512.Abs(Vector512.Load(x + i)));
            var half = Vector256.Max(m.GetLower(), m.GetUpper());
            max = Max(Vector128.Max(half.GetLower(), half.GetUpper()));
        }
        else if (level >= SimdLevel.Avx2 && n >= 8)
        {
            var m = Vector256<float>.Zero;
            for (; i <= n - 8; i += 8) m = Vector256.Max(m, Vector256.Abs(Vector256.Load(x + i)));
            max = Max(Vector128.Max(m.GetLower(), m.GetUpper()));
        }
        else if (level >= SimdLevel.Vector128 && n >= 4)
        {
            var m = Vector128<float>.Zero;
            for (; i <= n - 4; i += 4) m = Vector128.Max(m, Vector128.Abs(Vector128.Load(x + i)));
            max = Max(m);
        }
        for (; i < n; i++) max = MathF.Max(max, MathF.Abs(x[i]));
        return max;
    }

    private static float Max(Vector128<float> v) => MathF.Max(MathF.Max(v[0], v[1]), MathF.Max(v[2], v[3]));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Clamp127(Vector512<float> v) => Vector512.Min(Vector512.Max(v, Vector512.Create(-127f)), Vector512.Create(127f));
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Clamp127(Vector256<float> v) => Vector256.Min(Vector256.Max(v, Vector256.Create(-127f)), Vector256.Create(127f));
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<float> Clamp127(Vector128<float> v) => Vector128.Min(Vector128.Max(v, Vector128.Create(-127f)), Vector128.Create(127f));

    /// <summary>Σ x[i]·q[i] over n values (the caller multiplies by the row's scale once).</summary>
    internal static float Dot(SimdLevel level, float* x, sbyte* q, int n)
    {
        int i = 0;
        float sum = 0f;
        if (level >= SimdLevel.Avx512)
        {
            var acc = Vector512<float>.Zero;
            for (; i <= n - Step; i += Step) acc = Vector512.FusedMultiplyAdd(Widen512(q + i), Vector512.Load(x + i), acc);
            sum = Vector512.Sum(acc);
        }
        else if (level >= SimdLevel.Avx2)
        {
            Vector256<float> a0 = Vector256<float>.Zero, a1 = Vector256<float>.Zero;
            for (; i <= n - Step; i += Step)
            {
                a0 = Vector256.FusedMultiplyAdd(Widen256(q + i), Vector256.Load(x + i), a0);
                a1 = Vector256.FusedMultiplyAdd(Widen256(q + i + 8), Vector256.Load(x + i + 8), a1);
            }
            sum = Vector256.Sum(a0 + a1);
        }
        else if (level >= SimdLevel.Vector128)
        {
            Vector128<float> a0 = Vector128<float>.Zero, a1 = Vector128<float>.Zero;
            for (; i <= n - Step; i += Step)
            {
                var (q0, q1, q2, q3) = Widen128(q + i);
                a0 = Vector128.MultiplyAddEstimate(q0, Vector128.Load(x + i), a0);
                a1 = Vector128.MultiplyAddEstimate(q1, Vector128.Load(x + i + 4), a1);
                a0 = Vector128.MultiplyAddEstimate(q2, Vector128.Load(x + i + 8), a0);
                a1 = Vector128.MultiplyAddEstimate(q3, Vector128.Load(x + i + 12), a1);
            }
            sum = Vector128.Sum(a0 + a1);
        }
        for (; i < n; i++) sum += x[i] * q[i];
        return sum;
    }

    /// <summary>acc[i] += factor·q[i] over n values (a value row weighted by its softmax probability times its scale).</summary>
    internal static void MultiplyAdd(SimdLevel level, sbyte* q, float factor, float* acc, int n)
    {
        int i = 0;
        if (level >= SimdLevel.Avx512)
        {
            var f = Vector512.Create(factor);
            for (; i <= n - Step; i += Step) Vector512.FusedMultiplyAdd(Widen512(q + i), f, Vector512.Load(acc + i)).Store(acc + i);
        }
        else if (level >= SimdLevel.Avx2)
        {
            var f = Vector256.Create(factor);
            for (; i <= n - 8; i += 8) Vector256.FusedMultiplyAdd(Widen256(q + i), f, Vector256.Load(acc + i)).Store(acc + i);
        }
        else if (level >= SimdLevel.Vector128)
        {
            var f = Vector128.Create(factor);
            for (; i <= n - Step; i += Step)
            {
                var (q0, q1, q2, q3) = Widen128(q + i);
                Vector128.MultiplyAddEstimate(q0, f, Vector128.Load(acc + i)).Store(acc + i);
                Vector128.MultiplyAddEstimate(q1, f, Vector128.Load(acc + i + 4)).Store(acc + i + 4);
                Vector128.MultiplyAddEstimate(q2, f, Vector128.Load(acc + i + 8)).Store(acc + i + 8);
                Vector128.MultiplyAddEstimate(q3, f, Vector128.Load(acc + i + 12)).Store(acc + i + 12);
            }
        }
        for (; i < n; i++) acc[i] += factor * q[i];
    }

    /// <summary>dst[i] = scale·q[i] over n values.</summary>
    internal static void Dequantize(SimdLevel level, sbyte* q, float scale, float* dst, int n)
    {
        int i = 0;
        if (level >= SimdLevel.Avx512)
        {
            var s = Vector512.Create(scale);
            for (; i <= n - Step; i += Step) (Widen512(q + i) * s).Store(dst + i);
        }
        else if (level >= SimdLevel.Avx2)
        {
            var s = Vector256.Create(scale);
            for (; i <= n - 8; i += 8) (Widen256(q + i) * s).Store(dst + i);
        }
        else if (level >= SimdLevel.Vector128)
        {
            var s = Vector128.Create(scale);
            for (; i <= n - Step; i += Step)
            {
                var (q0, q1, q2, q3) = Widen128(q + i);
                (q0 * s).Store(dst + i);
                (q1 * s).Store(dst + i + 4);
                (q2 * s).Store(dst + i + 8);
                (q3 * s).Store(dst + i + 12);
            }
        }
        for (; i < n; i++) dst[i] = scale * q[i];
    }

    /// <summary>16 int8 → 16 floats (vpmovsxbd).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Widen512(sbyte* q) => Vector512.ConvertToSingle(Avx512F.ConvertToVector512Int32(Vector128.Load(q)));

    /// <summary>8 int8 → 8 floats (vpmovsxbd from memory).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Widen256(sbyte* q) => Vector256.ConvertToSingle(Avx2.ConvertToVector256Int32(q));

    /// <summary>16 int8 → four vectors of 4 floats, portable (Arm64 NEON or SSE).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (Vector128<float>, Vector128<float>, Vector128<float>, Vector128<float>) Widen128(sbyte* q)
    {
        var bytes = Vector128.Load(q);
        Vector128<short> lo = Vector128.WidenLower(bytes), hi = Vector128.WidenUpper(bytes);
        return (Vector128.ConvertToSingle(Vector128.WidenLower(lo)), Vector128.ConvertToSingle(Vector128.WidenUpper(lo)),
            Vector128.ConvertToSingle(Vector128.WidenLower(hi)), Vector128.ConvertToSingle(Vector128.WidenUpper(hi)));
    }
}
