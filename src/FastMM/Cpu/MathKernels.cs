using System.Numerics.Tensors;

namespace FastMM.Cpu;

/// <summary>Elementwise and row-wise CPU kernels (activations, norms).</summary>
public static class MathKernels
{
    public static void Activate(Span<float> x, Activation act)
    {
        switch (act)
        {
            case Activation.None: return;
            case Activation.Relu: TensorPrimitives.Max(x, 0f, x); return;
            case Activation.Silu:
                for (int i = 0; i < x.Length; i++) { float v = x[i]; x[i] = v / (1f + MathF.Exp(-v)); }
                return;
            case Activation.QuickGelu:
                for (int i = 0; i < x.Length; i++) { float v = x[i]; x[i] = v / (1f + MathF.Exp(-1.702f * v)); }
                return;
            case Activation.GeluTanh:
                for (int i = 0; i < x.Length; i++)
                {
                    float v = x[i];
                    x[i] = 0.5f * v * (1f + MathF.Tanh(0.7978845608028654f * (v + 0.044715f * v * v * v)));
                }
                return;
            case Activation.Gelu:
                for (int i = 0; i < x.Length; i++) { float v = x[i]; x[i] = (float)(0.5 * v * (1.0 + Erf(v * 0.7071067811865476))); }
                return;
            default: throw new ArgumentOutOfRangeException(nameof(act));
        }
    }

    /// <summary>erf to ~1e-7 relative (Numerical Recipes' Chebyshev erfc), enough for exact-GELU parity with PyTorch in F32.</summary>
    public static double Erf(double x)
    {
        double z = Math.Abs(x);
        double t = 1.0 / (1.0 + 0.5 * z);
        double r = t * Math.Exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
            t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
            t * (-0.82215223 + t * 0.17087277)))))))));
        return x >= 0 ? 1.0 - r : r - 1.0;
    }

    /// <summary>LayerNorm over the last dim (rows of length d), biased variance as PyTorch.</summary>
    public static void LayerNorm(ReadOnlySpan<float> x, Span<float> y, int d, ReadOnlySpan<float> gamma, ReadOnlySpan<float> beta, float eps)
    {
        int rows = x.Length / d;
        for (int r = 0; r < rows; r++)
        {
            var xr = x.Slice(r * d, d);
            var yr = y.Slice(r * d, d);
            float mean = TensorPrimitives.Sum(xr) / d;
            TensorPrimitives.Subtract(xr, mean, yr);
            float var = TensorPrimitives.Dot(yr, yr) / d;
            float inv = 1f / MathF.Sqrt(var + eps);
            TensorPrimitives.Multiply(yr, inv, yr);
            TensorPrimitives.MultiplyAdd(yr, gamma, beta, yr);
        }
    }
}
