using FastMM.Backends;
using FastMM.Cpu;
using FastMM.Kv;
using static FastMM.Tests.Cpu.CpuTestUtil;

namespace FastMM.Tests.Cpu;

/// <summary>
/// The int8 KV cache on every SIMD level: the quantizer against its definition, paged attention over int8 pools against a
/// double-precision reference on the dequantized values (what the kernel claims to compute), and the whole cache through
/// CpuBackend against the F32 cache (what quantization costs).
/// </summary>
[Collection(CpuKernelCollection.Name)]
public class Int8KvCacheTests
{
    /// <summary>int8 vs F32 cache outputs, relative L2, for these random rows: measured 4.6e-3 – 7.9e-3 over 5 runs × every level and step.</summary>
    private const double Int8VsF32Bound = 2e-2;

    /// <summary>(tq, tk, heads, kvHeads, headDim, blockSize): decode inline, decode packed, prefill across blocks, GQA ratios, odd head dims.</summary>
    public static TheoryData<SimdLevel, int, int, int, int, int, int> Cases()
    {
        var data = new TheoryData<SimdLevel, int, int, int, int, int, int>();
        int[][] shapes =
        [
            [1, 7, 4, 2, 16, 4],       // decode, short context: inline path
            [1, 1, 9, 3, 64, 16],      // the very first token
            [1, 1500, 9, 3, 64, 16],   // decode, long context: packed path
            [1, 45, 6, 2, 37, 8],      // decode, odd head size with a SIMD tail
            [5, 40, 6, 6, 8, 8],       // prefill continuing a cached prefix, no GQA
            [33, 33, 15, 5, 64, 16],   // whole-prompt prefill across block boundaries
            [3, 70, 4, 1, 5, 16],      // multi-query, head size below one vector
            [20, 50, 8, 2, 80, 16],    // GQA 4:1, head size 80 (16-value steps + nothing)
            [17, 17, 3, 3, 33, 4],     // prefill, odd head size
        ];
        foreach (var level in Enum.GetValues<SimdLevel>().Where(l => l <= CpuFeatures.Detected))
            foreach (var s in shapes) data.Add(level, s[0], s[1], s[2], s[3], s[4], s[5]);
        return data;
    }

    [Theory]
    [MemberData(nameof(Levels), MemberType = typeof(CpuTestUtil))]
    public void QuantizeFollowsItsDefinitionOnEveryLength(SimdLevel level)
    {
        int seed = NewSeed(); var rng = new Random(seed);
        With(level, 1, () =>
        {
            foreach (int n in new[] { 1, 3, 5, 15, 16, 17, 33, 64, 80, 131 })
            {
                var x = RandomArray(rng, n, (float)Math.Exp(rng.Next(-8, 8)));
                x[rng.Next(n)] *= 3; // an outlier sets the scale
                var q = new sbyte[n];
                float scale = Int8Kernels.Quantize(x, q);
                float absMax = x.Max(MathF.Abs);
                Assert.Equal(absMax / 127f, scale);
                for (int i = 0; i < n; i++)
                {
                    Assert.True(MathF.Round(x[i] / scale) == q[i], $"seed {seed} n={n} [{i}]: {x[i]} / {scale} stored as {q[i]}");
                    Assert.True(Math.Abs(x[i] - (double)scale * q[i]) <= 0.5000001 * scale, $"seed {seed} n={n} [{i}]: round-trip error above half a step");
                }
                Assert.Contains(q, v => Math.Abs((int)v) == 127);
            }
        });
    }

