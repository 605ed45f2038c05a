using FastMM.Runtime.Generation;

namespace FastMM.Tests.Generation;

public class StopStringsTests
{
    [Fact]
    public void StopInsideOneChunk()
    {
        var stops = new StopStrings(["###"]);
        Assert.False(stops.Check("Hello", out int cut));
        Assert.Equal(5, cut);
        Assert.True(stops.Check(" world### more", out cut));
        Assert.Equal(" world", " world### more"[..cut]);
        Assert.Equal("Hello world", stops.Text[..stops.StopIndex]);
    }

    [Fact]
    public void StopSpanningChunks()
    {
        var stops = new StopStrings(["</answer>"]);
        string[] chunks = ["The answer is 4", "</", "ans", "wer", "> trailing"];
        int cut = -1, stoppedAt = -1;
        for (int i = 0; i < chunks.Length && stoppedAt < 0; i++)
            if (stops.Check(chunks[i], out cut)) stoppedAt = i;
        Assert.Equal(4, stoppedAt);
        Assert.Equal(0, cut); // the stop began two chunks back: nothing of this chunk is kept
        Assert.Equal("The answer is 4", stops.Text[..stops.StopIndex]);
        Assert.True(stops.Stopped);
        // Later text is ignored.
        Assert.True(stops.Check("ignored", out int again));
        Assert.Equal(0, again);
        Assert.Equal(15, stops.StopIndex);
    }

    [Fact]
    public void EarliestStopWinsAcrossStrings()
    {
        var stops = new StopStrings(["world", "lo w", "\n\n"]);
        Assert.True(stops.Check("hello world\n\n", out int cut));
        Assert.Equal(3, cut);
    }

    [Fact]
    public void RandomChunkingFindsTheEarliestStop()
    {
        var rnd = new Random(3);
        string alphabet = "ab\n<>/";
        string[] stopList = ["aab", "</b>", "\n\n", "bb"];
        for (int trial = 0; trial < 300; trial++)
        {
            var text = new string(Enumerable.Range(0, rnd.Next(1, 40)).Select(_ => alphabet[rnd.Next(alphabet.Length)]).ToArray());
            var chunks = new List<string>();
            for (int i = 0; i < text.Length; )
            {
                int n = Math.Min(rnd.Next(1, 4), text.Length - i);
                chunks.Add(text.Substring(i, n));
                i += n;
            }
            // Reference: at the first chunk end by which some stop is complete, the earliest start of any stop.
            int expected = -1, end = 0;
            foreach (var c in chunks)
            {
                end += c.Length;
                var starts = stopList.Select(s => text[..end].IndexOf(s, StringComparison.Ordinal)).Where(i => i >= 0).ToList();
                if (starts.Count > 0) { expected = starts.Min(); break; }
            }

            // What a streaming caller shows: each chunk up to its cut.
            var stops = new StopStrings(stopList);
            var shown = new System.Text.StringBuilder();
            bool stopped = false;
            foreach (var chunk in chunks)
            {
                stopped = stops.Check(chunk, out int cut);
                shown.Append(chunk[..cut]);
                if (stopped) break;
            }
            if (expected < 0)
            {
                Assert.False(stopped, text);
                Assert.Equal(text, shown.ToString());
                continue;
            }
            Assert.True(stopped, text);
            Assert.Equal(expected, stops.StopIndex);
            // Only a stop string's start, from earlier chunks, can have been shown beyond the cut.
            Assert.StartsWith(text[..expected], shown.ToString());
            Assert.True(shown.Length - expected < stopList.Max(s => s.Length), text);
        }
    }

    [Fact]
    public void SafeLengthHoldsBackAPossibleStopPrefix()
    {
        var stops = new StopStrings(["<|end|>", "STOP"]);
        Assert.False(stops.Check("result: 42 <|e", out _));
        Assert.Equal("result: 42 ", stops.Text[..stops.SafeLength]);
        Assert.False(stops.Check("x", out _));
        Assert.Equal(stops.Text.Length, stops.SafeLength);
        Assert.False(stops.Check(" ST", out _));
        Assert.Equal("result: 42 <|ex ", stops.Text[..stops.SafeLength]);
        Assert.True(stops.Check("OP", out int cut));
        Assert.Equal(0, cut);
        Assert.Equal(stops.StopIndex, stops.SafeLength);
        Assert.Equal("result: 42 <|ex ", stops.Text[..stops.StopIndex]);
    }

    [Fact]
    public void NoStopsNeverStopAndEmptyStopsAreRejected()
    {
        var none = new StopStrings([]);
        Assert.False(none.Check("anything at all", out int cut));
        Assert.Equal(15, cut);
        Assert.Equal(15, none.SafeLength);
        Assert.Throws<FastMMException>(() => new StopStrings(["ok", ""]));
    }
}
