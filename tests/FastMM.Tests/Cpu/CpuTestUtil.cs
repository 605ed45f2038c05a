using FastMM.Cpu;
using Xunit;

namespace FastMM.Tests.Cpu;

/// <summary>The CPU kernel tests mutate process-wide dispatch settings, so they share one serial collection.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class CpuKernelCollection
{
    public const string Name = "CPU kernels";
}

internal static class CpuTestUtil
{
    /// <summary>Every SIMD level this machine can run (forcing a higher one is clamped, so it would just repeat).</summary>
    public static IEnumerable<object[]> Levels() =>
        Enum.GetValues<SimdLevel>().Where(l => l <= CpuFeatures.Detected).Select(l => new object[] { l });

    /// <summary>A fresh seed per run, so repeated CI runs explore new inputs; failures print it.</summary>
    public static int NewSeed() => Random.Shared.Next();

    public static float[] RandomArray(Random rng, int n, float scale = 1f)
    {
        var x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float)(rng.NextDouble() * 2 - 1) * scale;
        return x;
    }

    public static float[] Poisoned(int n)
    {
        var x = new float[n];
        Array.Fill(x, float.NaN);
        return x;
    }

    /// <summary>‖actual − expected‖₂ / ‖expected‖₂ (absolute when expected is all zero); NaN anywhere gives +∞.</summary>
    public static double RelativeL2(ReadOnlySpan<float> actual, ReadOnlySpan<double> expected)
    {
        double num = 0, den = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            if (!float.IsFinite(actual[i])) return double.PositiveInfinity;
            double d = actual[i] - expected[i];
            num += d * d; den += expected[i] * expected[i];
        }
        return den == 0 ? Math.Sqrt(num) : Math.Sqrt(num / den);
    }

    /// <summary>Runs body with the dispatch level and thread count forced, restoring both afterwards.</summary>
    public static void With(SimdLevel level, int threads, Action body)
    {
        var oldLevel = CpuFeatures.Override; int oldThreads = CpuParallel.Threads;
        CpuFeatures.Override = level; CpuParallel.Threads = threads;
        try { body(); }
        finally { CpuFeatures.Override = oldLevel; CpuParallel.Threads = oldThreads; }
    }
}
