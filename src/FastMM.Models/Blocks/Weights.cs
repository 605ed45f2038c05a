using FastMM.Models.IO;
using FastMM.Quant;

namespace FastMM.Models.Blocks;

/// <summary>
/// Moves tensors from a model folder onto a backend, checking each shape against the config, applying the
/// quantization policy to Linear weights, and reporting progress per tensor. Everything it creates is tracked and
/// disposed with the model.
/// </summary>
public sealed class Weights : IDisposable
{
    private readonly List<IDisposable> _owned = new();
    private readonly Action<int, int>? _progress;
    private readonly int _total;
    private int _loaded;

    public ModelFolder Folder { get; }
    public IBackend Backend { get; }
    public QuantPolicy Policy { get; }
    /// <summary>What the Linear weights ended up as: per format, the matrices and their stored bytes.</summary>
    public QuantReport Report { get; } = new();

    public Weights(ModelFolder folder, IBackend backend, Action<int, int>? progress, QuantPolicy? policy = null)
    {
        Folder = folder; Backend = backend; _progress = progress; Policy = policy ?? QuantPolicy.None;
        _total = folder.TensorNames.Count();
    }

    private T Track<T>(T d) where T : IDisposable { _owned.Add(d); return d; }
    private void Tick() => _progress?.Invoke(++_loaded, _total);

    public Tensor Tensor(string name, params int[] shape)
    {
        var t = Track(Backend.Weight(Folder.Get(name, shape)));
        Report.TensorBytes += t.Length * sizeof(float);
        Tick();
        return t;
    }

    public LinearWeight Linear(string prefix, int outFeatures, int inFeatures, bool bias = true)
    {
        string name = prefix + ".weight";
        LinearWeight lw;
        if (Folder.Quantized.ContainsKey(name))
        {
            CheckStoredMatchesPolicy(name);
            float[] b = bias ? Folder.Get(prefix + ".bias", outFeatures).ToFloatArray() : [];
            lw = Prepared(name, Backend.Linear(Folder.GetQuantized(name, outFeatures, inFeatures), b), Folder.Quantized[name].Type);
        }
        else
        {
            var w = Folder.Get(name, outFeatures, inFeatures);
            TensorData? b = bias ? Folder.Get(prefix + ".bias", outFeatures) : null;
            var type = Target(name, inFeatures);
            lw = Prepared(name, type is { } t ? Backend.Linear(w, b, t) : Backend.Linear(w, b), type);
        }
        Tick(); if (bias) Tick();
        return lw;
    }

    /// <summary>The policy's format for a matrix, or null when it stays as stored (no policy, or in_features not a multiple of the block).</summary>
    private QuantType? Target(string name, int inFeatures)
    {
        if (Policy.ForTensor(name) is not { } t) return null;
        int block = QuantFormats.Get(t).BlockElements;
        if (inFeatures % block == 0) return t;
        Report.KeptAsStored.Add($"{name} (in_features {inFeatures} is not a multiple of {block})");
        return null;
    }

    private void CheckStoredMatchesPolicy(string name)
    {
        var stored = Folder.Quantized[name].Type;
        if (Policy.ForTensor(name) is { } wanted && wanted != stored)
            throw new FastMMException($"{Folder.Directory}: '{name}' is stored as {QuantFormats.Get(stored).Name}; it cannot be loaded as {QuantFormats.Get(wanted).Name} (quantize from the original folder instead)");
    }

    private LinearWeight Prepared(string name, LinearWeight lw, QuantType? type)
    {
        Report.Add(type, lw.WeightBytes, (long)lw.OutFeatures * lw.InFeatures, QuantPolicy.ComponentOf(name));
        return Track(lw);
    }

    /// <summary>Several Linear layers with the same input stacked into one [Σout, in] weight (outputs side by side).</summary>
    public LinearWeight StackedLinear(IReadOnlyList<string> prefixes, int outFeaturesEach, int inFeatures)
        => StackedLinear(prefixes, prefixes.Select(_ => outFeaturesEach).ToArray(), inFeatures, bias: true);

    public LinearWeight StackedLinear(IReadOnlyList<string> prefixes, IReadOnlyList<int> outFeatures, int inFeatures, bool bias)
    {
        int total = outFeatures.Sum();
        var b = bias ? new float[total] : [];
        int row = 0;
        for (int i = 0; i < prefixes.Count && bias; i++)
        {
            Folder.Get(prefixes[i] + ".bias", outFeatures[i]).ToFloat(b.AsSpan(row, outFeatures[i]));
            row += outFeatures[i];
        }
        string first = prefixes[0] + ".weight";
        LinearWeight lw;
        if (Folder.Quantized.ContainsKey(first))
        {
            // Quantized rows are independent, so the stacked matrix is the parts' bytes one after another.
            var parts = new List<QuantizedMatrix>();
            for (int i = 0; i < prefixes.Count; i++)
            {
                string name = prefixes[i] + ".weight";
                if (!Folder.Quantized.TryGetValue(name, out var e) || e.Type != Folder.Quantized[first].Type)
                    throw new FastMMException($"{Folder.Directory}: '{name}' must be stored like '{first}' ({QuantFormats.Get(Folder.Quantized[first].Type).Name}): they are used as one stacked matrix");
                CheckStoredMatchesPolicy(name);
                parts.Add(Folder.GetQuantized(name, outFeatures[i], inFeatures));
            }
            var bytes = new byte[parts.Sum(p => p.ByteSize)];
            long at = 0;
            foreach (var p in parts) { p.Bytes.CopyTo(bytes.AsSpan((int)at)); at += p.ByteSize; }
            var type = Folder.Quantized[first].Type;
            lw = Prepared(first, Backend.Linear(QuantizedMatrix.FromBytes(bytes, total, inFeatures, type, first), b), type);
        }
        else
        {
            var w = new float[(long)total * inFeatures];
            row = 0;
            for (int i = 0; i < prefixes.Count; i++)
            {
                Folder.Get(prefixes[i] + ".weight", outFeatures[i], inFeatures).ToFloat(w.AsSpan(row * inFeatures, outFeatures[i] * inFeatures));
                row += outFeatures[i];
            }
            var type = Target(first, inFeatures);
            lw = Prepared(first, FromFloats(first, w, total, inFeatures, b, type), type);
        }
        for (int i = 0; i < prefixes.Count; i++) { Tick(); if (bias) Tick(); }
        return lw;
    }

