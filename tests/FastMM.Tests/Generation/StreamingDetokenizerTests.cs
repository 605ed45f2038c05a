using System.Text;
using FastMM.Runtime.Generation;
using FastMM.Runtime.Tokenizers;
using FastMM.Tests.Tokenizers;

namespace FastMM.Tests.Generation;

public class StreamingDetokenizerTests
{
    public static TheoryData<string> Names => new(TokenizerFixtures.Names);

    /// <summary>
    /// Streams the ids and checks: pushes + flush == Decode(all); after every push the text so far is a prefix
    /// of both the final decode and the decode of the ids so far (so a chunk holds U+FFFD only where the decode
    /// at that point does); the window stays bounded while nothing is held back.
    /// </summary>
    private static void AssertStreams(Tokenizer tok, int[] ids, bool skipSpecial = true)
    {
        string full = tok.Decode(ids, skipSpecial);
        var detok = new StreamingDetokenizer(tok, skipSpecial);
        var sb = new StringBuilder();
        for (int i = 0; i < ids.Length; i++)
        {
            sb.Append(detok.Push(ids[i]));
            string soFar = sb.ToString();
            string here = tok.Decode(ids.AsSpan(0, i + 1), skipSpecial);
            Assert.True(full.StartsWith(soFar, StringComparison.Ordinal),
                $"after {i + 1} of [{string.Join(",", ids)}]: streamed {TokenizerFixtures.Show(soFar)} is not a prefix of {TokenizerFixtures.Show(full)}");
            Assert.True(here.StartsWith(soFar, StringComparison.Ordinal),
                $"after {i + 1} of [{string.Join(",", ids)}]: streamed {TokenizerFixtures.Show(soFar)} runs ahead of {TokenizerFixtures.Show(here)}");
            // Bounded while nothing is held back; a pending ByteFallback run (held whole, as HF decodes it) adds its length.
            int run = 0;
            for (int j = i; j >= 0; j--)
            {
                if ((skipSpecial && tok.IsSpecial(ids[j])) || tok.IdToToken(ids[j]) is null) continue; // never enter the window
                if (tok.IdToToken(ids[j]) is { Length: 6 } t && t.StartsWith("<0x", StringComparison.Ordinal)) run++; else break;
            }
            if (!here.EndsWith('\uFFFD')) Assert.True(detok.WindowLength <= 9 + run, $"window grew to {detok.WindowLength}");
        }
        sb.Append(detok.Flush());
        Assert.Equal(full, sb.ToString());
    }

    [Theory]
    [MemberData(nameof(Names))]
    public void EncodedTextStreamsBackExactly(string name)
    {
        var tok = TokenizerFixtures.Ours_(name);
        var texts = TokenizerFixtures.TrickyTexts.Concat(TokenizerFixtures.RandomLines(11, 150));
        foreach (var text in texts)
        {
            AssertStreams(tok, tok.Encode(text));
            AssertStreams(tok, tok.Encode(text), skipSpecial: false);
        }
    }

    [Theory]
    [MemberData(nameof(Names))]
    public void RandomIdStreamsStreamBackExactly(string name)
    {
        var tok = TokenizerFixtures.Ours_(name);
        var rnd = new Random(name.Length * 31 + 5);
        for (int s = 0; s < 150; s++)
        {
            var ids = new int[rnd.Next(1, 60)];
            for (int i = 0; i < ids.Length; i++) ids[i] = rnd.Next(tok.VocabSize + 3); // a few unknown ids too
            AssertStreams(tok, ids);
            AssertStreams(tok, ids, skipSpecial: false);
        }
    }

    [Fact]
    public void MultiByteCharactersSplitAcrossByteLevelTokensAreNeverBroken()
    {
        var tok = TokenizerFixtures.Ours_("bytelevel");
        const string text = "emoji 😀🎉👍🏽 and 東京 then 👨‍👩‍👧‍👦 done";
        int[] ids = tok.Encode(text, addSpecialTokens: false);
        // The fixture splits these characters over several tokens: single-token decodes show U+FFFD.
        Assert.Contains(ids, id => tok.Decode([id]).Contains('\uFFFD'));

        var detok = new StreamingDetokenizer(tok);
        var pieces = ids.Select(detok.Push).ToList();
        pieces.Add(detok.Flush());
        Assert.All(pieces, p => Assert.DoesNotContain('\uFFFD', p));
        Assert.Equal(text, string.Concat(pieces));
        Assert.Contains(pieces, p => p.Length > 0 && char.IsHighSurrogate(p[0])); // emoji emitted whole
        AssertStreams(tok, ids);
    }

    [Fact]
    public void MetaspaceKeepsTheSpaceBeforeEachWord()
    {
        var tok = TokenizerFixtures.Ours_("siglip");
        int[] ids = tok.Encode("a photo of a cat", addSpecialTokens: false);
        var detok = new StreamingDetokenizer(tok);
        var pieces = ids.Select(detok.Push).ToList();
        Assert.Equal("", detok.Flush());
        Assert.Equal("a photo of a cat", string.Concat(pieces));
        Assert.Equal(tok.Decode(ids), string.Concat(pieces));
        // Decoding the last token alone would lose its space; the streamed piece has it.
        Assert.Equal("cat", tok.Decode([ids[^1]]).TrimStart());
        Assert.StartsWith(" ", pieces.Last(p => p.Length > 0));
    }

    [Fact]
    public void SpecialTokensAreSkippedOrKept()
    {
        var tok = TokenizerFixtures.Ours_("clip");
        int[] ids = tok.Encode("a photo of a cat"); // <|startoftext|> ... <|endoftext|>
        var skipping = new StreamingDetokenizer(tok);
        Assert.Equal("", skipping.Push(ids[0]));
        string text = string.Concat(ids.Skip(1).Select(skipping.Push)) + skipping.Flush();
        Assert.Equal("a photo of a cat", text);

        var keeping = new StreamingDetokenizer(tok, skipSpecialTokens: false);
        string kept = string.Concat(ids.Select(keeping.Push)) + keeping.Flush();
        Assert.Equal(tok.Decode(ids, skipSpecialTokens: false), kept);
        Assert.Contains("<|endoftext|>", kept);
    }

    [Fact]
    public void FlushReleasesAnUnfinishedCharacterAndResets()
    {
        var tok = TokenizerFixtures.Ours_("bytelevel");
        int[] ids = tok.Encode("x😀", addSpecialTokens: false);
        var detok = new StreamingDetokenizer(tok);
        string streamed = string.Concat(ids[..^1].Select(detok.Push));
        Assert.Equal("x", streamed);
        string rest = detok.Flush();
        Assert.Equal(tok.Decode(ids[..^1]), streamed + rest);
        Assert.EndsWith("\uFFFD", rest);
        // After Flush it starts over like a new stream.
        Assert.Equal("x", string.Concat(ids.Take(1).Select(detok.Push)));
    }

    [Fact]
    public void LongStreamKeepsTheWindowSmall()
    {
        var tok = TokenizerFixtures.Ours_("bytelevel");
        int[] ids = tok.Encode(TokenizerFixtures.LongText() + TokenizerFixtures.LongText(), addSpecialTokens: false);
        var detok = new StreamingDetokenizer(tok);
        var sb = new StringBuilder();
        int widest = 0;
        foreach (int id in ids)
        {
            sb.Append(detok.Push(id));
            widest = Math.Max(widest, detok.WindowLength);
        }
        sb.Append(detok.Flush());
        Assert.Equal(tok.Decode(ids), sb.ToString());
        Assert.True(widest <= 12, $"window reached {widest} tokens over a {ids.Length}-token stream");
    }
}
