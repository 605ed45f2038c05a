using System.Collections.Concurrent;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace FastMM.Runtime.Tokenizers;

/// <summary>
/// Compiles an Oniguruma pattern (what HF tokenizers uses) as a .NET Regex with code-point semantics for
/// \p{..} classes. Why: .NET matches UTF-16 units, so an astral letter such as U+20000 (CJK Ext. B) or
/// U+1D400 (math bold A) is two surrogates that fail \p{L} and match [^\s\p{L}\p{N}], splitting words
/// differently from Oniguruma. We rewrite each \p{X} / class using \p into an alternation that also
/// accepts (or, for negated classes, rejects) the surrogate pairs of astral code points in X.
/// </summary>
internal static class OnigRegex
{
    private static readonly ConcurrentDictionary<string, Regex> Cache = new();
    private static readonly ConcurrentDictionary<string, string> AstralCache = new();

    public static Regex Get(string onigPattern) => Cache.GetOrAdd(onigPattern,
        p => new Regex(Translate(p), RegexOptions.Compiled | RegexOptions.CultureInvariant));

    public static Regex Literal(string text) => Cache.GetOrAdd("\0lit:" + text,
        _ => new Regex(Regex.Escape(text), RegexOptions.CultureInvariant));

    internal static string Translate(string p)
    {
        var sb = new StringBuilder(p.Length * 2);
        int i = 0;
        while (i < p.Length)
        {
            char c = p[i];
            if (c == '\\' && i + 1 < p.Length)
            {
                char n = p[i + 1];
                if ((n == 'p' || n == 'P') && i + 2 < p.Length && p[i + 2] == '{')
                {
                    int end = p.IndexOf('}', i);
                    string name = p[(i + 3)..end];
                    string astral = Astral([name]);
                    sb.Append(n == 'p'
                        ? $"(?:\\p{{{name}}}|{astral})"
                        : $"(?:[\\P{{{name}}}-[\\uD800-\\uDFFF]]|(?!{astral})[\\uD800-\\uDBFF][\\uDC00-\\uDFFF])");
                    i = end + 1;
                    continue;
                }
                if (n == 'x' && i + 2 < p.Length && p[i + 2] == '{')
                {
                    int end = p.IndexOf('}', i);
                    sb.Append(Regex.Escape(char.ConvertFromUtf32(int.Parse(p[(i + 3)..end], NumberStyles.HexNumber, CultureInfo.InvariantCulture))));
                    i = end + 1;
                    continue;
                }
                sb.Append(c).Append(n);
                i += 2;
                continue;
            }
            if (c == '[')
            {
                int end = ClassEnd(p, i);
                string body = p[(i + 1)..end];
                bool negated = body.StartsWith('^');
                if (negated) body = body[1..];
                var cats = new List<string>();
                bool hasNegatedCat = false;
                for (int k = 0; k + 2 < body.Length; k++)
                {
                    if (body[k] != '\\') continue;
                    if ((body[k + 1] == 'p' || body[k + 1] == 'P') && body[k + 2] == '{')
                    {
                        int e = body.IndexOf('}', k);
                        if (body[k + 1] == 'P') hasNegatedCat = true;
                        cats.Add(body[(k + 3)..e]);
                        k = e;
                    }
                    else k++;
                }
                if (cats.Count == 0 || hasNegatedCat)
                    sb.Append(p, i, end - i + 1);
                else if (!negated)
                    sb.Append($"(?:[{body}]|{Astral(cats)})");
                else
                    sb.Append($"(?:[^{body}\\uD800-\\uDFFF]|(?!{Astral(cats)})[\\uD800-\\uDBFF][\\uDC00-\\uDFFF])");
                i = end + 1;
                continue;
            }
            sb.Append(c);
            i++;
        }
        return sb.ToString();
    }

    private static int ClassEnd(string p, int start)
    {
        int i = start + 1;
        if (i < p.Length && p[i] == '^') i++;
        if (i < p.Length && p[i] == ']') i++; // a leading ']' is literal
        for (; i < p.Length; i++)
        {
            if (p[i] == '\\') { i++; continue; }
            if (p[i] == ']') return i;
        }
        throw new ArgumentException($"unterminated character class in regex '{p}'");
    }

