using System.Text;
using FastMM.Runtime.Tokenizers;
using HfTokenizer = Tokenizers.DotNet.Tokenizer;

namespace FastMM.Tests.Tokenizers;

/// <summary>The three generated test tokenizers, ours and HF's (via Tokenizers.DotNet), loaded once.</summary>
internal static class TokenizerFixtures
{
    /// <summary>The generated test tokenizers, and those shipped in the tiny VLM folders (Llama/SentencePiece-style, Qwen2 and SmolLM2 byte-level).</summary>
    public static readonly string[] Names = ["clip", "siglip", "bytelevel", "models/tiny-llava", "models/tiny-llava-qwen", "models/tiny-idefics3"];

    public static string Dir(string name) => name.Contains('/')
        ? Path.Combine(AppContext.BaseDirectory, "data", name)
        : Path.Combine(AppContext.BaseDirectory, "data", "tokenizers", name);

    private static readonly Dictionary<string, Tokenizer> Ours = new();
    private static readonly Dictionary<string, HfTokenizer> Refs = new();
    private static readonly object Gate = new();

    public static Tokenizer Ours_(string name)
    {
        lock (Gate)
        {
            if (!Ours.TryGetValue(name, out var t)) Ours[name] = t = Tokenizer.FromFolder(Dir(name));
            return t;
        }
    }

    public static HfTokenizer Reference(string name)
    {
        lock (Gate)
        {
            if (!Refs.TryGetValue(name, out var t))
                Refs[name] = t = new HfTokenizer(Path.Combine(Dir(name), "tokenizer.json"));
            return t;
        }
    }

    /// <summary>HF ids (post-processor applied) for the text.</summary>
    public static int[] ReferenceIds(string name, string text)
    {
        var r = Reference(name);
        lock (r) return r.Encode(text).Select(x => (int)x).ToArray();
    }

    public static string ReferenceDecode(string name, int[] ids)
    {
        var r = Reference(name);
        lock (r) return r.Decode(ids.Select(x => (uint)x).ToArray());
    }

    public static readonly string[] TrickyTexts =
    [
        "",
        " ",
        "   ",
        "a",
        "A photo of a cat.",
        "a photo of a dog sitting on the grass",
        "  leading and trailing spaces  ",
        "repeated     spaces   between words",
        "tabs\tand\nnewlines\r\nand\u000bvertical\u000cform feed",
        "\n\n\t  \n",
        "It's, we've, they'll, I'm, he'd, don't, can't, you're, IT'S, We'Ve",
        "Hello!!! What??? ... --- ((nested)) [brackets] {braces} <angles>",
        "numbers 0 1 12 123 1234 12345 3.14159 -42 1,000,000 2024-05-01",
        "Café naïve résumé Zürich São Paulo Ångström façade jalapeño Ærø",
        "e\u0301 (decomposed) vs \u00e9 (composed), \u212b angstrom sign, \ufb01 ligature",
        "東京の夜景はとても綺麗です。北京 上海 香港。",
        "한국어 텍스트 그리고 日本語 mixed with English",
        "Привет, мир! Γειά σου κόσμε. שלום עולם مرحبا بالعالم",
        "emoji 😀🎉👍🏽 family 👨‍👩‍👧‍👦 flags 🇯🇵🇺🇸 and ❤️",
        "astral letters 𝐀𝐁𝐂 𠀀𠀁 and digits 𝟏𝟐𝟑",
        "symbols € £ ¥ © ® ™ ± × ÷ ≈ ∞ → ← ½ ¼ ²³",
        "İstanbul ΣΑΣ ǅ ß ﬃ Ⅻ",
        "a<|endoftext|>b",
        "<|startoftext|>hello world<|endoftext|>",
        "<|endoftext|><|endoftext|> two eos",
        " <|endoftext|> spaced ",
        "text with </s> inside and <pad> and <unk> tokens",
        "</s></s>",
        "an <image> here and <image>there, also<|im_start|>chat",
        " hello hello world hello",
        "yes yesterday yes, _yes yes_ (yes)",
        "$100 & 50% off! @user #hashtag https://example.com/path?q=1&b=2",
        "snake_case_variable camelCaseVariable SCREAMING_CASE",
        "\u00a0non-breaking\u2003em space\u3000ideographic space\u200bzero width",
        "control \u0001\u0002 chars \u007f and replacement \ufffd",
        "''''' '' ' 's 't '",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ];

    public static string LongText()
    {
        var sb = new StringBuilder();
        for (int i = 0; i < 200; i++)
            sb.Append("The quick brown fox jumps over the lazy dog number ").Append(i).Append(", café 東京 😀! ");
        return sb.ToString();
    }

    private static readonly string[] Alphabet =
    [
        "a", "e", "i", "o", "u", "t", "h", "s", "n", "r", "the ", "photo ", "of ", "cat", "dog", "ing", "'s", "'t", "'re",
        " ", " ", " ", "  ", "\t", "\n", ".", ",", "!", "?", "-", "'", "\"", "(", ")", "0", "1", "7", "42", "é", "e\u0301",
        "ü", "ß", "東", "京", "😀", "👍🏽", "𝐀", "Ω", "Σ", "İ", "\u00a0", "<|endoftext|>", "<|startoftext|>", "</s>", "<pad>",
        "<image>", " hello", "yes", "A", "B", "Q", "ﬁ", "½", "_", "$", "€", "\u3000", "…",
    ];

    /// <summary>Deterministic random lines mixing words, whitespace, specials and unicode.</summary>
    public static List<string> RandomLines(int seed, int count)
    {
        var rnd = new Random(seed);
        var lines = new List<string>(count);
        for (int i = 0; i < count; i++)
        {
            var sb = new StringBuilder();
            int n = rnd.Next(0, 40);
            for (int k = 0; k < n; k++) sb.Append(Alphabet[rnd.Next(Alphabet.Length)]);
            lines.Add(sb.ToString());
        }
        return lines;
    }

    public static string Show(string s) => System.Text.Json.JsonSerializer.Serialize(s);
}
