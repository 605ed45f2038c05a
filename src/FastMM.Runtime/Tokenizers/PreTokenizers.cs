using System.Text;
using System.Text.RegularExpressions;

namespace FastMM.Runtime.Tokenizers;

/// <summary>A piece of normalized text; AtStart = it begins at offset 0 of the original input (Metaspace "first").</summary>
internal readonly record struct Piece(string Text, bool AtStart);

internal enum SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous }

/// <summary>Splits pieces into words (HF "pre_tokenizer").</summary>
internal abstract class PreTokenizer
{
    public abstract void Split(Piece piece, List<Piece> output);

    public List<Piece> Apply(List<Piece> pieces)
    {
        var output = new List<Piece>(pieces.Count * 2);
        foreach (var p in pieces) Split(p, output);
        return output;
    }

    public static PreTokenizer Load(ConfigNode n)
    {
        string type = n.TypeName();
        switch (type)
        {
            case "Sequence":
                return new SequencePreTokenizer(n.Req("pretokenizers").Items().Select(Load).ToArray());
            case "Split":
                return new SplitPreTokenizer(Pattern.Load(n.Req("pattern")), Behavior(n, "behavior", null), n.Bool("invert", false));
            case "ByteLevel":
                return new ByteLevelPreTokenizer(n.Bool("add_prefix_space", true), n.Bool("use_regex", true));
            case "Whitespace":
                return new SplitPreTokenizer(OnigRegex.Get(@"\w+|[^\w\s]+"), SplitBehavior.Removed, invert: true);
            case "WhitespaceSplit":
                return new CharSplitPreTokenizer(Rune.IsWhiteSpace, SplitBehavior.Removed);
            case "Punctuation":
                return new CharSplitPreTokenizer(UnicodeText.IsPunctuation, Behavior(n, "behavior", SplitBehavior.Isolated));
            case "BertPreTokenizer":
                return new SequencePreTokenizer([
                    new CharSplitPreTokenizer(Rune.IsWhiteSpace, SplitBehavior.Removed),
                    new CharSplitPreTokenizer(UnicodeText.IsPunctuation, SplitBehavior.Isolated)]);
            case "Digits":
                // HF uses Rust's char::is_numeric (Nd, Nl and No: ½, ², Ⅻ count), not just decimal digits.
                return n.Bool("individual_digits", false)
                    ? new CharSplitPreTokenizer(Rune.IsNumber, SplitBehavior.Isolated)
                    : new CharSplitPreTokenizer(Rune.IsNumber, SplitBehavior.Contiguous);
            case "Metaspace":
                return Metaspace.LoadPreTokenizer(n);
            default:
                throw n.Unsupported(type);
        }
    }

    private static SplitBehavior Behavior(ConfigNode n, string name, SplitBehavior? fallback)
    {
        var s = n.OptStr(name);
        if (s is null) return fallback ?? throw new FastMMException($"{n.File}: {n.Path}.{name} is missing");
        return Enum.TryParse<SplitBehavior>(s, out var b) ? b : throw new FastMMException($"{n.File}: {n.Path}.{name} '{s}' is not supported");
    }

    /// <summary>HF's SplitDelimiterBehavior applied to a list of (start, end, isMatch) spans covering the text.</summary>
    public static void Emit(Piece piece, List<(int Start, int End, bool IsMatch)> spans, SplitBehavior behavior, List<Piece> output)
    {
        var kept = new List<(int Start, int End)>(spans.Count);
        bool previousMatch = false;
        switch (behavior)
        {
            case SplitBehavior.Removed:
                foreach (var s in spans) if (!s.IsMatch) kept.Add((s.Start, s.End));
                break;
            case SplitBehavior.Isolated:
                foreach (var s in spans) kept.Add((s.Start, s.End));
                break;
            case SplitBehavior.MergedWithPrevious:
                foreach (var s in spans)
                {
                    if (s.IsMatch && !previousMatch && kept.Count > 0) kept[^1] = (kept[^1].Start, s.End);
                    else kept.Add((s.Start, s.End));
                    previousMatch = s.IsMatch;
                }
                break;
            case SplitBehavior.MergedWithNext:
                for (int i = spans.Count - 1; i >= 0; i--)
                {
                    var s = spans[i];
                    if (s.IsMatch && !previousMatch && kept.Count > 0) kept[^1] = (s.Start, kept[^1].End);
                    else kept.Add((s.Start, s.End));
                    previousMatch = s.IsMatch;
                }
                kept.Reverse();
                break;
            case SplitBehavior.Contiguous:
                foreach (var s in spans)
                {
                    if (s.IsMatch == previousMatch && kept.Count > 0) kept[^1] = (kept[^1].Start, s.End);
                    else kept.Add((s.Start, s.End));
                    previousMatch = s.IsMatch;
                }
                break;
        }
        foreach (var (start, end) in kept)
            if (end > start) output.Add(new Piece(piece.Text[start..end], piece.AtStart && start == 0));
    }

    /// <summary>Match spans of a regex, with the gaps between them as non-matches (HF Pattern::find_matches).</summary>
    public static List<(int, int, bool)> RegexSpans(Regex regex, string text, bool invert)
    {
        var spans = new List<(int, int, bool)>();
        int prev = 0;
        for (var m = regex.Match(text); m.Success; m = m.NextMatch())
        {
            if (m.Index != prev) spans.Add((prev, m.Index, invert));
            spans.Add((m.Index, m.Index + m.Length, !invert));
            prev = m.Index + m.Length;
        }
        if (prev != text.Length) spans.Add((prev, text.Length, invert));
        return spans;
    }
}

