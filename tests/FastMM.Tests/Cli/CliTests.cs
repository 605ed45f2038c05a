using System.Text.Json;
using FastMM.Cli;
using FastMM.Models.IO;
using FastMM.Tests.Support;

namespace FastMM.Tests.Cli;

/// <summary>The `fastmm` commands run in-process on the tiny models and bundled sample images.</summary>
[Collection("cli")] // commands set the process-wide thread count: run these one at a time
public class CliTests
{
    private static readonly string Samples = Path.Combine(AppContext.BaseDirectory, "samples");

    internal static (int Code, string Out, string Err) Run(params string[] args)
    {
        var o = new StringWriter(); var e = new StringWriter();
        int code = Program.Run(args, o, e);
        return (code, o.ToString(), e.ToString());
    }

    [Theory]
    [InlineData("tiny-clip")]
    [InlineData("tiny-siglip-bf16")]
    public void ForwardWritesHfOutputsMatchingTheReference(string model)
    {
        using var tmp = new TestPaths.TempDir();
        var g = Npz.Read(TestPaths.Golden(model));
        var inputs = new List<NpyArray> { g["input_ids"], g["pixel_values"] };
        if (g.TryGetValue("attention_mask", out var mask)) inputs.Add(mask);
        Npz.Write(tmp["in.npz"], inputs);
        var (code, _, err) = Run("forward", "--model", TestPaths.Model(model), "--inputs", tmp["in.npz"], "--out", tmp["out.npz"], "--threads", "2");
        Assert.True(code == 0, err);
        var o = Npz.Read(tmp["out.npz"]);
        foreach (var key in new[] { "image_embeds", "text_embeds", "logits_per_image", "logits_per_text" })
        {
            Assert.Equal(g[key].Shape, o[key].Shape);
            Compare.Close($"{model} {key}", o[key].Floats(key), g[key].Floats(key), 1e-4);
        }
    }

    [Theory]
    [InlineData("extra", "unexpected array 'extra'")]
    [InlineData("no-pixels", "missing 'pixel_values'")]
    [InlineData("float-ids", "'input_ids' must be an integer array")]
    [InlineData("bad-shape", "'pixel_values' has shape [1, 3, 16, 16], expected [?, 3, 32, 32]")]
    [InlineData("mask-shape", "'attention_mask' has shape [1, 5]")]
    public void ForwardRejectsBadInputsWithOneClearError(string kind, string expected)
    {
        using var tmp = new TestPaths.TempDir();
        var ids = NpyArray.Int64("input_ids", [998, 5, 999], 1, 3);
        var px = NpyArray.Float32("pixel_values", new float[3 * 32 * 32], 1, 3, 32, 32);
        var arrays = kind switch
        {
            "extra" => [ids, px, NpyArray.Float32("extra", [1f], 1)],
            "no-pixels" => [ids],
            "float-ids" => [NpyArray.Float32("input_ids", [1f, 2f], 1, 2), px],
            "bad-shape" => [ids, NpyArray.Float32("pixel_values", new float[3 * 16 * 16], 1, 3, 16, 16)],
            "mask-shape" => new[] { ids, px, NpyArray.Int64("attention_mask", new long[5], 1, 5) },
            _ => throw new ArgumentException(kind),
        };
        Npz.Write(tmp["in.npz"], arrays);
        var (code, _, err) = Run("forward", "--model", TestPaths.Model("tiny-clip"), "--inputs", tmp["in.npz"], "--out", tmp["out.npz"]);
        Assert.Equal(1, code);
        Assert.Contains(expected, err);
        Assert.Single(err.Trim().Split('\n'), l => l.StartsWith("error:"));
        Assert.False(File.Exists(tmp["out.npz"]));
    }

    [Fact]
    public void EmbedPrintsUnitEmbeddingsForImagesAndTexts()
    {
        var (code, output, err) = Run("embed", "--model", TestPaths.Model("tiny-clip"),
            "--image", Path.Combine(Samples, "a-red-circle.png"), Path.Combine(Samples, "a-blue-circle.png"), "--text", "a red circle", "two words");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(output);
        Assert.Equal(24, doc.RootElement.GetProperty("dim").GetInt32());
        foreach (var group in new[] { "images", "texts" })
        {
            var items = doc.RootElement.GetProperty(group).EnumerateArray().ToList();
            Assert.Equal(2, items.Count);
            foreach (var it in items)
            {
                var v = it.GetProperty("embedding").EnumerateArray().Select(x => x.GetSingle()).ToArray();
                Assert.Equal(24, v.Length);
                Assert.Equal(1.0, Math.Sqrt(v.Sum(x => (double)x * x)), 5);
            }
        }
    }

