using FastMM.Backends;
using FastMM.Tests.Support;
using Xunit.Abstractions;

namespace FastMM.Tests.Backends;

/// <summary>
/// The conformance suite (<see cref="Conformance"/>) for every backend this machine has, check by check, on fresh
/// random inputs each run (the seed is printed). A backend the machine has that fails is a failed test, never a skip.
/// </summary>
public class ConformanceTests(BackendCache cache, ITestOutputHelper output) : IClassFixture<BackendCache>
{
    public static TheoryData<string, string> Cases()
    {
        var data = new TheoryData<string, string>();
        foreach (var backend in MachineBackends.Names)
            foreach (var check in Conformance.Checks)
                data.Add(backend, check);
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void MatchesTheCpuReference(string backend, string check)
    {
        var results = Conformance.Run(cache.Get(backend), check, Random.Shared.Next());
        foreach (var r in results) output.WriteLine(r.ToString());
        Assert.NotEmpty(results);
        var failed = results.Where(r => !r.Passed).ToList();
        Assert.True(failed.Count == 0, $"{backend}: {string.Join("\n", failed)}");
    }

    [Fact]
    public void EveryOpOfTheInterfaceIsChecked()
    {
        // A new IBackend op must get a conformance check: the suite's source names every op it calls.
        string source = File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "conformance", "Conformance.cs"));
        var ops = typeof(IBackend).GetMethods().Select(m => m.Name).Distinct()
            .Except(["get_Name", "Zeros", "ToHost", "Weight", "Release", "Dispose"]);
        var missing = ops.Where(op => !source.Contains($".{op}(")).ToList();
        Assert.True(missing.Count == 0, $"ops without a conformance check: {string.Join(", ", missing)}");
    }
}
