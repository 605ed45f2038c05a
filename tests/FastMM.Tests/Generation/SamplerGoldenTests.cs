using FastMM.Models.IO;
using FastMM.Runtime.Generation;
using FastMM.Tests.Support;

namespace FastMM.Tests.Generation;

/// <summary>
/// Final distributions against HF transformers' processors and warpers, transcribed in torch by
/// tools/sampling/make_sampling_goldens.py (random logits with ties and −inf, random option combinations).
/// </summary>
public class SamplerGoldenTests
{
    private sealed record Case(int Index, float[] Logits, int[] History, SamplingOptions Options, float[] Probs, bool[] Kept)
    {
        public override string ToString() =>
            $"case {Index}: vocab {Logits.Length}, T {Options.Temperature}, top_k {Options.TopK}, top_p {Options.TopP}, " +
            $"min_p {Options.MinP}, penalty {Options.RepetitionPenalty}, history {History.Length}";
    }

    private static readonly Lazy<List<Case>> Cases = new(Load);

    private static List<Case> Load()
    {
        string path = Path.Combine(TestPaths.Data, "sampling", "hf_distributions.npz");
        var z = Npz.Read(path);
        long[] I(string n) => z[n].Ints(path);
        float[] F(string n) => z[n].Floats(path);
        var vocab = I("vocab");
        var (temperature, topK, topP, minP, penalty) = (F("temperature"), I("top_k"), F("top_p"), F("min_p"), F("repetition_penalty"));
        var (logitOffsets, logitsQ, histOffsets, history) = (I("logit_offsets"), I("logits_q"), I("history_offsets"), I("history"));
        var (probs, kept) = (F("probs"), I("kept"));

        var cases = new List<Case>();
        for (int c = 0; c < vocab.Length; c++)
        {
            int start = (int)logitOffsets[c], n = (int)vocab[c];
            Assert.Equal(n, (int)(logitOffsets[c + 1] - start));
            // The generator quantises logits to q / 1024 (exact in float32), -32768 standing for -inf.
            var logits = new float[n];
            for (int i = 0; i < n; i++)
                logits[i] = logitsQ[start + i] == short.MinValue ? float.NegativeInfinity : logitsQ[start + i] / 1024f;
            var hist = history[(int)histOffsets[c]..(int)histOffsets[c + 1]].Select(x => (int)x).ToArray();
            var options = new SamplingOptions
            {
                Temperature = temperature[c], TopK = (int)topK[c], TopP = topP[c], MinP = minP[c],
                RepetitionPenalty = penalty[c], Seed = 1,
            };
            cases.Add(new Case(c, logits, hist, options, probs[start..(start + n)],
                kept[start..(start + n)].Select(k => k != 0).ToArray()));
        }
        return cases;
    }

    [Fact]
    public void GoldensCoverTheAdvertisedShapes()
    {
        var cases = Cases.Value;
        Assert.True(cases.Count >= 150, $"{cases.Count} cases");
        foreach (int v in new[] { 7, 50, 1000, 32000 }) Assert.Contains(cases, c => c.Logits.Length == v);
        Assert.Contains(cases, c => c.Options.IsGreedy);
        Assert.Contains(cases, c => c.Options.TopK > 0 && c.Kept.Count(k => k) > c.Options.TopK && c.Options.TopK < c.Logits.Length);
        Assert.Contains(cases, c => c.Options.TopP < 1 && c.Options.MinP > 0 && c.Options.RepetitionPenalty != 1 && c.History.Length > 0);
        Assert.Contains(cases, c => c.Logits.Contains(float.NegativeInfinity));
    }

    [Fact]
    public void DistributionMatchesHfForEveryGolden()
    {
        var failures = new List<string>();
        foreach (var c in Cases.Value)
        {
            var logits = (float[])c.Logits.Clone();
            var probs = new float[logits.Length];
            new Sampler(c.Options).Distribution(logits, c.History, probs);

            double maxDiff = 0;
            for (int i = 0; i < probs.Length; i++) maxDiff = Math.Max(maxDiff, Math.Abs(probs[i] - c.Probs[i]));
            if (maxDiff > 1e-5) failures.Add($"{c}: max |Δp| {maxDiff:E2}");

            // The kept set: tokens HF leaves finite. Greedy only runs the penalty, so compare its argmax instead.
            if (!c.Options.IsGreedy)
            {
                var mismatched = Enumerable.Range(0, logits.Length).Where(i => float.IsFinite(logits[i]) != c.Kept[i]).ToArray();
                if (mismatched.Length > 0)
                    failures.Add($"{c}: kept set differs at {string.Join(", ", mismatched.Take(5))} ({mismatched.Length} tokens)");
            }
        }
        Assert.True(failures.Count == 0, string.Join("\n", failures));
    }

    [Fact]
    public void SampleAgreesWithDistributionSupport()
    {
        // Every drawn token has non-zero golden probability, and Sample processes logits like Distribution.
        foreach (var c in Cases.Value.Where(c => c.Logits.Length <= 1000))
        {
            var sampler = new Sampler(c.Options with { Seed = (ulong)c.Index });
            for (int k = 0; k < 20; k++)
            {
                var logits = (float[])c.Logits.Clone();
                int id = sampler.Sample(logits, c.History);
                Assert.True(c.Probs[id] > 0, $"{c}: drew token {id} with golden probability 0");
                if (!c.Options.IsGreedy)
                    for (int i = 0; i < logits.Length; i++) Assert.Equal(c.Kept[i], float.IsFinite(logits[i]));
            }
        }
    }
}
