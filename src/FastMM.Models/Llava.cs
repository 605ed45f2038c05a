using FastMM.Models.Blocks;
using FastMM.Models.IO;

namespace FastMM.Models;

/// <summary>
/// LLaVA (HF model_type "llava", LlavaForConditionalGeneration): a CLIP or SigLIP vision tower read at
/// vision_feature_layer, "default" (drop CLS) or "full" feature selection, a 2-layer projector, and a Llama or
/// Qwen2 text model. Both checkpoint layouts load: the hub's original (vision_tower.*, multi_modal_projector.*,
/// language_model.model.*, language_model.lm_head) and transformers ≥ 4.52's (model.vision_tower.*, model.language_model.*, lm_head).
/// </summary>
public sealed class LlavaModel : VisionLanguageModel
{
    public const string Type = "llava";

    private readonly VisionTransformer _vision;
    private readonly int _featureLayers;
    private readonly bool _dropCls;
    private readonly LinearWeight _proj1, _proj2;
    private readonly Activation _projAct;

    public override string ModelType => Type;
    public override int ImageSize => _vision.Spec.ImageSize;
    public override int TokensPerImage => _vision.Spec.Positions - (_dropCls ? 1 : 0);

    internal LlavaModel(Weights w) : base(w)
    {
        var cfg = w.Folder.Config;
        bool newLayout = w.Folder.Has("model.language_model.embed_tokens.weight");
        string visionPrefix = newLayout ? "model.vision_tower.vision_model" : "vision_tower.vision_model";
        string projPrefix = newLayout ? "model.multi_modal_projector" : "multi_modal_projector";
        string textPrefix = newLayout ? "model.language_model" : "language_model.model";
        string lmHead = newLayout ? "lm_head" : "language_model.lm_head";

        ImageTokenId = cfg.Has("image_token_id") ? cfg.Int("image_token_id") : cfg.Int("image_token_index", 32000);
        string strategy = cfg.String("vision_feature_select_strategy", "default");
        if (strategy is not ("default" or "full")) throw cfg.Error("vision_feature_select_strategy", $"'{strategy}' is not one of default, full");
        _projAct = ActivationNames.Parse(cfg.String("projector_hidden_act", "gelu"), "projector_hidden_act");
        bool projBias = cfg.Bool("multimodal_projector_bias", true);

        var vc = cfg.Section("vision_config");
        string vtype = vc.String("model_type", "clip_vision_model");
        int totalLayers = vtype switch
        {
            "clip_vision_model" => vc.Int("num_hidden_layers", 12),
            "siglip_vision_model" => vc.Int("num_hidden_layers", 12),
            _ => throw vc.Error("model_type", $"'{vtype}' is not a supported LLaVA vision tower (clip_vision_model, siglip_vision_model)"),
        };
        int layer = cfg.Int("vision_feature_layer", -2);
        // HF hidden_states has layers + 1 entries (index 0 = embeddings); negative indices count from the end.
        _featureLayers = layer < 0 ? totalLayers + 1 + layer : layer;
        if (_featureLayers < 0 || _featureLayers > totalLayers) throw cfg.Error("vision_feature_layer", $"= {layer} is outside the tower's {totalLayers} layers");
        _vision = vtype == "clip_vision_model"
            ? new ClipVisionTower(w, vc, visionPrefix, projectionDim: null, layersToLoad: _featureLayers).Transformer
            : new SiglipVisionTower(w, vc, visionPrefix, layersToLoad: _featureLayers, useHead: false).Transformer;
        // LLaVA-1.5 uses CLIP at 336 px with vocab defaults of Llama; text_config defaults follow its model_type.
        var tc = cfg.Section("text_config");
        var spec = TextSpec(tc);
        int vd = _vision.Spec.Encoder.Hidden;
        _proj1 = w.Linear(projPrefix + ".linear_1", spec.Hidden, vd, projBias);
        _proj2 = w.Linear(projPrefix + ".linear_2", spec.Hidden, spec.Hidden, projBias);
        // HF drops the first token for "default" whatever the tower (for SigLIP that is a patch, not a CLS token).
        _dropCls = strategy == "default";
        Text = new CausalLm(w, textPrefix, lmHead, spec);
    }

    /// <summary>text_config of a LLaVA / Idefics3 folder: Llama or Qwen2 with their HF defaults.</summary>
    internal static DecoderSpec TextSpec(HfConfig tc) => tc.String("model_type", "llama") switch
    {
        "llama" => DecoderSpec.Read(tc, vocab: 32000, intermediate: 11008, maxPositions: 2048, eps: 1e-6f, qkvBias: false, tied: false),
        "qwen2" => DecoderSpec.Read(tc, vocab: 151936, intermediate: 22016, maxPositions: 32768, eps: 1e-6f, qkvBias: true, tied: false),
        var other => throw tc.Error("model_type", $"'{other}' is not a supported text model (llama, qwen2)"),
    };

    public override Tensor ImageFeatures(Tensor pixels, ReadOnlySpan<bool> pixelAttentionMask)
    {
        var b = Backend;
        using var h = _vision.HiddenStates(b, pixels, _featureLayers);
        int n = h.Dim(0), t = h.Dim(1), d = h.Dim(2);
        Tensor selected;
        if (_dropCls)
        {
            var rows = new int[n * (t - 1)];
            for (int i = 0; i < n; i++) for (int j = 1; j < t; j++) rows[i * (t - 1) + j - 1] = i * t + j;
            using var flat = h.Reshape(n * t, d);
            selected = b.Embedding(flat, rows);
        }
        else selected = b.Embedding(h.Reshape(n * t, d), Enumerable.Range(0, n * t).ToArray());
        using (selected)
        using (var a = b.Linear(selected, _proj1, _projAct))
            return b.Linear(a, _proj2);
    }
}
