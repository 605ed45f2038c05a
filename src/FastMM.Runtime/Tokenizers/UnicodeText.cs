using System.Globalization;
using System.Text;

namespace FastMM.Runtime.Tokenizers;

/// <summary>
/// Unicode normalization (NFC/NFD/NFKC/NFKD) and Rust-style per-char lowercasing.
/// Why our own: the process runs with InvariantGlobalization, where string.Normalize does nothing
/// and ToLowerInvariant uses simple mappings (Rust's char::to_lowercase maps 'İ' to "i̇").
/// </summary>
internal static class UnicodeText
{
    private const int SBase = 0xAC00, LBase = 0x1100, VBase = 0x1161, TBase = 0x11A7;
    private const int LCount = 19, VCount = 21, TCount = 28, NCount = VCount * TCount, SCount = LCount * NCount;

    private sealed class Tables
    {
        public readonly Dictionary<int, byte> Ccc = new();
        public readonly Dictionary<int, int[]> Canonical = new();
        public readonly Dictionary<int, int[]> Compat = new();
        public readonly Dictionary<long, int> Compose = new();
        public readonly Dictionary<int, string> Lower = new();
    }

    private static readonly Lazy<Tables> Data = new(Load);

    private static Tables Load()
    {
        var t = new Tables();
        foreach (var e in Entries(UnicodeTables.CombiningClasses))
        {
            int c = e.IndexOf(':');
            t.Ccc[Hex(e[..c])] = (byte)Hex(e[(c + 1)..]);
        }
        foreach (var e in Entries(UnicodeTables.Decompositions))
        {
            bool compat = e[0] == '!';
            var s = compat ? e[1..] : e;
            int c = s.IndexOf(':');
            int cp = Hex(s[..c]);
            var parts = s[(c + 1)..].Split('.').Select(Hex).ToArray();
            t.Compat[cp] = parts;
            if (!compat) t.Canonical[cp] = parts;
        }
        foreach (var e in Entries(UnicodeTables.Composites))
        {
            int cp = Hex(e);
            var d = t.Canonical[cp];
            t.Compose[Key(d[0], d[1])] = cp;
        }
        foreach (var e in Entries(UnicodeTables.Lowercase))
        {
            int c = e.IndexOf(':');
            var sb = new StringBuilder();
            foreach (var p in e[(c + 1)..].Split('.')) sb.Append(char.ConvertFromUtf32(Hex(p)));
            t.Lower[Hex(e[..c])] = sb.ToString();
        }
        return t;
    }

    private static IEnumerable<string> Entries(string s) => s.Split(' ', StringSplitOptions.RemoveEmptyEntries);
    private static int Hex(string s) => int.Parse(s, NumberStyles.HexNumber, CultureInfo.InvariantCulture);
    private static long Key(int a, int b) => ((long)a << 21) | (uint)b;

    /// <summary>True when no char can change under any normalization form (all below U+00A0).</summary>
    private static bool IsTrivial(string s)
    {
        foreach (char c in s) if (c >= 0xA0) return false;
        return true;
    }

    public static string Normalize(string s, bool compose, bool compat)
    {
        if (IsTrivial(s)) return s;
        var t = Data.Value;
        var cps = new List<int>(s.Length + 8);
        foreach (var rune in s.EnumerateRunes()) Decompose(t, rune.Value, compat, cps);
        // Canonical ordering: stable sort of each run of non-starters by combining class.
        for (int i = 1; i < cps.Count; i++)
        {
            int cc = CombiningClass(t, cps[i]);
            if (cc == 0) continue;
            for (int j = i; j > 0; j--)
            {
                int prev = CombiningClass(t, cps[j - 1]);
                if (prev == 0 || prev <= cc) break;
                (cps[j - 1], cps[j]) = (cps[j], cps[j - 1]);
            }
        }
        if (compose) ComposeInPlace(t, cps);
        var sb = new StringBuilder(cps.Count);
        foreach (int cp in cps) sb.Append(char.ConvertFromUtf32(cp));
        return sb.ToString();
    }

