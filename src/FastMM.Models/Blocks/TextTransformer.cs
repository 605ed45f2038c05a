namespace FastMM.Models.Blocks;

/// <summary>
/// The text tower CLIP and SigLIP share, read from "{prefix}": token + learned position embeddings, a pre-LN encoder,
/// final_layer_norm, and one pooled row per sequence. The families differ only in the mask (CLIP causal, SigLIP
/// bidirectional), where they pool (first EOS / last position) and their projection.
/// </summary>
public sealed class TextTransformer
{
    private readonly Tensor _tokenEmbedding, _positions;
    private readonly Encoder _encoder;
    private readonly LayerNormWeights _finalLn;
    public int Vocab { get; }
    public int MaxPositions { get; }
    public EncoderSpec Spec { get; }

    public TextTransformer(Weights w, string prefix, EncoderSpec spec, int vocab, int maxPositions)
    {
        Spec = spec; Vocab = vocab; MaxPositions = maxPositions;
        _tokenEmbedding = w.Tensor(prefix + ".embeddings.token_embedding.weight", vocab, spec.Hidden);
        _positions = w.Tensor(prefix + ".embeddings.position_embedding.weight", maxPositions, spec.Hidden);
        w.Skip(prefix + ".embeddings.position_ids"); // a buffer older checkpoints store
        _encoder = new Encoder(w, prefix + ".encoder", spec, spec.Layers);
        _finalLn = w.LayerNorm(prefix + ".final_layer_norm", spec.Hidden, spec.Eps);
    }

    /// <summary>final_layer_norm(last hidden state) at positions[b] of each sequence → [B, D]. Token ids are checked first.</summary>
    public Tensor Pooled(IBackend b, TextInput t, bool causal, ReadOnlySpan<int> positions)
    {
        if (t.Length > MaxPositions)
            throw new FastMMException($"input_ids: sequence length {t.Length} exceeds the model's max_position_embeddings {MaxPositions}");
        if (t.Length == 0 || t.Batch == 0) throw new FastMMException("input_ids: empty batch or sequence");
        for (int i = 0; i < t.Ids.Length; i++)
            if ((uint)t.Ids[i] >= (uint)Vocab)
                throw new FastMMException($"input_ids[{i / t.Length}, {i % t.Length}] = {t.Ids[i]} is outside the vocabulary [0, {Vocab})");
        using var mask = t.AttentionMask is null ? null : b.FromHost(t.AttentionMask.Select(v => (float)v).ToArray(), t.Batch, t.Length);
        using var x = b.Embedding(_tokenEmbedding, t.Ids);
        using var xs = x.Reshape(t.Batch, t.Length, -1);
        if (t.Length == MaxPositions) b.AddInPlace(xs, _positions);
        else
        {
            using var slice = b.Embedding(_positions, Enumerable.Range(0, t.Length).ToArray());
            b.AddInPlace(xs, slice);
        }
        _encoder.Forward(b, xs, causal, mask);
        // Normalising only the pooled rows gives the same values as HF's norm over all positions.
        using var rows = b.SelectRows(xs, positions);
        return _finalLn.Apply(b, rows);
    }
}
