using System.CommandLine;
using System.Text.Json;
using FastMM.Runtime;
using FastMM.Runtime.Images;

namespace FastMM.Cli.Commands;

/// <summary>`fastmm embed`: L2-normalised embeddings of images and/or texts as JSON.</summary>
internal static class EmbedCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var model = CommonOptions.ModelWithDefault("shapes-clip");
        var images = new Option<string[]>("--image") { Description = "image file(s)", AllowMultipleArgumentsPerToken = true };
        var texts = new Option<string[]>("--text") { Description = "text(s)", AllowMultipleArgumentsPerToken = true };
        var cmd = new Command("embed", "Print L2-normalised image and/or text embeddings as JSON") { model, images, texts };
        cmd.SetHandler(stderr, p =>
        {
            var imgs = p.GetValue(images) ?? [];
            var txts = p.GetValue(texts) ?? [];
            if (imgs.Length == 0 && txts.Length == 0) throw new FastMMException("give at least one --image or --text");
            using var backend = CommonOptions.CreateBackend(p);
            var decoded = imgs.Select(ImageDecoder.Decode).ToList(); // bad images fail before the model loads
            using var pipe = new ProgressBar(stderr).Run("loading weights", prog => DualEncoderPipeline.Load(p.GetValue(model)!, backend, needText: txts.Length > 0, prog, CommonOptions.Policy(p)));
            int d = pipe.Model.EmbedDim;
            var result = new Dictionary<string, object> { ["model_type"] = pipe.Model.ModelType, ["dim"] = d };
            if (decoded.Count > 0)
            {
                var e = pipe.EmbedImages(decoded);
                result["images"] = imgs.Select((path, i) => new { path, embedding = e.AsSpan(i * d, d).ToArray() }).ToList();
            }
            if (txts.Length > 0)
            {
                var e = pipe.EmbedTexts(txts);
                result["texts"] = txts.Select((text, i) => new { text, embedding = e.AsSpan(i * d, d).ToArray() }).ToList();
            }
            stdout.WriteLine(JsonSerializer.Serialize(result, new JsonSerializerOptions { WriteIndented = true }));
            return 0;
        });
        return cmd;
    }
}