    /// <summary>A Linear from float rows, quantized when the policy asks for it.</summary>
    private LinearWeight FromFloats(string name, ReadOnlySpan<float> w, int rows, int inFeatures, ReadOnlySpan<float> b, QuantType? type)
        => type is { } t && t != QuantType.F32
            ? Backend.Linear(QuantizedMatrix.Quantize(w, rows, inFeatures, t, name), b)
            : Backend.Linear(w, rows, inFeatures, b);

    /// <summary>
    /// A Linear that reuses a stored matrix (e.g. lm_head tied to embed_tokens). The policy applies to this product
    /// like to any Linear of its component (the head is the largest matrix a decode step reads); the embedding
    /// lookup itself keeps the stored values.
    /// </summary>
    public LinearWeight LinearFromTensor(string name, int outFeatures, int inFeatures)
    {
        var w = Folder.Get(name, outFeatures, inFeatures);
        var type = Target(name, inFeatures);
        return Prepared(name, type is { } t ? Backend.Linear(w, null, t) : Backend.Linear(w, null), type);
    }

    /// <summary>A square-kernel Conv2d weight [out, in, k, k] (+ bias) prepared as a Linear [out, in·k·k] for patch embedding.</summary>
    public LinearWeight Conv2dAsLinear(string prefix, int outChannels, int inChannels, int kernel, bool bias)
    {
        var w = Folder.Get(prefix + ".weight", outChannels, inChannels, kernel, kernel).ToFloatArray();
        float[] b = bias ? Folder.Get(prefix + ".bias", outChannels).ToFloatArray() : [];
        var lw = Prepared(prefix + ".weight", Backend.Linear(w, outChannels, inChannels * kernel * kernel, b), null);
        Tick(); if (bias) Tick();
        return lw;
    }

    /// <summary>A Linear whose weight is rows [rowStart, rowStart+rows) of a stored matrix (e.g. one third of a fused in_proj).</summary>
    public LinearWeight LinearSlice(string weightName, string? biasName, int rowStart, int rows, int inFeatures, int totalRows)
    {
        var w = Folder.Get(weightName, totalRows, inFeatures).ToFloatArray();
        float[] b = biasName is null ? [] : Folder.Get(biasName, totalRows).ToFloatArray();
        var type = Target(weightName, inFeatures);
        return Prepared(weightName, FromFloats(weightName, w.AsSpan(rowStart * inFeatures, rows * inFeatures), rows, inFeatures,
            b.Length == 0 ? ReadOnlySpan<float>.Empty : b.AsSpan(rowStart, rows), type), type);
    }

    public LayerNormWeights LayerNorm(string prefix, int dim, float eps)
        => new(Tensor(prefix + ".weight", dim), Tensor(prefix + ".bias", dim), eps);

    /// <summary>A scalar parameter such as logit_scale (stored as [] or [1]).</summary>
    public float Scalar(string name)
    {
        var t = Folder.Get(name);
        if (t.ElementCount != 1) throw new FastMMException($"{Folder.Directory}: tensor '{name}' has shape {t.ShapeString}, expected a scalar");
        Tick();
        return t.ToFloatArray()[0];
    }

    /// <summary>Marks a tensor as consumed without loading it (e.g. the other half of a fused weight).</summary>
    public void Skip(string name) { if (Folder.Has(name)) Tick(); }

    public void Dispose()
    {
        foreach (var d in _owned) d.Dispose();
        _owned.Clear();
    }
}

/// <summary>What a load made of the Linear weights: matrix count, parameters and stored bytes per format.</summary>
public sealed class QuantReport
{
    public Dictionary<string, (int Matrices, long Parameters, long Bytes)> PerFormat { get; } = new(StringComparer.Ordinal);
    /// <summary>Matrices the policy could not quantize (in_features not a multiple of the block), kept as stored.</summary>
    public List<string> KeptAsStored { get; } = new();

    /// <summary>Bytes of the other weights (embeddings, norms, position tables), held as F32.</summary>
    public long TensorBytes { get; internal set; }

    public long LinearBytes => PerFormat.Values.Sum(v => v.Bytes);
    public long TotalBytes => LinearBytes + TensorBytes;

    /// <summary>Linear weight bytes per component (a decode step reads the text component's).</summary>
    public Dictionary<ModelComponent, long> BytesPerComponent { get; } = new();

    internal void Add(QuantType? type, long bytes, long parameters, ModelComponent component)
    {
        BytesPerComponent[component] = BytesPerComponent.GetValueOrDefault(component) + bytes;
        string key = type is { } t ? QuantFormats.Get(t).Name : "f32";
        var (m, p, b) = PerFormat.GetValueOrDefault(key);
        PerFormat[key] = (m + 1, p + parameters, b + bytes);
    }
}

public readonly record struct LayerNormWeights(Tensor Gamma, Tensor Beta, float Eps)
{
    public Tensor Apply(IBackend b, Tensor x) => b.LayerNorm(x, Gamma, Beta, Eps);
}
