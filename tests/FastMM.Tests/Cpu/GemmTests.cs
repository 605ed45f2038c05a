using FastMM.Cpu;
using Xunit;
using static FastMM.Tests.Cpu.CpuTestUtil;

namespace FastMM.Tests.Cpu;

[Collection(CpuKernelCollection.Name)]
public class GemmTests
{
    private const double Tolerance = 1e-5;

    private static double[] Reference(float[] a, float[] w, float[]? bias, int m, int n, int k)
    {
        var c = new double[m * n];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double s = bias is null ? 0 : bias[j];
                for (int p = 0; p < k; p++) s += (double)a[i * k + p] * w[j * k + p];
                c[i * n + j] = s;
            }
        return c;
    }

    private static void CheckLinear(Random rng, int seed, int m, int n, int k, bool withBias, string what)
    {
        float[] a = RandomArray(rng, m * k), w = RandomArray(rng, n * k);
        float[]? bias = withBias ? RandomArray(rng, n) : null;
        float[] c = Poisoned(m * n);
        Gemm.Linear(a, m, PackedWeight.Pack(w, n, k), bias, c);
        double err = RelativeL2(c, Reference(a, w, bias, m, n, k));
        Assert.True(err <= Tolerance, $"Linear {what} M={m} N={n} K={k} bias={withBias}: rel L2 {err:E2} (seed {seed})");
    }

    [Theory]
    [MemberData(nameof(Levels), MemberType = typeof(CpuTestUtil))]
    public void Linear_RandomOddShapes_MatchDoubleReference(SimdLevel level)
    {
        int seed = NewSeed(); var rng = new Random(seed);
        With(level, 2, () =>
        {
            for (int trial = 0; trial < 40; trial++)
                CheckLinear(rng, seed, rng.Next(1, 68), rng.Next(1, 68), rng.Next(1, 68), rng.Next(2) == 0, $"{level} trial {trial}");
            // Edges of the blocking: exact panel/tile multiples, one past them, and K crossing a K-block.
            CheckLinear(rng, seed, 12, 32, 256, true, $"{level} exact tile");
            CheckLinear(rng, seed, 13, 33, 257, true, $"{level} tile+1");
            CheckLinear(rng, seed, 1, 1, 1, true, $"{level} 1x1x1");
            CheckLinear(rng, seed, 200, 65, 600, false, $"{level} multi M/K-block");
        });
    }

    [Fact]
    public void Linear_SingleRowDecodePath_MatchesDoubleReference()
    {
        // M = 1 takes the dedicated GEMV path on AVX-512 machines: odd K (the k-pair tail), odd N (a partial panel), with and without bias.
        int seed = NewSeed(); var rng = new Random(seed);
        With(CpuFeatures.Detected, 2, () =>
        {
            foreach (var (n, k) in new[] { (1, 1), (31, 7), (33, 64), (576, 960), (1000, 577), (49, 1537) })
            {
                CheckLinear(rng, seed, 1, n, k, true, $"gemv {n}x{k}");
                CheckLinear(rng, seed, 1, n, k, false, $"gemv {n}x{k}");
            }
        });
    }

    [Fact]
    public void Linear_ClipSizedShape_MatchesDoubleReference()
    {
        int seed = NewSeed(); var rng = new Random(seed);
        With(CpuFeatures.Detected, 2, () =>
        {
            CheckLinear(rng, seed, 77, 768, 3072, true, "77x768x3072");
            CheckLinear(rng, seed, 160, 3072, 768, false, "160x3072x768");
        });
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Linear_IsIndependentOfThreadCount(int threads)
    {
        int seed = NewSeed(); var rng = new Random(seed);
        With(CpuFeatures.Detected, threads, () => CheckLinear(rng, seed, 203, 300, 520, true, $"{threads} threads"));
    }

    [Theory]
    [MemberData(nameof(Levels), MemberType = typeof(CpuTestUtil))]
    public void MatMulTransposed_RandomShapes_MatchDoubleReference(SimdLevel level)
    {
        int seed = NewSeed(); var rng = new Random(seed);
        With(level, 2, () =>
        {
            for (int trial = 0; trial < 25; trial++)
            {
                int m = rng.Next(1, 68), n = rng.Next(1, 68), k = rng.Next(1, 68);
                if (trial == 0) (m, n, k) = (130, 97, 300);
                float[] a = RandomArray(rng, m * k), b = RandomArray(rng, n * k), c = Poisoned(m * n);
                Gemm.MatMulTransposed(a, m, b, n, k, c);
                double err = RelativeL2(c, Reference(a, b, null, m, n, k));
                Assert.True(err <= Tolerance, $"MatMulTransposed {level} M={m} N={n} K={k}: rel L2 {err:E2} (seed {seed})");
            }
        });
    }

    [Fact]
    public void Linear_RejectsWrongBiasLength()
    {
        var w = PackedWeight.Pack(new float[6], 2, 3);
        Assert.Throws<ArgumentException>(() => Gemm.Linear(new float[3], 1, w, new float[3], new float[2]));
    }

    [Fact]
    public void CpuParallel_For_CoversEveryIndexOnce_AndPropagatesExceptions()
    {
        // Many back-to-back calls: a worker finishing late must never let the next call return early.
        for (int rep = 0; rep < 2000; rep++)
        {
            var hits = new int[64];
            CpuParallel.For(hits.Length, i => Interlocked.Increment(ref hits[i]));
            Assert.All(hits, h => Assert.Equal(1, h));
        }
        var e = Assert.Throws<InvalidOperationException>(() => CpuParallel.For(100, i => { if (i == 57) throw new InvalidOperationException("boom"); }));
        Assert.Equal("boom", e.Message);
        // Nested calls run inline rather than deadlocking on the busy pool.
        int total = 0;
        CpuParallel.For(4, _ => CpuParallel.For(5, _ => Interlocked.Increment(ref total)));
        Assert.Equal(20, total);
    }
}
