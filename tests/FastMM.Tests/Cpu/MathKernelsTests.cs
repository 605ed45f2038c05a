using FastMM.Cpu;
using Xunit;
using static FastMM.Tests.Cpu.CpuTestUtil;

namespace FastMM.Tests.Cpu;

[Collection(CpuKernelCollection.Name)]
public class MathKernelsTests
{
    /// <summary>erf in double to ~1e-15: Taylor series for |x| &lt; 2.5, else 1 − erfc by its continued fraction.</summary>
    private static double ErfcExact(double z)
    {
        if (z < 0) return 2 - ErfcExact(-z);
        if (z < 2.5)
        {
            double term = z, sum = z;
            for (int n = 1; n < 100; n++) { term *= -z * z / n; sum += term / (2 * n + 1); }
            return 1 - 2 / Math.Sqrt(Math.PI) * sum;
        }
        double f = z;
        for (int n = 300; n >= 1; n--) f = z + n / 2.0 / f;
        return Math.Exp(-z * z) / (Math.Sqrt(Math.PI) * f);
    }

    private static double GeluExact(double x) => 0.5 * x * ErfcExact(-x / Math.Sqrt(2));

    private static float[] Inputs(Random rng, int n, double range)
    {
        var x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float)((rng.NextDouble() * 2 - 1) * range);
        x[0] = 0f; if (n > 1) x[1] = -0f;
        return x;
    }

    [Theory]
    [MemberData(nameof(Levels), MemberType = typeof(CpuTestUtil))]
    public void ExactGelu_IsWithin1e6RelativeOfDoubleMath(SimdLevel level)
    {
        int seed = NewSeed(); var rng = new Random(seed);
        With(level, 1, () =>
        {
            foreach (double range in new[] { 0.01, 1, 4, 9 })
            {
                float[] x = Inputs(rng, 1000 + rng.Next(40), range), y = (float[])x.Clone();
                MathKernels.Activate(y, Activation.Gelu);
                for (int i = 0; i < x.Length; i++)
                {
                    double want = GeluExact(x[i]);
                    Assert.True(Math.Abs(y[i] - want) <= 1e-6 * Math.Abs(want) + 1e-37,
                        $"{level} gelu({x[i]:R}) = {y[i]:R}, want {want:R} (seed {seed})");
                }
            }
        });
    }

    [Fact]
    public void Erf_MatchesDoubleReference()
    {
        for (double x = -6; x <= 6; x += 0.01)
            Assert.True(Math.Abs(MathKernels.Erf(x) - (1 - ErfcExact(x))) <= 2e-7, $"erf({x})");
    }

    [Theory]
    [MemberData(nameof(Levels), MemberType = typeof(CpuTestUtil))]
    public void SigmoidGatedActivations_MatchDoubleMath(SimdLevel level)
    {
        int seed = NewSeed(); var rng = new Random(seed);
        var cases = new (Activation Act, Func<double, double> Want)[]
        {
            // 0.5·v·(1 + tanh u) written as v·sigmoid(2u): the same function without double's own 1 + tanh cancellation.
            (Activation.GeluTanh, v => v / (1 + Math.Exp(-2 * Math.Sqrt(2 / Math.PI) * (v + 0.044715 * v * v * v)))),
            (Activation.QuickGelu, v => v / (1 + Math.Exp(-1.702 * v))),
            (Activation.Silu, v => v / (1 + Math.Exp(-v))),
            (Activation.Relu, v => Math.Max(v, 0)),
        };
        With(level, 1, () =>
        {
            foreach (var (act, want) in cases)
            {
                float[] x = Inputs(rng, 777, 12), y = (float[])x.Clone();
                MathKernels.Activate(y, act);
                double err = RelativeL2(y, x.Select(v => want(v)).ToArray());
                Assert.True(err <= 1e-6, $"{level} {act}: rel L2 {err:E2} (seed {seed})");
                for (int i = 0; i < x.Length; i++)
                {
                    double w = want(x[i]);
                    Assert.True(Math.Abs(y[i] - w) <= 2e-5 * Math.Abs(w) + 1e-30, $"{level} {act}({x[i]:R}) = {y[i]:R}, want {w:R} (seed {seed})");
                }
            }
        });
    }

    [Theory]
    [MemberData(nameof(Levels), MemberType = typeof(CpuTestUtil))]
    public void LayerNorm_MatchesDoubleReference(SimdLevel level)
    {
        int seed = NewSeed(); var rng = new Random(seed);
        With(level, 1, () =>
        {
            foreach (int d in new[] { 1, 7, 16, 33, 768, 1001 })
            {
                int rows = rng.Next(1, 5);
                float[] x = RandomArray(rng, rows * d, 3f), g = RandomArray(rng, d), b = RandomArray(rng, d), y = Poisoned(rows * d);
                for (int i = 0; i < x.Length; i++) x[i] += 5f; // an offset mean exercises the two-pass variance
                MathKernels.LayerNorm(x, y, d, g, b, 1e-5f);
                var want = new double[rows * d];
                for (int r = 0; r < rows; r++)
                {
                    double mean = 0, var = 0;
                    for (int i = 0; i < d; i++) mean += x[r * d + i];
                    mean /= d;
                    for (int i = 0; i < d; i++) var += (x[r * d + i] - mean) * (x[r * d + i] - mean);
                    double rstd = 1 / Math.Sqrt(var / d + 1e-5);
                    for (int i = 0; i < d; i++) want[r * d + i] = (x[r * d + i] - mean) * rstd * g[i] + b[i];
                }
                double err = RelativeL2(y, want);
                Assert.True(err <= 1e-5, $"{level} LayerNorm d={d}: rel L2 {err:E2} (seed {seed})");
            }
        });
    }
}
