using FastMM.Kv;
using FastMM.Models.IO;

namespace FastMM.Models.Blocks;

/// <summary>Shape of a Llama-family decoder (Llama, Qwen2, SmolLM2, Vicuna…).</summary>
public sealed record DecoderSpec(int Vocab, int Hidden, int Intermediate, int Layers, int Heads, int KvHeads, int HeadDim,
    float RmsEps, double RopeTheta, bool QkvBias, bool TiedEmbeddings, int MaxPositions)
{
    /// <summary>Reads an HF LlamaConfig / Qwen2Config (defaults passed per family), rejecting what this decoder does not implement.</summary>
    public static DecoderSpec Read(HfConfig c, int vocab, int intermediate, int maxPositions, float eps, bool qkvBias, bool tied)
    {
        int hidden = c.Int("hidden_size", 4096, min: 1);
        int heads = c.Int("num_attention_heads", 32, min: 1);
        int kvHeads = c.Int("num_key_value_heads", heads, min: 1);
        if (heads % kvHeads != 0) throw c.Error("num_key_value_heads", $"= {kvHeads} does not divide num_attention_heads = {heads}");
        int headDim = c.Int("head_dim", hidden / heads, min: 1);
        string act = c.String("hidden_act", "silu");
        if (act is not ("silu" or "swish")) throw c.Error("hidden_act", $"'{act}' is not supported for a gated MLP (silu only)");
        if (c.Has("rope_scaling")) throw c.Error("rope_scaling", "is set; scaled RoPE variants are not supported yet");
        if (c.Bool("mlp_bias", false)) throw c.Error("mlp_bias", "= true is not supported");
        bool bias = c.Bool("attention_bias", qkvBias);
        return new DecoderSpec(c.Int("vocab_size", vocab, min: 1), hidden, c.Int("intermediate_size", intermediate, min: 1),
            c.Int("num_hidden_layers", 32, min: 0), heads, kvHeads, headDim, c.Float("rms_norm_eps", eps),
            c.Float("rope_theta", 10000f), bias, c.Bool("tie_word_embeddings", tied), c.Int("max_position_embeddings", maxPositions, min: 1));
    }
}

/// <summary>
/// A Llama-style causal LM read from HF names under a prefix ("model", "language_model.model", "model.text_model"…):
/// embed_tokens, layers (RMSNorm → fused QKV + RoPE → paged-cache GQA attention → o_proj; RMSNorm → fused
/// gate/up SwiGLU → down_proj), norm, and lm_head (or the tied embedding matrix).
/// </summary>
public sealed class CausalLm
{
    private sealed record Layer(Tensor Ln1, LinearWeight Qkv, LinearWeight O, Tensor Ln2, LinearWeight GateUp, LinearWeight Down);

    private readonly Tensor _embed;
    private readonly Layer[] _layers;
    private readonly Tensor _norm;
    private readonly LinearWeight _lmHead;
    public DecoderSpec Spec { get; }
    public IBackend Backend { get; }

    public CausalLm(Weights w, string prefix, string lmHeadName, DecoderSpec s)
    {
        Spec = s; Backend = w.Backend;
        int d = s.Hidden, qw = s.Heads * s.HeadDim, kvw = s.KvHeads * s.HeadDim;
        _embed = w.Tensor(prefix + ".embed_tokens.weight", s.Vocab, d);
        _layers = new Layer[s.Layers];
        for (int i = 0; i < s.Layers; i++)
        {
            string p = $"{prefix}.layers.{i}";
            _layers[i] = new Layer(
                w.Tensor(p + ".input_layernorm.weight", d),
                w.StackedLinear([p + ".self_attn.q_proj", p + ".self_attn.k_proj", p + ".self_attn.v_proj"], [qw, kvw, kvw], d, s.QkvBias),
                w.Linear(p + ".self_attn.o_proj", d, qw, bias: false),
                w.Tensor(p + ".post_attention_layernorm.weight", d),
                w.StackedLinear([p + ".mlp.gate_proj", p + ".mlp.up_proj"], [s.Intermediate, s.Intermediate], d, bias: false),
                w.Linear(p + ".mlp.down_proj", d, s.Intermediate, bias: false));
        }
        _norm = w.Tensor(prefix + ".norm.weight", d);
        if (w.Folder.Has(lmHeadName + ".weight")) _lmHead = w.Linear(lmHeadName, s.Vocab, d, bias: false);
        else if (s.TiedEmbeddings) _lmHead = w.LinearFromTensor(prefix + ".embed_tokens.weight", s.Vocab, d);
        else throw new FastMMException($"{w.Folder.Directory}: missing tensor '{lmHeadName}.weight' (and tie_word_embeddings is false)");
    }

    public int Vocab => Spec.Vocab;

    /// <summary>Token embeddings [ids.Length, D]; ids outside the vocabulary are an error naming them.</summary>
    public Tensor Embed(ReadOnlySpan<int> ids) => Backend.Embedding(_embed, ids);

    /// <summary>
    /// Runs x [T, D] (the embeddings of the next T tokens of seq) through the decoder, appending their keys and
    /// values to seq's cache. RoPE positions are seq.Length + ropeOffset + i. Returns logits for every new token
    /// (allLogits) or for the last one only: [T or 1, Vocab].
    /// </summary>
    public Tensor Forward(Tensor x, KvSequence seq, bool allLogits, int ropeOffset = 0)
    {
        int pos0 = Prepare(seq, x.Dim(0), ropeOffset);
        try
        {
            return Layers(x, seq, allLogits, pos0, ropeOffset);
        }
        catch
        {
            seq.Truncate(pos0); // the tokens were not (all) written: the sequence keeps what it had
            throw;
        }
    }

