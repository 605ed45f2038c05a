namespace FastMM.Runtime.Generation;

/// <summary>
/// Watches generated text for stop strings. Text is fed chunk by chunk (as a streaming detokenizer returns it);
/// a stop string may span chunks. The output to keep is the text before the earliest stop string, without it.
/// Each check scans only the new text plus the last (longest stop − 1) characters before it.
/// </summary>
public sealed class StopStrings
{
    private readonly string[] _stops;
    private readonly int _longest;
    private char[] _text = new char[256];
    private int _length;
    private int _stopIndex = -1;

    public StopStrings(IEnumerable<string> stops)
    {
        ArgumentNullException.ThrowIfNull(stops);
        _stops = stops.ToArray();
        foreach (var s in _stops)
            if (string.IsNullOrEmpty(s)) throw new FastMMException("stop strings must not be empty");
        _longest = _stops.Length == 0 ? 0 : _stops.Max(s => s.Length);
    }

    public IReadOnlyList<string> Stops => _stops;

    /// <summary>Everything checked so far, stop string included.</summary>
    public string Text => new(_text, 0, _length);

    /// <summary>True once a stop string has been seen.</summary>
    public bool Stopped => _stopIndex >= 0;

    /// <summary>Where the earliest stop string begins in <see cref="Text"/>; −1 until one is seen.</summary>
    public int StopIndex => _stopIndex;

    /// <summary>
    /// Appends <paramref name="newText"/> and reports whether the output now contains a stop string.
    /// <paramref name="cutIndex"/> is how much of <paramref name="newText"/> to keep: the text before the earliest
    /// stop string, or all of it when there is none. When the stop string began in an earlier chunk, cutIndex is 0
    /// and its start was already handed out; callers that must never show any of it hold text back with
    /// <see cref="SafeLength"/> (<see cref="StopIndex"/> gives the exact cut in <see cref="Text"/>).
    /// Once stopped, later calls keep none of their text.
    /// </summary>
    public bool Check(string newText, out int cutIndex)
    {
        ArgumentNullException.ThrowIfNull(newText);
        if (Stopped)
        {
            cutIndex = 0;
            return true;
        }
        int chunkStart = _length;
        int scanFrom = Math.Max(0, _length - (_longest - 1));
        Append(newText);
        // A stop that ends inside the new text starts at or after scanFrom; stops entirely before it were
        // already looked for. The earliest start wins, whichever stop string it is.
        var window = _text.AsSpan(scanFrom, _length - scanFrom);
        int best = -1;
        foreach (var s in _stops)
        {
            int at = window.IndexOf(s.AsSpan(), StringComparison.Ordinal);
            if (at >= 0 && (best < 0 || at < best)) best = at;
        }
        if (best < 0)
        {
            cutIndex = newText.Length;
            return false;
        }
        _stopIndex = scanFrom + best;
        cutIndex = Math.Max(0, _stopIndex - chunkStart);
        return true;
    }

    /// <summary>
    /// How much of the accumulated text cannot become part of a stop string whatever comes next: a streaming
    /// client can be sent Text[..SafeLength] while the rest (a possible start of a stop string) is held back.
    /// </summary>
    public int SafeLength
    {
        get
        {
            if (Stopped) return _stopIndex;
            var text = _text.AsSpan(0, _length);
            // The longest suffix of the text that is a proper prefix of some stop string.
            for (int n = Math.Min(_longest - 1, _length); n > 0; n--)
            {
                var tail = text[(_length - n)..];
                foreach (var s in _stops)
                    if (s.Length > n && s.AsSpan(0, n).SequenceEqual(tail)) return _length - n;
            }
            return _length;
        }
    }

    private void Append(string s)
    {
        if (_length + s.Length > _text.Length) Array.Resize(ref _text, Math.Max(_text.Length * 2, _length + s.Length));
        s.CopyTo(0, _text, _length, s.Length);
        _length += s.Length;
    }
}
