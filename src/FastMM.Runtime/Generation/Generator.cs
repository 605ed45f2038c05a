using System.Runtime.CompilerServices;
using FastMM.Kv;
using FastMM.Models;
using FastMM.Runtime.Tokenizers;

namespace FastMM.Runtime.Generation;

/// <summary>What to generate: the prompt (token ids, already expanded with image tokens) and how to sample and stop.</summary>
public sealed record GenerationRequest
{
    public required int[] PromptIds { get; init; }
    /// <summary>Image features for the prompt's image tokens ([n, hidden] on the model's backend), or null. Owned by the caller.</summary>
    public Tensor? ImageFeatures { get; init; }
    public SamplingOptions Sampling { get; init; } = SamplingOptions.Greedy;
    public int MaxNewTokens { get; init; } = 256;
    /// <summary>Token ids that end generation (generation_config's eos_token_id); the EOS itself is not emitted as text.</summary>
    public IReadOnlyList<int> EosTokenIds { get; init; } = [];
    public IReadOnlyList<string> StopStrings { get; init; } = [];
    /// <summary>RoPE position of the first prompt token (HF's left-padding offset); normally 0.</summary>
    public int RopeOffset { get; init; }
}

/// <summary>One streamed piece: new text (may be empty while a multi-byte character is incomplete) and the token that produced it.</summary>
public readonly record struct GenerationChunk(string Text, int TokenId);

public enum FinishReason { Eos, StopString, MaxTokens, Cancelled }

/// <summary>The final result of a generation: all new token ids, the text, and why it stopped.</summary>
public sealed record GenerationResult(int[] TokenIds, string Text, FinishReason Reason, int PromptTokens, double PrefillMs, double DecodeMs)
{
    /// <summary>The EOS id that ended generation (Reason == Eos).</summary>
    public int? EosTokenId { get; init; }
}

/// <summary>
/// Prefill + decode over the runtime's paged KV cache. One generator per loaded model; each call owns its
/// sequence, so many conversations may generate concurrently (they share the cache pool; the CPU kernels
/// serialise on the worker pool). The context window is checked before any compute.
/// </summary>
public sealed class Generator : IDisposable
{
    private readonly VisionLanguageModel _model;
    private readonly Tokenizer _tokenizer;
    private readonly KvCache _cache;

    public int ContextWindow { get; }
    public KvCache Cache => _cache;

    /// <param name="cacheTokens">KV-cache pool size in tokens (shared by concurrent sequences); default: the context window.</param>
    /// <param name="kvCache">How the cache stores keys and values (int8: about a quarter of the memory, a small accuracy cost).</param>
    public Generator(VisionLanguageModel model, Tokenizer tokenizer, int? contextWindow = null, int? cacheTokens = null, KvCacheType kvCache = KvCacheType.F32)
    {
        _model = model; _tokenizer = tokenizer;
        ContextWindow = Math.Min(contextWindow ?? model.Text.Spec.MaxPositions, model.Text.Spec.MaxPositions);
        _cache = model.CreateCache(cacheTokens ?? ContextWindow, type: kvCache);
    }

    /// <summary>Refuses, before any compute, a prompt that leaves no room in the context window.</summary>
    public void CheckFits(int promptTokens, int maxNewTokens, int imageTokens = 0)
    {
        if (maxNewTokens < 0) throw new FastMMException($"max_new_tokens must be >= 0, got {maxNewTokens}");
        if (promptTokens + maxNewTokens > ContextWindow)
            throw new FastMMException(
                $"prompt of {promptTokens} tokens ({imageTokens} of them image tokens) + max_new_tokens {maxNewTokens} = {promptTokens + maxNewTokens} exceeds the context window of {ContextWindow} tokens");
    }

    /// <summary>Runs to completion; the text is streamed through onChunk when given.</summary>
    public GenerationResult Generate(GenerationRequest request, Action<GenerationChunk>? onChunk = null, CancellationToken ct = default)
    {
        var ids = new List<int>();
        var sw = System.Diagnostics.Stopwatch.StartNew();
        double prefillMs = 0;
        FinishReason reason = FinishReason.MaxTokens;
        int? eos = null;
        var text = new System.Text.StringBuilder();
        foreach (var step in Steps(request, ct))
        {
            if (step.Kind == StepKind.PrefillDone) { prefillMs = sw.Elapsed.TotalMilliseconds; continue; }
            if (step.Kind == StepKind.Token && step.Token < 0) { text.Append(step.Text); onChunk?.Invoke(new GenerationChunk(step.Text, step.Token)); continue; }
            if (step.Kind == StepKind.Finished) { reason = step.Reason; if (reason == FinishReason.Eos) eos = step.Token; break; }
            ids.Add(step.Token);
            text.Append(step.Text);
            onChunk?.Invoke(new GenerationChunk(step.Text, step.Token));
        }
        return new GenerationResult(ids.ToArray(), text.ToString(), reason, request.PromptIds.Length, prefillMs, sw.Elapsed.TotalMilliseconds - prefillMs) { EosTokenId = eos };
    }

    /// <summary>Streams text as it is generated. Cancelling ends the stream (the generator stays usable).</summary>
    public async IAsyncEnumerable<GenerationChunk> StreamAsync(GenerationRequest request, [EnumeratorCancellation] CancellationToken ct = default)
    {
        // Each step is CPU work: hop off the caller's context once, then yield per token.
        await Task.Yield();
        foreach (var step in Steps(request, ct))
        {
            if (step.Kind == StepKind.Finished)
            {
                // An async stream reports cancellation the .NET way; the sequence's cache blocks are already released.
                if (step.Reason == FinishReason.Cancelled) ct.ThrowIfCancellationRequested();
                yield break;
            }
            if (step.Kind == StepKind.Token) yield return new GenerationChunk(step.Text, step.Token);
        }
    }

