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

    public static TheoryData<string> AllBackends()
    {
        var data = new TheoryData<string>();
        foreach (var b in new[] { "cpu" }.Concat(MachineBackends.Names)) data.Add(b);
        return data;
    }

    [Theory]
    [MemberData(nameof(AllBackends))]
    public void SetRowsWithARowOutsideTheTensorWritesNothing(string backendName)
    {
        var backend = cache.Get(backendName);
        using var x = backend.FromHost([1, 2, 3, 4, 5, 6], 3, 2);
        using var values = backend.FromHost([10, 20, 30, 40], 2, 2);
        Assert.Throws<ArgumentOutOfRangeException>(() => backend.SetRows(x, [0, 3], values)); // row 0 is valid, row 3 is not
        Assert.Equal([1f, 2, 3, 4, 5, 6], x.ToArray());
    }

    [Fact]
    public void IlgpuRefusesABlockTableEntryOutsideThePool()
    {
        // An out-of-bounds index in a kernel on the CPU accelerator aborts the process: the host checks the table first.
        var backend = cache.Get("ilgpu:cpu");
        using var kv = backend.CreateKvCache(1, 1, 4, 2, 3, FastMM.Kv.KvCacheType.F32);
        using var qkv = backend.FromHost(new float[3 * 4], 1, 12);
        var e = Assert.Throws<ArgumentException>(() => backend.WriteKv(kv, 0, qkv, 1, [3], 0));
        Assert.Contains("block 3 is outside the pool of 3 blocks", e.Message);
        Assert.Throws<ArgumentException>(() => backend.CachedAttention(qkv, 1, kv, 0, [5], 0, 1f).Dispose());
    }

    [Fact]
    public void EveryOpOfTheInterfaceIsChecked()
    {
        // A new IBackend op must get a conformance check: the suite's source names every op it calls.
        string source = File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "conformance", "Conformance.cs"));
        var ops = typeof(IBackend).GetMethods().Select(m => m.Name).Distinct()
            .Except(["get_Name", "get_Precision", "Zeros", "ToHost", "Weight", "Release", "Dispose"]); // Precision sets the bounds the checks use
        var missing = ops.Where(op => !source.Contains($".{op}(")).ToList();
        Assert.True(missing.Count == 0, $"ops without a conformance check: {string.Join(", ", missing)}");
    }
}
