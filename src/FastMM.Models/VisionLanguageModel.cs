using FastMM.Kv;
using FastMM.Models.Blocks;

namespace FastMM.Models;

/// <summary>
/// A generative VLM: an image encoder + connector producing one embedding per image token, and a causal LM
/// whose prompt embeddings get those features at the image-token positions (HF's merge of image features).
/// </summary>
public abstract class VisionLanguageModel : IDisposable
{
    protected readonly Weights W;

    /// <summary>What the load made of the Linear weights (formats, bytes).</summary>
    public QuantReport Quantization => W.Report;
    public IBackend Backend => W.Backend;
    public CausalLm Text { get; protected init; } = null!;
    public abstract string ModelType { get; }
    /// <summary>The token id whose positions receive image features.</summary>
    public int ImageTokenId { get; protected init; }
    /// <summary>Side of the square pixel_values the vision tower takes.</summary>
    public abstract int ImageSize { get; }

    protected VisionLanguageModel(Weights w) { W = w; }

    /// <summary>
    /// Image features [n, textHidden] for pixel_values [N, 3, S, S] (and Idefics3's pixel_attention_mask [N, S, S]),
    /// in the order the prompt's image tokens consume them.
    /// </summary>
    public abstract Tensor ImageFeatures(Tensor pixels, ReadOnlySpan<bool> pixelAttentionMask);

    /// <summary>How many image tokens one image (or tile) becomes.</summary>
    public abstract int TokensPerImage { get; }

    /// <summary>Prompt embeddings [T, D]: token embeddings with the image features placed at the image-token positions.</summary>
    public Tensor EmbedPrompt(ReadOnlySpan<int> ids, Tensor? imageFeatures)
    {
        var x = Text.Embed(ids);
        var rows = new List<int>();
        for (int i = 0; i < ids.Length; i++) if (ids[i] == ImageTokenId) rows.Add(i);
        int features = imageFeatures is null ? 0 : imageFeatures.Dim(0);
        if (rows.Count != features)
        {
            x.Dispose();
            throw new FastMMException($"the prompt has {rows.Count} image tokens (id {ImageTokenId}) but the images give {features} image features");
        }
        if (features > 0) Backend.SetRows(x, rows.ToArray(), imageFeatures!);
        return x;
    }

    /// <summary>Runs prompt or decode embeddings through the text model (see <see cref="CausalLm.Forward"/>).</summary>
    public Tensor Forward(Tensor embeddings, KvSequence seq, bool allLogits, int ropeOffset = 0)
        => Text.Forward(embeddings, seq, allLogits, ropeOffset);

    /// <summary>One decode step: logits [1, Vocab] for <paramref name="token"/> appended to seq (see <see cref="Blocks.CausalLm.Decode"/>).</summary>
    public Tensor Decode(int token, KvSequence seq, int ropeOffset = 0) => Text.Decode(token, seq, ropeOffset);

    /// <summary>The next decode step, recorded before its token is known (see <see cref="Blocks.CausalLm.PrepareDecode"/>).</summary>
    public Blocks.PendingDecode PrepareDecode(KvSequence seq, int ropeOffset = 0) => Text.PrepareDecode(seq, ropeOffset);

    /// <summary>A KV cache sized for this model's text decoder, storing keys and values as `type`.</summary>
    public KvCache CreateCache(int capacityTokens, int blockSize = 16, KvCacheType type = KvCacheType.F32)
        => new(Backend, Text.Spec.Layers, Text.Spec.KvHeads, Text.Spec.HeadDim, capacityTokens, blockSize, type);

    public void Dispose()
    {
        W.Dispose();
        GC.SuppressFinalize(this);
    }
}