    private enum StepKind { PrefillDone, Token, Finished }
    private readonly record struct Step(StepKind Kind, int Token, string Text, FinishReason Reason);

    private IEnumerable<Step> Steps(GenerationRequest r, CancellationToken ct)
    {
        int imageTokens = r.PromptIds.Count(id => id == _model.ImageTokenId);
        if (r.PromptIds.Length == 0) throw new FastMMException("the prompt is empty");
        if (r.RopeOffset < 0) throw new FastMMException($"the RoPE position offset must be >= 0, got {r.RopeOffset}");
        CheckFits(r.RopeOffset + r.PromptIds.Length, r.MaxNewTokens, imageTokens);
        var sampler = new Sampler(r.Sampling);
        var detok = new StreamingDetokenizer(_tokenizer);
        var stops = r.StopStrings.Count > 0 ? new StopStrings(r.StopStrings) : null;
        using var seq = _cache.NewSequence(r.PromptIds.Length + r.MaxNewTokens);
        // All blocks up front: a full pool fails now, not halfway through a streamed answer.
        seq.Reserve(r.PromptIds.Length + Math.Max(r.MaxNewTokens - 1, 0));
        var history = new List<int>(r.PromptIds);
        var b = _model.Backend;

        if (r.MaxNewTokens == 0) { yield return new Step(StepKind.Finished, 0, "", FinishReason.MaxTokens); yield break; }
        if (ct.IsCancellationRequested) { yield return new Step(StepKind.Finished, 0, "", FinishReason.Cancelled); yield break; }
        Tensor? unread; // logits not yet read back: disposed on every way out
        using (var embeds = _model.EmbedPrompt(r.PromptIds, r.ImageFeatures))
            unread = _model.Forward(embeds, seq, allLogits: false, r.RopeOffset);
        var row = new float[_model.Text.Vocab];
        var deviceArgmax = r.Sampling.IsGreedy && r.Sampling.RepetitionPenalty == 1f ? b as IDeviceArgmax : null;
        int emitted = 0; // with stop strings: how much of stops.Text has been streamed (text that may start a stop is held back)
        try
        {
            yield return new Step(StepKind.PrefillDone, 0, "", default);
            for (int produced = 0; ; produced++)
            {
                bool last = produced + 1 >= r.MaxNewTokens, eos;
                int token;
                // The next step is recorded now, while a GPU still computes these logits; it runs once its token is sampled.
                using (var next = last ? null : _model.PrepareDecode(seq, r.RopeOffset))
                {
                    using (unread)
                    {
                        // Plain greedy on a GPU: the argmax is taken there and one id comes back, not the logits.
                        if (deviceArgmax is not null) token = deviceArgmax.Argmax(unread!)[0];
                        else
                        {
                            b.ToHost(unread!, row);
                            token = sampler.Sample(row, System.Runtime.InteropServices.CollectionsMarshal.AsSpan(history));
                        }
                    }
                    unread = null;
                    history.Add(token);
                    eos = r.EosTokenIds.Contains(token);
                    // Launched before the token is handed out (no step stays open while the caller runs); an end of
                    // sequence, a stop string or cancellation leaves that step's logits unread.
                    if (next is not null && !eos) unread = next.Run(token);
                }
                if (eos)
                {
                    string tail = Release(stops, detok.Flush(), ref emitted, final: true);
                    if (tail.Length > 0) yield return new Step(StepKind.Token, -1, tail, default);
                    yield return new Step(StepKind.Finished, token, "", FinishReason.Eos);
                    yield break;
                }
                string piece = detok.Push(token);
                if (last) piece += detok.Flush();
                string ready = Release(stops, piece, ref emitted, final: last);
                yield return new Step(StepKind.Token, token, ready, default);
                if (stops is { Stopped: true }) { yield return new Step(StepKind.Finished, token, "", FinishReason.StopString); yield break; }
                if (last) { yield return new Step(StepKind.Finished, token, "", FinishReason.MaxTokens); yield break; }
                if (ct.IsCancellationRequested)
                {
                    string tail = Release(stops, detok.Flush(), ref emitted, final: true);
                    if (tail.Length > 0) yield return new Step(StepKind.Token, -1, tail, default);
                    yield return new Step(StepKind.Finished, token, "", FinishReason.Cancelled);
                    yield break;
                }
            }
        }
        finally
        {
            unread?.Dispose();
        }
    }

    /// <summary>
    /// Without stop strings, new text goes out as it comes. With them, text that could still be the start of a stop
    /// string is held back until it is clearly not (or, at the end, released); a found stop and what follows are dropped.
    /// </summary>
    private static string Release(StopStrings? stops, string piece, ref int emitted, bool final)
    {
        if (stops is null) return piece;
        if (!stops.Stopped) stops.Check(piece, out _);
        int upTo = stops.Stopped ? stops.StopIndex : final ? stops.Text.Length : stops.SafeLength;
        if (upTo <= emitted) return "";
        string text = stops.Text[emitted..upTo];
        emitted = upTo;
        return text;
    }

    public void Dispose() => _cache.Dispose();
}
