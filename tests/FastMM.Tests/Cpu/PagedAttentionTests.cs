using FastMM.Cpu;

namespace FastMM.Tests.Cpu;

/// <summary>
/// Causal grouped-query attention over a paged KV cache (scattered blocks) against a double-precision reference,
/// on both the inline decode path (one query, short context) and the packed path (prefill, long context).
/// </summary>
public class PagedAttentionTests
{
    [Theory]
    [InlineData(1, 7, 4, 2, 16, 4)]      // decode, short context: inline path
    [InlineData(1, 1, 9, 3, 64, 16)]     // the very first token
    [InlineData(1, 1500, 9, 3, 64, 16)]  // decode, long context: packed path
    [InlineData(5, 40, 6, 6, 8, 8)]      // prefill continuing a cached prefix, no GQA
    [InlineData(33, 33, 15, 5, 64, 16)]  // whole-prompt prefill across block boundaries
    [InlineData(3, 70, 4, 1, 5, 16)]     // multi-query, odd head size
    public void MatchesReference(int tq, int tk, int heads, int kvHeads, int d, int blockSize)
    {
        int seed = CpuTestUtil.NewSeed();
        var rng = new Random(seed);
        int kvw = kvHeads * d, qw = heads * d;
        var q = CpuTestUtil.RandomArray(rng, tq * qw);
        var k = CpuTestUtil.RandomArray(rng, tk * kvw);
        var v = CpuTestUtil.RandomArray(rng, tk * kvw);
        // Scatter the sequence over a pool in a shuffled block order, with unrelated garbage around it.
        int blocks = (tk + blockSize - 1) / blockSize, poolBlocks = blocks + 3;
        var table = Enumerable.Range(0, poolBlocks).OrderBy(_ => rng.Next()).Take(blocks).ToArray();
        var kPool = CpuTestUtil.RandomArray(rng, poolBlocks * blockSize * kvw, 100f);
        var vPool = CpuTestUtil.RandomArray(rng, poolBlocks * blockSize * kvw, 100f);
        for (int j = 0; j < tk; j++)
        {
            int row = table[j / blockSize] * blockSize + j % blockSize;
            k.AsSpan(j * kvw, kvw).CopyTo(kPool.AsSpan(row * kvw));
            v.AsSpan(j * kvw, kvw).CopyTo(vPool.AsSpan(row * kvw));
        }
        var o = CpuTestUtil.Poisoned(tq * qw);
        float scale = 1f / MathF.Sqrt(d);
        AttentionKernel.RunPaged(q, qw, kPool, vPool, kvw, table, blockSize, o, tq, tk, heads, kvHeads, d, scale);

        var expected = new double[tq * qw];
        int group = heads / kvHeads;
        for (int i = 0; i < tq; i++)
            for (int h = 0; h < heads; h++)
            {
                int g = h / group, last = tk - tq + i;
                var s = new double[last + 1];
                double max = double.NegativeInfinity;
                for (int j = 0; j <= last; j++)
                {
                    double dot = 0;
                    for (int x = 0; x < d; x++) dot += (double)q[i * qw + h * d + x] * k[j * kvw + g * d + x];
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
        double rel = CpuTestUtil.RelativeL2(o, expected);
        Assert.True(rel <= 1e-5, $"seed {seed}: relative L2 {rel:E3}");
    }

    [Fact]
    public void BlockOutsideThePoolIsRejected()
    {
        var e = Assert.Throws<ArgumentException>(() => AttentionKernel.RunPaged(new float[8], 8, new float[64], new float[64], 8,
            [5], 4, new float[8], 1, 3, 1, 1, 8, 1f));
        Assert.Contains("outside the cache pool", e.Message);
    }
}
