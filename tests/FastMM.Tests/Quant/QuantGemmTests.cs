using System.Runtime.Intrinsics.X86;
using FastMM.Cpu;
using FastMM.Quant;
using FastMM.Tests.Cpu;
using Xunit;
using static FastMM.Tests.Cpu.CpuTestUtil;

namespace FastMM.Tests.Quant;

[Collection(CpuKernelCollection.Name)]
public class QuantGemmTests
{
    /// <summary>The kernel must reproduce its own math (dequantized W · activation-quantized X) to float rounding: see <see cref="Error"/>.</summary>
    private const double ExactTolerance = 1e-5;

    private static readonly int[] Ms = [1, 2, 3, 5, 17];
    private static readonly int[] Ns = [1, 7, 33, 65];
    private static readonly int[] Ks = [32, 64, 96, 128, 160, 384, 4096];

    /// <summary>Every SIMD level this machine runs, and on AVX-VNNI machines the AVX2 level both with and without VNNI.</summary>
    public static IEnumerable<object[]> Paths()
    {
        foreach (var level in Enum.GetValues<SimdLevel>().Where(l => l <= CpuFeatures.Detected))
        {
            yield return [level, true];
            if (level == SimdLevel.Avx2 && AvxVnni.IsSupported) yield return [level, false];
        }
    }

    private static void With(SimdLevel level, bool vnni, int threads, Action body)
    {
        bool old = QuantGemm.AllowAvxVnni;
        QuantGemm.AllowAvxVnni = vnni;
        try { CpuTestUtil.With(level, threads, body); }
        finally { QuantGemm.AllowAvxVnni = old; }
    }

    /// <summary>X as the kernels see it: each block of 32 quantized to int8 with its scale, then multiplied back out in double.</summary>
    private static double[] QuantizedX(float[] x, int m, int k)
    {
        var result = new double[m * k];
        var q = new sbyte[k];
        float[] d = new float[k / 32], s = new float[k / 32];
        for (int r = 0; r < m; r++)
        {
            QuantGemm.QuantizeActivations(x.AsSpan(r * k, k), q, d, s);
            for (int i = 0; i < k; i++) result[r * k + i] = (double)d[i / 32] * q[i];
        }
        return result;
    }

    /// <summary>Y = X·Wᵀ + bias in double, and the magnitude Σ|terms| of each output (what float rounding scales with).</summary>
    private static (double[] Y, double[] Magnitude) Reference(float[] w, double[] x, float[]? bias, int m, int n, int k)
    {
        var y = new double[m * n];
        var magnitude = new double[m * n];
        for (int r = 0; r < m; r++)
            for (int j = 0; j < n; j++)
            {
                double sum = bias is null ? 0 : bias[j], abs = Math.Abs(sum);
                for (int i = 0; i < k; i++)
                {
                    double t = w[j * k + i] * x[r * k + i];
                    sum += t; abs += Math.Abs(t);
                }
                y[r * n + j] = sum;
                magnitude[r * n + j] = abs;
            }
        return (y, magnitude);
    }

    private static (double[] Y, double[] Magnitude) Reference(float[] w, float[] x, float[]? bias, int m, int n, int k)
        => Reference(w, x.Select(v => (double)v).ToArray(), bias, m, n, k);

    /// <summary>
    /// ‖actual − expected‖₂ / max(‖expected‖₂, 1% of ‖magnitude‖₂): relative L2, except that a result which cancels to
    /// near zero (its terms over 100× larger, as a handful of random outputs sometimes do) is held to 1e-7 of its terms'
    /// size, the accuracy float accumulation can give it. NaN anywhere gives +∞.
    /// </summary>
    private static double Error(ReadOnlySpan<float> actual, (double[] Y, double[] Magnitude) expected)
    {
        double num = 0, den = 0, mag = 0;
        for (int i = 0; i < expected.Y.Length; i++)
        {
            if (!float.IsFinite(actual[i])) return double.PositiveInfinity;
            double d = actual[i] - expected.Y[i];
            num += d * d; den += expected.Y[i] * expected.Y[i]; mag += expected.Magnitude[i] * expected.Magnitude[i];
        }
        double floor = Math.Max(den, 1e-4 * mag);
        return floor == 0 ? Math.Sqrt(num) : Math.Sqrt(num / floor);
    }

    private static float[] Run(QuantizedMatrix w, float[] x, int m, float[]? bias, Activation act = Activation.None)
    {
        var y = Poisoned(m * w.Rows);
        QuantGemm.Linear(x, m, w, bias ?? [], y, act);
        return y;
    }

