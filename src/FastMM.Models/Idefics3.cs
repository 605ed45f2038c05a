using FastMM.Models.Blocks;

namespace FastMM.Models;

/// <summary>
/// Idefics3 / SmolVLM (HF model_type "idefics3", Idefics3ForConditionalGeneration): a SigLIP-style vision tower
/// (no pooling head; bucketised position ids and a patch mask for padded images), a pixel-shuffle connector
/// (scale_factor) with a linear projection, and a Llama text model. Names as HF stores them: model.vision_model.*,
/// model.connector.modality_projection.proj, model.text_model.*, lm_head.
/// </summary>
public sealed class Idefics3Model : VisionLanguageModel
{
    public const string Type = "idefics3";

    private readonly VisionTransformer _vision;
    private readonly LinearWeight _proj;
    private readonly int _scale;

    public override string ModelType => Type;
    public override int ImageSize => _vision.Spec.ImageSize;
    public override int TokensPerImage => _vision.Spec.Patches / (_scale * _scale);
    public int ScaleFactor => _scale;

    internal Idefics3Model(Weights w) : base(w)
    {
        var cfg = w.Folder.Config;
        ImageTokenId = cfg.Int("image_token_id", 128257);
        _scale = cfg.Int("scale_factor", 2, min: 1);
        var vc = cfg.Section("vision_config");
        int d = vc.Int("hidden_size", 1152, min: 1), heads = vc.Int("num_attention_heads", 16, min: 1);
        if (d % heads != 0) throw vc.Error("hidden_size", $"= {d} is not divisible by num_attention_heads = {heads}");
        var enc = new EncoderSpec(d, vc.Int("intermediate_size", 3072, min: 1), vc.Int("num_hidden_layers", 12, min: 0), heads,
            ActivationNames.Parse(vc.String("hidden_act", "gelu_pytorch_tanh"), "vision_config.hidden_act"), vc.Float("layer_norm_eps", 1e-6f));
        var spec = new VisionSpec(enc, vc.Int("image_size", 224, min: 1), vc.Int("patch_size", 32, min: 1), vc.Int("num_channels", 3, min: 1, max: 4),
            ClassToken: false, PreLayerNorm: false, PatchBias: true);
        if (spec.PatchesPerSide % _scale != 0) throw cfg.Error("scale_factor", $"= {_scale} does not divide the {spec.PatchesPerSide}-patch grid");
        _vision = new VisionTransformer(w, "model.vision_model", spec);
        var textSpec = LlavaModel.TextSpec(cfg.Section("text_config"));
        _proj = w.Linear("model.connector.modality_projection.proj", textSpec.Hidden, d * _scale * _scale, bias: false);
        Text = new CausalLm(w, "model.text_model", "lm_head", textSpec);
    }

    public override Tensor ImageFeatures(Tensor pixels, ReadOnlySpan<bool> pixelAttentionMask)
    {
        var b = Backend;
        var s = _vision.Spec;
        int n = pixels.Dim(0), side = s.ImageSize, ps = s.PatchSize, grid = s.PatchesPerSide;
        if (!pixelAttentionMask.IsEmpty && pixelAttentionMask.Length != n * side * side)
            throw new FastMMException($"pixel_attention_mask: expected {n}x{side}x{side} values, got {pixelAttentionMask.Length}");

        // A patch is real if any of its pixels is (HF: unfold + sum > 0); partly padded images get bucketised positions.
        int[]? positions = null;
        float[]? keyMask = null;
        if (!pixelAttentionMask.IsEmpty && pixelAttentionMask.Contains(false))
        {
            positions = new int[n * s.Patches];
            keyMask = new float[n * s.Patches];
            for (int img = 0; img < n; img++)
            {
                var m = pixelAttentionMask.Slice(img * side * side, side * side);
                var patchReal = new bool[s.Patches];
                for (int py = 0; py < grid; py++)
                    for (int px = 0; px < grid; px++)
                    {
                        bool any = false;
                        for (int y = 0; y < ps && !any; y++)
                            for (int x = 0; x < ps && !any; x++) any = m[(py * ps + y) * side + px * ps + x];
                        patchReal[py * grid + px] = any;
                    }
                BucketPositions(patchReal, grid, positions.AsSpan(img * s.Patches, s.Patches));
                for (int p = 0; p < s.Patches; p++) keyMask[img * s.Patches + p] = patchReal[p] ? 1f : 0f;
            }
        }
        using var mask = keyMask is null ? null : b.FromHost(keyMask, n, s.Patches);
        using var h = _vision.HiddenStates(b, pixels, null, positions, mask);
        using var last = _vision.PostLayerNorm.Apply(b, h);
        using var shuffled = b.PixelShuffle(last, _scale);
        using var flat = shuffled.Reshape(-1, shuffled.Dim(2));
        return b.Linear(flat, _proj);
    }

    /// <summary>
    /// HF Idefics3VisionEmbeddings: real patches (an nh × nw top-left block) get ids bucketize(fractional coord,
    /// boundaries 1/grid … (grid−1)/grid, right) row · grid + col; padded patches keep id 0.
    /// </summary>
    private static void BucketPositions(bool[] patchReal, int grid, Span<int> ids)
    {
        ids.Clear();
        int nh = 0, nw = 0;
        for (int r = 0; r < grid; r++) if (patchReal[r * grid]) nh++;
        for (int c = 0; c < grid; c++) if (patchReal[c]) nw++;
        if (nh == 0 || nw == 0) return;
        // torch.arange(0, 1 − 1e-6, 1/n) in float32, then bucketize against float32 boundaries arange(1/grid, 1, 1/grid).
        static int Bucket(float coord, int grid)
        {
            // Boundaries as torch builds them: float32(i · (1/grid)) computed in double.
            int b = 0;
            for (int i = 1; i < grid; i++) if (coord >= (float)(i * (1.0 / grid))) b = i; // right=True: boundary ≤ value moves up
            return b;
        }
        if (patchReal.Count(x => x) != nh * nw)
            throw new FastMMException("pixel_attention_mask: the real pixels of an image must form a top-left rectangle (as the Idefics3 processor pads)");
        var rows = new int[nh]; var cols = new int[nw];
        for (int i = 0; i < nh; i++) rows[i] = Bucket(i * (1f / nh), grid);
        for (int j = 0; j < nw; j++) cols[j] = Bucket(j * (1f / nw), grid);
        int k = 0;
        for (int p = 0; p < patchReal.Length; p++)
        {
            if (!patchReal[p]) continue;
            ids[p] = rows[k / nw] * grid + cols[k % nw];
            k++;
        }
    }
}
