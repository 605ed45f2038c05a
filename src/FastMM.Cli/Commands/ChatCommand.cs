using System.CommandLine;
using FastMM.Runtime;
using FastMM.Runtime.Images;

namespace FastMM.Cli.Commands;

/// <summary>`fastmm chat`: an interactive multi-turn conversation; `/image PATH` attaches an image to the next message.</summary>
internal static class ChatCommand
{
    public static Command Create(TextReader stdin, TextWriter stdout, TextWriter stderr)
    {
        var model = CommonOptions.ModelWithDefault("shapes-vlm");
        var system = new Option<string?>("--system") { Description = "a system message" };
        var gen = new GenerationOptions();
        var cmd = new Command("chat", "Chat with a model; /image PATH attaches an image, /reset clears the history, /exit quits") { model, system };
        gen.AddTo(cmd);
        cmd.SetHandler(stderr, p =>
        {
            using var backend = CommonOptions.CreateBackend(p);
            using var pipe = AskCommand.Load(p, model, backend, stderr, gen.CacheType(p));
            var sampling = gen.Sampling(p, pipe.DefaultSampling);
            int maxNew = gen.MaxNew(p);
            var history = new List<ChatTurn>();
            if (p.GetValue(system) is { Length: > 0 } s) history.Add(new ChatTurn("system", s));
            int keep = history.Count;
            var pending = new List<RgbImage>();
            stderr.WriteLine("chat ready: type a message; /image PATH, /reset, /exit");
            while (true)
            {
                stdout.Write("> "); stdout.Flush();
                string? line = stdin.ReadLine();
                if (line is null || line.Trim() == "/exit") break;
                line = line.Trim();
                if (line.Length == 0) continue;
                if (line == "/reset") { history.RemoveRange(keep, history.Count - keep); pending.Clear(); stderr.WriteLine("(history cleared)"); continue; }
                if (line.StartsWith("/image ", StringComparison.Ordinal))
                {
                    try { pending.Add(ImageDecoder.Decode(line[7..].Trim())); stderr.WriteLine($"(image attached: {pending.Count} pending)"); }
                    catch (FastMMException e) { stderr.WriteLine($"error: {e.Message}"); }
                    continue;
                }
                history.Add(new ChatTurn("user", line, pending.ToList()));
                pending.Clear();
                try
                {
                    using var cts = AskCommand.CancelOnCtrlC();
                    var r = pipe.Ask(history, sampling, maxNew, gen.Stops(p), c => { stdout.Write(c.Text); stdout.Flush(); }, cts.Token);
                    stdout.WriteLine();
                    history.Add(new ChatTurn("assistant", r.Text.Trim()));
                }
                catch (FastMMException e)
                {
                    // The failed turn is dropped so the conversation stays usable.
                    history.RemoveAt(history.Count - 1);
                    stderr.WriteLine($"error: {e.Message}");
                }
                catch (OperationCanceledException)
                {
                    history.RemoveAt(history.Count - 1);
                    stdout.WriteLine();
                    stderr.WriteLine("(cancelled)");
                }
            }
            return 0;
        });
        return cmd;
    }
}
