using FastMM.Models.IO;

namespace FastMM.Models.Blocks;

/// <summary>
/// Moves tensors from a model folder onto a backend, checking each shape against the config,
/// and reports progress per tensor. Everything it creates is tracked and disposed with the model.
/// </summary>
public sealed class Weights : IDisposable
{
    private readonly List<IDisposable> _owned = new();
    private readonly Action<int, int>? _progress;
    private readonly int _total;
    private int _loaded;

    public ModelFolder Folder { get; }
    public IBackend Backend { get; }

    public Weights(ModelFolder folder, IBackend backend, Action<int, int>? progress)
    {
        Folder = folder; Backend = backend; _progress = progress;
        _total = folder.TensorNames.Count();
    }

    private T Track<T>(T d) where T : IDisposable { _owned.Add(d); return d; }
    private void Tick() => _progress?.Invoke(++_loaded, _total);

    public Tensor Tensor(string name, params int[] shape)
    {
        var t = Track(Backend.Weight(Folder.Get(name, shape)));
        Tick();
        return t;
    }

    public LinearWeight Linear(string prefix, int outFeatures, int inFeatures, bool bias = true)
    {
        var w = Folder.Get(prefix + ".weight", outFeatures, inFeatures);
        TensorData? b = bias ? Folder.Get(prefix + ".bias", outFeatures) : null;
        var lw = Track(Backend.Linear(w, b));
        Tick(); if (bias) Tick();
        return lw;
    }

    /// <summary>Several Linear layers with the same input stacked into one [Σout, in] weight (outputs side by side).</summary>
    public LinearWeight StackedLinear(IReadOnlyList<string> prefixes, int outFeaturesEach, int inFeatures)
        => StackedLinear(prefixes, prefixes.Select(_ => outFeaturesEach).ToArray(), inFeatures, bias: true);

    public LinearWeight StackedLinear(IReadOnlyList<string> prefixes, IReadOnlyList<int> outFeatures, int inFeatures, bool bias)
    {
        int total = outFeatures.Sum();
        var w = new float[(long)total * inFeatures];
        var b = bias ? new float[total] : [];
        int row = 0;
        for (int i = 0; i < prefixes.Count; i++)
        {
            int o = outFeatures[i];
            Folder.Get(prefixes[i] + ".weight", o, inFeatures).ToFloat(w.AsSpan(row * inFeatures, o * inFeatures));
            Tick();
            if (bias) { Folder.Get(prefixes[i] + ".bias", o).ToFloat(b.AsSpan(row, o)); Tick(); }
            row += o;
        }
        return Track(Backend.Linear(w, total, inFeatures, b));
    }

    /// <summary>A Linear that reuses a stored matrix (e.g. lm_head tied to embed_tokens).</summary>
    public LinearWeight LinearFromTensor(string name, int outFeatures, int inFeatures)
        => Track(Backend.Linear(Folder.Get(name, outFeatures, inFeatures), null));

    /// <summary>A square-kernel Conv2d weight [out, in, k, k] (+ bias) prepared as a Linear [out, in·k·k] for patch embedding.</summary>
    public LinearWeight Conv2dAsLinear(string prefix, int outChannels, int inChannels, int kernel, bool bias)
    {
        var w = Folder.Get(prefix + ".weight", outChannels, inChannels, kernel, kernel).ToFloatArray();
        float[] b = bias ? Folder.Get(prefix + ".bias", outChannels).ToFloatArray() : [];
        var lw = Track(Backend.Linear(w, outChannels, inChannels * kernel * kernel, b));
        Tick(); if (bias) Tick();
        return lw;
    }

    /// <summary>A Linear whose weight is rows [rowStart, rowStart+rows) of a stored matrix (e.g. one third of a fused in_proj).</summary>
    public LinearWeight LinearSlice(string weightName, string? biasName, int rowStart, int rows, int inFeatures, int totalRows)
    {
        var w = Folder.Get(weightName, totalRows, inFeatures).ToFloatArray();
        float[] b = biasName is null ? [] : Folder.Get(biasName, totalRows).ToFloatArray();
        var lw = Track(Backend.Linear(w.AsSpan(rowStart * inFeatures, rows * inFeatures), rows, inFeatures,
            b.Length == 0 ? ReadOnlySpan<float>.Empty : b.AsSpan(rowStart, rows)));
        return lw;
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

public readonly record struct LayerNormWeights(Tensor Gamma, Tensor Beta, float Eps)
{
    public Tensor Apply(IBackend b, Tensor x) => b.LayerNorm(x, Gamma, Beta, Eps);
}