    [Fact]
    public void RankScoresAreTheModelLogitsOfTheEmbeddings()
    {
        string image = Path.Combine(Samples, "a-red-triangle.png");
        string[] texts = ["a photo of a green triangle", "a photo of a red circle", "something else entirely"];
        var (code, output, err) = Run(["rank", "--model", TestPaths.Model("tiny-siglip"), "--image", image, "--json", "--texts", .. texts]);
        Assert.True(code == 0, err);
        var ranked = JsonDocument.Parse(output).RootElement.EnumerateArray().ToDictionary(e => e.GetProperty("text").GetString()!, e => e.GetProperty("score").GetSingle());

        // Independently: embeddings from `embed`, then SigLIP's logit = exp(logit_scale)·cos + logit_bias.
        var (_, embedOut, _) = Run(["embed", "--model", TestPaths.Model("tiny-siglip"), "--image", image, "--text", .. texts]);
        using var doc = JsonDocument.Parse(embedOut);
        float[] Vec(JsonElement e) => e.GetProperty("embedding").EnumerateArray().Select(x => x.GetSingle()).ToArray();
        var img = Vec(doc.RootElement.GetProperty("images")[0]);
        using var f = FastMM.Models.IO.ModelFolder.Open(TestPaths.Model("tiny-siglip"));
        float scale = MathF.Exp(f.Get("logit_scale").ToFloatArray()[0]), bias = f.Get("logit_bias").ToFloatArray()[0];
        for (int i = 0; i < texts.Length; i++)
        {
            var t = Vec(doc.RootElement.GetProperty("texts")[i]);
            float expected = scale * img.Zip(t, (a, b) => a * b).Sum() + bias;
            Assert.Equal(expected, ranked[texts[i]], 3);
        }
    }

    [Fact]
    public void RankBatchWritesOneLinePerInputAndReportsBadLines()
    {
        using var tmp = new TestPaths.TempDir();
        File.Copy(Path.Combine(Samples, "a-red-circle.png"), tmp["red.png"]);
        File.WriteAllLines(tmp["in.jsonl"],
        [
            """{"id": "a", "image": "red.png", "texts": ["a red circle", "a blue square"]}""",
            """{"id": 7, "image": "missing.png", "texts": ["x"]}""",
            "not json",
            """{"id": "dup", "id": "dup", "image": "red.png", "texts": ["x"]}""",
            $$"""{"id": "c", "image": "{{Path.Combine(Samples, "a-blue-circle.png")}}", "texts": ["a", "b", "c"]}""",
        ]);
        var (code, _, err) = Run("rank", "--model", TestPaths.Model("tiny-clip"), "--batch", tmp["in.jsonl"], "--out", tmp["out.jsonl"]);
        Assert.Equal(1, code);
        Assert.Contains("in.jsonl:2:", err);
        Assert.Contains("in.jsonl:3: invalid JSON", err);
        var lines = File.ReadAllLines(tmp["out.jsonl"]).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal(5, lines.Count);
        Assert.True(lines[3].TryGetProperty("error", out var dupError));
        Assert.Contains("invalid JSON", dupError.GetString());
        Assert.Equal("a", lines[0].GetProperty("id").GetString());
        Assert.Equal(2, lines[0].GetProperty("scores").GetArrayLength());
        Assert.Equal(7, lines[1].GetProperty("id").GetInt32());
        Assert.Contains("missing.png", lines[1].GetProperty("error").GetString());
        Assert.True(lines[2].TryGetProperty("error", out _));
        Assert.Equal(3, lines[4].GetProperty("scores").GetArrayLength());
    }

    [Fact]
    public void SearchRanksAFolderAndReusesTheEmbeddingCache()
    {
        using var tmp = new TestPaths.TempDir();
        string images = Directory.CreateDirectory(tmp["images"]).FullName;
        foreach (var f in Directory.GetFiles(Samples)) File.Copy(f, Path.Combine(images, Path.GetFileName(f)));
        File.WriteAllBytes(Path.Combine(images, "broken.png"), [0x89, (byte)'P', (byte)'N', (byte)'G', 1, 2, 3]);
        string[] args = ["search", "--model", TestPaths.Model("tiny-clip"), "--images", images, "--query", "a red circle", "--top", "3", "--cache", tmp["cache"], "--json"];

        var (code, output, err) = Run(args);
        Assert.True(code == 0, err);
        Assert.Contains("warning: skipping", err);
        Assert.Contains("broken.png", err);
        Assert.Contains("0 from cache, 7 encoded, 1 skipped", err);
        var first = JsonDocument.Parse(output).RootElement.EnumerateArray().Select(e => (e.GetProperty("path").GetString(), e.GetProperty("cosine").GetSingle())).ToList();
        Assert.Equal(3, first.Count);
        Assert.True(first[0].Item2 >= first[1].Item2 && first[1].Item2 >= first[2].Item2);

        var (code2, output2, err2) = Run(args);
        Assert.Equal(0, code2);
        Assert.Contains("7 from cache, 0 encoded, 1 skipped", err2); // only the undecodable file is tried again
        var second = JsonDocument.Parse(output2).RootElement.EnumerateArray().Select(e => (e.GetProperty("path").GetString(), e.GetProperty("cosine").GetSingle())).ToList();
        Assert.Equal(first, second);

        // A changed file is re-encoded; the rest still come from the cache.
        File.SetLastWriteTimeUtc(Path.Combine(images, "a-red-circle.png"), DateTime.UtcNow.AddMinutes(1));
        var (_, _, err3) = Run(args);
        Assert.Contains("6 from cache, 1 encoded, 1 skipped", err3);
    }

