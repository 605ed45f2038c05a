using FastMM.Models.Blocks;
using FastMM.Models.IO;

namespace FastMM.Models;

/// <summary>
/// CLIP (HF model_type "clip", CLIPModel): ViT image tower with class token and pre-LayerNorm,
/// causal text transformer pooled at the EOS token, linear projections without bias, logit_scale.
/// Config defaults are HF's CLIPTextConfig / CLIPVisionConfig defaults (HF omits fields equal to them).
/// </summary>
public sealed class ClipModel : DualEncoderModel
{
    public const string Type = "clip";

    public ClipVisionTower Vision { get; }
    private readonly TextTransformer _text;
    private readonly LinearWeight _textProjection;
    private readonly int _eosTokenId, _projectionDim;

    public override string ModelType => Type;
    public override int EmbedDim => _projectionDim;
    public override int ImageSize => Vision.Transformer.Spec.ImageSize;
    public override int TextLength => _text.MaxPositions;

    internal ClipModel(Weights w) : base(w)
    {
        var cfg = w.Folder.Config;
        _projectionDim = cfg.Int("projection_dim", 512, min: 1);
        var tc = cfg.Section("text_config");
        int vocab = tc.Int("vocab_size", 49408, min: 1), maxPositions = tc.Int("max_position_embeddings", 77, min: 1);
        _eosTokenId = tc.Int("eos_token_id", 49407);
        var textSpec = ClipVisionTower.ReadEncoderSpec(tc, hidden: 512, intermediate: 2048, layers: 12, heads: 8);
        if (tc.Int("projection_dim", _projectionDim) != _projectionDim) throw tc.Error("projection_dim", "disagrees with the top-level projection_dim");

        Vision = new ClipVisionTower(w, cfg.Section("vision_config"), "vision_model", _projectionDim);
        _text = new TextTransformer(w, "text_model", textSpec, vocab, maxPositions);
        _textProjection = w.Linear("text_projection", _projectionDim, textSpec.Hidden, bias: false);
        LogitScale = MathF.Exp(w.Scalar("logit_scale"));
    }

    public override Tensor ImageFeatures(Tensor pixels) => Vision.Features(Backend, pixels);

    public override Tensor TextFeatures(TextInput t)
    {
        using var pooled = _text.Pooled(Backend, t, causal: true, EosPositions(t));
        return Backend.Linear(pooled, _textProjection);
    }

    /// <summary>HF: legacy configs (eos_token_id == 2) pool at argmax(input_ids); otherwise at the first eos_token_id.</summary>
    private int[] EosPositions(TextInput t)
    {
        var pos = new int[t.Batch];
        for (int r = 0; r < t.Batch; r++)
        {
            var row = t.Ids.AsSpan(r * t.Length, t.Length);
            int best = 0;
            if (_eosTokenId == 2)
            {
                for (int i = 1; i < row.Length; i++) if (row[i] > row[best]) best = i;
            }
            else
            {
                int i = row.IndexOf(_eosTokenId);
                best = i < 0 ? 0 : i;
            }
            pos[r] = best;
        }
        return pos;
    }
}

/// <summary>CLIP's vision tower (CLIPVisionModel, or the tower inside CLIPModel/LLaVA) with its optional visual_projection.</summary>
public sealed class ClipVisionTower
{
    public VisionTransformer Transformer { get; }
    private readonly LinearWeight? _projection;

    public ClipVisionTower(Weights w, HfConfig vc, string prefix, int? projectionDim, string projectionName = "visual_projection", int? layersToLoad = null)
    {
        var enc = ReadEncoderSpec(vc, hidden: 768, intermediate: 3072, layers: 12, heads: 12);
        var spec = new VisionSpec(enc, vc.Int("image_size", 224, min: 1), vc.Int("patch_size", 32, min: 1), vc.Int("num_channels", 3, min: 1, max: 4),
            ClassToken: true, PreLayerNorm: true, PatchBias: false);
        Transformer = new VisionTransformer(w, prefix, spec, layersToLoad);
        if (projectionDim is int p) _projection = w.Linear(projectionName, p, enc.Hidden, bias: false);
    }

    internal static EncoderSpec ReadEncoderSpec(HfConfig c, int hidden, int intermediate, int layers, int heads)
    {
        int d = c.Int("hidden_size", hidden, min: 1);
        int h = c.Int("num_attention_heads", heads, min: 1);
        if (d % h != 0) throw c.Error("hidden_size", $"= {d} is not divisible by num_attention_heads = {h}");
        return new EncoderSpec(d, c.Int("intermediate_size", intermediate, min: 1), c.Int("num_hidden_layers", layers, min: 0), h,
            ActivationNames.Parse(c.String("hidden_act", "quick_gelu"), $"{c.Path}.hidden_act"), c.Float("layer_norm_eps", 1e-5f));
    }

    /// <summary>pooler_output = post_layernorm(CLS of the last layer), then the projection.</summary>
    public Tensor Features(IBackend b, Tensor pixels)
    {
        using var h = Transformer.HiddenStates(b, pixels);
        using var cls = b.SelectRows(h, new int[h.Dim(0)]);
        var pooled = Transformer.PostLayerNorm.Apply(b, cls);
        if (_projection is null) return pooled;
        using (pooled) return b.Linear(pooled, _projection);
    }
}
