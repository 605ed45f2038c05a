using System.Text.Json;
using FastMM.Backends;
using FastMM.Runtime;
using FastMM.Runtime.Generation;
using FastMM.Runtime.Images;
using FastMM.Tests.Cli;
using FastMM.Tests.Support;

namespace FastMM.Tests.Runtime;

[Collection("cli")]
public class ShapesEvalTests
{
    private static string Data => Path.Combine(TestPaths.Data, "shapes-eval");

    [Theory]
    [InlineData("red", "red")]
    [InlineData("  Red. ", "red")]
    [InlineData("A red circle and a blue square.", "a red circle and a blue square")]
    [InlineData("3", "3")]
    public void AnswersAreNormalisedAsTheSpecSays(string raw, string expected) => Assert.Equal(expected, ShapesEval.Normalize(raw));

    [Fact]
    public void VqaCountsExactMatchesPerKind()
    {
        using var backend = new CpuBackend();
        using var pipe = VlmPipeline.Load(TestPaths.Model("tiny-llava-qwen"), backend);
        var scenes = ShapesEval.ReadScenes(Data, limit: 2);
        var report = ShapesEval.Vqa(pipe, scenes, maxNewTokens: 4);
        // Recount independently with the same greedy answers.
        int total = 0, correct = 0;
        foreach (var s in scenes)
            foreach (var (_, q, a) in s.Questions)
            {
                total++;
                var r = pipe.Ask([new ChatTurn("user", q, [ImageDecoder.Decode(s.Image)])], SamplingOptions.Greedy, 4);
                if (ShapesEval.Normalize(r.Text) == ShapesEval.Normalize(a)) correct++;
            }
        Assert.Equal(total, report.Items);
        Assert.Equal(total, report.PerKind.Values.Sum(v => v.Total));
        Assert.Equal((double)correct / total, report.Overall);
        Assert.Contains("caption", report.PerKind.Keys);
    }

    [Fact]
    public void EvalCommandReportsRecallForADualEncoder()
    {
        using var tmp = new TestPaths.TempDir();
        var (code, output, err) = CliTests.Run("eval", "--model", TestPaths.Model("tiny-clip"), "--data", Data, "--json", tmp["r.json"]);
        Assert.True(code == 0, err);
        Assert.Contains("recall@1 of 8", output);
        using var doc = JsonDocument.Parse(File.ReadAllText(tmp["r.json"]));
        Assert.Equal(10, doc.RootElement.GetProperty("items").GetInt32());
        double acc = doc.RootElement.GetProperty("accuracy").GetDouble();
        Assert.InRange(acc, 0, 1);
    }

    [Fact]
    public void MissingScenesFileIsAnError()
    {
        using var tmp = new TestPaths.TempDir();
        var (code, _, err) = CliTests.Run("eval", "--model", TestPaths.Model("tiny-clip"), "--data", tmp.Path);
        Assert.Equal(1, code);
        Assert.Contains("no scenes.jsonl", err);
    }
}