    private static void CheckExact(Random rng, int seed, QuantizedMatrix w, int m, string what)
    {
        int n = w.Rows, k = w.Columns;
        var x = QuantTestData.Activations(rng, m, k);
        float[]? bias = rng.Next(2) == 0 ? RandomArray(rng, n) : null;
        var y = Run(w, x, m, bias);
        double err = Error(y, Reference(w.DequantizeAll(), QuantizedX(x, m, k), bias, m, n, k));
        Assert.True(err <= ExactTolerance, $"{what} {w.Format.Name} M={m} N={n} K={k} bias={bias is not null}: rel L2 {err:E2} (seed {seed})");
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public void QuantizedWeights_MatchTheExactProductOfTheQuantizedOperands(SimdLevel level, bool vnni)
    {
        int seed = NewSeed(); var rng = new Random(seed);
        With(level, vnni, 2, () =>
        {
            foreach (var type in QuantTestData.BlockTypes)
            {
                var f = QuantFormats.Get(type);
                foreach (int k in Ks.Where(k => k % f.BlockElements == 0))
                    foreach (int m in Ms)
                        foreach (int n in Ns)
                        {
                            if (k == 4096 && (m + n) % 3 != 0) continue; // a spread of shapes at the longest K keeps the double reference quick
                            var w = QuantizedMatrix.Quantize(QuantTestData.Weights(rng, n, k, f.BlockElements), n, k, type);
                            CheckExact(rng, seed, w, m, $"{level} vnni={vnni}");
                        }
            }
        });
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public void RawBlocks_EveryByteValue_MatchTheExactProduct(SimdLevel level, bool vnni)
    {
        // Random bytes reach values quantization never writes (Q8_0's −128, negative int4 scales): the sign trick must hold.
        int seed = NewSeed(); var rng = new Random(seed);
        With(level, vnni, 2, () =>
        {
            foreach (var type in QuantTestData.BlockTypes)
            {
                var f = QuantFormats.Get(type);
                foreach (var (m, n, k) in new[] { (1, 65, 384), (3, 33, 128), (5, 7, 4096), (17, 9, 256) })
                {
                    if (k % f.BlockElements != 0) continue;
                    var w = QuantizedMatrix.FromBytes(QuantTestData.RawBlocks(rng, f, n, k), n, k, type);
                    CheckExact(rng, seed, w, m, $"raw {level} vnni={vnni}");
                }
            }
        });
    }

    [Theory]
    [InlineData(QuantType.Q8_0, 0.01)]
    [InlineData(QuantType.Q4_0, 0.1)]
    [InlineData(QuantType.Int4G32, 0.1)]
    [InlineData(QuantType.Int4G64, 0.1)]
    [InlineData(QuantType.Int4G128, 0.1)]
    public void QuantizedProduct_IsCloseToTheF32Product(QuantType type, double bound)
    {
        // Uniform random weights and activations: the error is the weights' quantization noise plus the activations'
        // 8-bit noise; measured ≈ 0.56% for Q8_0 and 6–7% for the 4-bit formats.
        int seed = NewSeed(); var rng = new Random(seed);
        With(CpuFeatures.Detected, true, 2, () =>
        {
            int m = 9, n = 70, k = 1024;
            float[] w = RandomArray(rng, n * k), x = RandomArray(rng, m * k), bias = RandomArray(rng, n);
            var y = Run(QuantizedMatrix.Quantize(w, n, k, type), x, m, bias);
            double err = RelativeL2(y, Reference(w, x, bias, m, n, k).Y);
            Assert.True(err <= bound, $"{type} vs F32: rel L2 {err:E2} > {bound} (seed {seed})");
        });
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public void BiasAndActivation_AreFused(SimdLevel level, bool vnni)
    {
        int seed = NewSeed(); var rng = new Random(seed);
        With(level, vnni, 2, () =>
        {
            foreach (var act in Enum.GetValues<Activation>())
                foreach (var (type, m) in new[] { (QuantType.Q8_0, 1), (QuantType.Q4_0, 6), (QuantType.Int4G128, 3) })
                {
                    int n = 45, k = 256;
                    var w = QuantizedMatrix.Quantize(QuantTestData.Weights(rng, n, k, 128), n, k, type);
                    float[] x = QuantTestData.Activations(rng, m, k), bias = RandomArray(rng, n);
                    var (exact, magnitude) = Reference(w.DequantizeAll(), QuantizedX(x, m, k), bias, m, n, k);
                    var want = exact.Select(v => (float)v).ToArray();
                    MathKernels.Activate(want, act);
                    double err = Error(Run(w, x, m, bias, act), (want.Select(v => (double)v).ToArray(), magnitude));
                    Assert.True(err <= ExactTolerance, $"{level} vnni={vnni} {type} M={m} +{act}: rel L2 {err:E2} (seed {seed})");
                }
        });
    }

    [Fact]
    public void Result_IsIndependentOfThreadCount()
    {
        // Each output is computed by one kernel call whatever the split, so thread counts agree bit for bit (the fused
        // activation is checked separately: its SIMD tail falls on different elements as the split changes).
        // M = 130, K = 576 also takes the parallel activation-quantization branch.
        int seed = NewSeed(); var rng = new Random(seed);
        foreach (var (m, n, k) in new[] { (1, 1537, 576), (130, 200, 576) })
        {
            var w = QuantizedMatrix.Quantize(QuantTestData.Weights(rng, n, k, 64), n, k, QuantType.Int4G64);
            var x = QuantTestData.Activations(rng, m, k);
            float[]? first = null;
            foreach (int threads in new[] { 1, 2, 3 })
            {
                float[] y = [];
                With(CpuFeatures.Detected, true, threads, () => y = Run(w, x, m, null));
                first ??= y;
                Assert.True(first.AsSpan().SequenceEqual(y), $"M={m}: {threads} threads differ from 1 (seed {seed})");
            }
        }
    }

    [Fact]
    public void Q4_0DecodeGemv_MatchesTheGeneralKernel_OnEveryTailAndThreadCount()
    {
        // The one-row Q4_0 kernel (AVX-512 VBMI) reads 4 blocks per step with masked loads for the last 1–3: check every
        // tail length, odd row counts (pairs plus a single row), rows ending at the matrix's last byte, and that
        // threads agree bit for bit (each thread has its own tail handling). The general kernel runs for M = 2, so its
        // first row is the same product computed another way.
        if (!Q4_0Gemv.IsSupported || CpuFeatures.Detected < SimdLevel.Avx512) return; // AVX-512 VBMI only
        int seed = NewSeed(); var rng = new Random(seed);
        foreach (int blocks in new[] { 1, 2, 3, 4, 5, 6, 7, 18, 48 })
            foreach (int n in new[] { 1, 2, 3, 257 })
            {
                int k = 32 * blocks;
                var w = QuantizedMatrix.Quantize(QuantTestData.Weights(rng, n, k, 32), n, k, QuantType.Q4_0);
                var x = QuantTestData.Activations(rng, 2, k);
                float[]? single = null;
                foreach (int threads in new[] { 1, 2 })
                {
                    float[] y = [];
                    With(SimdLevel.Avx512, true, threads, () => y = Run(w, x.AsSpan(0, k).ToArray(), 1, null));
                    single ??= y;
                    Assert.True(single.AsSpan().SequenceEqual(y), $"K={k} N={n}: {threads} threads differ from 1 (seed {seed})");
                }
                float[] pair = [];
                With(SimdLevel.Avx512, true, 1, () => pair = Run(w, x, 2, null));
                var reference = Reference(w.DequantizeAll(), QuantizedX(x, 2, k), null, 2, n, k);
                double err = Error(single!, (reference.Y[..n], reference.Magnitude[..n]));
                Assert.True(err <= ExactTolerance, $"decode GEMV K={k} N={n}: rel L2 {err:E2} (seed {seed})");
                double general = RelativeL2(single!, pair.Take(n).Select(v => (double)v).ToArray());
                Assert.True(general <= ExactTolerance, $"decode GEMV vs general kernel K={k} N={n}: rel L2 {general:E2} (seed {seed})");
            }
    }

    [Fact]
    public void ActivationQuantization_IsIdenticalOnEveryLevel_AndFollowsItsFormula()
    {
        int seed = NewSeed(); var rng = new Random(seed);
        int k = 640;
        var x = QuantTestData.Activations(rng, 3, k).AsSpan(2 * k, k).ToArray(); // has a zero block and a large block
        x[100] = 1e-38f; // a tiny block: 1/d would overflow, so the block quantizes to zeros
        for (int i = 96; i < 128; i++) if (i != 100) x[i] = 0f;
        sbyte[]? firstQ = null; float[]? firstD = null, firstS = null;
        foreach (var level in Enum.GetValues<SimdLevel>().Where(l => l <= CpuFeatures.Detected))
        {
            var q = new sbyte[k]; float[] d = new float[k / 32], s = new float[k / 32];
            CpuTestUtil.With(level, 1, () => QuantGemm.QuantizeActivations(x, q, d, s));
            firstQ ??= q; firstD ??= d; firstS ??= s;
            Assert.Equal(firstQ, q); Assert.Equal(firstD, d); Assert.Equal(firstS, s);
        }
        for (int b = 0; b < k / 32; b++)
        {
            var block = x.AsSpan(32 * b, 32);
            float amax = 0f;
            foreach (float v in block) amax = Math.Max(amax, MathF.Abs(v));
            float d = amax / 127f, id = 1f / d;
            if (float.IsInfinity(id)) { d = 0f; id = 0f; }
            Assert.Equal(d, firstD![b]);
            int sum = 0;
            for (int i = 0; i < 32; i++)
            {
                int q = (int)MathF.Round(block[i] * id, MidpointRounding.ToEven);
                Assert.Equal(q, firstQ![32 * b + i]);
                sum += q;
            }
            Assert.Equal(d * sum, firstS![b]);
        }
        Assert.Equal(0f, firstD![0]);
        Assert.Equal(0f, firstD[3]);
    }

    [Fact]
    public unsafe void GroupHeaders_FourAtATime_EqualTheScalarDecode()
    {
        // The SIMD kernels decode headers 4 groups at a time; the scalar kernel one by one. Both must give the same
        // scale, pivot and residual min, including zero, negative, subnormal and NaN-producing (0/0) headers.
        if (!Sse41.IsSupported) return; // the 4-at-a-time decoder exists only for the x86 SIMD paths
        int seed = NewSeed(); var rng = new Random(seed);
        var f = QuantFormats.Get(QuantType.Int4G32);
        var bytes = QuantTestData.RawBlocks(rng, f, 1, 32 * 64);
        ushort[] special = [0x0000, 0x8000, 0x0001, 0x83FF, 0x3C00, 0xBC00, 0x7BFF, 0xFBFF];
        for (int i = 0; i < 64; i++)
            if (i % 3 == 0)
            {
                BitConverter.TryWriteBytes(bytes.AsSpan(20 * i, 2), special[rng.Next(special.Length)]);
                BitConverter.TryWriteBytes(bytes.AsSpan(20 * i + 2, 2), special[rng.Next(special.Length)]);
            }
        fixed (byte* p = bytes)
            for (int g = 0; g + 4 <= 64; g += 4)
            {
                Int4Blocks<R1>.Headers4(p + 20 * g, out var scales, out var pivots, out var mins);
                for (int i = 0; i < 4; i++)
                {
                    Int4Blocks<R1>.Header(p + 20 * (g + i), out float scale, out int pivot, out float min);
                    string what = $"group {g + i} (seed {seed})";
                    Assert.True(BitConverter.SingleToInt32Bits(scale) == BitConverter.SingleToInt32Bits(scales[i]), $"scale {what}");
                    Assert.True(pivot == pivots[i], $"pivot {pivot} vs {pivots[i]}, {what}");
                    Assert.True(BitConverter.SingleToInt32Bits(min) == BitConverter.SingleToInt32Bits(mins[i]) || float.IsNaN(min) && float.IsNaN(mins[i]), $"residual min {what}");
                }
            }
    }

    [Fact]
    public void Path_FollowsTheForcedLevel()
    {
        var expected = new Dictionary<(SimdLevel, bool), QuantPath>
        {
            [(SimdLevel.Scalar, true)] = QuantPath.Scalar,
            [(SimdLevel.Vector128, true)] = QuantPath.Scalar,
            [(SimdLevel.Avx2, true)] = AvxVnni.IsSupported ? QuantPath.AvxVnni : QuantPath.Avx2,
            [(SimdLevel.Avx2, false)] = QuantPath.Avx2,
            [(SimdLevel.Avx512, true)] = QuantPath.Avx512,
        };
        foreach (var ((level, vnni), path) in expected)
            if (level <= CpuFeatures.Detected)
                With(level, vnni, 1, () => Assert.Equal(path, QuantGemm.Path));
    }

    [Fact]
    public void Linear_RejectsPlainFormatsAndBadSizes()
    {
        var f16 = QuantizedMatrix.Quantize(new float[64], 2, 32, QuantType.F16);
        Assert.Throws<ArgumentException>(() => QuantGemm.Linear(new float[32], 1, f16, [], new float[2]));
        var q = QuantizedMatrix.Quantize(new float[64], 2, 32, QuantType.Q8_0);
        Assert.Throws<ArgumentException>(() => QuantGemm.Linear(new float[31], 1, q, [], new float[2]));
        Assert.Throws<ArgumentException>(() => QuantGemm.Linear(new float[32], 1, q, [], new float[1]));
        Assert.Throws<ArgumentException>(() => QuantGemm.Linear(new float[32], 1, q, new float[3], new float[2]));
    }
}
