using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace FastMM.Cpu;

/// <summary>Elementwise and row-wise CPU kernels (activations, norms), SIMD-dispatched on <see cref="CpuFeatures.Level"/>.</summary>
public static unsafe class MathKernels
{
    private const float QuickGeluAlpha = 1.702f;
    private const float TanhGeluC0 = 0.7978845608028654f; // √(2/π)
    private const float TanhGeluC1 = 0.044715f;

    public static void Activate(Span<float> x, Activation act)
    {
        switch (act)
        {
            case Activation.None: return;
            case Activation.Relu: TensorPrimitives.Max(x, 0f, x); return;
            case Activation.Gelu: GeluErf(x); return;
            case Activation.Silu:
            case Activation.QuickGelu:
            case Activation.GeluTanh: SigmoidGated(x, act); return;
            default: throw new ArgumentOutOfRangeException(nameof(act));
        }
    }

    // ---------------- x · sigmoid(g(x)): SiLU (g = x), quick_gelu (g = 1.702x), tanh GELU (g = 2√(2/π)(x + 0.044715x³)) ----------------
    // tanh GELU uses 0.5·(1 + tanh u) = sigmoid(2u), one exp instead of a tanh.

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float GateArgument(float v, Activation act) => act switch
    {
        Activation.Silu => v,
        Activation.QuickGelu => QuickGeluAlpha * v,
        _ => 2f * TanhGeluC0 * (v + TanhGeluC1 * v * v * v),
    };

    private static void SigmoidGated(Span<float> x, Activation act)
    {
        fixed (float* p = x)
        {
            int n = x.Length, i = 0;
            SimdLevel level = CpuFeatures.Level;
            if (level >= SimdLevel.Avx512)
            {
                for (; i <= n - 16; i += 16)
                {
                    var v = Vector512.Load(p + i);
                    var g = act switch
                    {
                        Activation.Silu => v,
                        Activation.QuickGelu => v * QuickGeluAlpha,
                        _ => (v + v * v * v * TanhGeluC1) * (2f * TanhGeluC0),
                    };
                    (v / (Vector512<float>.One + Vector512.Exp(-g))).Store(p + i);
                }
            }
            else if (level >= SimdLevel.Avx2)
            {
                for (; i <= n - 8; i += 8)
                {
                    var v = Vector256.Load(p + i);
                    var g = act switch
                    {
                        Activation.Silu => v,
                        Activation.QuickGelu => v * QuickGeluAlpha,
                        _ => (v + v * v * v * TanhGeluC1) * (2f * TanhGeluC0),
                    };
                    (v / (Vector256<float>.One + Vector256.Exp(-g))).Store(p + i);
                }
            }
            for (; i < n; i++) { float v = p[i]; p[i] = v / (1f + MathF.Exp(-GateArgument(v, act))); }
        }
    }

    // ---------------- exact GELU: 0.5·x·(1 + erf(x/√2)) ----------------
    // Computed in double through erfc, so the x < 0 tail (where 1 + erf cancels) keeps its relative accuracy:
    //   x ≥ 0: x·(1 − erfc(z)/2),  x < 0: x·erfc(z)/2,  z = |x|/√2.

    private static void GeluErf(Span<float> x)
    {
        fixed (float* p = x)
        {
            int n = x.Length, i = 0;
            SimdLevel level = CpuFeatures.Level;
            if (level >= SimdLevel.Avx512)
            {
                for (; i <= n - 16; i += 16)
                {
                    var v = Vector512.Load(p + i);
                    Vector512.Narrow(GeluErf(Vector512.WidenLower(v)), GeluErf(Vector512.WidenUpper(v))).Store(p + i);
                }
            }
            else if (level >= SimdLevel.Avx2)
            {
                for (; i <= n - 8; i += 8)
                {
                    var v = Vector256.Load(p + i);
                    Vector256.Narrow(GeluErf(Vector256.WidenLower(v)), GeluErf(Vector256.WidenUpper(v))).Store(p + i);
                }
            }
            for (; i < n; i++) p[i] = (float)GeluErf((double)p[i]);
        }
    }

