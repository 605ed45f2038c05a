namespace FastMM.Kv;

/// <summary>How a KV cache stores each token's keys and values.</summary>
public enum KvCacheType
{
    /// <summary>As computed: KvHeads·HeadDim floats per token for K and for V.</summary>
    F32,
    /// <summary>
    /// Symmetric int8 with one float scale per (token, KV head): q = clamp(round(x / s), ±127), s = max|x| / 127 over
    /// the head's HeadDim values. A quarter of the F32 pool plus the scales; attention dequantizes as it reads.
    /// </summary>
    Int8,
}

/// <summary>
/// Backend memory for a paged KV cache: per layer, a pool of blocks of BlockSize token rows (KvHeads·HeadDim values
/// each, of the storage's <see cref="Type"/>) for K and for V.
/// </summary>
public abstract class KvCacheStorage : IDisposable
{
    public int Layers { get; protected init; }
    public int KvHeads { get; protected init; }
    public int HeadDim { get; protected init; }
    public int BlockSize { get; protected init; }
    public int Blocks { get; protected init; }
    public KvCacheType Type { get; protected init; }
    /// <summary>Memory held by the pools (K, V and, for int8, their scales).</summary>
    public abstract long Bytes { get; }
    public abstract void Dispose();
}

/// <summary>
/// The runtime's KV-cache manager: one preallocated block pool shared by all sequences, handed out in blocks as
/// sequences grow (vLLM-style paging), so a token never allocates and memory follows actual lengths. Thread-safe.
/// </summary>
public sealed class KvCache : IDisposable
{
    private readonly Stack<int> _free;
    private readonly object _gate = new();
    public KvCacheStorage Storage { get; }
    public KvCacheType Type => Storage.Type;
    /// <summary>Memory held by the preallocated pool, whatever is in use.</summary>
    public long Bytes => Storage.Bytes;
    public int BlockSize => Storage.BlockSize;
    public int FreeBlocks { get { lock (_gate) return _free.Count; } }
    public int CapacityTokens => Storage.Blocks * Storage.BlockSize;

    public KvCache(IBackend backend, int layers, int kvHeads, int headDim, int capacityTokens, int blockSize = 16, KvCacheType type = KvCacheType.F32)
    {
        if (capacityTokens < 1 || blockSize < 1) throw new ArgumentOutOfRangeException(nameof(capacityTokens));
        int blocks = (capacityTokens + blockSize - 1) / blockSize;
        Storage = backend.CreateKvCache(layers, kvHeads, headDim, blockSize, blocks, type);
        _free = new Stack<int>(Enumerable.Range(0, blocks).Reverse());
    }

    /// <summary>A new empty sequence that may grow to maxTokens (its block table is allocated now, its blocks on demand).</summary>
    public KvSequence NewSequence(int maxTokens) => new(this, (maxTokens + BlockSize - 1) / BlockSize);

    /// <summary>Makes sure the sequence owns blocks for `length` tokens; fails clearly when the pool or its limit is exhausted.</summary>
    internal void Reserve(KvSequence s, int length)
    {
        int need = (length + BlockSize - 1) / BlockSize;
        if (need > s.Table.Length)
            throw new FastMMException($"sequence of {length} tokens exceeds its limit of {s.Table.Length * BlockSize} tokens");
        lock (_gate)
        {
            if (need - s.BlockCount > _free.Count)
                throw new FastMMException($"KV cache is full: {length} tokens need {need - s.BlockCount} more blocks of {BlockSize}, {_free.Count} free (capacity {CapacityTokens} tokens)");
            while (s.BlockCount < need) s.Table[s.BlockCount++] = _free.Pop();
        }
    }

    internal void Return(KvSequence s)
    {
        lock (_gate)
            for (int i = 0; i < s.BlockCount; i++) _free.Push(s.Table[i]);
        s.BlockCount = 0;
    }

    public void Dispose() => Storage.Dispose();
}

/// <summary>One sequence's view of the cache: its block table and how many tokens are cached. Dispose returns its blocks.</summary>
public sealed class KvSequence : IDisposable
{
    private readonly KvCache _cache;
    internal readonly int[] Table;
    internal int BlockCount;
    public int Length { get; private set; }

    internal KvSequence(KvCache cache, int maxBlocks) { _cache = cache; Table = new int[maxBlocks]; }

    public int MaxTokens => Table.Length * _cache.BlockSize;
    public KvCacheStorage Storage => _cache.Storage;
    public ReadOnlySpan<int> BlockTable => Table.AsSpan(0, BlockCount);

    /// <summary>Reserves room for `count` more tokens (call before writing them).</summary>
    public void Reserve(int count) => _cache.Reserve(this, Length + count);

    /// <summary>Marks `count` reserved tokens as written.</summary>
    public void Advance(int count)
    {
        if (Length + count > BlockCount * _cache.BlockSize) throw new InvalidOperationException("advance past reserved blocks");
        Length += count;
    }

    /// <summary>Forgets tokens after `length` (e.g. to reuse a shared prefix); their blocks stay reserved.</summary>
    public void Truncate(int length) => Length = Math.Clamp(length, 0, Length);

    public void Dispose() { _cache.Return(this); Length = 0; }
}
