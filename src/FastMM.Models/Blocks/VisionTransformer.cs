namespace FastMM.Models.Blocks;

/// <summary>What distinguishes the ViT towers of the families: CLIP has a class token and a pre-LayerNorm; SigLIP has a patch bias.</summary>
public sealed record VisionSpec(EncoderSpec Encoder, int ImageSize, int PatchSize, int Channels, bool ClassToken, bool PreLayerNorm, bool PatchBias)
{
    public int PatchesPerSide => ImageSize / PatchSize;
    public int Patches => PatchesPerSide * PatchesPerSide;
    public int Positions => Patches + (ClassToken ? 1 : 0);
}

/// <summary>
/// A ViT image tower read from HF names under "{prefix}" (e.g. "vision_model"): embeddings (patch conv,
/// optional class token, position embeddings), optional pre_layrnorm, encoder, post_layernorm.
/// </summary>
public sealed class VisionTransformer
{
    private readonly LinearWeight _patchEmbedding;
    private readonly Tensor? _classToken;
    private readonly Tensor _positions;
    private readonly LayerNormWeights? _preLn;
    public Encoder Encoder { get; }
    public LayerNormWeights PostLayerNorm { get; }
    public VisionSpec Spec { get; }

    public VisionTransformer(Weights w, string prefix, VisionSpec s, int? layersToLoad = null)
    {
        Spec = s;
        if (s.ImageSize % s.PatchSize != 0)
            throw new FastMMException($"{w.Folder.Directory}: vision image_size {s.ImageSize} is not a multiple of patch_size {s.PatchSize}");
        int d = s.Encoder.Hidden;
        _patchEmbedding = w.Conv2dAsLinear(prefix + ".embeddings.patch_embedding", d, s.Channels, s.PatchSize, s.PatchBias);
        if (s.ClassToken) _classToken = w.Tensor(prefix + ".embeddings.class_embedding", d);
        _positions = w.Tensor(prefix + ".embeddings.position_embedding.weight", s.Positions, d);
        if (s.PreLayerNorm) _preLn = w.LayerNorm(prefix + ".pre_layrnorm", d, s.Encoder.Eps);
        Encoder = new Encoder(w, prefix + ".encoder", s.Encoder, layersToLoad ?? s.Encoder.Layers);
        PostLayerNorm = w.LayerNorm(prefix + ".post_layernorm", d, s.Encoder.Eps);
    }

    public void CheckPixels(Tensor pixels)
    {
        if (pixels.Rank != 4 || pixels.Dim(1) != Spec.Channels || pixels.Dim(2) != Spec.ImageSize || pixels.Dim(3) != Spec.ImageSize)
            throw new FastMMException($"pixel_values: expected shape [B, {Spec.Channels}, {Spec.ImageSize}, {Spec.ImageSize}], got [{string.Join(", ", pixels.Shape)}]");
    }

    /// <summary>
    /// HF hidden_states[layer] for pixel_values [B, C, H, W] → [B, T, D]: 0 is the embedding output
    /// (after pre_layrnorm where the family has one), i the output of encoder layer i. Default: all layers.
    /// </summary>
    public Tensor HiddenStates(IBackend b, Tensor pixels, int? layer = null) => HiddenStates(b, pixels, layer, default, null);

    /// <summary>
    /// As above, with explicit position ids per patch (all images' patches, row-major; Idefics3's bucketised positions
    /// for partly padded images) and a patch key mask [B, N] (0 = padding patch) for the encoder.
    /// </summary>
    public Tensor HiddenStates(IBackend b, Tensor pixels, int? layer, ReadOnlySpan<int> positionIds, Tensor? keyMask)
    {
        CheckPixels(pixels);
        var x = b.PatchEmbed(pixels, _patchEmbedding, Spec.PatchSize);
        if (_classToken is not null)
        {
            var withCls = b.PrependRow(x, _classToken);
            x.Dispose();
            x = withCls;
        }
        if (positionIds.IsEmpty) b.AddInPlace(x, _positions);
        else
        {
            using var pos = b.Embedding(_positions, positionIds);
            b.AddInPlace(x, pos);
        }
        if (_preLn is LayerNormWeights ln)
        {
            var y = ln.Apply(b, x);
            x.Dispose();
            x = y;
        }
        Encoder.Forward(b, x, causal: false, keyMask: keyMask, count: layer);
        return x;
    }
}