    /// <summary>
    /// One decode step: the logits [1, Vocab] of <paramref name="token"/> appended to seq. The step is the same op
    /// sequence every time, so a backend that can (<see cref="IStepGraphs"/>) replays it as one recorded graph (a
    /// prepared step run at once); the logits are then valid until the step after the next one begins.
    /// </summary>
    public Tensor Decode(int token, KvSequence seq, int ropeOffset = 0)
    {
        if (Backend is IStepGraphs)
        {
            using var step = PrepareDecode(seq, ropeOffset);
            return step.Run(token);
        }
        using var x = Backend.Embedding(_embed, [token]);
        return Forward(x, seq, allLogits: false, ropeOffset);
    }

    /// <summary>
    /// The next decode step, prepared before its token is known (<see cref="PendingDecode"/>): on a backend with step
    /// graphs its ops are recorded, fused and matched against the recorded graph now, while the device still runs the
    /// step before, and <see cref="PendingDecode.Run"/> only sets the token and launches. The host's share of a token
    /// then overlaps the device's. Elsewhere Run is <see cref="Decode"/>.
    /// </summary>
    public PendingDecode PrepareDecode(KvSequence seq, int ropeOffset = 0)
    {
        if (Backend is not IStepGraphs graphs) return new PendingDecode(this, seq, ropeOffset, null, null, seq.Length);
        int pos0 = Prepare(seq, 1, ropeOffset);
        IStepScope? step = null;
        try
        {
            step = graphs.BeginStep();
            Tensor logits;
            using (var x = step.DeferredTokenEmbedding(_embed, 1))
                logits = Layers(x, seq, allLogits: false, pos0, ropeOffset);
            step.Seal();
            return new PendingDecode(this, seq, ropeOffset, step, logits, pos0);
        }
        catch
        {
            step?.Dispose();
            seq.Truncate(pos0);
            throw;
        }
    }

    private int Prepare(KvSequence seq, int t, int ropeOffset)
    {
        int pos0 = seq.Length;
        if (pos0 + ropeOffset + t > Spec.MaxPositions)
            throw new FastMMException($"{pos0 + ropeOffset + t} positions exceed the model's context window (max_position_embeddings {Spec.MaxPositions})");
        seq.Reserve(t);
        return pos0;
    }

    private Tensor Layers(Tensor x, KvSequence seq, bool allLogits, int pos0, int ropeOffset)
    {
        var b = Backend;
        int t = x.Dim(0);
        float scale = 1f / MathF.Sqrt(Spec.HeadDim);
        using var rope = b.RopeTable(pos0 + ropeOffset, t, Spec.HeadDim, Spec.RopeTheta);
        using var h0 = b.Embedding(x, Identity(t)); // a private copy: the residual stream is updated in place
        for (int l = 0; l < _layers.Length; l++)
        {
            var L = _layers[l];
            using (var n = b.RmsNorm(h0, L.Ln1, Spec.RmsEps))
            using (var qkv = b.Linear(n, L.Qkv))
            {
                b.RopeInPlace(qkv, Spec.Heads, Spec.KvHeads, Spec.HeadDim, rope);
                b.WriteKv(seq.Storage, l, qkv, Spec.Heads, seq.BlockTable, pos0);
                using var a = b.CachedAttention(qkv, Spec.Heads, seq.Storage, l, seq.BlockTable, pos0, scale);
                using var o = b.Linear(a, L.O);
                b.AddInPlace(h0, o);
            }
            using (var n = b.RmsNorm(h0, L.Ln2, Spec.RmsEps))
            using (var gu = b.Linear(n, L.GateUp))
            using (var m = b.SwiGlu(gu))
            using (var o = b.Linear(m, L.Down))
                b.AddInPlace(h0, o);
        }
        seq.Advance(t);
        if (allLogits)
        {
            using var n = b.RmsNorm(h0, _norm, Spec.RmsEps);
            return b.Linear(n, _lmHead);
        }
        using var last = b.Embedding(h0, [t - 1]);
        using var nl = b.RmsNorm(last, _norm, Spec.RmsEps);
        return b.Linear(nl, _lmHead);
    }

    private static int[] Identity(int n)
    {
        var a = new int[n];
        for (int i = 0; i < n; i++) a[i] = i;
        return a;
    }
}

/// <summary>
/// A decode step waiting for its token (<see cref="CausalLm.PrepareDecode"/>). <see cref="Run"/> it once; disposing it
/// unrun drops the step and gives the sequence its position back (e.g. when the last token was an end of sequence).
/// </summary>
public sealed class PendingDecode : IDisposable
{
    private readonly CausalLm _decoder;
    private readonly KvSequence _seq;
    private readonly int _ropeOffset, _position0;
    private readonly IStepScope? _step;
    private readonly Tensor? _logits;
    private bool _done;

    internal PendingDecode(CausalLm decoder, KvSequence seq, int ropeOffset, IStepScope? step, Tensor? logits, int position0)
    {
        _decoder = decoder; _seq = seq; _ropeOffset = ropeOffset; _step = step; _logits = logits; _position0 = position0;
    }

    /// <summary>The logits [1, Vocab] of <paramref name="token"/> appended to the sequence, as <see cref="CausalLm.Decode"/>.</summary>
    public Tensor Run(int token)
    {
        if (_done) throw new InvalidOperationException("this decode step has already run or been dropped");
        _done = true;
        if (_step is null) return _decoder.Decode(token, _seq, _ropeOffset);
        try
        {
            _step.SetTokens([token]);
            _step.Commit();
            return _logits!;
        }
        catch
        {
            Drop();
            throw;
        }
    }

    public void Dispose()
    {
        if (_done) return;
        _done = true;
        if (_step is not null) Drop();
    }

    private void Drop()
    {
        _step!.Dispose();
        _seq.Truncate(_position0);
    }
}
