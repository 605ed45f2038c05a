using System.Numerics.Tensors;

namespace FastMM.Cpu;

/// <summary>An HF Linear weight W [N, K] (row-major, out × in) in the CPU GEMM's layout.</summary>
public sealed class PackedWeight
{
    public int N { get; }
    public int K { get; }
    internal readonly float[] Data;

    private PackedWeight(int n, int k, float[] data) { N = n; K = k; Data = data; }

    public static PackedWeight Pack(ReadOnlySpan<float> w, int n, int k)
    {
        if (w.Length != (long)n * k) throw new ArgumentException($"weight has {w.Length} elements, expected {n}x{k}");
        return new PackedWeight(n, k, w.ToArray());
    }
}

/// <summary>CPU matrix products. Reference-quality placeholder: row-by-row dot products.</summary>
public static class Gemm
{
    /// <summary>C[M, N] = A[M, K] · Wᵀ + bias (bias may be empty).</summary>
    public static void Linear(ReadOnlySpan<float> a, int m, PackedWeight w, ReadOnlySpan<float> bias, Span<float> c)
    {
        unsafe
        {
            fixed (float* pa = a) fixed (float* pb = bias) fixed (float* pc = c)
            {
                float* A = pa, Bias = pb, C = pc; int biasLen = bias.Length;
                int n = w.N, k = w.K; float[] wd = w.Data;
                CpuParallel.For(m, i =>
                {
                    var row = new ReadOnlySpan<float>(A + (long)i * k, k);
                    for (int j = 0; j < n; j++)
                        C[(long)i * n + j] = TensorPrimitives.Dot(row, wd.AsSpan(j * k, k)) + (biasLen > 0 ? Bias[j] : 0f);
                });
            }
        }
    }

    /// <summary>C[M, N] = A[M, K] · B[N, K]ᵀ.</summary>
    public static void MatMulTransposed(ReadOnlySpan<float> a, int m, ReadOnlySpan<float> b, int n, int k, Span<float> c)
    {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                c[i * n + j] = TensorPrimitives.Dot(a.Slice(i * k, k), b.Slice(j * k, k));
    }
}
