using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Nodes;
using FastMM.Kv;
using FastMM.Runtime;
using FastMM.Runtime.Generation;
using FastMM.Runtime.Images;

namespace FastMM.Cli.Commands;

/// <summary>
/// `fastmm ask` (one question about images, streamed), `fastmm caption`, and `fastmm ask --batch` (JSONL in,
/// JSONL out). Ctrl-C stops the answer.
/// </summary>
internal static class AskCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr, bool caption = false)
    {
        var model = CommonOptions.ModelWithDefault("shapes-vlm");
        var images = new Option<string[]>("--image") { Description = "image file to ask about (repeat for several)" };
        var question = new Argument<string?>("question") { Description = "the question", Arity = ArgumentArity.ZeroOrOne };
        var system = new Option<string?>("--system") { Description = "a system message" };
        var batch = new Option<FileInfo?>("--batch") { Description = "JSONL input: {\"id\", \"image\" (path or list), \"question\"} per line" };
        var output = new Option<FileInfo?>("--out") { Description = "JSONL output for --batch: {\"id\", \"answer\"} per line" };
        var gen = new GenerationOptions();
        var cmd = caption
            ? new Command("caption", "Describe an image") { model, images, system }
            : new Command("ask", "Ask a question about images; the answer streams to stdout") { model, images, question, system, batch, output };
        gen.AddTo(cmd);
        cmd.SetHandler(stderr, p =>
        {
            using var backend = CommonOptions.CreateBackend(p);
            int maxNew = gen.MaxNew(p);
            if (!caption && p.GetValue(batch) is FileInfo input)
            {
                if (p.GetValue(output) is not FileInfo outFile) throw new FastMMException("--batch needs --out");
                if (!input.Exists) throw new FastMMException($"{input.FullName}: batch file not found");
                using var pipe = Load(p, model, backend, stderr, gen.CacheType(p));
                return RunBatch(pipe, input.FullName, outFile.FullName, p.GetValue(system), gen.Sampling(p, pipe.DefaultSampling), maxNew, gen.Stops(p), stderr);
            }
            string text = caption ? "Describe the image." : p.GetValue(question) ?? throw new FastMMException("give a question (or --batch FILE --out FILE)");
            var decoded = (p.GetValue(images) ?? []).Select(ImageDecoder.Decode).ToList(); // bad images fail before the model loads
            if (caption && decoded.Count == 0) throw new FastMMException("caption needs --image PATH");
            using var pipeline = Load(p, model, backend, stderr, gen.CacheType(p));
            var turns = Conversation(p.GetValue(system), text, decoded);
            using var cts = CancelOnCtrlC();
            var r = pipeline.Ask(turns, gen.Sampling(p, pipeline.DefaultSampling), maxNew, gen.Stops(p), c => { stdout.Write(c.Text); stdout.Flush(); }, cts.Token);
            stdout.WriteLine();
            stderr.WriteLine($"[{r.PromptTokens} prompt tokens, {r.TokenIds.Length} generated, {r.Reason}; prefill {r.PrefillMs:F0} ms, " +
                $"decode {(r.TokenIds.Length > 1 ? (r.TokenIds.Length - 1) / (r.DecodeMs / 1000) : 0):F1} tok/s; " +
                $"{pipeline.Generator.Cache.Type.ToString().ToLowerInvariant()} KV cache {pipeline.Generator.Cache.Bytes / 1048576.0:0.##} MiB]");
            return 0;
        });
        return cmd;
    }

    internal static VlmPipeline Load(ParseResult p, Option<string> model, IBackend backend, TextWriter stderr, KvCacheType kvCache = KvCacheType.F32)
        => new ProgressBar(stderr).Run("loading weights", prog => VlmPipeline.Load(p.GetValue(model)!, backend, prog, kvCache: kvCache, quant: CommonOptions.Policy(p)));

    internal static List<ChatTurn> Conversation(string? system, string question, IReadOnlyList<RgbImage> images)
    {
        var turns = new List<ChatTurn>();
        if (!string.IsNullOrEmpty(system)) turns.Add(new ChatTurn("system", system));
        turns.Add(new ChatTurn("user", question, images));
        return turns;
    }

    internal static CtrlC CancelOnCtrlC() => new();

    /// <summary>Ctrl-C cancels the current answer instead of the process; unsubscribes when disposed (chat makes one per turn).</summary>
    internal sealed class CtrlC : IDisposable
    {
        private readonly CancellationTokenSource _cts = new();
        private readonly ConsoleCancelEventHandler _handler;
        public CtrlC()
        {
            _handler = (_, e) => { e.Cancel = true; _cts.Cancel(); };
            Console.CancelKeyPress += _handler;
        }
        public CancellationToken Token => _cts.Token;
        public void Dispose() { Console.CancelKeyPress -= _handler; _cts.Dispose(); }
    }

    private static int RunBatch(VlmPipeline pipe, string inPath, string outPath, string? system, SamplingOptions sampling, int maxNew,
        IReadOnlyList<string> stops, TextWriter stderr)
        => JsonlBatch.Run(inPath, outPath, stderr, "answered", (input, output, baseDir) =>
        {
            string question = JsonlBatch.String(input, "question");
            var paths = input["image"] switch
            {
                null => [],
                JsonValue v when v.TryGetValue(out string? s) => [s],
                JsonArray a => a.Select(x => x is JsonValue xv && xv.TryGetValue(out string? xs) ? xs : throw new FastMMException("\"image\" list must hold paths")).ToList(),
                _ => throw new FastMMException("\"image\" must be a path or a list of paths"),
            };
            var imgs = paths.Select(p => ImageDecoder.Decode(JsonlBatch.ResolvePath(p, baseDir))).ToList();
            output["answer"] = pipe.Ask(Conversation(system, question, imgs), sampling, maxNew, stops).Text.Trim();
        });
}
