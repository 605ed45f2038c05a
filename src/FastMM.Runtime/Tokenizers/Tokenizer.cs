using System.Text.Json;

namespace FastMM.Runtime.Tokenizers;

/// <summary>Token ids and attention mask for a batch, row-major [BatchSize, Length]; padding has mask 0.</summary>
public sealed record TextBatch(int BatchSize, int Length, int[] Ids, int[] AttentionMask)
{
    public ReadOnlySpan<int> IdsRow(int row) => Ids.AsSpan(row * Length, Length);
    public ReadOnlySpan<int> MaskRow(int row) => AttentionMask.AsSpan(row * Length, Length);
}

public enum Side { Right, Left }

/// <summary>tokenizer.json "truncation": keep at most MaxLength ids including the special tokens.</summary>
public sealed record TruncationOptions(int MaxLength, Side Direction = Side.Right);

/// <summary>tokenizer.json "padding": Fixed length (null = pad to the batch's longest row).</summary>
public sealed record PaddingOptions(int? FixedLength, int PadId, Side Direction = Side.Right, int? PadToMultipleOf = null);

/// <summary>
/// A HF-compatible tokenizer built from tokenizer.json (+ tokenizer_config.json for bos/eos/pad and
/// model_max_length): added tokens → normalizer → pre-tokenizer → model → post-processor, truncation, padding.
/// Thread-safe after construction.
/// </summary>
public sealed class Tokenizer
{
    private readonly Normalizer? _normalizer;
    private readonly PreTokenizer? _preTokenizer;
    private readonly TokenModel _model;
    private readonly PostProcessor? _postProcessor;
    private readonly Decoder? _decoder;
    private readonly AddedVocabulary _addedVocabulary;
    private readonly Dictionary<string, AddedToken> _addedByContent = new(StringComparer.Ordinal);
    private readonly Dictionary<int, AddedToken> _addedById = new();

    public string SourcePath { get; }
    public IReadOnlyList<AddedToken> AddedTokens { get; }
    public TruncationOptions? Truncation { get; }
    public PaddingOptions? Padding { get; }
    public int? BosTokenId { get; }
    public int? EosTokenId { get; }
    public int? PadTokenId { get; }
    public int? UnkTokenId { get; }
    /// <summary>tokenizer_config.json model_max_length, when it is a real limit.</summary>
    public int? ModelMaxLength { get; }

    /// <summary>Size of the id space: the model vocab plus added tokens beyond it.</summary>
    public int VocabSize { get; }

    /// <summary>How many ids the post-processor adds to one sequence (CLIP: 2, SigLIP: 1).</summary>
    public int SpecialTokenCount => _postProcessor?.AddedTokenCount ?? 0;

    /// <summary>Loads model_dir/tokenizer.json and, when present, model_dir/tokenizer_config.json.</summary>
    public static Tokenizer FromFolder(string modelDir)
    {
        string json = Path.Combine(modelDir, "tokenizer.json");
        string config = Path.Combine(modelDir, "tokenizer_config.json");
        return FromFile(json, File.Exists(config) ? config : null);
    }

    public static Tokenizer FromFile(string tokenizerJsonPath, string? tokenizerConfigPath = null)
    {
        using var doc = Parse(tokenizerJsonPath);
        JsonDocument? config = tokenizerConfigPath is null ? null : Parse(tokenizerConfigPath);
        try
        {
            return new Tokenizer(tokenizerJsonPath, new ConfigNode(doc.RootElement, "", tokenizerJsonPath),
                config is null ? null : new ConfigNode(config.RootElement, "", tokenizerConfigPath!));
        }
        finally { config?.Dispose(); }
    }

    private static JsonDocument Parse(string path)
    {
        if (!File.Exists(path)) throw new FastMMException($"{path}: file not found");
        try
        {
            using var stream = File.OpenRead(path);
            var doc = JsonDocument.Parse(stream, new JsonDocumentOptions { AllowTrailingCommas = true });
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
            {
                doc.Dispose();
                throw new FastMMException($"{path}: expected a JSON object at the top level");
            }
            return doc;
        }
        catch (JsonException e) { throw new FastMMException($"{path}: not valid JSON: {e.Message}", e); }
        catch (IOException e) { throw new FastMMException($"{path}: cannot read: {e.Message}", e); }
    }

