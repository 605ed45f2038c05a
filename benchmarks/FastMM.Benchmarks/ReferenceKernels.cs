using System.Numerics.Tensors;

namespace FastMM.Benchmarks;

/// <summary>
/// The kernels as they were before the optimisation (row-by-row dot products over Parallel.For), kept so a run can
/// report before/after in the same process.
/// </summary>
public static class ReferenceKernels
{
    public static void Linear(float[] a, int m, float[] w, int n, int k, float[] bias, float[] c, int threads)
    {
        Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, t =>
        {
            int start = (int)((long)m * t / threads), end = (int)((long)m * (t + 1) / threads);
            for (int i = start; i < end; i++)
            {
                var row = a.AsSpan(i * k, k);
                for (int j = 0; j < n; j++) c[i * n + j] = TensorPrimitives.Dot(row, w.AsSpan(j * k, k)) + bias[j];
            }
        });
    }
}
