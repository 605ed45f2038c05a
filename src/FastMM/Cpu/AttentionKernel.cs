using System.Numerics.Tensors;

namespace FastMM.Cpu;

/// <summary>Fused multi-head attention on the CPU. Reference-quality placeholder.</summary>
public static class AttentionKernel
{
    /// <summary>
    /// q [B, Tq, H·D], k/v [B, Tk, H·D] → o [B, Tq, H·D]. keyMask [B, Tk] (nonzero = keep) may be empty.
    /// Causal: query i sees keys j ≤ i + (Tk − Tq). A query with no visible key gets zeros.
    /// </summary>
    public static unsafe void Run(ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, Span<float> o,
        int batch, int tq, int tk, int heads, int headDim, float scale, bool causal, ReadOnlySpan<float> keyMask)
    {
        int hd = heads * headDim;
        fixed (float* pq = q) fixed (float* pk = k) fixed (float* pv = v) fixed (float* po = o) fixed (float* pm = keyMask)
        {
            float* Q = pq, K = pk, V = pv, O = po, M = pm; bool hasMask = keyMask.Length > 0;
            CpuParallel.For(batch * heads * tq, idx =>
            {
                int i = idx % tq, h = idx / tq % heads, b = idx / tq / heads;
                Span<float> scores = tk <= 4096 ? stackalloc float[tk] : new float[tk];
                var qi = new ReadOnlySpan<float>(Q + ((long)b * tq + i) * hd + h * headDim, headDim);
                int last = causal ? Math.Min(tk - 1, i + (tk - tq)) : tk - 1;
                float max = float.NegativeInfinity;
                for (int j = 0; j < tk; j++)
                {
                    bool visible = j <= last && (!hasMask || M[(long)b * tk + j] != 0f);
                    if (!visible) { scores[j] = float.NegativeInfinity; continue; }
                    float s = TensorPrimitives.Dot(qi, new ReadOnlySpan<float>(K + ((long)b * tk + j) * hd + h * headDim, headDim)) * scale;
                    scores[j] = s;
                    if (s > max) max = s;
                }
                var oi = new Span<float>(O + ((long)b * tq + i) * hd + h * headDim, headDim);
                oi.Clear();
                if (float.IsNegativeInfinity(max)) return;
                float sum = 0;
                for (int j = 0; j < tk; j++) { float e = MathF.Exp(scores[j] - max); scores[j] = e; sum += e; }
                float inv = 1f / sum;
                for (int j = 0; j < tk; j++)
                {
                    if (scores[j] == 0f) continue;
                    TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(V + ((long)b * tk + j) * hd + h * headDim, headDim), scores[j] * inv, oi, oi);
                }
            });
        }
    }
}
