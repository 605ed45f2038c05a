using System.CommandLine;
using FastMM.Backends;
using FastMM.Cpu;

namespace FastMM.Cli.Commands;

/// <summary>Options every command shares, and the plumbing around them (backend, threads, error reporting).</summary>
internal static class CommonOptions
{
    public static readonly Option<string> Backend = new("--backend")
    {
        Description = "compute backend: cpu, cuda (cuda:eager: decode steps op by op instead of replayed CUDA graphs), ilgpu (a CUDA or OpenCL GPU through ILGPU), ilgpu:cuda, ilgpu:opencl or ilgpu:cpu (ILGPU kernels on the CPU: slow, for testing); an unavailable backend is an error, never a fallback",
        DefaultValueFactory = _ => "cpu",
        Recursive = true,
    };

    public static readonly Option<int> Threads = new("--threads")
    {
        Description = "CPU threads (default: all cores)",
        DefaultValueFactory = _ => Environment.ProcessorCount,
        Recursive = true,
    };

    public static readonly Option<string?> Quant = QuantOption("--quant", "every component's");
    public static readonly Option<string?> QuantVision = QuantOption("--quant-vision", "the vision tower's");
    public static readonly Option<string?> QuantProjector = QuantOption("--quant-projector", "the projector's");
    public static readonly Option<string?> QuantText = QuantOption("--quant-text", "the text model's");

    private static Option<string?> QuantOption(string name, string what) => new(name)
    {
        Description = $"store {what} Linear weights as SCHEME at load ({string.Join(", ", FastMM.Quant.QuantFormats.Names)}); " +
                      "embeddings, norms and the patch embedding stay as stored",
        Recursive = true,
    };

    /// <summary>The load-time quantization policy of --quant and the per-component --quant-* flags (which win).</summary>
    public static FastMM.Models.QuantPolicy Policy(ParseResult p)
        => FastMM.Models.QuantPolicy.Parse(p.GetValue(Quant), p.GetValue(QuantVision), p.GetValue(QuantProjector), p.GetValue(QuantText));

    public static Option<string> Model(bool required = true) => new("--model", "-m")
    {
        Description = "Hugging Face model folder (config.json, *.safetensors, tokenizer.json, preprocessor_config.json)",
        Required = required,
    };

    /// <summary>--model for commands that have a bundled default (models/NAME in the FastMM checkout).</summary>
    public static Option<string> ModelWithDefault(string bundled) => new("--model", "-m")
    {
        Description = $"Hugging Face model folder (default: the bundled models/{bundled})",
        DefaultValueFactory = _ => BundledModel(bundled),
    };

    /// <summary>
    /// models/NAME found by walking up from the working folder, then from the executable's folder (so both
    /// `dotnet run --project src/FastMM.Cli` from the checkout and the built binary find it); else the plain
    /// relative path, which then fails to load with a clear message.
    /// </summary>
    internal static string BundledModel(string name) => Bundled(Path.Combine("models", name), "config.json");

    /// <summary>A bundled folder (relative to the checkout) that contains `marker`, found as <see cref="BundledModel"/> is.</summary>
    internal static string Bundled(string relative, string marker)
    {
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
            for (var d = new DirectoryInfo(start); d is not null; d = d.Parent)
            {
                string candidate = Path.Combine(d.FullName, relative);
                if (File.Exists(Path.Combine(candidate, marker)) || Directory.Exists(candidate) && marker.Length == 0) return candidate;
            }
        return relative;
    }

    /// <summary>Applies --threads and creates the --backend, failing loudly when it is unavailable.</summary>
    public static IBackend CreateBackend(ParseResult p)
    {
        int threads = p.GetValue(Threads);
        if (threads < 1) throw new FastMMException($"--threads must be at least 1, got {threads}");
        CpuParallel.Threads = threads;
        return BackendRegistry.Create(p.GetValue(Backend)!);
    }

    /// <summary>Wraps a command body: FastMM errors, and features a backend does not support, become one "error: …" line and exit code 1.</summary>
    public static void SetHandler(this Command c, TextWriter stderr, Func<ParseResult, int> body)
    {
        c.SetAction(p =>
        {
            try { return body(p); }
            catch (Exception e) when (e is FastMMException or NotSupportedException)
            {
                stderr.WriteLine($"error: {e.Message}");
                return 1;
            }
            catch (OperationCanceledException)
            {
                stderr.WriteLine("cancelled");
                return 130;
            }
        });
    }
}
