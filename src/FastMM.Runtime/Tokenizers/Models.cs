using System.Collections.Concurrent;
using System.Text;

namespace FastMM.Runtime.Tokenizers;

/// <summary>Turns one pre-tokenized word into ids (HF "model").</summary>
internal abstract class TokenModel
{
    // Words repeat a lot ("the", " a"), so each model caches its per-word result; bounded so a stream
    // of unique words cannot grow it forever.
    private const int CacheLimit = 100_000;
    private readonly ConcurrentDictionary<string, int[]> _cache = new();

    public abstract int VocabSize { get; }
    public abstract int? TokenToId(string token);
    public abstract string? IdToToken(int id);
    protected abstract void TokenizeUncached(string word, List<int> ids);

    public void Tokenize(string word, List<int> ids)
    {
        if (_cache.TryGetValue(word, out var hit))
        {
            ids.AddRange(hit);
            return;
        }
        int from = ids.Count;
        TokenizeUncached(word, ids);
        if (_cache.Count < CacheLimit) _cache.TryAdd(word, ids.GetRange(from, ids.Count - from).ToArray());
    }

    public static TokenModel Load(ConfigNode n)
    {
        string? type = n.OptStr("type");
        // Old tokenizer.json files omit the model type; infer it the way HF's untagged deserializer does.
        type ??= n.Opt("merges") is not null ? "BPE"
            : n.Opt("vocab") is { Kind: System.Text.Json.JsonValueKind.Array } ? "Unigram"
            : n.Opt("max_input_chars_per_word") is not null ? "WordPiece" : "WordLevel";
        return type switch
        {
            "BPE" => new BpeModel(n),
            "Unigram" => new UnigramModel(n),
            "WordPiece" => new WordPieceModel(n),
            "WordLevel" => new WordLevelModel(n),
            _ => throw n.Unsupported(type),
        };
    }

    protected static Dictionary<string, int> LoadVocab(ConfigNode n)
    {
        var vocabNode = n.Req("vocab");
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var (name, value) in vocabNode.Properties()) vocab[name] = value.AsInt();
        return vocab;
    }

    protected static string[] Reverse(Dictionary<string, int> vocab)
    {
        var r = new string[vocab.Count == 0 ? 0 : vocab.Values.Max() + 1];
        foreach (var (t, id) in vocab) r[id] = t;
        return r;
    }

    internal static string ByteToken(byte b) => $"<0x{b:X2}>";
}

/// <summary>Byte-pair encoding with HF's merge order: lowest rank first, leftmost first among equal ranks.</summary>
internal sealed class BpeModel : TokenModel
{
    private readonly Dictionary<string, int> _vocab;
    private readonly string[] _vocabR;
    private readonly Dictionary<long, (int Rank, int NewId)> _merges = new();
    private readonly int? _unkId;
    private readonly string? _prefix, _suffix;
    private readonly bool _fuseUnk, _byteFallback, _ignoreMerges;

    public BpeModel(ConfigNode n)
    {
        _vocab = LoadVocab(n);
        _vocabR = Reverse(_vocab);
        _prefix = n.OptStr("continuing_subword_prefix");
        _suffix = n.OptStr("end_of_word_suffix");
        _fuseUnk = n.Bool("fuse_unk", false);
        _byteFallback = n.Bool("byte_fallback", false);
        _ignoreMerges = n.Bool("ignore_merges", false);
        if (n.Opt("dropout") is { } d && d.AsDouble() > 0) throw d.Error("BPE dropout is not supported");
        if (n.OptStr("unk_token") is { } unk)
            _unkId = _vocab.TryGetValue(unk, out int u) ? u : throw new FastMMException($"{n.File}: {n.Path}.unk_token '{unk}' is not in the vocab");
        int prefixLen = _prefix?.Length ?? 0;
        int rank = 0;
        foreach (var m in n.Req("merges").Items())
        {
            string a, b;
            if (m.Kind == System.Text.Json.JsonValueKind.String)
            {
                var parts = m.AsString().Split(' ');
                if (parts.Length != 2) throw m.Error("a merge must be two tokens separated by one space");
                (a, b) = (parts[0], parts[1]);
            }
            else
            {
                var parts = m.Items().Select(x => x.AsString()).ToArray();
                if (parts.Length != 2) throw m.Error("a merge must be a pair of tokens");
                (a, b) = (parts[0], parts[1]);
            }
            if (!_vocab.TryGetValue(a, out int aId) || !_vocab.TryGetValue(b, out int bId))
                throw m.Error($"merge '{a} {b}' uses a token that is not in the vocab");
            // With a continuing-subword prefix the right side carries it, but the merged token does not repeat it.
            string merged = a + (prefixLen > 0 && b.StartsWith(_prefix!, StringComparison.Ordinal) ? b[prefixLen..] : b);
            if (!_vocab.TryGetValue(merged, out int newId)) throw m.Error($"merge result '{merged}' is not in the vocab");
            _merges.TryAdd(Key(aId, bId), (rank, newId));
            rank++;
        }
    }