    [Theory]
    [MemberData(nameof(Levels), MemberType = typeof(CpuTestUtil))]
    public void QuantizeOfZerosIsZeroAndOfNaNIsPoisoned(SimdLevel level)
    {
        With(level, 1, () =>
        {
            var q = new sbyte[40];
            Array.Fill(q, (sbyte)5);
            Assert.Equal(0f, Int8Kernels.Quantize(new float[40], q));
            Assert.All(q, v => Assert.Equal(0, v));

            var x = Enumerable.Range(0, 40).Select(i => i * 0.1f).ToArray();
            x[21] = float.NaN; // past the first vector step, so a lane-wise max must carry it
            Assert.True(float.IsNaN(Int8Kernels.Quantize(x, q)), "a NaN must make the scale NaN, so the row reads back poisoned");
        });
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void PagedAttentionMatchesTheDequantizedReference(SimdLevel level, int tq, int tk, int heads, int kvHeads, int d, int blockSize)
    {
        int seed = NewSeed();
        var rng = new Random(seed);
        int kvw = kvHeads * d, qw = heads * d;
        var q = RandomArray(rng, tq * qw, 2f);
        // Keys with one large channel per head, as real K often have: the per-head scale follows it.
        var k = RandomArray(rng, tk * kvw, 2f);
        for (int j = 0; j < tk; j++) for (int g = 0; g < kvHeads; g++) k[j * kvw + g * d] *= 8f;
        var v = RandomArray(rng, tk * kvw);

        // Scatter over a shuffled pool with garbage (values and scales) around the sequence's blocks.
        int blocks = (tk + blockSize - 1) / blockSize, poolBlocks = blocks + 3, poolRows = poolBlocks * blockSize;
        var table = Enumerable.Range(0, poolBlocks).OrderBy(_ => rng.Next()).Take(blocks).ToArray();
        var kPool = RandomBytes(rng, poolRows * kvw);
        var vPool = RandomBytes(rng, poolRows * kvw);
        var kScales = RandomArray(rng, poolRows * kvHeads, 100f);
        var vScales = RandomArray(rng, poolRows * kvHeads, 100f);
        var kRead = new double[tk * kvw];
        var vRead = new double[tk * kvw];
        for (int j = 0; j < tk; j++)
        {
            int row = table[j / blockSize] * blockSize + j % blockSize;
            for (int g = 0; g < kvHeads; g++)
            {
                int at = row * kvw + g * d, s = row * kvHeads + g;
                kScales[s] = Int8Kernels.Quantize(k.AsSpan(j * kvw + g * d, d), kPool.AsSpan(at, d));
                vScales[s] = Int8Kernels.Quantize(v.AsSpan(j * kvw + g * d, d), vPool.AsSpan(at, d));
                for (int x = 0; x < d; x++)
                {
                    kRead[j * kvw + g * d + x] = (double)kScales[s] * kPool[at + x];
                    vRead[j * kvw + g * d + x] = (double)vScales[s] * vPool[at + x];
                }
            }
        }

        float scale = 1f / MathF.Sqrt(d);
        var o = Poisoned(tq * qw);
        With(level, 2, () => AttentionKernel.RunPaged(q, qw, kPool, vPool, kScales, vScales, kvw, table, blockSize, o, tq, tk, heads, kvHeads, d, scale));
        double rel = RelativeL2(o, Reference(q, kRead, vRead, tq, tk, heads, kvHeads, d, scale));
        Assert.True(rel <= 1e-5, $"seed {seed}, {level}: relative L2 {rel:E3} against the dequantized reference");
    }

    [Theory]
    [MemberData(nameof(Levels), MemberType = typeof(CpuTestUtil))]
    public void BackendInt8CacheStaysCloseToTheF32Cache(SimdLevel level)
    {
        int seed = NewSeed(); var rng = new Random(seed);
        using var backend = new CpuBackend();
        const int layers = 2, heads = 6, kvHeads = 2, d = 48, blockSize = 16, prompt = 37, decode = 12;
        int width = (heads + 2 * kvHeads) * d;
        using var f32 = new KvCache(backend, layers, kvHeads, d, prompt + decode, blockSize);
        using var int8 = new KvCache(backend, layers, kvHeads, d, prompt + decode, blockSize, KvCacheType.Int8);
        Assert.Equal(KvCacheType.Int8, int8.Type);
        long rows = (long)layers * int8.CapacityTokens * kvHeads;
        Assert.Equal(2 * rows * d * 4, f32.Bytes);
        Assert.Equal(2 * rows * (d + 4), int8.Bytes); // a quarter of F32 plus one float scale per (token, head)

        using var fSeq = f32.NewSequence(prompt + decode);
        using var qSeq = int8.NewSequence(prompt + decode);
        float scale = 1f / MathF.Sqrt(d);
        With(level, 2, () =>
        {
            // One prefill step (packed path), then single-token decode steps (inline path).
            for (int step = 0, n = prompt; step <= decode; step++, n = 1)
            {
                using var qkv = backend.FromHost(RandomArray(rng, n * width, 2f), n, width);
                for (int layer = 0; layer < layers; layer++)
                {
                    var expected = Attend(backend, fSeq, qkv, layer, n, heads, scale);
                    var actual = Attend(backend, qSeq, qkv, layer, n, heads, scale);
                    double rel = RelativeL2(actual, expected.Select(x => (double)x).ToArray());
                    Assert.True(rel <= Int8VsF32Bound, $"seed {seed}, {level}, step {step}, layer {layer}: int8 vs F32 relative L2 {rel:E3}");
                }
                fSeq.Advance(n);
                qSeq.Advance(n);
            }
        });
    }

    [Fact]
    public void ScalesThatDoNotCoverABlockAreRejected()
    {
        // Values for 2 blocks of 4 rows, scales for only 1 block: block 1 is outside what can be dequantized.
        var e = Assert.Throws<ArgumentException>(() => AttentionKernel.RunPaged(new float[8], 8, new sbyte[64], new sbyte[64], new float[4], new float[4], 8,
            [1], 4, new float[8], 1, 3, 1, 1, 8, 1f));
        Assert.Contains("outside the cache pool", e.Message);
    }

    private static float[] Attend(CpuBackend backend, KvSequence seq, Tensor qkv, int layer, int n, int heads, float scale)
    {
        if (layer == 0) seq.Reserve(n);
        backend.WriteKv(seq.Storage, layer, qkv, heads, seq.BlockTable, seq.Length);
        using var o = backend.CachedAttention(qkv, heads, seq.Storage, layer, seq.BlockTable, seq.Length, scale);
        return o.ToArray();
    }

    private static sbyte[] RandomBytes(Random rng, int n)
    {
        var x = new sbyte[n];
        for (int i = 0; i < n; i++) x[i] = (sbyte)rng.Next(-127, 128);
        return x;
    }

    /// <summary>Causal grouped-query attention in double over dense K/V [tk, kvHeads·d]; the queries are the last tq positions.</summary>
    private static double[] Reference(float[] q, double[] k, double[] v, int tq, int tk, int heads, int kvHeads, int d, float scale)
    {
        int kvw = kvHeads * d, qw = heads * d, group = heads / kvHeads;
        var expected = new double[tq * qw];
        for (int i = 0; i < tq; i++)
            for (int h = 0; h < heads; h++)
            {
                int g = h / group, last = tk - tq + i;
                var s = new double[last + 1];
                double max = double.NegativeInfinity;
                for (int j = 0; j <= last; j++)
                {
                    double dot = 0;
                    for (int x = 0; x < d; x++) dot += q[i * qw + h * d + x] * k[j * kvw + g * d + x];
                    s[j] = dot * scale; max = Math.Max(max, s[j]);
                }
                double sum = 0;
                for (int j = 0; j <= last; j++) { s[j] = Math.Exp(s[j] - max); sum += s[j]; }
                for (int x = 0; x < d; x++)
                {
                    double acc = 0;
                    for (int j = 0; j <= last; j++) acc += s[j] * v[j * kvw + g * d + x];
                    expected[i * qw + h * d + x] = acc / sum;
                }
            }
        return expected;
    }
}