internal sealed class SequencePreTokenizer(PreTokenizer[] steps) : PreTokenizer
{
    public override void Split(Piece piece, List<Piece> output)
    {
        var pieces = new List<Piece> { piece };
        foreach (var s in steps) pieces = s.Apply(pieces);
        output.AddRange(pieces);
    }
}

internal sealed class SplitPreTokenizer(Regex regex, SplitBehavior behavior, bool invert) : PreTokenizer
{
    public override void Split(Piece piece, List<Piece> output) =>
        Emit(piece, RegexSpans(regex, piece.Text, invert), behavior, output);
}

/// <summary>Splits on every code point satisfying a predicate (each one is a single-char match).</summary>
internal sealed class CharSplitPreTokenizer(Func<Rune, bool> isDelimiter, SplitBehavior behavior) : PreTokenizer
{
    public override void Split(Piece piece, List<Piece> output)
    {
        var spans = new List<(int, int, bool)>();
        string t = piece.Text;
        int prev = 0;
        for (int i = 0; i < t.Length;)
        {
            Rune.DecodeFromUtf16(t.AsSpan(i), out var r, out int len);
            if (isDelimiter(r))
            {
                if (i != prev) spans.Add((prev, i, false));
                spans.Add((i, i + len, true));
                prev = i + len;
            }
            i += len;
        }
        if (prev != t.Length) spans.Add((prev, t.Length, false));
        Emit(piece, spans, behavior, output);
    }
}

/// <summary>GPT-2 byte-level: optional prefix space, optional GPT-2 regex split, then bytes mapped to printable chars.</summary>
internal sealed class ByteLevelPreTokenizer(bool addPrefixSpace, bool useRegex) : PreTokenizer
{
    private const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
    private static readonly Regex Gpt2 = OnigRegex.Get(Gpt2Pattern);

    public override void Split(Piece piece, List<Piece> output)
    {
        // HF adds the prefix space to every split that does not already start with one.
        if (addPrefixSpace && !piece.Text.StartsWith(' ')) piece = piece with { Text = " " + piece.Text };
        if (!useRegex)
        {
            output.Add(piece with { Text = ByteLevel.Encode(piece.Text) });
            return;
        }
        int from = output.Count;
        Emit(piece, RegexSpans(Gpt2, piece.Text, invert: false), SplitBehavior.Isolated, output);
        for (int i = from; i < output.Count; i++) output[i] = output[i] with { Text = ByteLevel.Encode(output[i].Text) };
    }
}

/// <summary>SentencePiece-style: spaces become '▁', a '▁' is prepended per prepend_scheme, then split before each '▁'.</summary>
internal sealed class Metaspace(char replacement, Metaspace.Prepend scheme, bool split) : PreTokenizer
{
    public enum Prepend { Always, First, Never }

    public static Metaspace LoadPreTokenizer(ConfigNode n)
    {
        var (rep, scheme, split) = Fields(n);
        return new Metaspace(rep, scheme, split);
    }

    public static (char Replacement, Prepend Scheme, bool Split) Fields(ConfigNode n)
    {
        string rep = n.Str("replacement");
        if (rep.Length != 1) throw new FastMMException($"{n.File}: {n.Path}.replacement must be one character");
        Prepend scheme;
        var s = n.OptStr("prepend_scheme");
        if (s is null) scheme = n.Bool("add_prefix_space", true) ? Prepend.Always : Prepend.Never; // legacy field
        else scheme = s switch
        {
            "always" => Prepend.Always,
            "first" => Prepend.First,
            "never" => Prepend.Never,
            _ => throw new FastMMException($"{n.File}: {n.Path}.prepend_scheme '{s}' is not supported"),
        };
        return (rep[0], scheme, n.Bool("split", true));
    }

    public override void Split(Piece piece, List<Piece> output)
    {
        string t = piece.Text.Replace(' ', replacement);
        bool prepend = scheme == Prepend.Always || (scheme == Prepend.First && piece.AtStart);
        if (prepend && !t.StartsWith(replacement)) t = replacement + t;
        piece = piece with { Text = t };
        if (!split)
        {
            output.Add(piece);
            return;
        }
        var spans = new List<(int, int, bool)>();
        int prev = 0;
        for (int i = 0; i < t.Length; i++)
        {
            if (t[i] != replacement) continue;
            if (i != prev) spans.Add((prev, i, false));
            spans.Add((i, i + 1, true));
            prev = i + 1;
        }
        if (prev != t.Length) spans.Add((prev, t.Length, false));
        Emit(piece, spans, SplitBehavior.MergedWithNext, output);
    }
}

/// <summary>GPT-2's reversible byte &lt;-&gt; printable-char table.</summary>
internal static class ByteLevel
{
    public static readonly char[] ByteToChar = BuildTable();
    public static readonly Dictionary<char, byte> CharToByte = ByteToChar.Select((c, b) => (c, b)).ToDictionary(x => x.c, x => (byte)x.b);

    private static char[] BuildTable()
    {
        var table = new char[256];
        int n = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            table[b] = printable ? (char)b : (char)(256 + n++);
        }
        return table;
    }

    public static string Encode(string text)
    {
        int max = Encoding.UTF8.GetMaxByteCount(text.Length);
        Span<byte> buf = max <= 512 ? stackalloc byte[max] : new byte[max];
        int len = Encoding.UTF8.GetBytes(text, buf);
        return string.Create(len, buf[..len].ToArray(), static (dst, bytes) =>
        {
            for (int i = 0; i < bytes.Length; i++) dst[i] = ByteToChar[bytes[i]];
        });
    }
}
