using FastMM.Models;
using FastMM.Models.IO;

namespace FastMM.Runtime.Generation;

/// <summary>
/// The tensor-level entry points of a generative VLM, as HF's forward() and generate() take them from a processor:
/// input_ids [B, T], attention_mask [B, T], pixel_values ([N, 3, S, S] for LLaVA, [B, N, 3, S, S] for Idefics3),
/// pixel_attention_mask [B, N, S, S]. Each batch row runs as its own sequence over the real (mask = 1) tokens.
/// </summary>
public static class VlmTensors
{
    /// <summary>One batch row's real tokens: where they start (the left-padding offset) and how many there are.</summary>
    private static (int Start, int Count) RealSpan(TextInput t, int row, string source)
    {
        if (t.AttentionMask is null) return (0, t.Length);
        var m = t.AttentionMask.AsSpan(row * t.Length, t.Length);
        int start = m.IndexOf(1), end = m.LastIndexOf(1);
        if (start < 0) throw new FastMMException($"{source}: attention_mask row {row} has no real tokens");
        if (m[start..(end + 1)].Contains(0)) throw new FastMMException($"{source}: attention_mask row {row} has padding between real tokens");
        return (start, end - start + 1);
    }

    /// <summary>Image features for every real image, in prompt order (null when pixel_values is absent).</summary>
    public static Tensor? ImageFeatures(VisionLanguageModel m, NpyArray? pixels, NpyArray? pixelMask, string source)
    {
        if (pixels is null) return null;
        int s = m.ImageSize;
        float[] data = pixels.Floats(source);
        int n; bool[] mask = [];
        if (m is Idefics3Model)
        {
            pixels.ExpectShape(source, -1, -1, 3, s, s);
            n = pixels.Shape[0] * pixels.Shape[1];
            if (pixelMask is not null)
            {
                pixelMask.ExpectShape(source, pixels.Shape[0], pixels.Shape[1], s, s);
                mask = pixelMask.Ints(source).Select(v => v != 0).ToArray();
            }
        }
        else
        {
            pixels.ExpectShape(source, -1, 3, s, s);
            n = pixels.Shape[0];
            if (pixelMask is not null) throw new FastMMException($"{source}: pixel_attention_mask is only used by idefics3 models");
        }
        int per = 3 * s * s;
        // HF Idefics3 drops padding images (all pixel values exactly 0) before the vision tower; keeps the first if all are padding.
        var keep = new List<int>();
        for (int i = 0; i < n; i++)
            if (m is not Idefics3Model || data.AsSpan(i * per, per).ContainsAnyExcept(0f)) keep.Add(i);
        if (keep.Count == 0) keep.Add(0);
        var px = new float[keep.Count * per];
        var pm = mask.Length == 0 ? [] : new bool[keep.Count * s * s];
        for (int j = 0; j < keep.Count; j++)
        {
            data.AsSpan(keep[j] * per, per).CopyTo(px.AsSpan(j * per));
            if (pm.Length > 0) mask.AsSpan(keep[j] * s * s, s * s).CopyTo(pm.AsSpan(j * s * s));
        }
        using var t = m.Backend.FromHost(px, keep.Count, 3, s, s);
        return m.ImageFeatures(t, pm);
    }

    /// <summary>
    /// RoPE offset of each row's first real token. With position_ids (as HF generate() builds them from the mask)
    /// they must count up by one over the real tokens; without, HF forward()'s default 0 … T−1 applies, so a
    /// left-padded row starts at its pad count.
    /// </summary>
    public static int[] RopeOffsets(TextInput text, NpyArray? positionIds, string source)
    {
        var offsets = new int[text.Batch];
        long[]? pos = null;
        if (positionIds is not null)
        {
            positionIds.ExpectShape(source, text.Batch, text.Length);
            pos = positionIds.Ints(source);
        }
        for (int r = 0; r < text.Batch; r++)
        {
            var (start, count) = RealSpan(text, r, source);
            if (pos is null) { offsets[r] = start; continue; }
            long first = pos[r * text.Length + start];
            for (int i = 0; i < count; i++)
                if (pos[r * text.Length + start + i] != first + i)
                    throw new FastMMException($"{source}: position_ids row {r} must count up by one over the real tokens");
            if (first < 0 || first > int.MaxValue) throw new FastMMException($"{source}: position_ids row {r} starts at {first}");
            offsets[r] = (int)first;
        }
        return offsets;
    }

