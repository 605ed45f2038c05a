using System.Text.Json;
using FastMM.Backends;
using FastMM.Models;
using FastMM.Models.IO;
using FastMM.Runtime;
using FastMM.Runtime.Generation;
using FastMM.Runtime.Tokenizers;
using FastMM.Tests.Cli;
using FastMM.Tests.Support;

namespace FastMM.Tests.Models;

/// <summary>
/// The bundled Shapes World VLM (models/shapes-vlm, a LLaVA trained by tools/train/train_vlm.py): FastMM matches
/// PyTorch's forward pass of the same weights, and the model answers what it has learnt (counts, colours) end to end.
/// </summary>
[Collection("cli")]
public class ShapesVlmTests(BackendCache backends) : IClassFixture<BackendCache>
{
    private static string ModelDir => Path.Combine(AppContext.BaseDirectory, "bundled", "shapes-vlm");
    private static string Samples => Path.Combine(AppContext.BaseDirectory, "samples");

    /// <summary>Golden 0: one red circle, "What color is the circle?"; golden 1: three objects, "Describe the image.". On every backend.</summary>
    public static TheoryData<int, string> Goldens()
    {
        var data = new TheoryData<int, string>();
        foreach (var backend in new[] { "cpu" }.Concat(MachineBackends.Names))
            foreach (int i in new[] { 0, 1 })
                data.Add(i, backend);
        return data;
    }

    [Theory]
    [MemberData(nameof(Goldens))]
    public void LogitsAndGreedyAnswerMatchThePyTorchForward(int i, string backendName)
    {
        string source = $"shapes-vlm.npz[{i}] on {backendName}";
        var g = Npz.Read(Path.Combine(AppContext.BaseDirectory, "bundled-goldens", "shapes-vlm.npz"));
        var backend = backends.Get(backendName);
        using var m = ModelLoader.LoadVisionLanguageModel(ModelDir, backend);
        var text = TextInput.FromNpy(g[$"input_ids_{i}"], null, source);
        using var f = VlmTensors.ImageFeatures(m, g[$"pixel_values_{i}"], null, source);
        Compare.Close($"{source} logits", VlmTensors.Logits(m, text, f, source), g[$"logits_{i}"].Floats(source), Compare.ToleranceFor(backend, 1e-4));

        long[] generated = g[$"generated_{i}"].Ints(source);
        using var gen = new Generator(m, Tokenizer.FromFolder(ModelDir));
        var ids = VlmTensors.GenerateGreedy(gen, m, text, f, generated.Length, eos: [], padId: 0, source, out _);
        Assert.Equal(generated, ids.Skip(text.Length).ToArray());
    }

    [Fact]
    public void AnswersOnFreshlyRenderedScenesStayAtTheMeasuredLevel()
    {
        // tests/data/shapes-eval: 10 scenes (every question kind) from tools/shapes/render.py with a seed training never
        // used. The bar is 95% overall and 85% per kind; the committed model answers all 182 here (and 99.9% of
        // 5,434 questions of the independent renderer, tools/train/README.md), so the floors are the issue's own.
        using var backend = new CpuBackend();
        using var pipe = VlmPipeline.Load(ModelDir, backend);
        var report = ShapesEval.Vqa(pipe, ShapesEval.ReadScenes(Path.Combine(TestPaths.Data, "shapes-eval")), maxNewTokens: 24);
        Assert.True(report.Overall >= 0.95, $"exact match {report.Overall:P1} over {report.Items} questions");
        Assert.Equal(7, report.PerKind.Count);
        foreach (var (kind, (ok, total)) in report.PerKind)
            Assert.True(ok >= 0.85 * total, $"{kind}: {ok}/{total}");
    }

    [Fact]
    public void AskWithTheBundledDefaultAnswersFromTheImage()
    {
        // The README's command: no --model, an image and a question.
        var (code, output, err) = CliTests.Run("ask", "--image", Path.Combine(Samples, "a-green-circle.png"), "What color is the circle?");
        Assert.True(code == 0, err);
        Assert.Equal("green", output.Trim());
    }

    [Fact]
    public void AskBatchCountsAndNamesTheColoursOfEverySample()
    {
        using var tmp = new TestPaths.TempDir();
        var lines = new List<string>();
        var expected = new Dictionary<string, string>();
        foreach (var file in Directory.GetFiles(Samples, "*.png"))
        {
            // a-red-square-a-red-circle-and-a-blue-circle.png -> 3 objects; a-green-circle.png -> "What color is the circle?" = green
            var objects = ObjectsFromFileName(Path.GetFileNameWithoutExtension(file));
            string name = Path.GetFileName(file);
            expected[name + "/count"] = objects.Count.ToString();
            lines.Add(JsonSerializer.Serialize(new { id = name + "/count", image = file, question = "How many shapes are there?" }));
            if (objects.Count == 1)
            {
                expected[name + "/colour"] = objects[0].Colour;
                lines.Add(JsonSerializer.Serialize(new { id = name + "/colour", image = file, question = $"What color is the {objects[0].Shape}?" }));
            }
        }
        File.WriteAllLines(tmp["in.jsonl"], lines);
        var (code, _, err) = CliTests.Run("ask", "--batch", tmp["in.jsonl"], "--out", tmp["out.jsonl"]);
        Assert.True(code == 0, err);
        var answers = File.ReadAllLines(tmp["out.jsonl"]).Select(l => JsonDocument.Parse(l).RootElement)
            .ToDictionary(r => r.GetProperty("id").GetString()!, r => ShapesEval.Normalize(r.GetProperty("answer").GetString()!));
        Assert.Equal(expected.Count, answers.Count);
        foreach (var (id, answer) in expected) Assert.True(answers[id] == answer, $"{id}: '{answers[id]}', expected '{answer}'");
    }

    /// <summary>The sample names are their captions with dashes: (colour, shape) per object, "and" before the last one.</summary>
    private static List<(string Colour, string Shape)> ObjectsFromFileName(string name)
    {
        var words = name.Split('-').Where(w => w != "and").ToArray();
        var objects = new List<(string, string)>();
        for (int k = 0; k + 2 < words.Length; k += 3) objects.Add((words[k + 1], words[k + 2])); // "a", colour, shape
        return objects;
    }
}
