namespace FastMM.Backends;

/// <summary>Argument checks and host-side index math that every backend shares (so they fail with the same messages).</summary>
internal static class BackendArgs
{
    /// <summary>An HF Linear weight [out, in] and its optional bias [out]: (out, in, bias values or empty), or a <see cref="FastMMException"/> naming the tensor.</summary>
    public static (int N, int K, float[] Bias) Linear(in TensorData weight, in TensorData? bias)
    {
        if (weight.Shape.Length != 2) throw new FastMMException($"tensor '{weight.Name}': a Linear weight must be 2-D, got {weight.ShapeString}");
        int n = weight.Shape[0], k = weight.Shape[1];
        float[] b = [];
        if (bias is TensorData bd)
        {
            if (bd.Shape.Length != 1 || bd.Shape[0] != n) throw new FastMMException($"tensor '{bd.Name}': bias shape {bd.ShapeString} does not match weight {weight.ShapeString}");
            b = bd.ToFloatArray();
        }
        return (n, k, b);
    }

    /// <summary>SelectRows' source rows in x [B, T, D] viewed as [B·T, D]: b·T + positions[b].</summary>
    public static int[] SelectedRows(int batch, int t, ReadOnlySpan<int> positions)
    {
        if (positions.Length != batch) throw new ArgumentException("SelectRows: one position per batch row");
        var rows = new int[batch];
        for (int i = 0; i < batch; i++)
        {
            if ((uint)positions[i] >= (uint)t) throw new ArgumentOutOfRangeException(nameof(positions));
            rows[i] = i * t + positions[i];
        }
        return rows;
    }

    /// <summary>SetRows' arguments: values holds rows.Length rows of x's width, every row index inside x.</summary>
    public static void SetRows(Tensor x, ReadOnlySpan<int> rows, Tensor values)
    {
        int d = x.Dim(-1), n = (int)(x.Length / d);
        if (values.Dim(-1) != d || values.Length / d != rows.Length) throw new ArgumentException($"SetRows: {values} does not hold {rows.Length} rows of {d}");
        foreach (int r in rows)
            if ((uint)r >= (uint)n) throw new ArgumentOutOfRangeException(nameof(rows), $"row {r} outside [0, {n})");
    }

    /// <summary>Attention's shapes: q [B, Tq, H·D], k and v [B, Tk, H·D], key mask [B, Tk] → (B, Tq, H·D, Tk).</summary>
    public static (int B, int Tq, int Width, int Tk) Attention(Tensor q, Tensor k, Tensor v, int heads, Tensor? keyMask)
    {
        int b = q.Dim(0), tq = q.Dim(1), hd = q.Dim(2), tk = k.Dim(1);
        if (hd % heads != 0) throw new ArgumentException($"Attention: width {hd} is not divisible by {heads} heads");
        if (k.Dim(0) != b || v.Dim(0) != b || k.Dim(2) != hd || v.Dim(2) != hd || v.Dim(1) != tk)
            throw new ArgumentException($"Attention: q {q}, k {k}, v {v} do not agree");
        if (keyMask is not null && keyMask.Length != (long)b * tk) throw new ArgumentException($"Attention: key mask {keyMask} is not [{b}, {tk}]");
        return (b, tq, hd, tk);
    }

    /// <summary>
    /// The HF default RoPE table [count, headDim] for positions position0…, computed in double on the host (cos in the
    /// first half, sin in the second) so that every backend holds the same floats far out in position.
    /// </summary>
    public static float[] RopeTable(int position0, int count, int headDim, double theta)
    {
        if (headDim % 2 != 0) throw new ArgumentException($"RoPE needs an even head size, got {headDim}");
        int half = headDim / 2;
        var d = new float[count * headDim];
        for (int i = 0; i < count; i++)
            for (int j = 0; j < half; j++)
            {
                double angle = (position0 + i) / Math.Pow(theta, 2.0 * j / headDim);
                d[i * headDim + j] = (float)Math.Cos(angle);
                d[i * headDim + half + j] = (float)Math.Sin(angle);
            }
        return d;
    }
}