    private static long Key(int a, int b) => ((long)a << 32) | (uint)b;

    public override int VocabSize => _vocab.Count;
    public override int? TokenToId(string token) => _vocab.TryGetValue(token, out int id) ? id : null;
    public override string? IdToToken(int id) => (uint)id < (uint)_vocabR.Length ? _vocabR[id] : null;

    private struct Symbol
    {
        public int Id, Prev, Next, Len;
    }

    protected override void TokenizeUncached(string word, List<int> ids)
    {
        if (word.Length == 0) return;
        if (_ignoreMerges && _vocab.TryGetValue(word, out int whole))
        {
            ids.Add(whole);
            return;
        }
        var symbols = new List<Symbol>(word.Length);
        int lastUnk = -1; // index of the previous symbol when it is an unk (for fuse_unk)
        for (int i = 0; i < word.Length;)
        {
            int len = char.IsSurrogatePair(word, i) ? 2 : 1;
            string s = word.Substring(i, len);
            bool first = i == 0, last = i + len == word.Length;
            if (!first && _prefix is not null) s = _prefix + s;
            if (last && _suffix is not null) s += _suffix;
            i += len;
            if (_vocab.TryGetValue(s, out int id))
            {
                symbols.Add(new Symbol { Id = id, Len = len });
                lastUnk = -1;
                continue;
            }
            if (_byteFallback)
            {
                var bytes = Encoding.UTF8.GetBytes(word.Substring(i - len, len));
                var byteIds = new List<int>(bytes.Length);
                foreach (var b in bytes)
                    if (_vocab.TryGetValue(ByteToken(b), out int bid)) byteIds.Add(bid);
                if (byteIds.Count == bytes.Length)
                {
                    foreach (int bid in byteIds) symbols.Add(new Symbol { Id = bid, Len = 1 });
                    lastUnk = -1;
                    continue;
                }
            }
            if (_unkId is not int unk) continue; // HF drops characters it cannot represent when there is no unk token
            if (_fuseUnk && lastUnk >= 0)
            {
                var prev = symbols[lastUnk];
                prev.Len += len;
                symbols[lastUnk] = prev;
                continue;
            }
            symbols.Add(new Symbol { Id = unk, Len = len });
            lastUnk = symbols.Count - 1;
        }
        for (int k = 0; k < symbols.Count; k++)
        {
            var s = symbols[k];
            s.Prev = k - 1;
            s.Next = k + 1 < symbols.Count ? k + 1 : -1;
            symbols[k] = s;
        }
        MergeAll(symbols);
        for (int k = 0; k < symbols.Count; k++)
            if (symbols[k].Len > 0) ids.Add(symbols[k].Id);
    }

