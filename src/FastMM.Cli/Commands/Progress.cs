using Spectre.Console;

namespace FastMM.Cli.Commands;

/// <summary>A progress bar on stderr (plain lines when stderr is not a terminal), so stdout stays machine-readable.</summary>
internal sealed class ProgressBar
{
    private readonly IAnsiConsole _console;

    public ProgressBar(TextWriter stderr)
    {
        _console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(stderr),
            Interactive = InteractionSupport.Detect,
        });
    }

    /// <summary>Runs work with one task; work reports (done, total).</summary>
    public T Run<T>(string label, Func<Action<int, int>, T> work)
    {
        if (!_console.Profile.Capabilities.Interactive || !_console.Profile.Capabilities.Ansi)
        {
            // Non-interactive: a start and an end line instead of redraws.
            _console.WriteLine($"{label}…");
            var sw = System.Diagnostics.Stopwatch.StartNew();
            var r = work((_, _) => { });
            _console.WriteLine($"{label}: done in {sw.Elapsed.TotalSeconds:F2} s");
            return r;
        }
        T result = default!;
        _console.Progress()
            .AutoClear(true)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask(Markup.Escape(label));
                result = work((done, total) => { task.MaxValue = Math.Max(total, 1); task.Value = done; });
                task.Value = task.MaxValue;
            });
        return result;
    }
}
