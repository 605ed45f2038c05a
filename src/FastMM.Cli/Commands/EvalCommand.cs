using System.CommandLine;
using System.Text.Json;
using FastMM.Models;
using FastMM.Runtime;

namespace FastMM.Cli.Commands;

/// <summary>`fastmm eval`: Shapes World accuracy of a model on a folder of rendered scenes (VQA per kind, or recall@1).</summary>
internal static class EvalCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var model = CommonOptions.Model();
        var data = new Option<DirectoryInfo>("--data") { Description = "folder with scenes.jsonl and images (tools/shapes/render.py)", Required = true };
        var limit = new Option<int?>("--limit") { Description = "evaluate only the first N scenes" };
        var json = new Option<FileInfo?>("--json") { Description = "also write the report as JSON" };
        var cmd = new Command("eval", "Shapes World evaluation: exact-match VQA accuracy per question kind (VLMs) or recall@1 over 8 captions (CLIP/SigLIP)") { model, data, limit, json };
        cmd.SetHandler(stderr, p =>
        {
            string dir = p.GetValue(model)!;
            var scenes = ShapesEval.ReadScenes(p.GetValue(data)!.FullName, p.GetValue(limit));
            using var backend = CommonOptions.CreateBackend(p);
            var bar = new ProgressBar(stderr);
            EvalReport report;
            if (ModelLoader.IsGenerative(ModelLoader.ReadModelType(dir)))
            {
                using var pipe = bar.Run("loading weights", prog => VlmPipeline.Load(dir, backend, prog, quant: CommonOptions.Policy(p)));
                report = bar.Run($"answering {scenes.Sum(s => s.Questions.Count)} questions", prog => ShapesEval.Vqa(pipe, scenes, progress: prog));
            }
            else
            {
                using var pipe = bar.Run("loading weights", prog => DualEncoderPipeline.Load(dir, backend, needText: true, prog, CommonOptions.Policy(p)));
                report = bar.Run($"ranking {scenes.Count} scenes", prog => ShapesEval.Retrieval(pipe, scenes, progress: prog));
            }
            stdout.WriteLine($"{report.Task}: {report.Overall:P1} over {report.Items} item(s)");
            foreach (var (kind, (ok, n)) in report.PerKind) stdout.WriteLine($"  {kind,-18} {ok,5} / {n,-5} {(double)ok / n,7:P1}");
            if (p.GetValue(json) is FileInfo f)
                File.WriteAllText(f.FullName, JsonSerializer.Serialize(new
                {
                    task = report.Task, items = report.Items, accuracy = report.Overall,
                    per_kind = report.PerKind.ToDictionary(kv => kv.Key, kv => new { correct = kv.Value.Correct, total = kv.Value.Total, accuracy = (double)kv.Value.Correct / kv.Value.Total }),
                }, new JsonSerializerOptions { WriteIndented = true }));
            return 0;
        });
        return cmd;
    }
}
