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
}
