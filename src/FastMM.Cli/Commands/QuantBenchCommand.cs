using System.CommandLine;
using System.Text.Json;
using SkiaSharp;

namespace FastMM.Cli.Commands;

/// <summary>`fastmm quant-bench`: size, speed and accuracy of quantization schemes on one model, in one run.</summary>
internal static class QuantBenchCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var model = CommonOptions.Model();
        var schemes = new Option<string>("--schemes")
        {
            Description = "comma-separated schemes: a format for every component (q8_0, q4_0, int4-g64, f16, …) or per component, e.g. vision:f16+text:q4_0",
            DefaultValueFactory = _ => "f16,q8_0,q4_0,int4-g64",
        };
        var data = new Option<DirectoryInfo?>("--data") { Description = "Shapes World scenes (scenes.jsonl): prompts for the accuracy columns and task accuracy / recall@1" };
        var limit = new Option<int?>("--limit") { Description = "use only the first N scenes of --data for task accuracy" };
        var prompts = new Option<int>("--prompts") { Description = "prompts (images) compared against the reference", DefaultValueFactory = _ => 16 };
        var runs = new Option<int>("--runs") { Description = "timed runs per speed figure (the median is kept)", DefaultValueFactory = _ => 3 };
        var promptTokens = new Option<int>("--prompt-tokens") { Description = "prefill length for prefill_tok_s", DefaultValueFactory = _ => 128 };
        var decodeTokens = new Option<int>("--decode-tokens") { Description = "tokens per decode run", DefaultValueFactory = _ => 32 };
        var output = new Option<FileInfo>("--out") { Description = "results.json: one record per scheme", Required = true };
        var plot = new Option<FileInfo?>("--plot") { Description = "PNG of accuracy against speed and against size" };
        var cmd = new Command("quant-bench", "Measure quantization trade-offs (size, speed, accuracy against the unquantized model) in one run")
            { model, schemes, data, limit, prompts, runs, promptTokens, decodeTokens, output, plot };
        cmd.SetHandler(stderr, p =>
        {
            var list = p.GetValue(schemes)!.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Select(QuantScheme.Parse).ToList();
            if (list.Count == 0) throw new FastMMException("--schemes: give at least one scheme");
            if (p.GetValue(prompts) < 1 || p.GetValue(runs) < 1 || p.GetValue(promptTokens) < 1 || p.GetValue(decodeTokens) < 1)
                throw new FastMMException("--prompts, --runs, --prompt-tokens and --decode-tokens must be at least 1");
            using var backend = CommonOptions.CreateBackend(p);
            var o = new QuantBench.Options(p.GetValue(runs), p.GetValue(promptTokens), p.GetValue(decodeTokens), p.GetValue(prompts),
                p.GetValue(data)?.FullName, p.GetValue(limit));
            var rows = QuantBench.Run(p.GetValue(model)!, backend, list, o, new ProgressBar(stderr), stderr);
            PrintTable(stdout, rows);
            File.WriteAllText(p.GetValue(output)!.FullName, JsonSerializer.Serialize(rows, new JsonSerializerOptions { WriteIndented = true }) + "\n");
            if (p.GetValue(plot) is FileInfo png) Plot(rows, png.FullName);
            return 0;
        });
        return cmd;
    }

    private static void PrintTable(TextWriter w, List<Dictionary<string, object?>> rows)
    {
        static string F(object? v, string fmt) => v switch { null => "-", double d => d.ToString(fmt), long l => l.ToString(fmt), _ => v.ToString()! };
        w.WriteLine($"{"scheme",-24} {"weights MB",10} {"load ms",8} {"image ms",9} {"prefill t/s",11} {"decode t/s",10} {"peak MB",8} {"KL",9} {"top-1",6} {"vis cos",8} {"task",6} {"R@1",6}");
        foreach (var r in rows)
            w.WriteLine($"{r["scheme"],-24} {(long)r["weight_bytes"]! / 1e6,10:F2} {F(r["load_ms"], "F0"),8} {F(r["image_encode_ms"], "F1"),9} {F(r["prefill_tok_s"], "F0"),11} " +
                        $"{F(r["decode_tok_s"], "F1"),10} {(long)r["peak_mem_bytes"]! / 1e6,8:F0} {F(r["kl_vs_ref"], "F5"),9} {F(r["top1_agreement"], "F3"),6} " +
                        $"{F(r["vision_cosine"], "F4"),8} {F(r["task_accuracy"], "F3"),6} {F(r["recall_at_1"], "F3"),6}");
    }

    /// <summary>Two panels side by side: accuracy against speed, accuracy against weight size; one labelled point per scheme.</summary>
    private static void Plot(List<Dictionary<string, object?>> rows, string path)
    {
        ScottPlot.Fonts.Default = "DejaVu Sans";
        bool generative = rows[0]["decode_tok_s"] is not null;
        string accuracyKey = rows[0]["task_accuracy"] is not null ? "task_accuracy" : rows[0]["recall_at_1"] is not null ? "recall_at_1" : "top1_agreement";
        string accuracyLabel = accuracyKey switch { "task_accuracy" => "VQA exact match", "recall_at_1" => "recall@1 of 8", _ => "top-1 agreement with reference" };
        double Acc(Dictionary<string, object?> r) => (double)r[accuracyKey]!;
        double Speed(Dictionary<string, object?> r) => generative ? (double)r["decode_tok_s"]! : 1000 / (double)r["image_encode_ms"]!;
        string speedLabel = generative ? "decode tokens/s" : "images/s (encode)";

        byte[] Panel(Func<Dictionary<string, object?>, double> x, string xLabel)
        {
            var plt = new ScottPlot.Plot();
            foreach (var r in rows)
            {
                var s = plt.Add.Scatter(new[] { x(r) }, new[] { Acc(r) });
                s.MarkerSize = 10;
                var t = plt.Add.Text((string)r["scheme"]!, x(r), Acc(r));
                t.LabelFontSize = 12;
                t.OffsetY = -6;
            }
            plt.XLabel(xLabel);
            plt.YLabel(accuracyLabel);
            plt.Axes.Margins(0.25, 0.2);
            return plt.GetImage(640, 480).GetImageBytes();
        }

        using var left = SKBitmap.Decode(Panel(Speed, speedLabel));
        using var right = SKBitmap.Decode(Panel(r => (long)r["weight_bytes"]! / 1e6, "weights (MB)"));
        using var surface = SKSurface.Create(new SKImageInfo(left.Width + right.Width, Math.Max(left.Height, right.Height)));
        surface.Canvas.Clear(SKColors.White);
        using (var l = SKImage.FromBitmap(left)) surface.Canvas.DrawImage(l, 0, 0, SKSamplingOptions.Default, null);
        using (var r = SKImage.FromBitmap(right)) surface.Canvas.DrawImage(r, left.Width, 0, SKSamplingOptions.Default, null);
        using var image = surface.Snapshot();
        using var encoded = image.Encode(SKEncodedImageFormat.Png, 100);
        File.WriteAllBytes(path, encoded.ToArray());
    }
}
