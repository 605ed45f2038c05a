using System.Text;
using System.Text.RegularExpressions;

namespace FastMM.Runtime.Tokenizers;

/// <summary>A text-to-text step applied to each piece between added tokens (HF "normalizer").</summary>
internal abstract class Normalizer
{
    public abstract string Normalize(string text);

    public static Normalizer Load(ConfigNode n)
    {
        string type = n.TypeName();
        switch (type)
        {
            case "Sequence":
                return new SequenceNormalizer(n.Req("normalizers").Items().Select(Load).ToArray());
            case "NFC": return new UnicodeNormalizer(compose: true, compat: false);
            case "NFD": return new UnicodeNormalizer(compose: false, compat: false);
            case "NFKC": return new UnicodeNormalizer(compose: true, compat: true);
            case "NFKD": return new UnicodeNormalizer(compose: false, compat: true);
            case "Lowercase": return new LowercaseNormalizer();
            case "Strip": return new StripNormalizer(n.Bool("strip_left", true), n.Bool("strip_right", true));
            case "StripAccents": return new StripAccentsNormalizer();
            case "Prepend": return new PrependNormalizer(n.Str("prepend"));
            case "Replace": return new ReplaceNormalizer(Pattern.Load(n.Req("pattern")), n.Str("content"));
            case "ByteLevel": return new ByteLevelNormalizer();
            case "BertNormalizer":
                bool lower = n.Bool("lowercase", true);
                var accents = n.Opt("strip_accents");
                return new BertNormalizer(n.Bool("clean_text", true), n.Bool("handle_chinese_chars", true),
                    accents is null ? lower : n.Bool("strip_accents", lower), lower);
            default:
                throw n.Unsupported(type);
        }
    }
}

/// <summary>A split/replace pattern: {"String": "..."} or {"Regex": "..."} (Oniguruma syntax).</summary>
internal static class Pattern
{
    public static Regex Load(ConfigNode n)
    {
        if (n.Opt("String") is { } s) return OnigRegex.Literal(s.AsString());
        if (n.Opt("Regex") is { } r)
        {
            try { return OnigRegex.Get(r.AsString()); }
            catch (ArgumentException e) { throw r.Error($"bad regex: {e.Message}"); }
        }
        throw n.Error("expected {\"String\": ...} or {\"Regex\": ...}");
    }
}

internal sealed class SequenceNormalizer(Normalizer[] steps) : Normalizer
{
    public override string Normalize(string text)
    {
        foreach (var s in steps) text = s.Normalize(text);
        return text;
    }
}

internal sealed class UnicodeNormalizer(bool compose, bool compat) : Normalizer
{
    public override string Normalize(string text) => UnicodeText.Normalize(text, compose, compat);
}

internal sealed class LowercaseNormalizer : Normalizer
{
    public override string Normalize(string text) => UnicodeText.ToLower(text);
}

internal sealed class StripNormalizer(bool left, bool right) : Normalizer
{
    public override string Normalize(string text)
    {
        int start = 0, end = text.Length;
        if (left)
            while (start < end && Rune.DecodeFromUtf16(text.AsSpan(start), out var r, out int n) == System.Buffers.OperationStatus.Done && Rune.IsWhiteSpace(r)) start += n;
        if (right)
            while (end > start && Rune.DecodeLastFromUtf16(text.AsSpan(start, end - start), out var r, out int n) == System.Buffers.OperationStatus.Done && Rune.IsWhiteSpace(r)) end -= n;
        return text[start..end];
    }
}

internal sealed class StripAccentsNormalizer : Normalizer
{
    public override string Normalize(string text) => RemoveMarks(text);

    public static string RemoveMarks(string text)
    {
        var sb = new StringBuilder(text.Length);
        foreach (var r in text.EnumerateRunes())
            if (!UnicodeText.IsMark(r)) sb.Append(r.ToString());
        return sb.ToString();
    }
}

internal sealed class PrependNormalizer(string prefix) : Normalizer
{
    // HF prepends only to non-empty text.
    public override string Normalize(string text) => text.Length == 0 ? text : prefix + text;
}

internal sealed class ReplaceNormalizer(Regex pattern, string content) : Normalizer
{
    // An evaluator, not a replacement string: content is literal ('$' must not be a substitution).
    public override string Normalize(string text) => pattern.Replace(text, _ => content);
}

internal sealed class ByteLevelNormalizer : Normalizer
{
    public override string Normalize(string text) => ByteLevel.Encode(text);
}

/// <summary>BERT's cleanup: drop controls, whitespace to ' ', pad CJK ideographs, strip accents, lowercase.</summary>
internal sealed class BertNormalizer(bool cleanText, bool chineseChars, bool stripAccents, bool lowercase) : Normalizer
{
    public override string Normalize(string text)
    {
        var sb = new StringBuilder(text.Length);
        foreach (var r in text.EnumerateRunes())
        {
            if (cleanText)
            {
                if (r.Value == 0 || r.Value == 0xFFFD) continue;
                if (IsBertControl(r)) continue;
                if (Rune.IsWhiteSpace(r)) { sb.Append(' '); continue; }
            }
            if (chineseChars && IsCjk(r.Value)) { sb.Append(' ').Append(r.ToString()).Append(' '); continue; }
            sb.Append(r.ToString());
        }
        string s = sb.ToString();
        if (stripAccents) s = StripAccentsNormalizer.RemoveMarks(UnicodeText.Normalize(s, compose: false, compat: false));
        if (lowercase) s = UnicodeText.ToLower(s);
        return s;
    }

    private static bool IsBertControl(Rune r)
    {
        if (r.Value is '\t' or '\n' or '\r') return false;
        var c = Rune.GetUnicodeCategory(r);
        return c is System.Globalization.UnicodeCategory.Control or System.Globalization.UnicodeCategory.Format
            or System.Globalization.UnicodeCategory.PrivateUse or System.Globalization.UnicodeCategory.OtherNotAssigned;
    }

    private static bool IsCjk(int cp) =>
        cp is >= 0x4E00 and <= 0x9FFF or >= 0x3400 and <= 0x4DBF or >= 0x20000 and <= 0x2A6DF or >= 0x2A700 and <= 0x2B73F
            or >= 0x2B740 and <= 0x2B81F or >= 0x2B920 and <= 0x2CEAF or >= 0xF900 and <= 0xFAFF or >= 0x2F800 and <= 0x2FA1F;
}