    private Tokenizer(string path, ConfigNode root, ConfigNode? config)
    {
        SourcePath = path;
        if (root.Opt("normalizer") is { } n) _normalizer = Normalizer.Load(n);
        if (root.Opt("pre_tokenizer") is { } p) _preTokenizer = PreTokenizer.Load(p);
        _model = TokenModel.Load(root.Req("model"));
        if (root.Opt("post_processor") is { } pp) _postProcessor = PostProcessor.Load(pp);
        if (root.Opt("decoder") is { } d) _decoder = Decoder.Load(d);

        var added = new List<AddedToken>();
        if (root.Opt("added_tokens") is { } at)
            foreach (var t in at.Items())
                added.Add(new AddedToken(t.Int("id"), t.Str("content"), t.Bool("special", false), t.Bool("single_word", false),
                    t.Bool("lstrip", false), t.Bool("rstrip", false), t.Bool("normalized", !t.Bool("special", false))));
        AddedTokens = added;
        foreach (var t in added)
        {
            _addedByContent[t.Content] = t;
            _addedById[t.Id] = t;
        }
        _addedVocabulary = new AddedVocabulary(added, _normalizer);
        VocabSize = Math.Max(_model.VocabSize, added.Count == 0 ? 0 : added.Max(t => t.Id) + 1);

        if (root.Opt("truncation") is { } tr)
            Truncation = new TruncationOptions(tr.Int("max_length"), ParseSide(tr, "direction"));
        if (root.Opt("padding") is { } pad)
        {
            int? fixedLength = null;
            var strategy = pad.Req("strategy");
            if (strategy.Kind == JsonValueKind.Object) fixedLength = strategy.Int("Fixed");
            else if (strategy.AsString() != "BatchLongest") throw strategy.Error($"'{strategy.AsString()}' is not supported");
            Padding = new PaddingOptions(fixedLength, pad.OptInt("pad_id") ?? 0, ParseSide(pad, "direction"), pad.OptInt("pad_to_multiple_of"));
        }

        if (config is { } c)
        {
            BosTokenId = ConfigTokenId(c, "bos_token");
            EosTokenId = ConfigTokenId(c, "eos_token");
            PadTokenId = ConfigTokenId(c, "pad_token");
            UnkTokenId = ConfigTokenId(c, "unk_token");
            // HF writes a huge float (1e30) when there is no limit.
            if (c.Opt("model_max_length") is { Kind: JsonValueKind.Number } m && m.Element.TryGetDouble(out double v) && v <= int.MaxValue)
                ModelMaxLength = (int)v;
        }
        PadTokenId ??= Padding?.PadId;
    }

    private static Side ParseSide(ConfigNode n, string name) => n.OptStr(name) switch
    {
        null or "Right" => Side.Right,
        "Left" => Side.Left,
        var s => throw new FastMMException($"{n.File}: {n.Path}.{name} '{s}' is not supported"),
    };

    /// <summary>A token named in tokenizer_config.json, as "text" or {"content": "text"}; null when absent.</summary>
    private int? ConfigTokenId(ConfigNode config, string name)
    {
        var n = config.Opt(name);
        if (n is null) return null;
        string content = n.Value.Kind == JsonValueKind.Object ? n.Value.Str("content") : n.Value.AsString();
        return TokenToId(content) ?? throw n.Value.Error($"token '{content}' is not in the vocabulary");
    }

    public int? TokenToId(string token) =>
        _addedByContent.TryGetValue(token, out var t) ? t.Id : _model.TokenToId(token);

    public string? IdToToken(int id) =>
        _addedById.TryGetValue(id, out var t) ? t.Content : _model.IdToToken(id);

    public bool IsSpecial(int id) => _addedById.TryGetValue(id, out var t) && t.Special;

    /// <summary>Ids without special tokens, truncation or padding.</summary>
    private List<int> EncodeRaw(string text)
    {
        var ids = new List<int>(text.Length / 3 + 4);
        var words = new List<Piece>();
        foreach (var seg in _addedVocabulary.SplitAndNormalize(text, _normalizer))
        {
            if (seg.Id is int id)
            {
                ids.Add(id);
                continue;
            }
            words.Clear();
            words.Add(seg.Text);
            if (_preTokenizer is not null) words = _preTokenizer.Apply(words);
            foreach (var w in words) _model.Tokenize(w.Text, ids);
        }
        return ids;
    }

