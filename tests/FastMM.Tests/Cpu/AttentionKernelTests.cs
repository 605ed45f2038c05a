using FastMM.Cpu;
using Xunit;
using static FastMM.Tests.Cpu.CpuTestUtil;

namespace FastMM.Tests.Cpu;

[Collection(CpuKernelCollection.Name)]
public class AttentionKernelTests
{
    private const double Tolerance = 1e-5;

    /// <summary>Straightforward attention in double: full scores, masks, softmax; a query with no visible key gives zeros.</summary>
    private static double[] Reference(float[] q, float[] k, float[] v, int batch, int tq, int tk, int heads, int d, float scale, bool causal, float[]? mask)
    {
        int hd = heads * d;
        var o = new double[batch * tq * hd];
        var scores = new double[tk];
        for (int b = 0; b < batch; b++)
            for (int h = 0; h < heads; h++)
                for (int i = 0; i < tq; i++)
                {
                    double max = double.NegativeInfinity;
                    for (int j = 0; j < tk; j++)
                    {
                        bool visible = (!causal || j <= i + (tk - tq)) && (mask is null || mask[b * tk + j] != 0f);
                        if (!visible) { scores[j] = double.NegativeInfinity; continue; }
                        double s = 0;
                        for (int x = 0; x < d; x++) s += (double)q[(b * tq + i) * hd + h * d + x] * k[(b * tk + j) * hd + h * d + x];
                        scores[j] = s * scale;
                        max = Math.Max(max, scores[j]);
                    }
                    if (double.IsNegativeInfinity(max)) continue;
                    double sum = 0;
                    for (int j = 0; j < tk; j++) { scores[j] = Math.Exp(scores[j] - max); sum += scores[j]; }
                    for (int j = 0; j < tk; j++)
                        for (int x = 0; x < d; x++)
                            o[(b * tq + i) * hd + h * d + x] += scores[j] / sum * v[(b * tk + j) * hd + h * d + x];
                }
        return o;
    }

    private static void Check(Random rng, int seed, int batch, int tq, int tk, int heads, int d, bool causal, float[]? mask, string what)
    {
        int hd = heads * d;
        float[] q = RandomArray(rng, batch * tq * hd, 2f), k = RandomArray(rng, batch * tk * hd, 2f), v = RandomArray(rng, batch * tk * hd);
        float[] o = Poisoned(batch * tq * hd);
        float scale = 1f / MathF.Sqrt(d);
        AttentionKernel.Run(q, k, v, o, batch, tq, tk, heads, d, scale, causal, mask);
        double err = RelativeL2(o, Reference(q, k, v, batch, tq, tk, heads, d, scale, causal, mask));
        Assert.True(err <= Tolerance, $"attention {what} B={batch} Tq={tq} Tk={tk} H={heads} D={d} causal={causal} mask={mask is not null}: rel L2 {err:E2} (seed {seed})");
    }

    private static float[] RandomMask(Random rng, int batch, int tk)
    {
        var m = new float[batch * tk];
        for (int i = 0; i < m.Length; i++) m[i] = rng.Next(4) == 0 ? 0f : 1f;
        return m;
    }

    [Theory]
    [MemberData(nameof(Levels), MemberType = typeof(CpuTestUtil))]
    public void TinyOddShapes_MatchReference(SimdLevel level)
    {
        int seed = NewSeed(); var rng = new Random(seed);
        With(level, 2, () =>
        {
            for (int trial = 0; trial < 30; trial++)
            {
                int batch = rng.Next(1, 3), tq = rng.Next(1, 18), tk = rng.Next(1, 18), heads = rng.Next(1, 4);
                int d = new[] { 5, 8, 1, 3, 16, 33 }[rng.Next(6)];
                bool causal = rng.Next(2) == 0;
                float[]? mask = rng.Next(2) == 0 ? RandomMask(rng, batch, tk) : null;
                Check(rng, seed, batch, tq, tk, heads, d, causal, mask, $"{level} trial {trial}");
            }
        });
    }

    [Theory]
    [InlineData(50, 50, false, false)]
    [InlineData(77, 77, true, true)]
    [InlineData(130, 130, true, false)]
    [InlineData(65, 200, false, true)]
    [InlineData(200, 65, true, true)]
    public void ModelShapes_MatchReference(int tq, int tk, bool causal, bool masked)
    {
        int seed = NewSeed(); var rng = new Random(seed);
        foreach (var level in new[] { CpuFeatures.Detected, SimdLevel.Scalar })
            With(level, 2, () => Check(rng, seed, 2, tq, tk, 3, 64, causal, masked ? RandomMask(rng, 2, tk) : null, level.ToString()));
    }

    [Fact]
    public void LongSequence_MatchesReference()
    {
        int seed = NewSeed(); var rng = new Random(seed);
        With(CpuFeatures.Detected, 2, () => Check(rng, seed, 1, 1025, 1025, 2, 64, false, null, "T=1025"));
    }

    [Fact]
    public void QueriesWithNoVisibleKey_OutputZeros()
    {
        int seed = NewSeed(); var rng = new Random(seed);
        With(CpuFeatures.Detected, 2, () =>
        {
            // Batch 0: every key padded out. Batch 1: only the last key kept, so causal queries before it see nothing
            // when Tq = Tk, and with Tq > Tk the first Tq − Tk queries precede every key.
            int tk = 70;
            var mask = new float[2 * tk];
            mask[tk + tk - 1] = 1f;
            foreach (bool causal in new[] { false, true })
                Check(rng, seed, 2, 70, tk, 2, 64, causal, mask, "masked-out");
            Check(rng, seed, 1, 90, 20, 2, 8, true, null, "Tq > Tk causal");

            int hd = 2 * 8;
            float[] o = Poisoned(2 * 5 * hd);
            AttentionKernel.Run(RandomArray(rng, 2 * 5 * hd), RandomArray(rng, 2 * 4 * hd), RandomArray(rng, 2 * 4 * hd), o, 2, 5, 4, 2, 8, 0.3f, false, new float[2 * 4]);
            Assert.All(o, x => Assert.Equal(0f, x));
        });
    }
}
