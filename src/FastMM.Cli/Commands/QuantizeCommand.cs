using System.CommandLine;
using FastMM.Models;
using FastMM.Models.IO;
using FastMM.Quant;

namespace FastMM.Cli.Commands;

/// <summary>`fastmm quantize`: writes a copy of a model folder with its Linear weights stored quantized (loads directly).</summary>
internal static class QuantizeCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var model = CommonOptions.Model();
        var output = new Option<string>("--out") { Description = "output folder (created; the model files are copied there)", Required = true };
        var scheme = new Option<string?>("--scheme") { Description = $"format for every component's Linear weights ({string.Join(", ", QuantFormats.Names)}); --quant-vision/--quant-projector/--quant-text override per component" };
        var cmd = new Command("quantize", "Quantize a model folder ahead of time into a folder FastMM loads directly") { model, output, scheme };
        cmd.SetHandler(stderr, p =>
        {
            var policy = QuantPolicy.Parse(p.GetValue(scheme) ?? p.GetValue(CommonOptions.Quant), p.GetValue(CommonOptions.QuantVision),
                p.GetValue(CommonOptions.QuantProjector), p.GetValue(CommonOptions.QuantText));
            string dir = p.GetValue(model)!, outDir = p.GetValue(output)!;
            var r = new ProgressBar(stderr).Run("writing tensors", prog => ModelQuantizer.Quantize(dir, outDir, policy, prog));
            stdout.WriteLine($"{outDir}: {policy}");
            foreach (var (format, (n, bytes)) in r.PerFormat.OrderBy(kv => kv.Key, StringComparer.Ordinal))
                stdout.WriteLine($"  {format,-10} {n,5} tensors {bytes / 1e6,10:F2} MB");
            stdout.WriteLine($"  weights {r.BytesBefore / 1e6:F2} MB -> {r.BytesAfter / 1e6:F2} MB ({(double)r.BytesAfter / r.BytesBefore:P0})");
            foreach (var k in r.KeptAsStored) stderr.WriteLine($"kept as stored: {k}");
            return 0;
        });
        return cmd;
    }
}
