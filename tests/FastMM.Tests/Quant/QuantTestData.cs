using FastMM.Quant;

namespace FastMM.Tests.Quant;

/// <summary>Weights and raw blocks for the quantization tests, with the awkward blocks real weights contain.</summary>
internal static class QuantTestData
{
    public static readonly QuantType[] BlockTypes = [QuantType.Q8_0, QuantType.Q4_0, QuantType.Int4G32, QuantType.Int4G64, QuantType.Int4G128];

    /// <summary>
    /// Uniform [−1, 1) weights where, cycling by block index, a block is all zeros, has one huge outlier, is negative
    /// only, is constant, or is tiny; the rest stay random.
    /// </summary>
    public static float[] Weights(Random rng, int rows, int columns, int block)
    {
        var w = new float[rows * columns];
        for (int i = 0; i < w.Length; i++) w[i] = (float)(rng.NextDouble() * 2 - 1);
        int blocksPerRow = columns / block;
        for (int r = 0; r < rows; r++)
            for (int b = 0; b < blocksPerRow; b++)
            {
                var x = w.AsSpan(r * columns + b * block, block);
                switch ((r * blocksPerRow + b) % 7)
                {
                    case 1: x.Clear(); break;
                    case 2: x[rng.Next(block)] = rng.Next(2) == 0 ? 900f : -900f; break;
                    case 3: for (int i = 0; i < block; i++) x[i] = -0.01f - (float)rng.NextDouble(); break;
                    case 4: x.Fill(0.3f); break;
                    case 5: for (int i = 0; i < block; i++) x[i] *= 1e-6f; break;
                }
            }
        return w;
    }

    /// <summary>Random bytes in a block format's layout: every int8 / nibble value (−128 included) and random finite fp16 scales.</summary>
    public static byte[] RawBlocks(Random rng, QuantFormat format, int rows, int columns)
    {
        var bytes = new byte[rows * format.RowBytes(columns)];
        rng.NextBytes(bytes);
        int headerHalves = format.Type switch { QuantType.Q8_0 or QuantType.Q4_0 => 1, _ => 2 };
        for (long off = 0; off < bytes.Length; off += format.BlockBytes)
            for (int h = 0; h < headerHalves; h++)
            {
                var scale = (Half)((rng.NextDouble() * 2 - 1) * (h == 0 ? 0.05 : 1.0));
                BitConverter.TryWriteBytes(bytes.AsSpan((int)off + 2 * h, 2), BitConverter.HalfToUInt16Bits(scale));
            }
        return bytes;
    }

    public static float[] Activations(Random rng, int rows, int columns)
    {
        var x = new float[rows * columns];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        // Row 1 (if any) is all positive, as after a GELU/SiLU; row 2 has a zero block and a large block.
        if (rows > 1) for (int i = 0; i < columns; i++) x[columns + i] = MathF.Abs(x[columns + i]);
        if (rows > 2)
        {
            x.AsSpan(2 * columns, 32).Clear();
            if (columns >= 64) for (int i = 32; i < 64; i++) x[2 * columns + i] *= 50f;
        }
        return x;
    }
}
