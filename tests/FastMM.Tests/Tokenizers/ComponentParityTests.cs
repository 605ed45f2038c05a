using System.Text.Json;
using System.Text.Json.Nodes;
using FastMM.Runtime.Tokenizers;
using HfTokenizer = Tokenizers.DotNet.Tokenizer;

namespace FastMM.Tests.Tokenizers;

/// <summary>
/// Other pipelines later families use (Llama-style byte-fallback BPE, BERT WordPiece, Metaspace "first" +
/// byte-fallback Unigram, Llama-3-style digit split + NFKC), built here as tokenizer.json and checked
/// against HF on the tricky texts plus random lines.
/// </summary>
public class ComponentParityTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("fastmm-tokc-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static readonly string[] Words =
        ["the", "photo", "of", "cat", "dog", "ing", "and", "it's", "hello", "world", "café", "東京", "12", "naïve"];

    private static JsonArray Added(params (int Id, string Content)[] tokens) => new(tokens.Select(t => (JsonNode)new JsonObject
    {
        ["id"] = t.Id, ["content"] = t.Content, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false,
        ["normalized"] = false, ["special"] = true,
    }).ToArray());

    /// <summary>Vocab: specials, 256 byte tokens, single chars, and left-to-right merges building each word.</summary>
    private static (JsonObject Vocab, JsonArray Merges) BpeVocab(string[] specials, Func<string, string> wordForm, bool byteTokens)
    {
        var vocab = new Dictionary<string, int>();
        void Add(string t) { if (!vocab.ContainsKey(t)) vocab[t] = vocab.Count; }
        foreach (var s in specials) Add(s);
        if (byteTokens) for (int b = 0; b < 256; b++) Add($"<0x{b:X2}>");
        foreach (char c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789▁.,!'é") Add(c.ToString());
        var merges = new JsonArray();
        var seen = new HashSet<string>();
        foreach (var w in Words.Select(wordForm))
        {
            var chars = w.EnumerateRunes().Select(r => r.ToString()).ToList();
            foreach (var c in chars) Add(c);
            string cur = chars[0];
            foreach (var c in chars.Skip(1))
            {
                if (seen.Add(cur + " " + c)) merges.Add(cur + " " + c);
                cur += c;
                Add(cur);
            }
        }
        var obj = new JsonObject();
        foreach (var (k, v) in vocab) obj[k] = v;
        return (obj, merges);
    }

    private (Tokenizer Ours, HfTokenizer Hf) Build(string name, JsonObject json)
    {
        json["version"] = "1.0";
        json["truncation"] ??= null;
        json["padding"] ??= null;
        string path = Path.Combine(_dir, name + ".json");
        File.WriteAllText(path, json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        return (Tokenizer.FromFile(path), new HfTokenizer(path));
    }

    private static void Compare(string name, Tokenizer ours, HfTokenizer hf)
    {
        var texts = TokenizerFixtures.TrickyTexts.Concat(TokenizerFixtures.RandomLines(99, 200)).ToList();
        var failures = new List<string>();
        foreach (var text in texts)
        {
            var expected = hf.Encode(text).Select(x => (int)x).ToArray();
            var got = ours.Encode(text);
            if (!expected.SequenceEqual(got))
            {
                failures.Add($"{TokenizerFixtures.Show(text)}\n  hf:   [{string.Join(",", expected)}]\n  ours: [{string.Join(",", got)}]");
                continue;
            }
            string hfText = hf.Decode(expected.Select(x => (uint)x).ToArray());
            string ourText = ours.Decode(expected);
            if (hfText != ourText) failures.Add($"decode {TokenizerFixtures.Show(text)}: hf {TokenizerFixtures.Show(hfText)} ours {TokenizerFixtures.Show(ourText)}");
        }
        Assert.True(failures.Count == 0, $"{name}: {failures.Count} mismatches (random seed 99)\n" + string.Join("\n", failures.Take(8)));
    }

    [Fact]
    public void LlamaStyleByteFallbackBpe()
    {
        var (vocab, merges) = BpeVocab(["<unk>", "<s>", "</s>"], w => "▁" + w, byteTokens: true);
        var json = new JsonObject
        {
            ["added_tokens"] = Added((0, "<unk>"), (1, "<s>"), (2, "</s>")),
            ["normalizer"] = JsonNode.Parse("""{"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"▁"},{"type":"Replace","pattern":{"String":" "},"content":"▁"}]}"""),
            ["pre_tokenizer"] = null,
            ["post_processor"] = JsonNode.Parse("""{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}],"pair":[{"Sequence":{"id":"A","type_id":0}},{"Sequence":{"id":"B","type_id":1}}],"special_tokens":{"<s>":{"id":"<s>","ids":[1],"tokens":["<s>"]}}}"""),
            ["decoder"] = JsonNode.Parse("""{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"String":"▁"},"content":" "},{"type":"ByteFallback"},{"type":"Fuse"},{"type":"Strip","content":" ","start":1,"stop":0}]}"""),
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = "<unk>", ["continuing_subword_prefix"] = null,
                ["end_of_word_suffix"] = null, ["fuse_unk"] = true, ["byte_fallback"] = true, ["ignore_merges"] = false,
                ["vocab"] = vocab, ["merges"] = merges,
            },
        };
        var (ours, hf) = Build("llama", json);
        Compare("llama", ours, hf);
    }

    [Fact]
    public void Llama3StyleDigitsSplitAndNfkc()
    {
        var bytes = new Dictionary<string, int>();
        var (vocab, merges) = BpeVocab(["<|begin_of_text|>"], w => w, byteTokens: false);
        // Byte-level alphabet so every input is representable.
        foreach (var c in Enumerable.Range(0, 256).Select(b => ByteLevelChar(b).ToString()))
            if (!vocab.ContainsKey(c)) vocab[c] = vocab.Count;
        var json = new JsonObject
        {
            ["added_tokens"] = Added((0, "<|begin_of_text|>")),
            ["normalizer"] = JsonNode.Parse("""{"type":"Sequence","normalizers":[{"type":"NFKC"},{"type":"StripAccents"},{"type":"Lowercase"},{"type":"Strip","strip_left":false,"strip_right":true}]}"""),
            ["pre_tokenizer"] = JsonNode.Parse("""{"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},"behavior":"Isolated","invert":false},{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":false}]}"""),
            ["post_processor"] = JsonNode.Parse("""{"type":"Sequence","processors":[{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":false,"use_regex":true},{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<|begin_of_text|>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}],"pair":[],"special_tokens":{"<|begin_of_text|>":{"id":"<|begin_of_text|>","ids":[0],"tokens":["<|begin_of_text|>"]}}}]}"""),
            ["decoder"] = JsonNode.Parse("""{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true}"""),
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = null, ["continuing_subword_prefix"] = null,
                ["end_of_word_suffix"] = null, ["fuse_unk"] = false, ["byte_fallback"] = false, ["ignore_merges"] = true,
                ["vocab"] = vocab, ["merges"] = merges,
            },
        };
        var (ours, hf) = Build("llama3", json);
        Compare("llama3", ours, hf);
    }

    private static char ByteLevelChar(int b)
    {
        int n = 0;
        for (int x = 0; x < 256; x++)
        {
            bool printable = x is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            if (x == b) return printable ? (char)x : (char)(256 + n);
            if (!printable) n++;
        }
        throw new ArgumentOutOfRangeException(nameof(b));
    }

    [Fact]
    public void BertWordPiece()
    {
        var vocab = new JsonObject();
        var list = new List<string> { "[PAD]", "[UNK]", "[CLS]", "[SEP]" };
        foreach (char c in "abcdefghijklmnopqrstuvwxyz0123456789.,!?'()-東京") { list.Add(c.ToString()); list.Add("##" + c); }
        list.AddRange(["the", "photo", "of", "cat", "dog", "##ing", "##s", "hello", "world", "cafe", "nai", "##ve", "play", "##ed"]);
        foreach (var t in list.Distinct()) vocab[t] = vocab.Count;
        var json = new JsonObject
        {
            ["added_tokens"] = Added((0, "[PAD]"), (1, "[UNK]"), (2, "[CLS]"), (3, "[SEP]")),
            ["normalizer"] = JsonNode.Parse("""{"type":"BertNormalizer","clean_text":true,"handle_chinese_chars":true,"strip_accents":null,"lowercase":true}"""),
            ["pre_tokenizer"] = JsonNode.Parse("""{"type":"BertPreTokenizer"}"""),
            ["post_processor"] = JsonNode.Parse("""{"type":"BertProcessing","sep":["[SEP]",3],"cls":["[CLS]",2]}"""),
            ["decoder"] = JsonNode.Parse("""{"type":"WordPiece","prefix":"##","cleanup":true}"""),
            ["model"] = new JsonObject { ["type"] = "WordPiece", ["unk_token"] = "[UNK]", ["continuing_subword_prefix"] = "##", ["max_input_chars_per_word"] = 100, ["vocab"] = vocab },
        };
        var (ours, hf) = Build("bert", json);
        Compare("bert", ours, hf);
    }

    [Fact]
    public void MetaspaceFirstUnigramWithByteFallback()
    {
        var siglip = JsonNode.Parse(File.ReadAllText(Path.Combine(TokenizerFixtures.Dir("siglip"), "tokenizer.json")))!.AsObject();
        var model = siglip["model"]!.AsObject();
        var vocab = model["vocab"]!.AsArray();
        for (int b = 0; b < 256; b++) vocab.Add(new JsonArray($"<0x{b:X2}>", 0.0));
        model["byte_fallback"] = true;
        siglip["normalizer"] = JsonNode.Parse("""{"type":"Sequence","normalizers":[{"type":"NFKC"},{"type":"Replace","pattern":{"Regex":" {2,}"},"content":" "}]}""");
        siglip["pre_tokenizer"] = JsonNode.Parse("""{"type":"Metaspace","replacement":"▁","prepend_scheme":"first","split":false}""");
        siglip["decoder"] = JsonNode.Parse("""{"type":"Sequence","decoders":[{"type":"ByteFallback"},{"type":"Metaspace","replacement":"▁","prepend_scheme":"first","split":false}]}""");
        var (ours, hf) = Build("unigram-first", siglip);
        Compare("unigram-first", ours, hf);
    }
}