    /// <summary>Alternation matching the surrogate pair of any astral code point in the given categories.</summary>
    private static string Astral(IReadOnlyList<string> names) => AstralCache.GetOrAdd(string.Join(",", names), _ =>
    {
        var cats = new HashSet<UnicodeCategory>();
        foreach (var n in names) cats.UnionWith(Categories(n));
        var byHigh = new SortedDictionary<int, List<(int lo, int hi)>>();
        int runStart = -1;
        for (int cp = 0x10000; cp <= 0x110000; cp++)
        {
            bool inSet = cp < 0x110000 && cats.Contains(CharUnicodeInfo.GetUnicodeCategory(cp));
            // Runs never cross a high-surrogate boundary (every 0x400 code points).
            bool boundary = (cp & 0x3FF) == 0;
            if (runStart >= 0 && (!inSet || boundary))
            {
                AddRun(byHigh, runStart, cp - 1);
                runStart = -1;
            }
            if (inSet && runStart < 0) runStart = cp;
        }
        if (byHigh.Count == 0) return "(?!)";
        var sb = new StringBuilder("(?:");
        bool first = true;
        foreach (var (high, runs) in byHigh)
        {
            if (!first) sb.Append('|');
            first = false;
            sb.Append($"\\u{high:X4}[");
            foreach (var (lo, hi) in runs)
                sb.Append(lo == hi ? $"\\u{lo:X4}" : $"\\u{lo:X4}-\\u{hi:X4}");
            sb.Append(']');
        }
        return sb.Append(')').ToString();
    });

    private static void AddRun(SortedDictionary<int, List<(int, int)>> byHigh, int from, int to)
    {
        int high = 0xD800 + ((from - 0x10000) >> 10);
        if (!byHigh.TryGetValue(high, out var list)) byHigh[high] = list = new();
        list.Add((0xDC00 + ((from - 0x10000) & 0x3FF), 0xDC00 + ((to - 0x10000) & 0x3FF)));
    }

    private static IEnumerable<UnicodeCategory> Categories(string name)
    {
        // The general categories .NET names, grouped by their one-letter major class.
        var all = new (string Name, UnicodeCategory Cat)[]
        {
            ("Lu", UnicodeCategory.UppercaseLetter), ("Ll", UnicodeCategory.LowercaseLetter), ("Lt", UnicodeCategory.TitlecaseLetter),
            ("Lm", UnicodeCategory.ModifierLetter), ("Lo", UnicodeCategory.OtherLetter), ("Mn", UnicodeCategory.NonSpacingMark),
            ("Mc", UnicodeCategory.SpacingCombiningMark), ("Me", UnicodeCategory.EnclosingMark), ("Nd", UnicodeCategory.DecimalDigitNumber),
            ("Nl", UnicodeCategory.LetterNumber), ("No", UnicodeCategory.OtherNumber), ("Zs", UnicodeCategory.SpaceSeparator),
            ("Zl", UnicodeCategory.LineSeparator), ("Zp", UnicodeCategory.ParagraphSeparator), ("Cc", UnicodeCategory.Control),
            ("Cf", UnicodeCategory.Format), ("Cs", UnicodeCategory.Surrogate), ("Co", UnicodeCategory.PrivateUse),
            ("Pc", UnicodeCategory.ConnectorPunctuation), ("Pd", UnicodeCategory.DashPunctuation), ("Ps", UnicodeCategory.OpenPunctuation),
            ("Pe", UnicodeCategory.ClosePunctuation), ("Pi", UnicodeCategory.InitialQuotePunctuation), ("Pf", UnicodeCategory.FinalQuotePunctuation),
            ("Po", UnicodeCategory.OtherPunctuation), ("Sm", UnicodeCategory.MathSymbol), ("Sc", UnicodeCategory.CurrencySymbol),
            ("Sk", UnicodeCategory.ModifierSymbol), ("So", UnicodeCategory.OtherSymbol), ("Cn", UnicodeCategory.OtherNotAssigned),
        };
        string key = name switch { "Letter" => "L", "Number" => "N", "Punctuation" => "P", "Symbol" => "S", "Mark" => "M", _ => name };
        return all.Where(a => key.Length == 1 ? a.Name[0] == key[0] : a.Name == key).Select(a => a.Cat);
    }
}
