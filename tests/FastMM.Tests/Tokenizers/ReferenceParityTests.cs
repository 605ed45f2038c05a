namespace FastMM.Tests.Tokenizers;

/// <summary>Our ids and decoded text must equal HF tokenizers' (Rust, via Tokenizers.DotNet) exactly.</summary>
public class ReferenceParityTests
{
    public static TheoryData<string, int> TrickyCases()
    {
        var data = new TheoryData<string, int>();
        foreach (var name in TokenizerFixtures.Names)
            for (int i = 0; i < TokenizerFixtures.TrickyTexts.Length; i++)
                data.Add(name, i);
        return data;
    }

    [Theory]
    [MemberData(nameof(TrickyCases))]
    public void TrickyTextMatchesReference(string name, int index)
    {
        string text = TokenizerFixtures.TrickyTexts[index];
        var ours = TokenizerFixtures.Ours_(name).Encode(text);
        var expected = TokenizerFixtures.ReferenceIds(name, text);
        Assert.True(expected.SequenceEqual(ours),
            $"{name} {TokenizerFixtures.Show(text)}\n  hf:   [{string.Join(",", expected)}]\n  ours: [{string.Join(",", ours)}]");
    }

    [Theory]
    [MemberData(nameof(TrickyCases))]
    public void DecodeMatchesReference(string name, int index)
    {
        string text = TokenizerFixtures.TrickyTexts[index];
        var ids = TokenizerFixtures.ReferenceIds(name, text);
        string expected = TokenizerFixtures.ReferenceDecode(name, ids);
        Assert.Equal(expected, TokenizerFixtures.Ours_(name).Decode(ids));
    }

    [Theory]
    [InlineData("clip")]
    [InlineData("siglip")]
    [InlineData("bytelevel")]
    [InlineData("models/tiny-llava")]
    [InlineData("models/tiny-llava-qwen")]
    [InlineData("models/tiny-idefics3")]
    public void LongTextMatchesReference(string name)
    {
        string text = TokenizerFixtures.LongText();
        var ours = TokenizerFixtures.Ours_(name).Encode(text);
        Assert.Equal(TokenizerFixtures.ReferenceIds(name, text), ours);
        Assert.Equal(TokenizerFixtures.ReferenceDecode(name, ours), TokenizerFixtures.Ours_(name).Decode(ours));
    }

    [Theory]
    [InlineData("clip", 11)]
    [InlineData("siglip", 22)]
    [InlineData("bytelevel", 33)]
    [InlineData("models/tiny-llava", 44)]
    [InlineData("models/tiny-llava-qwen", 55)]
    [InlineData("models/tiny-idefics3", 66)]
    public void RandomLinesMatchReference(string name, int seed)
    {
        var tok = TokenizerFixtures.Ours_(name);
        var lines = TokenizerFixtures.RandomLines(seed, 300);
        var failures = new List<string>();
        for (int i = 0; i < lines.Count; i++)
        {
            var expected = TokenizerFixtures.ReferenceIds(name, lines[i]);
            var ours = tok.Encode(lines[i]);
            if (!expected.SequenceEqual(ours))
                failures.Add($"line {i}: {TokenizerFixtures.Show(lines[i])}\n  hf:   [{string.Join(",", expected)}]\n  ours: [{string.Join(",", ours)}]");
            else if (tok.Decode(ours) is var d && d != TokenizerFixtures.ReferenceDecode(name, ours))
                failures.Add($"line {i} decode: {TokenizerFixtures.Show(lines[i])} -> ours {TokenizerFixtures.Show(d)}");
        }
        Assert.True(failures.Count == 0, $"{name}, seed {seed}: {failures.Count} mismatches\n" + string.Join("\n", failures.Take(10)));
    }
}
