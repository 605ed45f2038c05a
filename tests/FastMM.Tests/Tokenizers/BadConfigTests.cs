using FastMM.Runtime.Tokenizers;

namespace FastMM.Tests.Tokenizers;

/// <summary>Broken or unsupported tokenizer.json files fail with a FastMMException naming the file and JSON path.</summary>
public class BadConfigTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("fastmm-tok-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Write(string json)
    {
        string path = Path.Combine(_dir, "tokenizer.json");
        File.WriteAllText(path, json);
        return path;
    }

    private static string ClipJson() => File.ReadAllText(Path.Combine(TokenizerFixtures.Dir("clip"), "tokenizer.json"));

    private static FastMMException Fails(string path) => Assert.Throws<FastMMException>(() => Tokenizer.FromFile(path));

    [Fact]
    public void NotJson()
    {
        string path = Write("{ this is not json");
        var e = Fails(path);
        Assert.Contains(path, e.Message);
        Assert.Contains("not valid JSON", e.Message);
    }

    [Fact]
    public void MissingFile()
    {
        string path = Path.Combine(_dir, "nope", "tokenizer.json");
        Assert.Contains(path, Fails(path).Message);
        Assert.Throws<FastMMException>(() => Tokenizer.FromFolder(Path.Combine(_dir, "nope")));
    }

    [Fact]
    public void UnknownModelType()
    {
        string path = Write(ClipJson().Replace("\"type\": \"BPE\"", "\"type\": \"Foo\""));
        Assert.Equal($"{path}: model.type 'Foo' is not supported", Fails(path).Message);
    }

    [Fact]
    public void UnknownPreTokenizerInSequence()
    {
        string path = Write(ClipJson().Replace("\"type\": \"ByteLevel\",\n        \"add_prefix_space\"", "\"type\": \"Foo\",\n        \"add_prefix_space\""));
        Assert.Equal($"{path}: pre_tokenizer.pretokenizers[1].type 'Foo' is not supported", Fails(path).Message);
    }

    [Fact]
    public void MissingVocab()
    {
        string path = Write("""{"model": {"type": "BPE", "merges": []}}""");
        Assert.Equal($"{path}: model.vocab is missing", Fails(path).Message);
    }

    [Fact]
    public void MissingModel()
    {
        string path = Write("""{"normalizer": null}""");
        Assert.Equal($"{path}: model is missing", Fails(path).Message);
    }

    [Fact]
    public void MergeOutsideVocab()
    {
        string path = Write("""{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]}}""");
        var e = Fails(path);
        Assert.Contains(path, e.Message);
        Assert.Contains("model.merges[0]", e.Message);
    }

    [Fact]
    public void UnknownNormalizerAndDecoder()
    {
        string path = Write("""{"normalizer": {"type": "Precompiled", "precompiled_charsmap": ""}, "model": {"type": "WordLevel", "vocab": {}}}""");
        Assert.Equal($"{path}: normalizer.type 'Precompiled' is not supported", Fails(path).Message);
        path = Write("""{"decoder": {"type": "Sequence", "decoders": [{"type": "CTC"}]}, "model": {"type": "WordLevel", "vocab": {}}}""");
        Assert.Equal($"{path}: decoder.decoders[0].type 'CTC' is not supported", Fails(path).Message);
    }

    [Fact]
    public void BadConfigToken()
    {
        File.WriteAllText(Path.Combine(_dir, "tokenizer.json"), ClipJson());
        File.WriteAllText(Path.Combine(_dir, "tokenizer_config.json"), """{"pad_token": "<nope>"}""");
        var e = Assert.Throws<FastMMException>(() => Tokenizer.FromFolder(_dir));
        Assert.Contains("tokenizer_config.json: pad_token", e.Message);
    }
}
