using System.Globalization;

namespace FastMM.Runtime.Generation;

/// <summary>
/// How the next token is chosen, with the meaning (and the option names in error messages) of HF
/// transformers' generate(). Each option is checked when it is set, so a bad value fails where it is written.
/// The defaults switch every filter off: plain sampling at temperature 1.
/// </summary>
public sealed record SamplingOptions
{
    /// <summary>Argmax decoding (the repetition penalty still applies, as in HF's do_sample=False).</summary>
    public static SamplingOptions Greedy { get; } = new() { Temperature = 0 };

    /// <summary>Logits are divided by this; 0 or less means greedy decoding.</summary>
    public float Temperature
    {
        get;
        init => field = float.IsFinite(value) ? value : throw Bad("temperature", "must be a finite number", value);
    } = 1f;

    /// <summary>Keep the k highest logits (ties with the k-th are kept too); 0 = off.</summary>
    public int TopK
    {
        get;
        init => field = value >= 0 ? value : throw Bad("top_k", "must be >= 0 (0 = off)", value);
    }

    /// <summary>Keep the smallest set of most likely tokens whose probability reaches p; 1 = off.</summary>
    public float TopP
    {
        get;
        init => field = value is > 0f and <= 1f ? value : throw Bad("top_p", "must be in (0, 1]", value);
    } = 1f;

    /// <summary>Drop tokens less likely than MinP times the most likely one; 0 = off.</summary>
    public float MinP
    {
        get;
        init => field = value is >= 0f and <= 1f ? value : throw Bad("min_p", "must be in [0, 1]", value);
    }

    /// <summary>CTRL-style penalty on every token already in the sequence (&gt; 1 discourages repeats); 1 = off.</summary>
    public float RepetitionPenalty
    {
        get;
        init => field = value > 0f && float.IsFinite(value) ? value : throw Bad("repetition_penalty", "must be a finite number > 0 (1 = off)", value);
    } = 1f;

    /// <summary>Seed of the sampler's own generator: the same seed gives the same tokens on every run and platform.
    /// Null draws a fresh seed per sampler.</summary>
    public ulong? Seed { get; init; }

    public bool IsGreedy => Temperature <= 0f;

    private static FastMMException Bad<T>(string name, string rule, T value) where T : IFormattable =>
        new($"{name} {rule}, got {value.ToString(null, CultureInfo.InvariantCulture)}");
}
