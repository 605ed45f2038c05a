using System.Buffers.Binary;
using FastMM.Quant;
using Xunit;
using static FastMM.Tests.Cpu.CpuTestUtil;

namespace FastMM.Tests.Quant;

public class QuantFormatTests
{
    private static readonly int[] Ks = [32, 64, 96, 128, 160, 384, 4096];
    private static readonly int[] RowCounts = [1, 7, 33];

    // ---------------- independent references, transcribed from ggml-quants.c ----------------

    private static void PutHalf(byte[] dst, int offset, float v) => BinaryPrimitives.WriteUInt16LittleEndian(dst.AsSpan(offset), BitConverter.HalfToUInt16Bits((Half)v));

    private static float GetHalf(ReadOnlySpan<byte> src, int offset) => (float)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(src[offset..]));

    /// <summary>quantize_row_q8_0_ref.</summary>
    private static byte[] ReferenceQ8_0(ReadOnlySpan<float> x)
    {
        int nb = x.Length / 32;
        var y = new byte[nb * 34];
        for (int i = 0; i < nb; i++)
        {
            float amax = 0.0f;
            for (int j = 0; j < 32; j++)
            {
                float v = x[i * 32 + j];
                float a = MathF.Abs(v);
                amax = amax > a ? amax : a;
            }
            float d = amax / ((1 << 7) - 1);
            float id = d != 0 ? 1.0f / d : 0.0f;
            PutHalf(y, i * 34, d);
            for (int j = 0; j < 32; ++j)
            {
                float x0 = x[i * 32 + j] * id;
                y[i * 34 + 2 + j] = (byte)(sbyte)MathF.Round(x0, MidpointRounding.AwayFromZero);
            }
        }
        return y;
    }

    /// <summary>quantize_row_q4_0_ref.</summary>
    private static byte[] ReferenceQ4_0(ReadOnlySpan<float> x)
    {
        const int qk = 32;
        int nb = x.Length / qk;
        var y = new byte[nb * 18];
        for (int i = 0; i < nb; i++)
        {
            float amax = 0.0f, max = 0.0f;
            for (int j = 0; j < qk; j++)
            {
                float v = x[i * qk + j];
                if (amax < MathF.Abs(v)) { amax = MathF.Abs(v); max = v; }
            }
            float d = max / -8;
            float id = d != 0 ? 1.0f / d : 0.0f;
            PutHalf(y, i * 18, d);
            for (int j = 0; j < qk / 2; ++j)
            {
                float x0 = x[i * qk + 0 + j] * id;
                float x1 = x[i * qk + qk / 2 + j] * id;
                byte xi0 = (byte)Math.Min(15, (int)(sbyte)(x0 + 8.5f));
                byte xi1 = (byte)Math.Min(15, (int)(sbyte)(x1 + 8.5f));
                y[i * 18 + 2 + j] = (byte)(xi0 | (xi1 << 4));
            }
        }
        return y;
    }

    /// <summary>The layout each block format documents, decoded element by element (dequantize_row_q8_0 / q4_0 / q4_1 generalised).</summary>
    private static float ReferenceValue(QuantFormat f, ReadOnlySpan<byte> row, int e)
    {
        int block = e / f.BlockElements, within = e % f.BlockElements;
        var b = row.Slice(block * f.BlockBytes, f.BlockBytes);
        switch (f.Type)
        {
            case QuantType.Q8_0: return (sbyte)b[2 + within] * GetHalf(b, 0);
            case QuantType.Q4_0:
                {
                    int q = within < 16 ? b[2 + within] & 0x0F : b[2 + within - 16] >> 4;
                    return (q - 8) * GetHalf(b, 0);
                }
            default:
                {
                    int sub = within / 32, j = within % 32;
                    byte packed = b[4 + 16 * sub + j % 16];
                    int q = j < 16 ? packed & 0x0F : packed >> 4;
                    return q * GetHalf(b, 0) + GetHalf(b, 2);
                }
        }
    }

    // ---------------- the table ----------------

    [Fact]
    public void Table_HasTheDocumentedLayouts()
    {
        (string Name, int Elements, int Bytes)[] expected =
        [
            ("f32", 1, 4), ("f16", 1, 2), ("bf16", 1, 2), ("q8_0", 32, 34), ("q4_0", 32, 18),
            ("int4-g32", 32, 20), ("int4-g64", 64, 36), ("int4-g128", 128, 68),
        ];
        Assert.Equal(expected.Length, QuantFormats.All.Count);
        foreach (var (name, elements, bytes) in expected)
        {
            var f = QuantFormats.Parse(name);
            Assert.Equal(name, f.Name);
            Assert.Equal(elements, f.BlockElements);
            Assert.Equal(bytes, f.BlockBytes);
            Assert.Same(f, QuantFormats.Get(f.Type));
            Assert.Equal(f is BlockQuantFormat, elements > 1);
        }
        Assert.Equal(8.5, QuantFormats.Get(QuantType.Q8_0).BitsPerWeight);
        Assert.Equal(4.5, QuantFormats.Get(QuantType.Q4_0).BitsPerWeight);
        Assert.Equal(4.25, QuantFormats.Get(QuantType.Int4G128).BitsPerWeight);
        Assert.Equal(QuantType.Q4_0, QuantFormats.Parse("Q4_0").Type);
    }

    [Fact]
    public void Parse_UnknownScheme_ListsTheValidNames()
    {
        var e = Assert.Throws<FastMMException>(() => QuantFormats.Parse("q5_k"));
        Assert.Contains("'q5_k'", e.Message);
        foreach (var name in QuantFormats.Names) Assert.Contains(name, e.Message);
    }

    [Fact]
    public void Fp16Load_MatchesHalfCast_ForEveryFiniteHalf()
    {
        var bytes = new byte[2];
        for (int bits = 0; bits < 65536; bits++)
        {
            var h = BitConverter.UInt16BitsToHalf((ushort)bits);
            if (!Half.IsFinite(h)) continue;
            BinaryPrimitives.WriteUInt16LittleEndian(bytes, (ushort)bits);
            unsafe
            {
                fixed (byte* p = bytes)
                    Assert.Equal(BitConverter.SingleToInt32Bits((float)h), BitConverter.SingleToInt32Bits(Fp16.Load(p)));
            }
        }
    }

    // ---------------- quantize ----------------

    [Fact]
    public void Q8_0_BytesEqualGgmlReference()
    {
        int seed = NewSeed(); var rng = new Random(seed);
        foreach (int k in Ks)
            foreach (int rows in RowCounts)
            {
                var w = QuantTestData.Weights(rng, rows, k, 32);
                var m = QuantizedMatrix.Quantize(w, rows, k, QuantType.Q8_0);
                for (int r = 0; r < rows; r++)
                    Assert.True(ReferenceQ8_0(w.AsSpan(r * k, k)).AsSpan().SequenceEqual(m.Row(r)), $"q8_0 {rows}x{k} row {r} differs from ggml (seed {seed})");
            }
    }

    [Fact]
    public void Q4_0_BytesEqualGgmlReference()
    {
        int seed = NewSeed(); var rng = new Random(seed);
        foreach (int k in Ks)
            foreach (int rows in RowCounts)
            {
                var w = QuantTestData.Weights(rng, rows, k, 32);
                var m = QuantizedMatrix.Quantize(w, rows, k, QuantType.Q4_0);
                for (int r = 0; r < rows; r++)
                    Assert.True(ReferenceQ4_0(w.AsSpan(r * k, k)).AsSpan().SequenceEqual(m.Row(r)), $"q4_0 {rows}x{k} row {r} differs from ggml (seed {seed})");
            }
    }

    [Theory]
    [InlineData(QuantType.Int4G32)]
    [InlineData(QuantType.Int4G64)]
    [InlineData(QuantType.Int4G128)]
    public void Int4_ReconstructionErrorIsAtMostHalfAScale(QuantType type)
    {
        int seed = NewSeed(); var rng = new Random(seed);
        var f = QuantFormats.Get(type);
        foreach (int k in Ks.Where(k => k % f.BlockElements == 0))
            foreach (int rows in RowCounts)
            {
                var w = QuantTestData.Weights(rng, rows, k, f.BlockElements);
                var m = QuantizedMatrix.Quantize(w, rows, k, type);
                var back = new float[k];
                for (int r = 0; r < rows; r++)
                {
                    m.Dequantize(r, back);
                    for (int i = 0; i < k; i++)
                    {
                        var block = m.Row(r).Slice(i / f.BlockElements * f.BlockBytes);
                        float scale = GetHalf(block, 0), min = GetHalf(block, 2), x = w[r * k + i];
                        Assert.True(scale >= 0, $"{f.Name}: negative scale");
                        // Half a scale, plus float rounding in (x − min)·(1/scale) and q·scale + min.
                        float bound = scale / 2 + 4e-7f * (MathF.Abs(x) + MathF.Abs(min) + 15 * scale);
                        Assert.True(MathF.Abs(back[i] - x) <= bound,
                            $"{f.Name} {rows}x{k} [{r},{i}]: {x:R} came back as {back[i]:R}, scale {scale:R} (seed {seed})");
                    }
                }
            }
    }

    [Fact]
    public void Int4_AllZeroAndConstantBlocksAreExact()
    {
        foreach (var type in new[] { QuantType.Int4G32, QuantType.Int4G64, QuantType.Int4G128 })
        {
            var w = new float[256];
            w.AsSpan(128).Fill(-2.5f);
            var back = QuantizedMatrix.Quantize(w, 1, 256, type).DequantizeAll();
            Assert.Equal(w, back);
        }
    }

    [Theory]
    [InlineData(QuantType.Q8_0)]
    [InlineData(QuantType.Q4_0)]
    [InlineData(QuantType.Int4G32)]
    [InlineData(QuantType.Int4G64)]
    [InlineData(QuantType.Int4G128)]
    public void Dequantize_DecodesTheDocumentedLayout(QuantType type)
    {
        int seed = NewSeed(); var rng = new Random(seed);
        var f = QuantFormats.Get(type);
        foreach (int k in Ks.Where(k => k % f.BlockElements == 0))
        {
            var bytes = QuantTestData.RawBlocks(rng, f, 3, k);
            var m = QuantizedMatrix.FromBytes(bytes, 3, k, type);
            Assert.True(bytes.AsSpan().SequenceEqual(m.Bytes));
            var row = new float[k];
            for (int r = 0; r < 3; r++)
            {
                m.Dequantize(r, row);
                for (int i = 0; i < k; i++)
                    Assert.Equal(ReferenceValue(f, m.Row(r), i), row[i]);
            }
        }
    }

    [Fact]
    public void QuantizeThenFromBytes_RoundTripsTheBytes()
    {
        int seed = NewSeed(); var rng = new Random(seed);
        foreach (var type in QuantTestData.BlockTypes)
        {
            var w = QuantTestData.Weights(rng, 5, 256, 128);
            var m = QuantizedMatrix.Quantize(w, 5, 256, type);
            Assert.Equal(5 * m.RowBytes, m.ByteSize);
            Assert.Equal(m.ByteSize, m.Bytes.Length);
            var again = QuantizedMatrix.FromBytes(m.Bytes, 5, 256, type);
            Assert.Equal(m.DequantizeAll(), again.DequantizeAll());
        }
    }

    // ---------------- plain formats ----------------

    [Fact]
    public void PlainFormats_RoundAsTheirStorageType()
    {
        int seed = NewSeed(); var rng = new Random(seed);
        var w = RandomArray(rng, 3 * 40, 3f);
        w[0] = 1.00390625f; w[1] = 1.01171875f; // bf16 ties: round to even (down, then up)

        Assert.Equal(w, QuantizedMatrix.Quantize(w, 3, 40, QuantType.F32).DequantizeAll());
        Assert.Equal(w.Select(v => (float)(Half)v).ToArray(), QuantizedMatrix.Quantize(w, 3, 40, QuantType.F16).DequantizeAll());

        var bf = QuantizedMatrix.Quantize(w, 3, 40, QuantType.BF16);
        Assert.Equal(2 * 3 * 40, bf.ByteSize);
        var back = bf.DequantizeAll();
        Assert.Equal(1f, back[0]);
        Assert.Equal(1.015625f, back[1]);
        for (int i = 0; i < w.Length; i++)
        {
            // bf16 keeps 8 significant bits: within half an ulp (2^-8 relative) and exactly representable.
            Assert.True(MathF.Abs(back[i] - w[i]) <= MathF.Abs(w[i]) * (1f / 256), $"bf16 {w[i]:R} → {back[i]:R} (seed {seed})");
            Assert.Equal(0u, BitConverter.SingleToUInt32Bits(back[i]) & 0xFFFF);
        }
    }

    // ---------------- errors ----------------

    [Fact]
    public void Quantize_KNotAMultipleOfTheBlock_FailsNamingTheSizes()
    {
        var e = Assert.Throws<FastMMException>(() => QuantizedMatrix.Quantize(new float[2 * 96], 2, 96, QuantType.Int4G128, "mlp.fc1.weight"));
        Assert.Contains("mlp.fc1.weight", e.Message);
        Assert.Contains("2x96", e.Message);
        Assert.Contains("128", e.Message);
        Assert.Contains("int4-g128", e.Message);

        e = Assert.Throws<FastMMException>(() => QuantizedMatrix.Quantize(new float[3 * 50], 3, 50, QuantType.Q4_0));
        Assert.Contains("50", e.Message);
        Assert.Contains("32", e.Message);
    }

    [Fact]
    public void FromBytes_WrongLength_FailsNamingExpectedAndActual()
    {
        var e = Assert.Throws<FastMMException>(() => QuantizedMatrix.FromBytes(new byte[100], 2, 64, QuantType.Q8_0, "lm_head.weight"));
        Assert.Contains("lm_head.weight", e.Message);
        Assert.Contains("136", e.Message); // 2 rows × 2 blocks × 34 bytes
        Assert.Contains("100", e.Message);

        e = Assert.Throws<FastMMException>(() => QuantizedMatrix.FromBytes(new byte[18], 1, 48, QuantType.Q4_0));
        Assert.Contains("48", e.Message);
    }

    [Theory]
    [InlineData(QuantType.Q8_0, float.NaN)]
    [InlineData(QuantType.Q4_0, float.PositiveInfinity)]
    [InlineData(QuantType.Int4G64, 70000f)]
    [InlineData(QuantType.F16, -1e5f)]
    public void Quantize_UnrepresentableWeight_FailsNamingTheRow(QuantType type, float bad)
    {
        var w = new float[3 * 64];
        w[2 * 64 + 5] = bad;
        var e = Assert.Throws<FastMMException>(() => QuantizedMatrix.Quantize(w, 3, 64, type, "w"));
        Assert.Contains("row 2", e.Message);
        Assert.Contains(QuantFormats.Get(type).Name, e.Message);
    }
}