    /// <summary>logits [B, T, V] for every real position (padding positions are left 0).</summary>
    public static float[] Logits(VisionLanguageModel m, TextInput text, Tensor? features, string source, int[]? ropeOffsets = null)
    {
        ropeOffsets ??= RopeOffsets(text, null, source);
        int v = m.Text.Vocab;
        long total = (long)text.Batch * text.Length * v;
        if (total > Array.MaxLength)
            throw new FastMMException($"{source}: logits for {text.Batch} x {text.Length} tokens x {v} vocabulary exceed one array; split the batch");
        var logits = new float[total];
        int used = 0;
        using var cache = m.CreateCache(text.Length);
        for (int r = 0; r < text.Batch; r++)
        {
            var (start, count) = RealSpan(text, r, source);
            var ids = text.Ids.AsSpan(r * text.Length + start, count);
            using var rowFeatures = TakeFeatures(m, features, ids, ref used);
            using var seq = cache.NewSequence(count);
            using var e = m.EmbedPrompt(ids, rowFeatures);
            using var l = m.Forward(e, seq, allLogits: true, ropeOffset: ropeOffsets[r]);
            m.Backend.ToHost(l, logits.AsSpan((int)(((long)r * text.Length + start) * v), (int)((long)count * v)));
        }
        CheckAllUsed(features, used);
        return logits;
    }

    /// <summary>HF generate(do_sample=False): prompt + new tokens per row, rows that end early padded with padId.</summary>
    public static long[] GenerateGreedy(Generator gen, VisionLanguageModel m, TextInput text, Tensor? features,
        int maxNewTokens, IReadOnlyList<int> eos, int padId, string source, out int width)
        => Generate(gen, m, text, features, maxNewTokens, eos, padId, SamplingOptions.Greedy, source, out width);

    /// <summary>HF generate(): prompt + new tokens per row (each row sampled as its own sequence), rows that end early padded with padId.</summary>
    public static long[] Generate(Generator gen, VisionLanguageModel m, TextInput text, Tensor? features,
        int maxNewTokens, IReadOnlyList<int> eos, int padId, SamplingOptions sampling, string source, out int width)
    {
        var rows = new List<long[]>();
        int used = 0;
        for (int r = 0; r < text.Batch; r++)
        {
            var (start, count) = RealSpan(text, r, source);
            var ids = text.Ids.AsSpan(r * text.Length + start, count).ToArray();
            using var rowFeatures = TakeFeatures(m, features, ids, ref used);
            var result = gen.Generate(new GenerationRequest
            {
                // HF generate() derives positions from the mask (cumsum − 1): each row starts at 0, padded or not.
                PromptIds = ids, ImageFeatures = rowFeatures, MaxNewTokens = maxNewTokens, EosTokenIds = eos, Sampling = sampling,
            });
            var newIds = result.TokenIds.Select(x => (long)x).ToList();
            if (result.Reason == FinishReason.Eos) newIds.Add(eos.Count > 0 ? LastEos(result, eos) : padId);
            rows.Add(newIds.ToArray());
        }
        CheckAllUsed(features, used);
        int added = rows.Max(x => x.Length);
        width = text.Length + added;
        var outIds = new long[text.Batch * width];
        for (int r = 0; r < text.Batch; r++)
        {
            for (int i = 0; i < text.Length; i++) outIds[r * width + i] = text.Ids[r * text.Length + i];
            for (int i = 0; i < added; i++) outIds[r * width + text.Length + i] = i < rows[r].Length ? rows[r][i] : padId;
        }
        return outIds;
    }

    private static long LastEos(GenerationResult r, IReadOnlyList<int> eos) => r.EosTokenId ?? eos[0];

    private static Tensor? TakeFeatures(VisionLanguageModel m, Tensor? features, ReadOnlySpan<int> ids, ref int used)
    {
        int need = 0;
        foreach (int id in ids) if (id == m.ImageTokenId) need++;
        if (need == 0) return null;
        int have = features?.Dim(0) ?? 0;
        if (used + need > have) throw new FastMMException($"input_ids hold more image tokens ({used + need} so far) than pixel_values give features ({have})");
        var rows = Enumerable.Range(used, need).ToArray();
        used += need;
        return m.Backend.Embedding(features!, rows);
    }

    private static void CheckAllUsed(Tensor? features, int used)
    {
        int have = features?.Dim(0) ?? 0;
        if (used != have) throw new FastMMException($"pixel_values give {have} image features but input_ids hold {used} image tokens");
    }
}
