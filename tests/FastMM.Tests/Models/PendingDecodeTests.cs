using FastMM.Models;
using FastMM.Tests.Support;

namespace FastMM.Tests.Models;

/// <summary>
/// Decode steps prepared before their token is known (CausalLm.PrepareDecode, what the generator and `fastmm bench` use so
/// that a GPU's step n overlaps the host's recording of step n + 1) give exactly the logits of plain Decode, on the
/// CPU (where Run is Decode) and on every GPU-like backend here, the CUDA backend on its emulator included (recorded
/// steps alternating between two slots, token ids set after the step was sealed).
/// </summary>
public class PendingDecodeTests(BackendCache backends) : IClassFixture<BackendCache>
{
    public static TheoryData<string> Backends()
    {
        var data = new TheoryData<string>();
        foreach (var b in new[] { "cpu" }.Concat(MachineBackends.Names))
            if (b != "ilgpu:cpu") data.Add(b); // no step graphs there: Run is Decode, as on the CPU
        return data;
    }

    [Theory]
    [MemberData(nameof(Backends))]
    public void PreparedStepsEqualDecodeAndADroppedStepGivesItsPositionBack(string backendName)
    {
        var backend = backends.Get(backendName);
        using var m = ModelLoader.LoadVisionLanguageModel(TestPaths.Model("tiny-llava"), backend);
        int vocab = m.Text.Vocab;
        var rng = new Random(Random.Shared.Next());
        int[] prompt = [.. Enumerable.Range(0, 5).Select(_ => rng.Next(vocab))];
        int[] tokens = [.. Enumerable.Range(0, 12).Select(_ => rng.Next(vocab))];
        using var cache = m.CreateCache(64);

        var expected = new List<float[]>();
        using (var seq = cache.NewSequence(prompt.Length + tokens.Length))
        {
            using (var e = m.Text.Embed(prompt)) using (m.Forward(e, seq, allLogits: false)) { }
            foreach (int t in tokens)
                using (var l = m.Decode(t, seq)) expected.Add(l.ToArray());
        }

        using var seq2 = cache.NewSequence(prompt.Length + tokens.Length + 1);
        using (var e = m.Text.Embed(prompt)) using (m.Forward(e, seq2, allLogits: false)) { }
        Tensor? previous = null;
        var row = new float[vocab];
        for (int i = 0; i < tokens.Length; i++)
        {
            if (i == 5)
            {
                // A step prepared and dropped (an end of sequence was sampled): nothing ran, the length is back.
                int before = seq2.Length;
                m.PrepareDecode(seq2).Dispose();
                Assert.Equal(before, seq2.Length);
            }
            using var next = m.PrepareDecode(seq2);
            if (previous is not null)
            {
                backend.ToHost(previous, row); // the last step's logits, read while this one waits for its token
                Assert.Equal(expected[i - 1], row);
            }
            previous = next.Run(tokens[i]);
            Assert.Throws<InvalidOperationException>(() => next.Run(tokens[i]));
        }
        backend.ToHost(previous!, row);
        Assert.Equal(expected[^1], row);
        Assert.Equal(prompt.Length + tokens.Length, seq2.Length);
    }

    [Theory]
    [MemberData(nameof(Backends))]
    public void ATokenOutsideTheVocabularyIsRefusedAndTheSequenceKeepsItsLength(string backendName)
    {
        var backend = backends.Get(backendName);
        using var m = ModelLoader.LoadVisionLanguageModel(TestPaths.Model("tiny-llava"), backend);
        using var cache = m.CreateCache(32);
        using var seq = cache.NewSequence(8);
        using (var e = m.Text.Embed([1, 2, 3])) using (m.Forward(e, seq, allLogits: false)) { }
        using var next = m.PrepareDecode(seq);
        var error = Assert.Throws<FastMMException>(() => next.Run(m.Text.Vocab));
        Assert.Contains($"token id {m.Text.Vocab} at position 0 is outside the vocabulary [0, {m.Text.Vocab})", error.Message);
        Assert.Equal(3, seq.Length);
        // The backend is usable again: a new step runs.
        using var again = m.PrepareDecode(seq);
        using var l = again.Run(5);
        Assert.Equal(4, seq.Length);
    }

    [Theory]
    [MemberData(nameof(Backends))]
    public void AStepWithDeferredTokensRefusesToRunWithoutThemAndAnOldScopeCannotTouchALaterStep(string backendName)
    {
        if (backends.Get(backendName) is not IStepGraphs graphs) return; // the rule is the step recorder's
        var backend = backends.Get(backendName);
        using var table = backend.FromHost([1, 2, 3, 4, 5, 6], 3, 2);

        var first = graphs.BeginStep();
        using (var x = first.DeferredTokenEmbedding(table, 1)) { }
        first.Seal();
        var e = Assert.Throws<InvalidOperationException>(first.Commit);
        Assert.Contains("SetTokens before Commit", e.Message);
        Assert.Throws<InvalidOperationException>(() => first.SetTokens([1])); // it ended with the failed commit

        using var second = graphs.BeginStep();
        var y = second.DeferredTokenEmbedding(table, 1);
        Assert.Throws<InvalidOperationException>(() => first.SetTokens([1]));
        second.SetTokens([2]);
        second.Commit();
        Assert.Equal([5f, 6f], y.ToArray());
    }
}
