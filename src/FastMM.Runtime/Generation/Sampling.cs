using System.Numerics.Tensors;
using System.Runtime.CompilerServices;

namespace FastMM.Runtime.Generation;

/// <summary>
/// Chooses the next token of one sequence from its logits exactly as HF transformers' generate() does:
/// RepetitionPenaltyLogitsProcessor, then TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper and
/// MinPLogitsWarper (each only when switched on), then softmax and a multinomial draw; greedy is argmax.
/// Create one per sequence: it owns its random state, and scratch buffers sized to the vocabulary on the first
/// call, after which <see cref="Sample"/> allocates nothing. Not thread-safe.
/// </summary>
/// <remarks>
/// Cost per call for a vocabulary of V tokens, n of them finite, and history length h:
/// O(V + h) for the penalty, temperature and collecting the finite tokens; top-k O(n log k) with a k-element heap;
/// top-p O(m) over the m tokens left by top-k, with no sort: a histogram of the logits finds the narrow band that
/// holds the cut, and a quickselect guided by mass settles the tokens in that band; min-p and the draw O(m).
/// exp(logit − max) is computed in float (vectorised), sums in double.
/// </remarks>
public sealed class Sampler
{
    private SamplingRandom _random;

    // Scratch, sized to the vocabulary on first use. The current candidates (tokens still finite) are
    // _ids[0.._count) with their unnormalised probabilities exp(logit - max) in _weights once computed.
    private int[] _ids = [];
    private float[] _weights = [];
    private ulong[] _keys = [];
    private float[] _bandWeights = [];
    private float[] _heap = [];
    private int[] _seen = [];
    private int _epoch;

    public SamplingOptions Options { get; }

    public Sampler(SamplingOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        Options = options;
        _random = new SamplingRandom(options.Seed ?? SamplingRandom.FreshSeed());
    }

    /// <summary>
    /// The next token id. <paramref name="logits"/> (one per vocabulary entry) is processed in place: penalised,
    /// scaled, and filtered tokens set to −∞. <paramref name="previousTokens"/> (prompt and generated so far)
    /// feeds the repetition penalty.
    /// </summary>
    public int Sample(Span<float> logits, ReadOnlySpan<int> previousTokens)
    {
        if (Options.IsGreedy) return Greedy(logits, previousTokens);
        int count = Process(logits, previousTokens, out double total);

        // Inverse-CDF draw over the candidates; the last candidate catches any rounding shortfall.
        double u = _random.NextDouble() * total;
        double cumulative = 0;
        for (int j = 0; j < count - 1; j++)
        {
            cumulative += _weights[j];
            if (u < cumulative) return _ids[j];
        }
        return _ids[count - 1];
    }

    /// <summary>The distribution <see cref="Sample"/> draws from (one-hot at the argmax when greedy).</summary>
    internal void Distribution(Span<float> logits, ReadOnlySpan<int> previous, Span<float> probsOut)
    {
        if (probsOut.Length != logits.Length) throw new ArgumentException("probsOut must be as long as logits", nameof(probsOut));
        probsOut.Clear();
        if (Options.IsGreedy)
        {
            probsOut[Greedy(logits, previous)] = 1f;
            return;
        }
        int count = Process(logits, previous, out double total);
        for (int j = 0; j < count; j++) probsOut[_ids[j]] = (float)(_weights[j] / total);
    }

    private int Greedy(Span<float> logits, ReadOnlySpan<int> previous)
    {
        EnsureScratch(logits.Length);
        if (Options.RepetitionPenalty != 1f) ApplyRepetitionPenalty(logits, previous);
        // First maximum wins, like torch.argmax.
        int best = -1;
        float bestValue = float.NegativeInfinity;
        for (int i = 0; i < logits.Length; i++)
        {
            float v = logits[i];
            if (float.IsNaN(v)) throw BadLogit(i, v);
            if (v > bestValue || best < 0) { best = i; bestValue = v; }
        }
        return best;
    }

    /// <summary>Runs the processors; leaves the survivors in _ids/_weights[0..count) and returns count.</summary>
    private int Process(Span<float> logits, ReadOnlySpan<int> previous, out double total)
    {
        EnsureScratch(logits.Length);
        var o = Options;
        if (o.RepetitionPenalty != 1f) ApplyRepetitionPenalty(logits, previous);

        // Divide (not multiply by 1/T) as HF does, so ties and values match bit for bit.
        if (o.Temperature != 1f) TensorPrimitives.Divide(logits, o.Temperature, logits);

        int count = CollectFinite(logits, out float max);
        if (o.TopK > 0 && o.TopK < count) count = ApplyTopK(logits, count, o.TopK);

        // exp(l - max): the max token always survives every filter, so these weights stay valid throughout.
        var weights = _weights.AsSpan(0, count);
        for (int j = 0; j < count; j++) weights[j] = logits[_ids[j]] - max;
        TensorPrimitives.Exp(weights, weights);

        if (o.TopP < 1f) count = ApplyTopP(logits, count, max, o.TopP);
        if (o.MinP > 0f) count = ApplyMinP(logits, count, o.MinP);

        total = 0;
        for (int j = 0; j < count; j++) total += _weights[j];
        return count;
    }

