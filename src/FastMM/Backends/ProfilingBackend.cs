using System.Diagnostics;
using FastMM.Quant;

namespace FastMM.Backends;

/// <summary>
/// Wraps a backend and accumulates wall time and call counts per op (for `fastmm bench --profile`).
/// Tensors stay the inner backend's: this only times the calls.
/// </summary>
public sealed class ProfilingBackend : IBackend
{
    private readonly IBackend _inner;
    private readonly Dictionary<string, (long Ticks, int Calls)> _stats = new();

    public ProfilingBackend(IBackend inner) { _inner = inner; }

    public string Name => _inner.Name;
    public IBackend Inner => _inner;
    public BackendPrecision Precision => _inner.Precision;
    public IReadOnlyDictionary<string, (long Ticks, int Calls)> Stats => _stats;
    public void Reset() => _stats.Clear();

    /// <summary>Per-op totals, slowest first: op, milliseconds, calls.</summary>
    public IEnumerable<(string Op, double Ms, int Calls)> Report()
        => _stats.OrderByDescending(kv => kv.Value.Ticks).Select(kv => (kv.Key, kv.Value.Ticks * 1000.0 / Stopwatch.Frequency, kv.Value.Calls));

    private T Time<T>(string op, Func<T> f)
    {
        long t0 = Stopwatch.GetTimestamp();
        var r = f();
        var s = _stats.GetValueOrDefault(op);
        _stats[op] = (s.Ticks + Stopwatch.GetTimestamp() - t0, s.Calls + 1);
        return r;
    }

    private void Time(string op, Action f) => Time(op, () => { f(); return 0; });

    public Tensor Zeros(params int[] shape) => _inner.Zeros(shape);
    public Tensor FromHost(ReadOnlySpan<float> data, params int[] shape) => _inner.FromHost(data, shape);
    public void ToHost(Tensor t, Span<float> dst) => _inner.ToHost(t, dst);
    public Tensor Weight(in TensorData w) => _inner.Weight(w);
    public LinearWeight Linear(in TensorData weight, in TensorData? bias) => _inner.Linear(weight, bias);
    public LinearWeight Linear(ReadOnlySpan<float> weight, int outFeatures, int inFeatures, ReadOnlySpan<float> bias) => _inner.Linear(weight, outFeatures, inFeatures, bias);
    public LinearWeight Linear(in TensorData weight, in TensorData? bias, QuantType type) => _inner.Linear(weight, bias, type);
    public LinearWeight Linear(QuantizedMatrix weight, ReadOnlySpan<float> bias) => _inner.Linear(weight, bias);
    public void Release(Tensor t) => _inner.Release(t);

    public Tensor Linear(Tensor x, LinearWeight w, Activation act = Activation.None)
        => Time(act == Activation.None ? $"Linear {w.OutFeatures}x{w.InFeatures}" : $"Linear {w.OutFeatures}x{w.InFeatures} +{act}", () => _inner.Linear(x, w, act));
    public Tensor MatMulTransposed(Tensor a, Tensor b) => Time("MatMulTransposed", () => _inner.MatMulTransposed(a, b));
    public Tensor LayerNorm(Tensor x, Tensor gamma, Tensor beta, float eps) => Time("LayerNorm", () => _inner.LayerNorm(x, gamma, beta, eps));
    public void ActivationInPlace(Tensor x, Activation act) => Time($"Activation {act}", () => _inner.ActivationInPlace(x, act));
    public void AddInPlace(Tensor x, Tensor y) => Time("AddInPlace", () => _inner.AddInPlace(x, y));
    public void ScaleInPlace(Tensor x, float scale, float bias = 0f) => Time("ScaleInPlace", () => _inner.ScaleInPlace(x, scale, bias));
    public void L2NormalizeInPlace(Tensor x) => Time("L2Normalize", () => _inner.L2NormalizeInPlace(x));
    public Tensor Attention(Tensor q, Tensor k, Tensor v, int heads, float scale, bool causal, Tensor? keyMask)
        => Time("Attention", () => _inner.Attention(q, k, v, heads, scale, causal, keyMask));
    public Tensor SelfAttention(Tensor qkv, int heads, float scale, bool causal, Tensor? keyMask)
        => Time("SelfAttention", () => _inner.SelfAttention(qkv, heads, scale, causal, keyMask));
    public Tensor PatchEmbed(Tensor pixels, LinearWeight weight, int patch) => Time("PatchEmbed", () => _inner.PatchEmbed(pixels, weight, patch));
    public Tensor Embedding(Tensor table, ReadOnlySpan<int> ids)
    {
        long t0 = Stopwatch.GetTimestamp();
        var r = _inner.Embedding(table, ids);
        var s = _stats.GetValueOrDefault("Embedding");
        _stats["Embedding"] = (s.Ticks + Stopwatch.GetTimestamp() - t0, s.Calls + 1);
        return r;
    }
    public Tensor PrependRow(Tensor x, Tensor row) => Time("PrependRow", () => _inner.PrependRow(x, row));
    public Tensor SelectRows(Tensor x, ReadOnlySpan<int> positions)
    {
        var p = positions.ToArray();
        return Time("SelectRows", () => _inner.SelectRows(x, p));
    }
    public Tensor Repeat(Tensor row, int batch) => Time("Repeat", () => _inner.Repeat(row, batch));
    public Tensor RmsNorm(Tensor x, Tensor weight, float eps) => Time("RmsNorm", () => _inner.RmsNorm(x, weight, eps));
    public Tensor RopeTable(int position0, int count, int headDim, double theta) => Time("RopeTable", () => _inner.RopeTable(position0, count, headDim, theta));
    public void RopeInPlace(Tensor qkv, int qHeads, int kvHeads, int headDim, Tensor table) => Time("Rope", () => _inner.RopeInPlace(qkv, qHeads, kvHeads, headDim, table));
    public Tensor SwiGlu(Tensor gateUp) => Time("SwiGlu", () => _inner.SwiGlu(gateUp));
    public Kv.KvCacheStorage CreateKvCache(int layers, int kvHeads, int headDim, int blockSize, int blocks, Kv.KvCacheType type)
        => _inner.CreateKvCache(layers, kvHeads, headDim, blockSize, blocks, type);
    public void WriteKv(Kv.KvCacheStorage cache, int layer, Tensor qkv, int qHeads, ReadOnlySpan<int> blockTable, int position0)
    {
        var t = blockTable.ToArray();
        Time("WriteKv", () => _inner.WriteKv(cache, layer, qkv, qHeads, t, position0));
    }
    public Tensor CachedAttention(Tensor qkv, int qHeads, Kv.KvCacheStorage cache, int layer, ReadOnlySpan<int> blockTable, int position0, float scale)
    {
        var t = blockTable.ToArray();
        return Time("CachedAttention", () => _inner.CachedAttention(qkv, qHeads, cache, layer, t, position0, scale));
    }
    public void SetRows(Tensor x, ReadOnlySpan<int> rows, Tensor values)
    {
        var r = rows.ToArray();
        Time("SetRows", () => _inner.SetRows(x, r, values));
    }
    public Tensor PixelShuffle(Tensor x, int scale) => Time("PixelShuffle", () => _inner.PixelShuffle(x, scale));
    public void Dispose() => _inner.Dispose();
}
