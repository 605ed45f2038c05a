using FastMM.Runtime.Generation;
using FastMM.Tests.Support;

namespace FastMM.Tests.Backends;

/// <summary>
/// The generator takes plain greedy tokens on the device where a backend can (IDeviceArgmax): the same token as the
/// CPU sampler's greedy choice, ties to the first maximum, and an error for a NaN logit.
/// </summary>
public class DeviceArgmaxTests(BackendCache backends) : IClassFixture<BackendCache>
{
    public static TheoryData<string> Backends()
    {
        var data = new TheoryData<string>();
        foreach (var b in MachineBackends.Names) data.Add(b);
        return data;
    }

    [Theory]
    [MemberData(nameof(Backends))]
    public void DeviceArgmaxPicksTheSamplersGreedyToken(string backendName)
    {
        if (backends.Get(backendName) is not IDeviceArgmax device) return; // this backend leaves sampling to the host
        var backend = backends.Get(backendName);
        var rng = new Random(Random.Shared.Next());
        foreach (int vocab in new[] { 1, 7, 1000, 49153 })
        {
            var logits = new float[3 * vocab];
            for (int i = 0; i < logits.Length; i++) logits[i] = rng.Next(-4, 5) * 0.5f; // many ties
            for (int i = 0; i < vocab; i += 3) logits[2 * vocab + i] = float.NegativeInfinity;
            using var t = backend.FromHost(logits, 3, vocab);
            int[] ids = device.Argmax(t);
            for (int r = 0; r < 3; r++)
            {
                int expected = new Sampler(SamplingOptions.Greedy).Sample(logits.AsSpan(r * vocab, vocab).ToArray(), []);
                Assert.Equal(expected, ids[r]);
            }
        }
        var bad = new float[64];
        bad[17] = float.NaN;
        using var b = backend.FromHost(bad, 1, 64);
        Assert.Contains("NaN", Assert.Throws<FastMMException>(() => device.Argmax(b)).Message);
    }
}
