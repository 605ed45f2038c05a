using System.Runtime.InteropServices;
using FastMM.Runtime.Tokenizers;

namespace FastMM.Runtime.Generation;

/// <summary>
/// Turns generated token ids into text as they arrive. The pieces returned by <see cref="Push"/> followed by
/// <see cref="Flush"/> concatenate to <c>tokenizer.Decode(allIds, skipSpecialTokens)</c>.
/// </summary>
/// <remarks>
/// Decoding one token alone is wrong in two ways: a byte-level or byte-fallback token can hold part of a
/// multi-byte character (it decodes to U+FFFD until the rest arrives), and decoders such as Metaspace drop the
/// leading space of whatever token comes first. So, like vLLM's incremental detokenizer, each push decodes a
/// small window: a few already-emitted context tokens plus the new ones, and returns the part of that text
/// beyond what was already emitted. A trailing run of U+FFFD is held back until later tokens complete it (or
/// until Flush, if they never do). Once everything decoded is emitted the window shrinks back to the context,
/// so a push costs O(window), which is bounded unless a long run of bytes stays invalid.
/// Special tokens, when skipped, never enter the window: Decode drops them before decoding too.
/// A run of ByteFallback tokens (&lt;0xNN&gt;) is decoded as a whole by HF — one invalid byte turns the entire run into
/// U+FFFD — so nothing of a run is emitted until a non-byte token ends it (or Flush).
/// </remarks>
public sealed class StreamingDetokenizer
{
    /// <summary>Tokens kept before the unemitted ones: space rules look one token back, and a UTF-8 character
    /// spans at most four byte tokens, so the context always ends on a whole character.</summary>
    private const int ContextTokens = 4;

    private readonly Tokenizer _tokenizer;
    private readonly bool _skipSpecialTokens;
    private readonly List<int> _window = new();
    private int _emitted; // characters of Decode(_window) already returned

    public StreamingDetokenizer(Tokenizer tokenizer, bool skipSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        _tokenizer = tokenizer;
        _skipSpecialTokens = skipSpecialTokens;
    }

    /// <summary>Tokens currently decoded per push (for tests of the bound).</summary>
    internal int WindowLength => _window.Count;

    /// <summary>Adds one generated token; returns the text it completes (often empty).</summary>
    public string Push(int tokenId)
    {
        // Tokens Decode would drop contribute nothing and must not count as context.
        if (_skipSpecialTokens && _tokenizer.IsSpecial(tokenId)) return "";
        if (_tokenizer.IdToToken(tokenId) is null) return "";
        _window.Add(tokenId);
        if (IsByteFallback(tokenId)) return "";

        string text = Decode();
        int stableEnd = text.Length;
        while (stableEnd > _emitted && text[stableEnd - 1] == '\uFFFD') stableEnd--;
        string piece = "";
        if (stableEnd > _emitted)
        {
            piece = text[_emitted..stableEnd];
            _emitted = stableEnd;
        }
        if (_emitted == text.Length && _window.Count > 2 * ContextTokens) Shrink();
        return piece;
    }

    /// <summary>Returns what is still held back (an unfinished character stays U+FFFD, as in Decode) and resets.</summary>
    public string Flush()
    {
        string rest = _window.Count == 0 ? "" : Decode()[_emitted..];
        _window.Clear();
        _emitted = 0;
        return rest;
    }

    private bool IsByteFallback(int id)
        => _tokenizer.IdToToken(id) is { Length: 6 } t && t.StartsWith("<0x", StringComparison.Ordinal) && t[5] == '>'
           && Uri.IsHexDigit(t[3]) && Uri.IsHexDigit(t[4]);

    private string Decode() => _tokenizer.Decode(CollectionsMarshal.AsSpan(_window), _skipSpecialTokens);

    /// <summary>Everything decoded has been emitted: keep only the last few tokens as context.</summary>
    private void Shrink()
    {
        _window.RemoveRange(0, _window.Count - ContextTokens);
        _emitted = Decode().Length;
    }
}
