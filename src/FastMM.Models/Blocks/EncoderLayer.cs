namespace FastMM.Models.Blocks;

/// <summary>Shape of a pre-LayerNorm transformer encoder (CLIP and SigLIP towers share it).</summary>
public sealed record EncoderSpec(int Hidden, int Intermediate, int Layers, int Heads, Activation Act, float Eps)
{
    public int HeadDim => Hidden / Heads;
}

/// <summary>
/// One pre-LN encoder layer as HF names it: layer_norm1 → self_attn (q/k/v/out_proj) → residual,
/// layer_norm2 → mlp (fc1, act, fc2) → residual.
/// </summary>
public sealed class EncoderLayer
{
    private readonly EncoderSpec _s;
    private readonly LayerNormWeights _ln1, _ln2;
    private readonly LinearWeight _qkv, _o, _fc1, _fc2;

    public EncoderLayer(Weights w, string prefix, EncoderSpec s)
    {
        _s = s;
        int d = s.Hidden;
        _ln1 = w.LayerNorm(prefix + ".layer_norm1", d, s.Eps);
        // q, k and v projections stacked into one [3D, D] weight: one GEMM instead of three.
        _qkv = w.StackedLinear([prefix + ".self_attn.q_proj", prefix + ".self_attn.k_proj", prefix + ".self_attn.v_proj"], d, d);
        _o = w.Linear(prefix + ".self_attn.out_proj", d, d);
        _ln2 = w.LayerNorm(prefix + ".layer_norm2", d, s.Eps);
        _fc1 = w.Linear(prefix + ".mlp.fc1", s.Intermediate, d);
        _fc2 = w.Linear(prefix + ".mlp.fc2", d, s.Intermediate);
    }

    /// <summary>x [B, T, D] updated in place.</summary>
    public void Forward(IBackend b, Tensor x, bool causal, Tensor? keyMask)
    {
        using (var h = _ln1.Apply(b, x))
        using (var qkv = b.Linear(h, _qkv))
        using (var a = b.SelfAttention(qkv, _s.Heads, 1f / MathF.Sqrt(_s.HeadDim), causal, keyMask))
        using (var o = b.Linear(a, _o))
            b.AddInPlace(x, o);
        using (var h = _ln2.Apply(b, x))
        using (var f = b.Linear(h, _fc1, _s.Act))
        using (var o = b.Linear(f, _fc2))
            b.AddInPlace(x, o);
    }
}

/// <summary>A stack of <see cref="EncoderLayer"/> read from "{prefix}.layers.{i}".</summary>
public sealed class Encoder
{
    private readonly EncoderLayer[] _layers;
    public EncoderSpec Spec { get; }
    public int LayerCount => _layers.Length;

    public Encoder(Weights w, string prefix, EncoderSpec s, int layersToLoad)
    {
        Spec = s;
        _layers = new EncoderLayer[layersToLoad];
        for (int i = 0; i < layersToLoad; i++) _layers[i] = new EncoderLayer(w, $"{prefix}.layers.{i}", s);
    }

    /// <summary>Runs layers [0, count) over x in place (count = HF hidden_states index).</summary>
    public void Forward(IBackend b, Tensor x, bool causal, Tensor? keyMask, int? count = null)
    {
        int n = count ?? _layers.Length;
        if (n < 0 || n > _layers.Length) throw new ArgumentOutOfRangeException(nameof(count), $"encoder has {_layers.Length} layers");
        for (int i = 0; i < n; i++) _layers[i].Forward(b, x, causal, keyMask);
    }
}