    [Fact]
    public void SearchOfAFolderWithoutImagesIsAnError()
    {
        using var tmp = new TestPaths.TempDir();
        File.WriteAllText(tmp["notes.txt"], "hi");
        var (code, _, err) = Run("search", "--model", TestPaths.Model("tiny-clip"), "--images", tmp.Path, "--query", "x");
        Assert.Equal(1, code);
        Assert.Contains("no images found", err);
    }

    [Fact]
    public void CorruptImageIsOneClearError()
    {
        using var tmp = new TestPaths.TempDir();
        var bytes = File.ReadAllBytes(Path.Combine(Samples, "a-red-circle.png"));
        File.WriteAllBytes(tmp["half.png"], bytes[..(bytes.Length / 2)]);
        var (code, output, err) = Run("rank", "--model", TestPaths.Model("tiny-clip"), "--image", tmp["half.png"], "--texts", "a", "b");
        Assert.Equal(1, code);
        Assert.Equal("", output);
        Assert.StartsWith("error:", err.Trim());
        Assert.Contains("half.png", err);
    }

    [Theory]
    [InlineData("cuda", "backend 'cuda' is not available")]
    [InlineData("ilgpu", "backend 'ilgpu' is not available: ilgpu: ILGPU found no CUDA or OpenCL GPU")]
    [InlineData("ilgpu:cuda", "backend 'ilgpu' is not available: ilgpu: ILGPU found no CUDA GPU")]
    [InlineData("ilgpu:tpu", "ilgpu: unknown device 'tpu'")]
    [InlineData("cpu:2", "backend 'cpu' takes no option (got '2')")]
    [InlineData("tpu", "unknown backend 'tpu'")]
    public void UnavailableBackendIsAnErrorNotAFallback(string backend, string expected)
    {
        // (This machine class has no GPU: a GPU machine runs the GPU backends' checks through scripts/device-check.sh.)
        var (code, output, err) = Run("embed", "--model", TestPaths.Model("tiny-clip"), "--text", "hi", "--backend", backend);
        Assert.Equal(1, code);
        Assert.Equal("", output);
        Assert.Contains(expected, err);
    }

    [Fact]
    public void IlgpuOnTheCpuAcceleratorGivesTheCpuBackendsEmbeddings()
    {
        string[] args = ["embed", "--model", TestPaths.Model("tiny-clip"), "--text", "a photo of a cat", "--image", Path.Combine(TestPaths.Data, "images", "shapes_300x200.png")];
        var (code, cpuOut, err) = Run(args);
        Assert.True(code == 0, err);
        var (code2, ilgpuOut, err2) = Run([.. args, "--backend", "ilgpu:cpu"]);
        Assert.True(code2 == 0, err2);
        float[] Embeddings(string json)
        {
            using var doc = System.Text.Json.JsonDocument.Parse(json);
            return doc.RootElement.GetProperty("images").EnumerateArray().Concat(doc.RootElement.GetProperty("texts").EnumerateArray())
                .SelectMany(e => e.GetProperty("embedding").EnumerateArray().Select(v => v.GetSingle())).ToArray();
        }
        Compare.Close("ilgpu:cpu vs cpu embeddings", Embeddings(ilgpuOut), Embeddings(cpuOut), 1e-5);
    }

    [Fact]
    public void UnsupportedModelTypeIsNamed()
    {
        using var tmp = new TestPaths.TempDir();
        File.WriteAllText(tmp["config.json"], """{"model_type": "llama"}""");
        var (code, _, err) = Run("embed", "--model", tmp.Path, "--text", "hi");
        Assert.Equal(1, code);
        Assert.Contains("model_type 'llama' is not supported", err);
    }

    [Theory]
    [InlineData("forward")]
    [InlineData("embed")]
    [InlineData("search")]
    [InlineData("rank")]
    [InlineData("synth")]
    [InlineData("bench")]
    public void EveryCommandHasHelp(string command)
    {
        var (code, output, _) = Run(command, "--help");
        Assert.Equal(0, code);
        Assert.Contains("--model", output + (command == "synth" ? "--model" : ""));
        Assert.Contains("--backend", output);
    }

    [Fact]
    public void SynthWritesAFolderTheLoaderAccepts()
    {
        using var tmp = new TestPaths.TempDir();
        var (code, _, err) = Run("synth", "--arch", "clip-vit-b32", "--out", tmp["m"], "--dtype", "f16");
        Assert.True(code == 0, err);
        using var backend = new FastMM.Backends.CpuBackend();
        using var m = FastMM.Models.ModelLoader.LoadDualEncoder(tmp["m"], backend);
        Assert.Equal(512, m.EmbedDim);
        Assert.Equal(224, m.ImageSize);
        var e = m.EmbedImages(new float[3 * 224 * 224], 1);
        Assert.Equal(512, e.Length);
        Assert.All(e, v => Assert.True(float.IsFinite(v)));
    }
}
