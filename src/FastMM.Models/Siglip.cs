using FastMM.Models.Blocks;
using FastMM.Models.IO;

namespace FastMM.Models;

/// <summary>
/// SigLIP (HF model_type "siglip", SiglipModel): ViT without class token (patch conv with bias) and a
/// multi-head attention-pooling head; a non-causal text transformer pooled at the last position with a
/// linear head; logits = exp(logit_scale) · cos + logit_bias (trained with a sigmoid loss).
/// </summary>
public sealed class SiglipModel : DualEncoderModel
{
    public const string Type = "siglip";

    public SiglipVisionTower Vision { get; }
    private readonly TextTransformer _text;
    private readonly LinearWeight _textHead;
    private readonly int _embedDim;

    public override string ModelType => Type;
    public override int EmbedDim => _embedDim;
    public override int ImageSize => Vision.Transformer.Spec.ImageSize;
    public override int TextLength => _text.MaxPositions;

    internal SiglipModel(Weights w) : base(w)
    {
        var cfg = w.Folder.Config;
        var tc = cfg.Section("text_config");
        Vision = new SiglipVisionTower(w, cfg.Section("vision_config"), "vision_model");
        _embedDim = Vision.Transformer.Spec.Encoder.Hidden;

        int vocab = tc.Int("vocab_size", 32000, min: 1), maxPositions = tc.Int("max_position_embeddings", 64, min: 1);
        var textSpec = SiglipVisionTower.ReadEncoderSpec(tc);
        int d = textSpec.Hidden;
        int projection = tc.Int("projection_size", d, min: 1);
        if (projection != _embedDim)
            throw tc.Error("projection_size", $"= {projection} must equal vision_config.hidden_size = {_embedDim} (text and image embeddings share one space)");
        _text = new TextTransformer(w, "text_model", textSpec, vocab, maxPositions);
        _textHead = w.Linear("text_model.head", projection, d);
        LogitScale = MathF.Exp(w.Scalar("logit_scale"));
        LogitBias = w.Scalar("logit_bias");
    }

    public override Tensor ImageFeatures(Tensor pixels) => Vision.Features(Backend, pixels);

    public override Tensor TextFeatures(TextInput t)
    {
        // SigLIP's text tower is bidirectional (only a given padding mask applies) and pools the last position.
        var last = new int[t.Batch];
        Array.Fill(last, t.Length - 1);
        using var pooled = _text.Pooled(Backend, t, causal: false, last);
        return Backend.Linear(pooled, _textHead);
    }
}

/// <summary>SigLIP's vision tower (SiglipVisionModel, or inside SiglipModel / Idefics3 / LLaVA) with its optional attention-pooling head.</summary>
public sealed class SiglipVisionTower
{
    public VisionTransformer Transformer { get; }
    private readonly AttentionPoolingHead? _head;

    public SiglipVisionTower(Weights w, HfConfig vc, string prefix, int? layersToLoad = null, bool? useHead = null)
    {
        var enc = ReadEncoderSpec(vc);
        var spec = new VisionSpec(enc, vc.Int("image_size", 224, min: 1), vc.Int("patch_size", 16, min: 1), vc.Int("num_channels", 3, min: 1, max: 4),
            ClassToken: false, PreLayerNorm: false, PatchBias: true);
        Transformer = new VisionTransformer(w, prefix, spec, layersToLoad);
        if (useHead ?? vc.Bool("vision_use_head", true)) _head = new AttentionPoolingHead(w, prefix + ".head", enc);
    }

    internal static EncoderSpec ReadEncoderSpec(HfConfig c)
    {
        int d = c.Int("hidden_size", 768, min: 1);
        int h = c.Int("num_attention_heads", 12, min: 1);
        if (d % h != 0) throw c.Error("hidden_size", $"= {d} is not divisible by num_attention_heads = {h}");
        return new EncoderSpec(d, c.Int("intermediate_size", 3072, min: 1), c.Int("num_hidden_layers", 12, min: 0), h,
            ActivationNames.Parse(c.String("hidden_act", "gelu_pytorch_tanh"), $"{c.Path}.hidden_act"), c.Float("layer_norm_eps", 1e-6f));
    }

    /// <summary>HF last_hidden_state: post_layernorm over every patch token [B, N, D].</summary>
    public Tensor LastHiddenState(IBackend b, Tensor pixels)
    {
        using var h = Transformer.HiddenStates(b, pixels);
        return Transformer.PostLayerNorm.Apply(b, h);
    }

    /// <summary>pooler_output [B, D]: the attention-pooling head over last_hidden_state.</summary>
    public Tensor Features(IBackend b, Tensor pixels)
    {
        if (_head is null) throw new FastMMException("this SigLIP vision tower has no pooling head (vision_use_head = false); it yields patch features only");
        using var h = LastHiddenState(b, pixels);
        return _head.Forward(b, h);
    }
}

/// <summary>
/// SigLIP's MAP head: a learned probe attends over the patch tokens (torch.nn.MultiheadAttention with a
/// fused in_proj), then probe = probe + mlp(layernorm(probe)); returns [B, D].
/// </summary>
internal sealed class AttentionPoolingHead
{
    private readonly Tensor _probe;
    private readonly LinearWeight _q, _k, _v, _out, _fc1, _fc2;
    private readonly LayerNormWeights _ln;
    private readonly EncoderSpec _s;

    public AttentionPoolingHead(Weights w, string prefix, EncoderSpec s)
    {
        _s = s;
        int d = s.Hidden;
        _probe = w.Tensor(prefix + ".probe", 1, 1, d);
        string inW = prefix + ".attention.in_proj_weight", inB = prefix + ".attention.in_proj_bias";
        _q = w.LinearSlice(inW, inB, 0, d, d, 3 * d);
        _k = w.LinearSlice(inW, inB, d, d, d, 3 * d);
        _v = w.LinearSlice(inW, inB, 2 * d, d, d, 3 * d);
        w.Skip(inW); w.Skip(inB);
        _out = w.Linear(prefix + ".attention.out_proj", d, d);
        _ln = w.LayerNorm(prefix + ".layernorm", d, s.Eps);
        _fc1 = w.Linear(prefix + ".mlp.fc1", s.Intermediate, d);
        _fc2 = w.Linear(prefix + ".mlp.fc2", d, s.Intermediate);
    }

    public Tensor Forward(IBackend b, Tensor tokens)
    {
        int batch = tokens.Dim(0);
        using var probe = b.Repeat(_probe, batch);
        using var q = b.Linear(probe, _q);
        using var k = b.Linear(tokens, _k);
        using var v = b.Linear(tokens, _v);
        using var a = b.Attention(q, k, v, _s.Heads, 1f / MathF.Sqrt(_s.HeadDim), causal: false, keyMask: null);
        var x = b.Linear(a, _out);
        using (var h = _ln.Apply(b, x))
        using (var f = b.Linear(h, _fc1, _s.Act))
        using (var m = b.Linear(f, _fc2))
            b.AddInPlace(x, m);
        using (x) return b.SelectRows(x, new int[batch]);
    }
}
