using System.Text;

namespace FastMM.Runtime.Tokenizers;

/// <summary>An entry of tokenizer.json "added_tokens".</summary>
public sealed record AddedToken(int Id, string Content, bool Special, bool SingleWord, bool LStrip, bool RStrip, bool Normalized);

/// <summary>
/// Splits text on added tokens before the model runs, like HF's AddedVocabulary: leftmost-longest matching,
/// non-normalized tokens matched on the raw text, normalized ones on each normalized piece (their content
/// normalized too), with the single_word / lstrip / rstrip rules.
/// </summary>
internal sealed class AddedVocabulary
{
    private readonly Matcher _raw, _normalized;

    public AddedVocabulary(IReadOnlyList<AddedToken> tokens, Normalizer? normalizer)
    {
        _raw = new Matcher(tokens.Where(t => !t.Normalized).Select(t => (t.Content, t)));
        _normalized = new Matcher(tokens.Where(t => t.Normalized)
            .Select(t => (normalizer is null ? t.Content : normalizer.Normalize(t.Content), t)));
    }

    /// <summary>A segment: either an added token id, or normalized text for the pre-tokenizer and model.</summary>
    public readonly record struct Segment(int? Id, Piece Text);

    public List<Segment> SplitAndNormalize(string text, Normalizer? normalizer)
    {
        var result = new List<Segment>();
        foreach (var (start, end, token) in _raw.Split(text))
        {
            if (token is not null)
            {
                result.Add(new Segment(token.Id, default));
                continue;
            }
            string normalized = text[start..end];
            if (normalizer is not null) normalized = normalizer.Normalize(normalized);
            foreach (var (s, e, t) in _normalized.Split(normalized))
            {
                if (t is not null) result.Add(new Segment(t.Id, default));
                else result.Add(new Segment(null, new Piece(normalized[s..e], start == 0 && s == 0)));
            }
        }
        return result;
    }

    private sealed class Matcher
    {
        // First char -> candidate patterns, longest first, so the first hit at a position is the longest.
        private readonly Dictionary<char, List<(string Pattern, AddedToken Token)>> _byFirst = new();

        public Matcher(IEnumerable<(string Pattern, AddedToken Token)> entries)
        {
            foreach (var e in entries)
            {
                if (e.Pattern.Length == 0) continue;
                if (!_byFirst.TryGetValue(e.Pattern[0], out var list)) _byFirst[e.Pattern[0]] = list = new();
                list.Add(e);
            }
            foreach (var list in _byFirst.Values) list.Sort((a, b) => b.Pattern.Length.CompareTo(a.Pattern.Length));
        }

        /// <summary>Covering spans of the text; token is null for the text between added tokens. Empty spans are dropped.</summary>
        public IEnumerable<(int Start, int End, AddedToken? Token)> Split(string text)
        {
            if (_byFirst.Count == 0)
            {
                if (text.Length > 0) yield return (0, text.Length, null);
                yield break;
            }
            int startOffset = 0;
            int i = 0;
            while (i < text.Length)
            {
                var hit = MatchAt(text, i);
                if (hit is null) { i++; continue; }
                var (pattern, token) = hit.Value;
                int start = i, stop = i + pattern.Length;
                i = stop; // the underlying search resumes after the raw match, whatever the rules below do
                if (token.SingleWord)
                {
                    bool startOk = start == 0 || !IsWordChar(LastRune(text, start));
                    bool stopOk = stop == text.Length || !IsWordChar(FirstRune(text, stop));
                    if (!startOk || !stopOk) continue;
                }
                if (token.LStrip)
                {
                    int s = start;
                    while (s > 0 && Rune.IsWhiteSpace(LastRune(text, s))) s -= LastRune(text, s).Utf16SequenceLength;
                    start = Math.Max(s, startOffset);
                }
                if (token.RStrip)
                    while (stop < text.Length && Rune.IsWhiteSpace(FirstRune(text, stop))) stop += FirstRune(text, stop).Utf16SequenceLength;
                if (startOffset < start) yield return (startOffset, start, null);
                yield return (start, stop, token);
                startOffset = stop;
            }
            if (startOffset < text.Length) yield return (startOffset, text.Length, null);
        }

        private (string, AddedToken)? MatchAt(string text, int i)
        {
            if (!_byFirst.TryGetValue(text[i], out var list)) return null;
            foreach (var e in list)
                if (string.CompareOrdinal(text, i, e.Pattern, 0, e.Pattern.Length) == 0 && i + e.Pattern.Length <= text.Length)
                    return e;
            return null;
        }

        private static Rune LastRune(string s, int end)
        {
            Rune.DecodeLastFromUtf16(s.AsSpan(0, end), out var r, out _);
            return r;
        }

        private static Rune FirstRune(string s, int start)
        {
            Rune.DecodeFromUtf16(s.AsSpan(start), out var r, out _);
            return r;
        }

        private static bool IsWordChar(Rune r) => Rune.IsLetterOrDigit(r) || r.Value == '_';
    }
}
