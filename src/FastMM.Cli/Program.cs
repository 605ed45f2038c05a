using System.CommandLine;
using FastMM.Cli.Commands;
using FastMM.Cuda;
using FastMM.Ilgpu;

namespace FastMM.Cli;

public static class Program
{
    public static int Main(string[] args) => Run(args, Console.Out, Console.Error, Console.In);

    /// <summary>Runs the CLI with the given writers (tests call this in-process).</summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr, TextReader? stdin = null)
    {
        // Core knows no GPU code: the GPU backends this executable ships are registered here.
        CudaBackend.Register();
        IlgpuBackend.Register();
        var root = new RootCommand("fastmm — run vision-language models from Hugging Face folders");
        root.Add(CommonOptions.Backend);
        root.Add(CommonOptions.Threads);
        root.Add(CommonOptions.Quant);
        root.Add(CommonOptions.QuantVision);
        root.Add(CommonOptions.QuantProjector);
        root.Add(CommonOptions.QuantText);
        root.Add(ForwardCommand.Create(stdout, stderr));
        root.Add(EmbedCommand.Create(stdout, stderr));
        root.Add(SearchCommand.Create(stdout, stderr));
        root.Add(RankCommand.Create(stdout, stderr));
        root.Add(BenchCommand.Create(stdout, stderr));
        root.Add(ConformanceCommand.Create(stdout, stderr));
        root.Add(AskCommand.Create(stdout, stderr));
        root.Add(AskCommand.Create(stdout, stderr, caption: true));
        root.Add(ChatCommand.Create(stdin ?? TextReader.Null, stdout, stderr));
        root.Add(GenerateCommand.Create(stdout, stderr));
        root.Add(TokensCommand.Create(stdout, stderr));
        root.Add(EvalCommand.Create(stdout, stderr));
        root.Add(QuantizeCommand.Create(stdout, stderr));
        root.Add(QuantBenchCommand.Create(stdout, stderr));



        root.Add(SynthCommand.Create(stdout, stderr));

        var parse = root.Parse(args);
        var config = new InvocationConfiguration { Output = stdout, Error = stderr };
        try
        {
            return parse.Invoke(config);
        }
        catch (FastMMException e)
        {
            stderr.WriteLine($"error: {e.Message}");
            return 1;
        }
    }
}