    private void EnsureScratch(int vocab)
    {
        if (vocab == 0) throw new FastMMException("logits are empty");
        if (_ids.Length == vocab) return;
        _ids = new int[vocab];
        _weights = new float[vocab];
        _keys = new ulong[vocab];
        _bandWeights = new float[vocab];
        _seen = new int[vocab];
        _epoch = 0;
    }

    /// <summary>HF's gather/scatter penalises each distinct previous token once: l &lt; 0 ? l·p : l/p.</summary>
    private void ApplyRepetitionPenalty(Span<float> logits, ReadOnlySpan<int> previous)
    {
        // Epoch stamps mark tokens already penalised this call without clearing an array per call.
        if (++_epoch == int.MaxValue)
        {
            Array.Clear(_seen);
            _epoch = 1;
        }
        float p = Options.RepetitionPenalty;
        foreach (int id in previous)
        {
            if ((uint)id >= (uint)logits.Length)
                throw new FastMMException($"previous token id {id} is outside the vocabulary of {logits.Length} logits");
            if (_seen[id] == _epoch) continue;
            _seen[id] = _epoch;
            float l = logits[id];
            logits[id] = l < 0 ? l * p : l / p;
        }
    }

    private int CollectFinite(Span<float> logits, out float max)
    {
        int count = 0;
        max = float.NegativeInfinity;
        for (int i = 0; i < logits.Length; i++)
        {
            float v = logits[i];
            if (v == float.NegativeInfinity) continue;
            // torch's softmax turns these into NaN and multinomial then fails; say so up front.
            if (!float.IsFinite(v)) throw BadLogit(i, v);
            _ids[count++] = i;
            if (v > max) max = v;
        }
        if (count == 0) throw new FastMMException("every logit is -inf: no token can be sampled");
        return count;
    }

    private static FastMMException BadLogit(int i, float v) =>
        new($"logit {i} is {(float.IsNaN(v) ? "NaN" : "+inf")}: the model produced invalid scores");

    /// <summary>
    /// HF: remove scores &lt; torch.topk(scores, k)[-1]. A k-element min-heap finds that k-th largest value in
    /// O(n log k); everything tied with it stays.
    /// </summary>
    private int ApplyTopK(Span<float> logits, int count, int k)
    {
        if (_heap.Length < k) _heap = new float[Math.Min(k, _ids.Length)];
        var heap = _heap.AsSpan(0, k);
        for (int j = 0; j < k; j++) heap[j] = logits[_ids[j]];
        for (int j = k / 2 - 1; j >= 0; j--) SiftDown(heap, j);
        for (int j = k; j < count; j++)
        {
            float v = logits[_ids[j]];
            if (v > heap[0])
            {
                heap[0] = v;
                SiftDown(heap, 0);
            }
        }
        float threshold = heap[0];
        return Compact(logits, count, threshold);
    }

    private static void SiftDown(Span<float> heap, int i)
    {
        float v = heap[i];
        while (true)
        {
            int c = 2 * i + 1;
            if (c >= heap.Length) break;
            if (c + 1 < heap.Length && heap[c + 1] < heap[c]) c++;
            if (heap[c] >= v) break;
            heap[i] = heap[c];
            i = c;
        }
        heap[i] = v;
    }

    /// <summary>Keeps candidates with logit ≥ threshold (in order), masking the rest with −∞.</summary>
    private int Compact(Span<float> logits, int count, float threshold)
    {
        int kept = 0;
        for (int j = 0; j < count; j++)
        {
            int id = _ids[j];
            if (logits[id] >= threshold) _ids[kept++] = id;
            else logits[id] = float.NegativeInfinity;
        }
        return kept;
    }