    /// <summary>
    /// Encodes one text like HF's tokenizer.encode(text, add_special_tokens): applies the tokenizer.json
    /// truncation and padding when configured.
    /// </summary>
    public int[] Encode(string text, bool addSpecialTokens = true)
    {
        var ids = Finish(EncodeRaw(text), addSpecialTokens, Truncation?.MaxLength, Truncation?.Direction ?? Side.Right);
        if (Padding is { FixedLength: int len } pad) return Pad([ids], len, pad.PadId, pad.Direction).Ids;
        return ids.ToArray();
    }

    private List<int> Finish(List<int> ids, bool addSpecialTokens, int? maxLength, Side direction)
    {
        int added = addSpecialTokens ? SpecialTokenCount : 0;
        if (maxLength is int max)
        {
            // As HF: the budget for the text is max_length minus what the post-processor will add.
            int keep = Math.Max(0, max - added);
            if (ids.Count > keep)
                ids = direction == Side.Right ? ids.GetRange(0, keep) : ids.GetRange(ids.Count - keep, keep);
        }
        return addSpecialTokens && _postProcessor is not null ? _postProcessor.Process(ids) : ids;
    }

    /// <summary>
    /// Encodes a batch with special tokens, truncated to maxLength (when given; special tokens kept) and
    /// padded with the pad id to maxLength (padToMaxLength) or to the longest row.
    /// </summary>
    public TextBatch EncodeBatch(IReadOnlyList<string> texts, int? maxLength = null, bool padToMaxLength = false, bool addSpecialTokens = true)
    {
        if (padToMaxLength && maxLength is null) throw new ArgumentException("padToMaxLength needs maxLength", nameof(maxLength));
        var rows = new List<int>[texts.Count];
        Parallel.For(0, texts.Count, i =>
            rows[i] = Finish(EncodeRaw(texts[i]), addSpecialTokens, maxLength ?? Truncation?.MaxLength, Truncation?.Direction ?? Side.Right));
        int length = padToMaxLength ? maxLength!.Value : rows.Length == 0 ? 0 : rows.Max(r => r.Count);
        if (Padding?.PadToMultipleOf is int multiple && multiple > 0 && length % multiple != 0) length += multiple - length % multiple;
        int padId = PadTokenId ?? EosTokenId ?? 0;
        return Pad(rows, length, padId, Padding?.Direction ?? Side.Right);
    }

    /// <summary>
    /// The text input of a vision-language model: special tokens added, truncated to maxLength keeping the
    /// final eos (CLIP 77, SigLIP 64), padded with the pad token when padToMax (CLIP/SigLIP "max_length").
    /// </summary>
    public TextBatch EncodeForModel(IReadOnlyList<string> texts, int maxLength, bool padToMax) =>
        EncodeBatch(texts, maxLength, padToMax);

    private static TextBatch Pad(IReadOnlyList<List<int>> rows, int length, int padId, Side side)
    {
        var ids = new int[rows.Count * length];
        var mask = new int[rows.Count * length];
        for (int b = 0; b < rows.Count; b++)
        {
            var row = rows[b];
            int n = Math.Min(row.Count, length);
            int offset = side == Side.Right ? 0 : length - n;
            var dst = ids.AsSpan(b * length, length);
            dst.Fill(padId);
            for (int k = 0; k < n; k++)
            {
                dst[offset + k] = row[k];
                mask[b * length + offset + k] = 1;
            }
        }
        return new TextBatch(rows.Count, length, ids, mask);
    }

    /// <summary>Ids back to text through the tokenizer.json decoder; unknown ids are skipped (as HF does).</summary>
    public string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens = true)
    {
        var tokens = new List<string>(ids.Length);
        foreach (int id in ids)
        {
            if (skipSpecialTokens && IsSpecial(id)) continue;
            if (IdToToken(id) is { } t) tokens.Add(t);
        }
        if (_decoder is null) return string.Join(" ", tokens);
        return string.Concat(_decoder.DecodeChain(tokens));
    }
}
