using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Nodes;
using FastMM.Runtime;
using FastMM.Runtime.Images;

namespace FastMM.Cli.Commands;

/// <summary>
/// `fastmm rank`: zero-shot classification — one image against candidate texts, or a JSONL batch of
/// {"id","image","texts"} lines to {"id","scores"} lines (scores = the model's logits_per_image row).
/// </summary>
internal static class RankCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var model = CommonOptions.ModelWithDefault("shapes-clip");
        var image = new Option<string?>("--image") { Description = "image file" };
        var texts = new Option<string[]>("--texts") { Description = "candidate texts", AllowMultipleArgumentsPerToken = true };
        var batch = new Option<FileInfo?>("--batch") { Description = "JSONL input: {\"id\", \"image\", \"texts\": [...]} per line" };
        var output = new Option<FileInfo?>("--out") { Description = "JSONL output for --batch: {\"id\", \"scores\": [...]} per line" };
        var json = new Option<bool>("--json") { Description = "print single-image results as JSON" };
        var cmd = new Command("rank", "Score candidate texts for an image (zero-shot classification)") { model, image, texts, batch, output, json };
        cmd.SetHandler(stderr, p =>
        {
            using var backend = CommonOptions.CreateBackend(p);
            if (p.GetValue(batch) is FileInfo input)
            {
                if (p.GetValue(output) is not FileInfo outFile) throw new FastMMException("--batch needs --out");
                if (!input.Exists) throw new FastMMException($"{input.FullName}: batch file not found");
                using var pipe = new ProgressBar(stderr).Run("loading weights", prog => DualEncoderPipeline.Load(p.GetValue(model)!, backend, true, prog, CommonOptions.Policy(p)));
                return RunBatch(pipe, input.FullName, outFile.FullName, stderr);
            }
            string path = p.GetValue(image) ?? throw new FastMMException("give --image PATH with --texts, or --batch FILE --out FILE");
            var candidates = p.GetValue(texts) ?? [];
            if (candidates.Length == 0) throw new FastMMException("give at least one candidate with --texts");
            var img = ImageDecoder.Decode(path);
            using var pipeline = new ProgressBar(stderr).Run("loading weights", prog => DualEncoderPipeline.Load(p.GetValue(model)!, backend, true, prog, CommonOptions.Policy(p)));
            var logits = pipeline.Rank([img], candidates);
            var probs = pipeline.Probabilities(logits);
            var order = Enumerable.Range(0, candidates.Length).OrderByDescending(i => logits[i]).ToList();
            if (p.GetValue(json))
                stdout.WriteLine(JsonSerializer.Serialize(order.Select(i => new { text = candidates[i], score = logits[i], probability = probs[i] }),
                    new JsonSerializerOptions { WriteIndented = true }));
            else
                foreach (int i in order) stdout.WriteLine($"{logits[i],9:F4}  {probs[i],7:P1}  {candidates[i]}");
            return 0;
        });
        return cmd;
    }

    private static int RunBatch(DualEncoderPipeline pipe, string inPath, string outPath, TextWriter stderr)
        => JsonlBatch.Run(inPath, outPath, stderr, "ranked", (input, output, baseDir) =>
        {
            string imagePath = JsonlBatch.String(input, "image");
            if (input["texts"] is not JsonArray arr || arr.Count == 0) throw new FastMMException("\"texts\" must be a non-empty array of strings");
            var candidates = arr.Select(t => t is JsonValue tv && tv.TryGetValue(out string? ts) ? ts : throw new FastMMException("\"texts\" must contain strings")).ToList();
            var img = ImageDecoder.Decode(JsonlBatch.ResolvePath(imagePath, baseDir));
            output["scores"] = new JsonArray(pipe.Rank([img], candidates).Select(x => (JsonNode)x).ToArray());
        });
}