    /// <summary>
    /// HF sorts ascending (stably), takes the cumulative softmax and removes tokens whose cumulative
    /// probability is ≤ 1 − p. Counted from the top, a token survives iff the mass ranked strictly above it is
    /// &lt; p. Only that boundary matters, not the order, so instead of sorting: bucket the tokens by logit
    /// (1/16 logit wide, counted down from the max) and sum each bucket's mass; walking the buckets from the top,
    /// those before the one where the mass reaches p survive whole, those after it go whole, and only the tokens
    /// of that one band are ranked exactly, by a quickselect guided by mass.
    /// Ranking is by descending logit, ties by descending id (a stable ascending sort puts the lower id first,
    /// so HF removes it first).
    /// </summary>
    private int ApplyTopP(Span<float> logits, int count, float max, float topP)
    {
        const int Buckets = 256;
        const float BucketsPerLogit = 16f;
        Span<double> mass = stackalloc double[Buckets];
        mass.Clear();
        double total = 0;
        for (int j = 0; j < count; j++)
        {
            float w = _weights[j];
            mass[Bucket(logits[_ids[j]])] += w;
            total += w;
        }

        double limit = topP * total;
        double above = 0; // mass ranked above the band
        int band = 0;
        while (band < Buckets - 1 && above + mass[band] < limit) above += mass[band++];

        // Survivors above the band are compacted in place; the band goes to keys/_bandWeights.
        int kept = 0, inBand = 0;
        for (int j = 0; j < count; j++)
        {
            int id = _ids[j];
            int b = Bucket(logits[id]);
            if (b < band)
            {
                _ids[kept] = id;
                _weights[kept++] = _weights[j];
            }
            else if (b == band)
            {
                _keys[inBand] = RankKey(logits[id], id);
                _bandWeights[inBand++] = _weights[j];
            }
            else logits[id] = float.NegativeInfinity;
        }

        int survivors = SelectByMass(_keys.AsSpan(0, inBand), _bandWeights.AsSpan(0, inBand), above, limit);
        for (int j = 0; j < inBand; j++)
        {
            int id = (int)(uint)_keys[j];
            if (j < survivors)
            {
                _ids[kept] = id;
                _weights[kept++] = _bandWeights[j];
            }
            else logits[id] = float.NegativeInfinity;
        }
        return kept;

        int Bucket(float logit)
        {
            // Monotone in the logit, so a higher bucket never holds a higher logit.
            float d = (max - logit) * BucketsPerLogit;
            return d < Buckets - 1 ? (int)d : Buckets - 1;
        }
    }

    /// <summary>
    /// Reorders the band so that its survivors come first and returns how many there are: a token survives iff
    /// <paramref name="above"/> plus the weight of band tokens ranked above it is below <paramref name="limit"/>.
    /// Each pivot's rank-above mass says on which side the cut lies, so this is quickselect: expected O(n).
    /// </summary>
    private static int SelectByMass(Span<ulong> keys, Span<float> weights, double above, double limit)
    {
        int lo = 0, hi = keys.Length, rounds = 0;
        while (hi - lo > 16 && rounds++ < 64)
        {
            int p = Partition(keys, weights, lo, hi, out double greater);
            if (above + greater < limit)
            {
                above += greater + weights[p]; // the pivot and everything above it survive
                lo = p + 1;
            }
            else hi = p; // the pivot and everything below it go
        }
        if (lo < hi)
        {
            // Small (or adversarial) remainder: sort it descending and walk.
            keys[lo..hi].Sort(weights[lo..hi]);
            keys[lo..hi].Reverse();
            weights[lo..hi].Reverse();
            while (lo < hi && above < limit) above += weights[lo++];
        }
        return lo;
    }

    /// <summary>Orders like (logit, id) descending: the float's bits made monotonic, then the id.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong RankKey(float logit, int id)
    {
        uint bits = BitConverter.SingleToUInt32Bits(logit + 0f); // + 0 turns -0 into +0, which compare equal
        bits = (bits & 0x8000_0000u) != 0 ? ~bits : bits | 0x8000_0000u;
        return ((ulong)bits << 32) | (uint)id;
    }

    /// <summary>
    /// Partitions [lo, hi) around a median-of-three pivot: keys greater than it first, then the pivot, then the
    /// rest. Returns the pivot's index and the weight of the greater part.
    /// </summary>
    private static int Partition(Span<ulong> keys, Span<float> weights, int lo, int hi, out double greater)
    {
        int mid = lo + (hi - lo) / 2, last = hi - 1;
        // Median of three to last.
        if (keys[mid] > keys[lo]) Swap(keys, weights, mid, lo);
        if (keys[last] > keys[lo]) Swap(keys, weights, last, lo);
        if (keys[mid] > keys[last]) Swap(keys, weights, mid, last);
        ulong pivot = keys[last];
        greater = 0;
        int store = lo;
        for (int j = lo; j < last; j++)
        {
            if (keys[j] > pivot)
            {
                greater += weights[j];
                Swap(keys, weights, store++, j);
            }
        }
        Swap(keys, weights, store, last);
        return store;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Swap(Span<ulong> keys, Span<float> weights, int a, int b)
    {
        (keys[a], keys[b]) = (keys[b], keys[a]);
        (weights[a], weights[b]) = (weights[b], weights[a]);
    }

    /// <summary>
    /// HF removes probs &lt; min_p · max prob. The weights are probabilities relative to the max token
    /// (whose weight is exactly 1), so that is weight &lt; min_p.
    /// </summary>
    private int ApplyMinP(Span<float> logits, int count, float minP)
    {
        int kept = 0;
        for (int j = 0; j < count; j++)
        {
            int id = _ids[j];
            float w = _weights[j];
            if (w >= minP)
            {
                _ids[kept] = id;
                _weights[kept++] = w;
            }
            else logits[id] = float.NegativeInfinity;
        }
        return kept;
    }
}
