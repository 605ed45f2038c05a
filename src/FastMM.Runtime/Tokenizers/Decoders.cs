using System.Text;
using System.Text.RegularExpressions;

namespace FastMM.Runtime.Tokenizers;

/// <summary>Maps a token-string list back to text pieces (HF "decoder"); results are concatenated.</summary>
internal abstract class Decoder
{
    public abstract List<string> DecodeChain(List<string> tokens);

    public static Decoder Load(ConfigNode n)
    {
        string type = n.TypeName();
        switch (type)
        {
            case "Sequence": return new SequenceDecoder(n.Req("decoders").Items().Select(Load).ToArray());
            case "ByteLevel": return new ByteLevelDecoder();
            case "Metaspace":
                var (rep, scheme, _) = Metaspace.Fields(n);
                return new MetaspaceDecoder(rep, scheme != Metaspace.Prepend.Never);
            case "BPEDecoder": return new BpeDecoder(n.OptStr("suffix") ?? "</w>");
            case "WordPiece": return new WordPieceDecoder(n.OptStr("prefix") ?? "##", n.Bool("cleanup", true));
            case "Replace": return new ReplaceDecoder(Pattern.Load(n.Req("pattern")), n.Str("content"));
            case "ByteFallback": return new ByteFallbackDecoder();
            case "Fuse": return new FuseDecoder();
            case "Strip":
                string content = n.Str("content");
                if (content.Length != 1) throw new FastMMException($"{n.File}: {n.Path}.content must be one character");
                return new StripDecoder(content[0], n.OptInt("start") ?? 0, n.OptInt("stop") ?? 0);
            default: throw n.Unsupported(type);
        }
    }
}

internal sealed class SequenceDecoder(Decoder[] steps) : Decoder
{
    public override List<string> DecodeChain(List<string> tokens)
    {
        foreach (var s in steps) tokens = s.DecodeChain(tokens);
        return tokens;
    }
}

internal sealed class ByteLevelDecoder : Decoder
{
    public override List<string> DecodeChain(List<string> tokens)
    {
        var bytes = new List<byte>();
        foreach (var t in tokens)
        {
            int mark = bytes.Count;
            bool ok = true;
            foreach (char c in t)
            {
                if (ByteLevel.CharToByte.TryGetValue(c, out byte b)) bytes.Add(b);
                else { ok = false; break; }
            }
            // A token with a char outside the byte alphabet (an added token) goes through as its UTF-8.
            if (!ok)
            {
                bytes.RemoveRange(mark, bytes.Count - mark);
                bytes.AddRange(Encoding.UTF8.GetBytes(t));
            }
        }
        return [Encoding.UTF8.GetString(bytes.ToArray())]; // invalid sequences become U+FFFD, like from_utf8_lossy
    }
}

internal sealed class MetaspaceDecoder(char replacement, bool prependedSpace) : Decoder
{
    public override List<string> DecodeChain(List<string> tokens)
    {
        var result = new List<string>(tokens.Count);
        for (int i = 0; i < tokens.Count; i++)
        {
            // As in HF: in the first token every replacement char is dropped (not just a leading one).
            var sb = new StringBuilder(tokens[i].Length);
            foreach (char c in tokens[i])
            {
                if (c != replacement) sb.Append(c);
                else if (!(i == 0 && prependedSpace)) sb.Append(' ');
            }
            result.Add(sb.ToString());
        }
        return result;
    }
}

internal sealed class BpeDecoder(string suffix) : Decoder
{
    public override List<string> DecodeChain(List<string> tokens) =>
        tokens.Select((t, i) => t.Replace(suffix, i == tokens.Count - 1 ? "" : " ")).ToList();
}

internal sealed class WordPieceDecoder(string prefix, bool cleanup) : Decoder
{
    public override List<string> DecodeChain(List<string> tokens)
    {
        var result = new List<string>(tokens.Count);
        for (int i = 0; i < tokens.Count; i++)
        {
            string t = tokens[i];
            if (i != 0) t = t.StartsWith(prefix, StringComparison.Ordinal) ? t[prefix.Length..] : " " + t;
            if (cleanup) t = Cleanup(t);
            result.Add(t);
        }
        return result;
    }

    internal static string Cleanup(string s) => s.Replace(" .", ".").Replace(" ?", "?").Replace(" !", "!").Replace(" ,", ",")
        .Replace(" ' ", "'").Replace(" n't", "n't").Replace(" 'm", "'m").Replace(" do not", " don't")
        .Replace(" 's", "'s").Replace(" 've", "'ve").Replace(" 're", "'re");
}

internal sealed class ReplaceDecoder(Regex pattern, string content) : Decoder
{
    public override List<string> DecodeChain(List<string> tokens) => tokens.Select(t => pattern.Replace(t, _ => content)).ToList();
}

/// <summary>Runs of &lt;0xXX&gt; tokens become their UTF-8 text, or one U+FFFD per byte if invalid.</summary>
internal sealed class ByteFallbackDecoder : Decoder
{
    private static readonly UTF8Encoding Strict = new(false, throwOnInvalidBytes: true);

    public override List<string> DecodeChain(List<string> tokens)
    {
        var result = new List<string>(tokens.Count);
        var pending = new List<byte>();
        foreach (var t in tokens)
        {
            if (t.Length == 6 && t.StartsWith("<0x", StringComparison.Ordinal) && t[5] == '>'
                && byte.TryParse(t.AsSpan(3, 2), System.Globalization.NumberStyles.HexNumber, null, out byte b))
            {
                pending.Add(b);
                continue;
            }
            Flush(pending, result);
            result.Add(t);
        }
        Flush(pending, result);
        return result;
    }

    private static void Flush(List<byte> pending, List<string> result)
    {
        if (pending.Count == 0) return;
        try { result.Add(Strict.GetString(pending.ToArray())); }
        catch (DecoderFallbackException) { for (int i = 0; i < pending.Count; i++) result.Add("\uFFFD"); }
        pending.Clear();
    }
}

internal sealed class FuseDecoder : Decoder
{
    public override List<string> DecodeChain(List<string> tokens) => [string.Concat(tokens)];
}

internal sealed class StripDecoder(char content, int start, int stop) : Decoder
{
    public override List<string> DecodeChain(List<string> tokens) => tokens.Select(t =>
    {
        int s = 0, e = t.Length;
        for (int k = 0; k < start && s < e && t[s] == content; k++) s++;
        for (int k = 0; k < stop && e > s && t[e - 1] == content; k++) e--;
        return t[s..e];
    }).ToList();
}
