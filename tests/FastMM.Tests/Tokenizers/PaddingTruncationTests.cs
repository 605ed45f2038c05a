using FastMM.Runtime.Tokenizers;

namespace FastMM.Tests.Tokenizers;

/// <summary>CLIP (77, pad = eos 999) and SigLIP (64, pad = eos 1) batches, against hand-built expectations.</summary>
public class PaddingTruncationTests
{
    private static Tokenizer Clip => TokenizerFixtures.Ours_("clip");
    private static Tokenizer Siglip => TokenizerFixtures.Ours_("siglip");

    private static int Id(Tokenizer t, string token) => t.TokenToId(token) ?? throw new Exception($"'{token}' not in vocab");

    [Fact]
    public void ConfigIdsMatchTheModelFolders()
    {
        Assert.Equal((998, 999, 999, 1000, 77), (Clip.BosTokenId, Clip.EosTokenId, Clip.PadTokenId, Clip.VocabSize, Clip.ModelMaxLength));
        Assert.Equal((1, 1, 2, 1000, 64), (Siglip.EosTokenId, Siglip.PadTokenId, Siglip.UnkTokenId, Siglip.VocabSize, Siglip.ModelMaxLength));
        Assert.Null(Siglip.BosTokenId);
        Assert.Equal(2, Clip.SpecialTokenCount);
        Assert.Equal(1, Siglip.SpecialTokenCount);
    }

    [Fact]
    public void ClipPadsToMaxLengthWithEos()
    {
        var b = Clip.EncodeForModel(["A photo of a cat", "a dog"], 77, padToMax: true);
        Assert.Equal((2, 77), (b.BatchSize, b.Length));
        int[] row0 = [998, Id(Clip, "a</w>"), Id(Clip, "photo</w>"), Id(Clip, "of</w>"), Id(Clip, "a</w>"), Id(Clip, "cat</w>"), 999];
        int[] row1 = [998, Id(Clip, "a</w>"), Id(Clip, "dog</w>"), 999];
        Assert.Equal(row0.Concat(Enumerable.Repeat(999, 77 - row0.Length)), b.IdsRow(0).ToArray());
        Assert.Equal(row1.Concat(Enumerable.Repeat(999, 77 - row1.Length)), b.IdsRow(1).ToArray());
        Assert.Equal(Enumerable.Repeat(1, 7).Concat(Enumerable.Repeat(0, 70)), b.MaskRow(0).ToArray());
        Assert.Equal(Enumerable.Repeat(1, 4).Concat(Enumerable.Repeat(0, 73)), b.MaskRow(1).ToArray());
    }

    [Fact]
    public void ClipTruncatesTo77KeepingEos()
    {
        string text = string.Join(" ", Enumerable.Repeat("a", 100));
        var b = Clip.EncodeForModel([text], 77, padToMax: true);
        int a = Id(Clip, "a</w>");
        Assert.Equal(new[] { 998 }.Concat(Enumerable.Repeat(a, 75)).Append(999), b.IdsRow(0).ToArray());
        Assert.All(b.MaskRow(0).ToArray(), m => Assert.Equal(1, m));
        // Exactly-full text (75 words) is not truncated further.
        var exact = Clip.EncodeForModel([string.Join(" ", Enumerable.Repeat("a", 75))], 77, padToMax: true);
        Assert.Equal(b.Ids, exact.Ids);
    }

    [Fact]
    public void SiglipPadsTo64WithEosId1()
    {
        var b = Siglip.EncodeForModel(["A photo of a cat!"], 64, padToMax: true);
        int[] row = [Id(Siglip, "▁a"), Id(Siglip, "▁photo"), Id(Siglip, "▁of"), Id(Siglip, "▁a"), Id(Siglip, "▁cat"), 1];
        Assert.Equal(row.Concat(Enumerable.Repeat(1, 64 - row.Length)), b.IdsRow(0).ToArray());
        Assert.Equal(Enumerable.Repeat(1, row.Length).Concat(Enumerable.Repeat(0, 64 - row.Length)), b.MaskRow(0).ToArray());
    }

    [Fact]
    public void SiglipTruncatesTo64KeepingEos()
    {
        var b = Siglip.EncodeForModel([string.Join(" ", Enumerable.Repeat("cat", 100))], 64, padToMax: true);
        Assert.Equal(Enumerable.Repeat(Id(Siglip, "▁cat"), 63).Append(1), b.IdsRow(0).ToArray());
    }

    [Fact]
    public void EmptyTextIsOnlySpecialTokens()
    {
        Assert.Equal([998, 999], Clip.Encode(""));
        Assert.Equal([1], Siglip.Encode(""));
        Assert.Equal([1], Siglip.Encode("!!! ..."));  // punctuation is removed by the normalizer
        Assert.Empty(Clip.Encode("", addSpecialTokens: false));
    }

    [Fact]
    public void WithoutPadToMaxPadsToLongestRow()
    {
        var b = Clip.EncodeForModel(["a", "a photo of a cat"], 77, padToMax: false);
        Assert.Equal(7, b.Length);
        Assert.Equal([998, Id(Clip, "a</w>"), 999, 999, 999, 999, 999], b.IdsRow(0).ToArray());
        Assert.Equal([1, 1, 1, 0, 0, 0, 0], b.MaskRow(0).ToArray());
        var empty = Clip.EncodeForModel([], 77, padToMax: true);
        Assert.Equal(0, empty.BatchSize);
        Assert.Empty(empty.Ids);
    }

    [Fact]
    public void BatchMatchesSingleEncode()
    {
        var lines = TokenizerFixtures.RandomLines(5, 50);
        var b = Siglip.EncodeBatch(lines);
        for (int i = 0; i < lines.Count; i++)
        {
            var single = Siglip.Encode(lines[i]);
            Assert.Equal(single, b.IdsRow(i)[..single.Length].ToArray());
            Assert.Equal(single.Length, b.MaskRow(i).ToArray().Sum());
        }
    }

    [Fact]
    public void DecodeKeepsSpecialTokensWhenAsked()
    {
        var ids = Clip.Encode("a cat");
        Assert.Equal("a cat", Clip.Decode(ids));
        Assert.Equal("<|startoftext|>a cat <|endoftext|>", Clip.Decode(ids, skipSpecialTokens: false));
    }
}
