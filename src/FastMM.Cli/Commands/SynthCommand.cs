using System.CommandLine;
using FastMM.Models;

namespace FastMM.Cli.Commands;

/// <summary>`fastmm synth`: a random-weight HF folder in a real model's exact shapes, for benchmarks without downloads.</summary>
internal static class SynthCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var arch = new Option<string>("--arch") { Description = $"architecture: {string.Join(", ", Synth.Names)}", Required = true };
        var output = new Option<DirectoryInfo>("--out") { Description = "output folder", Required = true };
        var dtype = new Option<string>("--dtype") { Description = "stored weight type: f32, f16 or bf16", DefaultValueFactory = _ => "f32" };
        var seed = new Option<int>("--seed") { Description = "random seed", DefaultValueFactory = _ => 0 };
        var cmd = new Command("synth", "Write a random-weight Hugging Face folder in a real model's shapes and config") { arch, output, dtype, seed };
        cmd.SetHandler(stderr, p =>
        {
            var dt = p.GetValue(dtype)!.ToLowerInvariant() switch
            {
                "f32" => DType.F32,
                "f16" => DType.F16,
                "bf16" => DType.BF16,
                var other => throw new FastMMException($"--dtype: '{other}' is not one of f32, f16, bf16"),
            };
            string dir = p.GetValue(output)!.FullName;
            new ProgressBar(stderr).Run($"writing {p.GetValue(arch)}", prog => { Synth.Write(p.GetValue(arch)!, dir, dt, p.GetValue(seed), prog); return 0; });
            stdout.WriteLine(dir);
            return 0;
        });
        return cmd;
    }
}