    private void MergeAll(List<Symbol> symbols)
    {
        var queue = new PriorityQueue<(int Pos, int NewId), (int Rank, int Pos)>();
        for (int k = 0; k + 1 < symbols.Count; k++)
            if (_merges.TryGetValue(Key(symbols[k].Id, symbols[k + 1].Id), out var m))
                queue.Enqueue((k, m.NewId), (m.Rank, k));
        while (queue.TryDequeue(out var top, out _))
        {
            var cur = symbols[top.Pos];
            if (cur.Len == 0 || cur.Next == -1) continue;
            var right = symbols[cur.Next];
            // Stale entry: the pair at this position changed since it was queued.
            if (!_merges.TryGetValue(Key(cur.Id, right.Id), out var m) || m.NewId != top.NewId) continue;
            int rightPos = cur.Next;
            cur.Id = top.NewId;
            cur.Len += right.Len;
            cur.Next = right.Next;
            symbols[top.Pos] = cur;
            right.Len = 0;
            symbols[rightPos] = right;
            if (cur.Next >= 0)
            {
                var nx = symbols[cur.Next];
                nx.Prev = top.Pos;
                symbols[cur.Next] = nx;
                if (_merges.TryGetValue(Key(cur.Id, nx.Id), out var mn)) queue.Enqueue((top.Pos, mn.NewId), (mn.Rank, top.Pos));
            }
            if (cur.Prev >= 0 && _merges.TryGetValue(Key(symbols[cur.Prev].Id, cur.Id), out var mp))
                queue.Enqueue((cur.Prev, mp.NewId), (mp.Rank, cur.Prev));
        }
    }
}

/// <summary>SentencePiece unigram: Viterbi over piece log-probabilities, unknown runs fused into one unk.</summary>
internal sealed class UnigramModel : TokenModel
{
    private const double UnkPenalty = 10.0;
    private readonly Dictionary<string, int> _ids = new(StringComparer.Ordinal);
    private readonly string[] _pieces;
    private readonly double[] _scores;
    private readonly int? _unkId;
    private readonly bool _byteFallback;
    private readonly double _minScore = double.PositiveInfinity;
    private readonly int _maxPieceLen;

    public UnigramModel(ConfigNode n)
    {
        var items = n.Req("vocab").Items().ToList();
        _pieces = new string[items.Count];
        _scores = new double[items.Count];
        for (int i = 0; i < items.Count; i++)
        {
            var pair = items[i].Items().ToArray();
            if (pair.Length != 2) throw items[i].Error("expected [piece, score]");
            _pieces[i] = pair[0].AsString();
            _scores[i] = pair[1].AsDouble();
            _ids.TryAdd(_pieces[i], i);
            _minScore = Math.Min(_minScore, _scores[i]);
            _maxPieceLen = Math.Max(_maxPieceLen, _pieces[i].Length);
        }
        _unkId = n.OptInt("unk_id");
        if (_unkId is int u && (u < 0 || u >= items.Count)) throw new FastMMException($"{n.File}: {n.Path}.unk_id {u} is outside the vocab");
        _byteFallback = n.Bool("byte_fallback", false);
    }

    public override int VocabSize => _pieces.Length;
    public override int? TokenToId(string token) => _ids.TryGetValue(token, out int id) ? id : null;
    public override string? IdToToken(int id) => (uint)id < (uint)_pieces.Length ? _pieces[id] : null;

    protected override void TokenizeUncached(string word, List<int> ids)
    {
        int n = word.Length;
        if (n == 0) return;
        var best = new double[n + 1];
        var from = new int[n + 1];
        var tokenId = new int[n + 1];
        Array.Fill(from, -1);
        double unkScore = _minScore - UnkPenalty;
        // Same visiting order as HF (start ascending, then shorter pieces first) and strict '>' so ties resolve alike.
        for (int start = 0; start < n; start = Next(word, start))
        {
            if (start > 0 && from[start] < 0) continue;
            double here = best[start];
            int charLen = Next(word, start) - start;
            bool hasSingle = false;
            int maxLen = Math.Min(_maxPieceLen, n - start);
            for (int len = 1; len <= maxLen; len++)
            {
                if (!_ids.TryGetValue(word.Substring(start, len), out int id)) continue;
                double cand = here + _scores[id];
                int end = start + len;
                if (from[end] < 0 || cand > best[end])
                {
                    best[end] = cand;
                    from[end] = start;
                    tokenId[end] = id;
                }
                if (len == charLen) hasSingle = true;
            }
            if (!hasSingle)
            {
                if (_unkId is not int unk) throw new FastMMException("Unigram model has no unk_id but the text has characters outside its vocab");
                int end = start + charLen;
                double cand = here + unkScore;
                if (from[end] < 0 || cand > best[end])
                {
                    best[end] = cand;
                    from[end] = start;
                    tokenId[end] = unk;
                }
            }
        }
        // Walk back; consecutive unknown pieces are fused into one string (HF fuse_unk is always on for Unigram).
        var pieces = new List<string>();
        var pending = new StringBuilder();
        for (int end = n; end > 0;)
        {
            int start = from[end];
            string s = word[start..end];
            if (_unkId is int unk && tokenId[end] == unk) pending.Insert(0, s);
            else
            {
                if (pending.Length > 0) { pieces.Add(pending.ToString()); pending.Clear(); }
                pieces.Add(s);
            }
            end = start;
        }
        if (pending.Length > 0) pieces.Add(pending.ToString());
        pieces.Reverse();
        foreach (var p in pieces)
        {
            if (_ids.TryGetValue(p, out int id)) { ids.Add(id); continue; }
            if (_byteFallback)
            {
                var bytes = Encoding.UTF8.GetBytes(p);
                var byteIds = new List<int>(bytes.Length);
                foreach (var b in bytes)
                    if (_ids.TryGetValue(ByteToken(b), out int bid)) byteIds.Add(bid);
                if (byteIds.Count == bytes.Length) { ids.AddRange(byteIds); continue; }
            }
            ids.Add(_unkId!.Value);
        }
    }

