using System.CommandLine;
using FastMM.Models;
using FastMM.Models.IO;
using FastMM.Runtime;
using FastMM.Runtime.Generation;

namespace FastMM.Cli.Commands;

/// <summary>
/// `fastmm generate`: HF generate() on processor tensors from an .npz; writes generated_ids = prompt + new tokens
/// (stopping early only at EOS; finished rows padded with pad_token_id, as HF does).
/// </summary>
internal static class GenerateCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var model = CommonOptions.Model();
        var inputs = new Option<FileInfo>("--inputs") { Description = "input .npz: input_ids, attention_mask, pixel_values (+ pixel_attention_mask)", Required = true };
        var output = new Option<FileInfo>("--out") { Description = "output .npz with generated_ids [B, T + new]", Required = true };
        var gen = new GenerationOptions();
        var cmd = new Command("generate", "Generate from processor tensors (.npz) like HF generate(); writes generated_ids") { model, inputs, output };
        gen.AddTo(cmd);
        cmd.SetHandler(stderr, p =>
        {
            using var backend = CommonOptions.CreateBackend(p);
            string inPath = p.GetValue(inputs)!.FullName, src = Path.GetFileName(inPath);
            var (text, pixels, mask, positions) = ForwardCommand.VlmInputs(Npz.Read(inPath), src);
            if (positions is not null) throw new FastMMException($"{src}: generate derives position_ids from attention_mask; remove 'position_ids'");
            int maxNew = gen.MaxNew(p);
            using var pipe = AskCommand.Load(p, model, backend, stderr, gen.CacheType(p));
            var sampling = gen.Sampling(p, pipe.DefaultSampling);
            var m = pipe.Model;
            pipe.Generator.CheckFits(text.Length, maxNew);
            using var features = VlmTensors.ImageFeatures(m, pixels, mask, src);
            long[] ids;
            int width;
            ids = VlmTensors.Generate(pipe.Generator, m, text, features, maxNew, pipe.EosTokenIds, pipe.PadTokenId, sampling, src, out width);
            Npz.Write(p.GetValue(output)!.FullName, [NpyArray.Int64("generated_ids", ids, text.Batch, width)]);
            stderr.WriteLine($"wrote {p.GetValue(output)!.FullName} ({text.Batch} x {width})");
            return 0;
        });
        return cmd;
    }
}