    private static int CombiningClass(Tables t, int cp) => t.Ccc.TryGetValue(cp, out var c) ? c : 0;

    private static void Decompose(Tables t, int cp, bool compat, List<int> output)
    {
        if (cp >= SBase && cp < SBase + SCount)
        {
            int s = cp - SBase;
            output.Add(LBase + s / NCount);
            output.Add(VBase + s % NCount / TCount);
            if (s % TCount != 0) output.Add(TBase + s % TCount);
            return;
        }
        if ((compat ? t.Compat : t.Canonical).TryGetValue(cp, out var parts))
        {
            foreach (int p in parts) Decompose(t, p, compat, output);
            return;
        }
        output.Add(cp);
    }

    private static void ComposeInPlace(Tables t, List<int> cps)
    {
        if (cps.Count == 0) return;
        int starterPos = 0;
        int lastClass = CombiningClass(t, cps[0]);
        if (lastClass != 0) lastClass = 256; // no starter yet: block composition
        int write = 1;
        for (int read = 1; read < cps.Count; read++)
        {
            int ch = cps[read];
            int cc = CombiningClass(t, ch);
            int starter = cps[starterPos];
            int composite = -1;
            if (lastClass == 0 || lastClass < cc)
            {
                if (starter >= LBase && starter < LBase + LCount && ch >= VBase && ch < VBase + VCount && write - 1 == starterPos)
                    composite = SBase + ((starter - LBase) * VCount + (ch - VBase)) * TCount;
                else if (starter >= SBase && starter < SBase + SCount && (starter - SBase) % TCount == 0
                         && ch > TBase && ch < TBase + TCount && write - 1 == starterPos)
                    composite = starter + (ch - TBase);
                else if (t.Compose.TryGetValue(Key(starter, ch), out var c))
                    composite = c;
            }
            if (composite >= 0)
            {
                cps[starterPos] = composite;
                continue;
            }
            if (cc == 0) { starterPos = write; lastClass = 0; }
            else lastClass = cc;
            cps[write++] = ch;
        }
        cps.RemoveRange(write, cps.Count - write);
    }

    /// <summary>Per-code-point full lowercase mapping, like Rust's char::to_lowercase (no final-sigma context).</summary>
    public static string ToLower(string s)
    {
        bool ascii = true;
        foreach (char c in s) if (c >= 0x80) { ascii = false; break; }
        if (ascii) return s.ToLowerInvariant();
        var lower = Data.Value.Lower;
        var sb = new StringBuilder(s.Length);
        foreach (var rune in s.EnumerateRunes())
        {
            if (lower.TryGetValue(rune.Value, out var mapped)) sb.Append(mapped);
            else sb.Append(rune.ToString());
        }
        return sb.ToString();
    }

    /// <summary>Rust char::is_whitespace (the Unicode White_Space property), which .NET's IsWhiteSpace matches.</summary>
    public static bool IsWhiteSpace(Rune r) => Rune.IsWhiteSpace(r);

    public static bool IsPunctuation(Rune r)
    {
        if (r.IsAscii) return char.IsAsciiLetterOrDigit((char)r.Value) is false && r.Value > 0x20 && r.Value < 0x7F;
        return Rune.GetUnicodeCategory(r) is UnicodeCategory.ConnectorPunctuation or UnicodeCategory.DashPunctuation
            or UnicodeCategory.OpenPunctuation or UnicodeCategory.ClosePunctuation or UnicodeCategory.InitialQuotePunctuation
            or UnicodeCategory.FinalQuotePunctuation or UnicodeCategory.OtherPunctuation;
    }

    public static bool IsMark(Rune r) => Rune.GetUnicodeCategory(r) is UnicodeCategory.NonSpacingMark
        or UnicodeCategory.SpacingCombiningMark or UnicodeCategory.EnclosingMark;
}
