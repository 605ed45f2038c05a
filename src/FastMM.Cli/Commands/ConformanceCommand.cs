using System.CommandLine;
using FastMM.Backends;

namespace FastMM.Cli.Commands;

/// <summary>
/// `fastmm conformance --backend NAME`: the backend conformance suite (every op against the CPU reference) without a
/// test runner, e.g. on a GPU machine that has no .NET SDK. Prints one line per compared output and exits 1 on any failure.
/// </summary>
internal static class ConformanceCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var seed = new Option<int?>("--seed") { Description = "random seed (default: a fresh one, printed)" };
        var check = new Option<string[]>("--check") { Description = $"only these checks ({string.Join(", ", Conformance.Checks)})", AllowMultipleArgumentsPerToken = true };
        var cmd = new Command("conformance", "Check every op of --backend against the CPU reference on random inputs") { seed, check };
        cmd.SetHandler(stderr, p =>
        {
            int s = p.GetValue(seed) ?? Random.Shared.Next();
            var checks = p.GetValue(check) is { Length: > 0 } only ? only : Conformance.Checks.ToArray();
            foreach (var c in checks)
                if (!Conformance.Checks.Contains(c)) throw new FastMMException($"--check: unknown check '{c}' (checks: {string.Join(", ", Conformance.Checks)})");
            using var backend = CommonOptions.CreateBackend(p);
            stdout.WriteLine($"conformance of '{backend.Name}' against cpu, seed {s}; declared precision: {backend.Precision}");
            var rng = new Random(s);
            int passed = 0, failed = 0;
            foreach (var c in checks)
                foreach (var r in Conformance.Run(backend, c, rng.Next()))
                {
                    stdout.WriteLine((r.Passed ? "  ok   " : "  FAIL ") + r);
                    if (r.Passed) passed++; else failed++;
                }
            stdout.WriteLine($"{passed} passed, {failed} failed");
            return failed == 0 ? 0 : 1;
        });
        return cmd;
    }
}