    private static double GeluErf(double x)
    {
        double r = Erfc(Math.Abs(x) * 0.7071067811865476);
        return x >= 0 ? x * (1.0 - 0.5 * r) : 0.5 * x * r;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<double> GeluErf(Vector512<double> x)
    {
        var z = Vector512.Abs(x) * 0.7071067811865476;
        var t = Vector512<double>.One / (Vector512<double>.One + 0.5 * z);
        var poly = ErfcPolynomial(t);
        var r = t * Vector512.Exp(poly - z * z);
        var half = 0.5 * x * r;
        return Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(x, Vector512<double>.Zero), x - half, half);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<double> GeluErf(Vector256<double> x)
    {
        var z = Vector256.Abs(x) * 0.7071067811865476;
        var t = Vector256<double>.One / (Vector256<double>.One + 0.5 * z);
        var poly = ErfcPolynomial(t);
        var r = t * Vector256.Exp(poly - z * z);
        var half = 0.5 * x * r;
        return Vector256.ConditionalSelect(Vector256.GreaterThanOrEqual(x, Vector256<double>.Zero), x - half, half);
    }

    // Numerical Recipes' Chebyshev fit (erfc(z) = t·exp(−z² + P(t)), t = 1/(1 + z/2)), fractional error < 1.2e-7 for all z ≥ 0.
    private const double E0 = -1.26551223, E1 = 1.00002368, E2 = 0.37409196, E3 = 0.09678418, E4 = -0.18628806,
        E5 = 0.27886807, E6 = -1.13520398, E7 = 1.48851587, E8 = -0.82215223, E9 = 0.17087277;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<double> ErfcPolynomial(Vector512<double> t)
    {
        var p = Vector512.FusedMultiplyAdd(Vector512.Create(E9), t, Vector512.Create(E8));
        p = Vector512.FusedMultiplyAdd(p, t, Vector512.Create(E7));
        p = Vector512.FusedMultiplyAdd(p, t, Vector512.Create(E6));
        p = Vector512.FusedMultiplyAdd(p, t, Vector512.Create(E5));
        p = Vector512.FusedMultiplyAdd(p, t, Vector512.Create(E4));
        p = Vector512.FusedMultiplyAdd(p, t, Vector512.Create(E3));
        p = Vector512.FusedMultiplyAdd(p, t, Vector512.Create(E2));
        p = Vector512.FusedMultiplyAdd(p, t, Vector512.Create(E1));
        return Vector512.FusedMultiplyAdd(p, t, Vector512.Create(E0));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<double> ErfcPolynomial(Vector256<double> t)
    {
        var p = Vector256.FusedMultiplyAdd(Vector256.Create(E9), t, Vector256.Create(E8));
        p = Vector256.FusedMultiplyAdd(p, t, Vector256.Create(E7));
        p = Vector256.FusedMultiplyAdd(p, t, Vector256.Create(E6));
        p = Vector256.FusedMultiplyAdd(p, t, Vector256.Create(E5));
        p = Vector256.FusedMultiplyAdd(p, t, Vector256.Create(E4));
        p = Vector256.FusedMultiplyAdd(p, t, Vector256.Create(E3));
        p = Vector256.FusedMultiplyAdd(p, t, Vector256.Create(E2));
        p = Vector256.FusedMultiplyAdd(p, t, Vector256.Create(E1));
        return Vector256.FusedMultiplyAdd(p, t, Vector256.Create(E0));
    }

    private static double Erfc(double z) // z ≥ 0
    {
        double t = 1.0 / (1.0 + 0.5 * z);
        return t * Math.Exp(-z * z + E0 + t * (E1 + t * (E2 + t * (E3 + t * (E4 + t * (E5 + t * (E6 + t * (E7 + t * (E8 + t * E9)))))))));
    }

    /// <summary>erf to ~1e-7 relative (Numerical Recipes' Chebyshev erfc), enough for exact-GELU parity with PyTorch in F32.</summary>
    public static double Erf(double x)
    {
        double r = Erfc(Math.Abs(x));
        return x >= 0 ? 1.0 - r : r - 1.0;
    }

    /// <summary>LayerNorm over the last dim (rows of length d), biased variance as PyTorch.</summary>
    public static void LayerNorm(ReadOnlySpan<float> x, Span<float> y, int d, ReadOnlySpan<float> gamma, ReadOnlySpan<float> beta, float eps)
    {
        if (gamma.Length < d || beta.Length < d) throw new ArgumentException("LayerNorm: gamma/beta shorter than the row");
        int rows = x.Length / d;
        if (y.Length < rows * d) throw new ArgumentException("LayerNorm: output shorter than input");
        SimdLevel level = CpuFeatures.Level;
        fixed (float* px = x) fixed (float* py = y) fixed (float* pg = gamma) fixed (float* pb = beta)
            for (int r = 0; r < rows; r++)
                LayerNormRow(px + (long)r * d, py + (long)r * d, d, pg, pb, eps, level);
    }

    /// <summary>
    /// Three passes over a row: mean, variance of the centred values (two-pass, so no E[x²] − mean² cancellation),
    /// then y = (x − mean)·rstd·γ + β in one fused sweep.
    /// </summary>
    private static void LayerNormRow(float* x, float* y, int d, float* gamma, float* beta, float eps, SimdLevel level)
    {
        float mean = TensorPrimitives.Sum(new ReadOnlySpan<float>(x, d)) / d;
        int i = 0;
        float sq = 0;
        if (level >= SimdLevel.Avx512)
        {
            Vector512<float> acc0 = default, acc1 = default, m = Vector512.Create(mean);
            for (; i <= d - 32; i += 32)
            {
                var a = Vector512.Load(x + i) - m; var b = Vector512.Load(x + i + 16) - m;
                acc0 = Vector512.FusedMultiplyAdd(a, a, acc0); acc1 = Vector512.FusedMultiplyAdd(b, b, acc1);
            }
            sq = Vector512.Sum(acc0 + acc1);
        }
        for (; i < d; i++) { float c = x[i] - mean; sq += c * c; }
        float rstd = 1f / MathF.Sqrt(sq / d + eps);

        i = 0;
        if (level >= SimdLevel.Avx512)
        {
            Vector512<float> m = Vector512.Create(mean), s = Vector512.Create(rstd);
            for (; i <= d - 16; i += 16)
                Vector512.FusedMultiplyAdd((Vector512.Load(x + i) - m) * s, Vector512.Load(gamma + i), Vector512.Load(beta + i)).Store(y + i);
        }
        else if (level >= SimdLevel.Avx2)
        {
            Vector256<float> m = Vector256.Create(mean), s = Vector256.Create(rstd);
            for (; i <= d - 8; i += 8)
                Vector256.FusedMultiplyAdd((Vector256.Load(x + i) - m) * s, Vector256.Load(gamma + i), Vector256.Load(beta + i)).Store(y + i);
        }
        for (; i < d; i++) y[i] = (x[i] - mean) * rstd * gamma[i] + beta[i];
    }
}