    private static int Next(string s, int i) => i + (char.IsSurrogatePair(s, i) ? 2 : 1);
}

/// <summary>BERT WordPiece: greedy longest-match-first with a continuation prefix.</summary>
internal sealed class WordPieceModel : TokenModel
{
    private readonly Dictionary<string, int> _vocab;
    private readonly string[] _vocabR;
    private readonly int _unkId;
    private readonly string _prefix;
    private readonly int _maxChars;

    public WordPieceModel(ConfigNode n)
    {
        _vocab = LoadVocab(n);
        _vocabR = Reverse(_vocab);
        string unk = n.OptStr("unk_token") ?? "[UNK]";
        _unkId = _vocab.TryGetValue(unk, out int u) ? u : throw new FastMMException($"{n.File}: {n.Path}.unk_token '{unk}' is not in the vocab");
        _prefix = n.OptStr("continuing_subword_prefix") ?? "##";
        _maxChars = n.OptInt("max_input_chars_per_word") ?? 100;
    }

    public override int VocabSize => _vocab.Count;
    public override int? TokenToId(string token) => _vocab.TryGetValue(token, out int id) ? id : null;
    public override string? IdToToken(int id) => (uint)id < (uint)_vocabR.Length ? _vocabR[id] : null;

    protected override void TokenizeUncached(string word, List<int> ids)
    {
        if (word.EnumerateRunes().Count() > _maxChars) { ids.Add(_unkId); return; }
        var found = new List<int>();
        for (int start = 0; start < word.Length;)
        {
            int end = word.Length, match = -1, matchEnd = 0;
            while (end > start)
            {
                string sub = (start > 0 ? _prefix : "") + word[start..end];
                if (_vocab.TryGetValue(sub, out int id)) { match = id; matchEnd = end; break; }
                end -= char.IsLowSurrogate(word[end - 1]) && end - 2 >= start ? 2 : 1;
            }
            if (match < 0) { ids.Add(_unkId); return; }
            found.Add(match);
            start = matchEnd;
        }
        ids.AddRange(found);
    }
}

internal sealed class WordLevelModel : TokenModel
{
    private readonly Dictionary<string, int> _vocab;
    private readonly string[] _vocabR;
    private readonly int? _unkId;

    public WordLevelModel(ConfigNode n)
    {
        _vocab = LoadVocab(n);
        _vocabR = Reverse(_vocab);
        if (n.OptStr("unk_token") is { } unk && _vocab.TryGetValue(unk, out int u)) _unkId = u;
    }

    public override int VocabSize => _vocab.Count;
    public override int? TokenToId(string token) => _vocab.TryGetValue(token, out int id) ? id : null;
    public override string? IdToToken(int id) => (uint)id < (uint)_vocabR.Length ? _vocabR[id] : null;

    protected override void TokenizeUncached(string word, List<int> ids)
    {
        if (_vocab.TryGetValue(word, out int id)) ids.Add(id);
        else if (_unkId is int u) ids.Add(u);
        else throw new FastMMException($"WordLevel: '{word}' is not in the vocab and there is no unk_token");
    }
}
