using System.CommandLine;
using FastMM.Kv;
using FastMM.Runtime.Generation;

namespace FastMM.Cli.Commands;

/// <summary>Sampling, stopping and KV-cache flags shared by ask, caption, chat and generate. Greedy unless a sampling flag is given.</summary>
internal sealed class GenerationOptions
{
    public readonly Option<int> MaxNewTokens = new("--max-new-tokens") { Description = "most tokens to generate", DefaultValueFactory = _ => 256 };
    public readonly Option<float?> Temperature = new("--temperature") { Description = "sampling temperature (0 = greedy)" };
    public readonly Option<int?> TopK = new("--top-k") { Description = "keep the k most likely tokens" };
    public readonly Option<float?> TopP = new("--top-p") { Description = "nucleus sampling: keep the smallest set with this much probability" };
    public readonly Option<float?> MinP = new("--min-p") { Description = "drop tokens below min_p × the top probability" };
    public readonly Option<float?> RepetitionPenalty = new("--repetition-penalty") { Description = "penalise tokens already in the context (HF semantics)" };
    public readonly Option<ulong?> Seed = new("--seed") { Description = "random seed for reproducible sampling" };
    public readonly Option<bool> Greedy = new("--greedy") { Description = "greedy decoding (the default when no sampling flag is given)" };
    public readonly Option<string[]> Stop = new("--stop") { Description = "stop when this text is generated (repeatable)", AllowMultipleArgumentsPerToken = false };
    public readonly Option<string> KvCache = new("--kv-cache")
    {
        Description = "KV-cache storage: f32, or int8 (one scale per token and head: about 1/4 of the memory, a small accuracy cost; CPU only)",
        DefaultValueFactory = _ => "f32",
    };

    public void AddTo(Command c)
    {
        foreach (var o in new Option[] { MaxNewTokens, Temperature, TopK, TopP, MinP, RepetitionPenalty, Seed, Greedy, Stop, KvCache }) c.Add(o);
    }

    /// <summary>
    /// The model's generation_config defaults (as HF generate() applies them), overridden by the flags: --greedy keeps
    /// only its repetition penalty; any sampling flag turns sampling on.
    /// </summary>
    public SamplingOptions Sampling(ParseResult p, SamplingOptions defaults)
    {
        bool anySampling = p.GetValue(Temperature) is not null || p.GetValue(TopK) is not null || p.GetValue(TopP) is not null || p.GetValue(MinP) is not null;
        if (p.GetValue(Greedy) && anySampling) throw new FastMMException("--greedy cannot be combined with --temperature/--top-k/--top-p/--min-p");
        var o = p.GetValue(Greedy) ? SamplingOptions.Greedy with { RepetitionPenalty = defaults.RepetitionPenalty } : defaults;
        if (anySampling) o = o with { Temperature = p.GetValue(Temperature) ?? (defaults.IsGreedy ? 1f : defaults.Temperature) };
        if (p.GetValue(TopK) is int k) o = o with { TopK = k };
        if (p.GetValue(TopP) is float tp) o = o with { TopP = tp };
        if (p.GetValue(MinP) is float mp) o = o with { MinP = mp };
        if (p.GetValue(RepetitionPenalty) is float rp) o = o with { RepetitionPenalty = rp };
        if (p.GetValue(Seed) is ulong s) o = o with { Seed = s };
        return o;
    }

    public int MaxNew(ParseResult p)
    {
        int n = p.GetValue(MaxNewTokens);
        if (n < 0) throw new FastMMException($"--max-new-tokens must be >= 0, got {n}");
        return n;
    }

    public IReadOnlyList<string> Stops(ParseResult p) => p.GetValue(Stop) ?? [];

    public KvCacheType CacheType(ParseResult p) => p.GetValue(KvCache) switch
    {
        "f32" => KvCacheType.F32,
        "int8" => KvCacheType.Int8,
        var other => throw new FastMMException($"--kv-cache must be f32 or int8, got '{other}'"),
    };
}
