using System.Numerics.Tensors;

namespace FastMM.Cpu;

/// <summary>
/// Fused multi-head attention on the CPU, flash-attention style: each task owns one (batch, head, query block),
/// walks the keys in blocks of 64 with an online softmax (running max and sum per query), and never materialises more
/// than a query-block × 64 slice of the score matrix. Both products, Q·Kᵀ and P·V, run on the GEMM micro-kernels
/// (so they get the same SIMD dispatch), on small per-thread packed copies of the Q, K, P and V blocks.
/// </summary>
public static unsafe class AttentionKernel
{
    private const int KeyBlock = 64;
    private const int W = GemmKernels.PanelWidth;

    /// <summary>
    /// q [B, Tq, H·D], k/v [B, Tk, H·D] → o [B, Tq, H·D]. keyMask [B, Tk] (nonzero = keep) may be empty.
    /// Causal: query i sees keys j ≤ i + (Tk − Tq). A query with no visible key gets zeros.
    /// </summary>
    public static void Run(ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, Span<float> o,
        int batch, int tq, int tk, int heads, int headDim, float scale, bool causal, ReadOnlySpan<float> keyMask)
    {
        int hd = heads * headDim;
        Run(q, hd, k, hd, v, hd, o, batch, tq, tk, heads, headDim, scale, causal, keyMask);
    }

    /// <summary>
    /// As <see cref="Run(ReadOnlySpan{float}, ReadOnlySpan{float}, ReadOnlySpan{float}, Span{float}, int, int, int, int, int, float, bool, ReadOnlySpan{float})"/>
    /// with row strides (elements from one token to the next) for q, k and v, so they can be column slices of one
    /// fused QKV projection [B, T, 3·H·D]. The output is dense [B, Tq, H·D].
    /// </summary>
    public static void Run(ReadOnlySpan<float> q, int qStride, ReadOnlySpan<float> k, int kStride, ReadOnlySpan<float> v, int vStride, Span<float> o,
        int batch, int tq, int tk, int heads, int headDim, float scale, bool causal, ReadOnlySpan<float> keyMask)
    {
        long hd = (long)heads * headDim;
        if (qStride < hd || kStride < hd || vStride < hd) throw new ArgumentException("Attention: a row stride is smaller than H·D");
        static long Need(int rows, long stride, long width) => rows == 0 ? 0 : (rows - 1) * stride + width;
        if (q.Length < Need(batch * tq, qStride, hd) || o.Length < batch * tq * hd || k.Length < Need(batch * tk, kStride, hd) || v.Length < Need(batch * tk, vStride, hd))
            throw new ArgumentException("Attention: q/k/v/o spans are shorter than their shapes");
        if (keyMask.Length != 0 && keyMask.Length < (long)batch * tk) throw new ArgumentException("Attention: key mask is shorter than [B, Tk]");
        if (batch == 0 || tq == 0 || heads == 0 || headDim == 0) return;
        fixed (float* pq = q) fixed (float* pk = k) fixed (float* pv = v) fixed (float* po = o) fixed (float* pm = keyMask)
        {
            var job = t_job ??= new AttentionJob();
            job.Setup(pq, qStride, pk, kStride, pv, vStride, po, keyMask.Length == 0 ? null : pm, batch, tq, tk, heads, heads, headDim, scale, causal, CpuFeatures.Level, null, 0);
            RunTwoPhases(job);
        }
    }

    /// <summary>
    /// Causal attention of one sequence's new tokens over its paged KV cache, with grouped-query heads.
    /// q [tq, heads·D] (row stride qStride) holds the tokens at positions tk − tq … tk − 1; keys and values for
    /// positions 0 … tk − 1 live in the cache pools (row = kvHeads·D floats, stride kvStride) at block
    /// blockTable[pos / blockSize], row pos % blockSize. o is [tq, heads·D].
    /// </summary>
    public static void RunPaged(ReadOnlySpan<float> q, int qStride, ReadOnlySpan<float> kPool, ReadOnlySpan<float> vPool, int kvStride,
        ReadOnlySpan<int> blockTable, int blockSize, Span<float> o, int tq, int tk, int heads, int kvHeads, int headDim, float scale)
    {
        CheckPaged(q.Length, qStride, Math.Min(kPool.Length, vPool.Length), long.MaxValue, kvStride, blockTable, blockSize, o.Length, tq, tk, heads, kvHeads, headDim);
        if (tq == 0) return;
        fixed (float* pq = q) fixed (float* pk = kPool) fixed (float* pv = vPool) fixed (float* po = o) fixed (int* pt = blockTable)
        {
            if (DecodesInline(tq, tk, heads))
            {
                DecodeInline(new F32Rows(pk, pv, kvStride, headDim), pq, pt, blockSize, po, tk, heads, kvHeads, headDim, scale);
                return;
            }
            var job = t_job ??= new AttentionJob();
            job.Setup(pq, qStride, pk, kvStride, pv, kvStride, po, null, 1, tq, tk, heads, kvHeads, headDim, scale, causal: true, CpuFeatures.Level, pt, blockSize);
            RunTwoPhases(job);
        }
    }

    /// <summary>
    /// As <see cref="RunPaged(ReadOnlySpan{float}, int, ReadOnlySpan{float}, ReadOnlySpan{float}, int, ReadOnlySpan{int}, int, Span{float}, int, int, int, int, int, float)"/>
    /// over an int8 cache: pool row r holds kvHeads·D int8 values (stride kvStride), and head g of row r reads back as
    /// scales[r·kvHeads + g] · value. Dequantized as read: per key in the decode loop, into the per-call K/V packs otherwise.
    /// </summary>
    public static void RunPaged(ReadOnlySpan<float> q, int qStride, ReadOnlySpan<sbyte> kPool, ReadOnlySpan<sbyte> vPool,
        ReadOnlySpan<float> kScales, ReadOnlySpan<float> vScales, int kvStride,
        ReadOnlySpan<int> blockTable, int blockSize, Span<float> o, int tq, int tk, int heads, int kvHeads, int headDim, float scale)
    {
        CheckPaged(q.Length, qStride, Math.Min(kPool.Length, vPool.Length), Math.Min(kScales.Length, vScales.Length) / Math.Max(kvHeads, 1), kvStride,
            blockTable, blockSize, o.Length, tq, tk, heads, kvHeads, headDim);
        if (tq == 0) return;
        var level = CpuFeatures.Level;
        fixed (float* pq = q) fixed (sbyte* pk = kPool) fixed (sbyte* pv = vPool) fixed (float* pks = kScales) fixed (float* pvs = vScales)
        fixed (float* po = o) fixed (int* pt = blockTable)
        {
            if (DecodesInline(tq, tk, heads))
            {
                DecodeInline(new Int8Rows(pk, pv, pks, pvs, kvStride, kvHeads, headDim, level), pq, pt, blockSize, po, tk, heads, kvHeads, headDim, scale);
                return;
            }
            var job = t_job ??= new AttentionJob();
            job.Setup(pq, qStride, null, kvStride, null, kvStride, po, null, 1, tq, tk, heads, kvHeads, headDim, scale, causal: true, level, pt, blockSize);
            job.SetInt8Pools(pk, pv, pks, pvs);
            RunTwoPhases(job);
        }
    }

    /// <summary>Shapes and block-table entries against the pools: poolValues values per pool, scaleRows rows of scales (int8).</summary>
    private static void CheckPaged(long qLength, int qStride, long poolValues, long scaleRows, int kvStride, ReadOnlySpan<int> blockTable, int blockSize,
        long oLength, int tq, int tk, int heads, int kvHeads, int headDim)
    {
        if (heads % kvHeads != 0) throw new ArgumentException($"Attention: {heads} query heads are not a multiple of {kvHeads} KV heads");
        if (tq > tk || tq < 0) throw new ArgumentException($"Attention: {tq} new tokens but only {tk} cached");
        if ((long)blockTable.Length * blockSize < tk) throw new ArgumentException("Attention: the block table does not cover the sequence");
        if (kvStride < kvHeads * headDim || oLength < (long)tq * heads * headDim || qLength < (long)Math.Max(0, tq - 1) * qStride + heads * headDim)
            throw new ArgumentException("Attention: q/o/cache spans are shorter than their shapes");
        long poolRows = Math.Min(kvStride > 0 ? poolValues / kvStride : long.MaxValue, scaleRows);
        foreach (int blk in blockTable[..((tk + blockSize - 1) / blockSize)])
            if (blk < 0 || (long)(blk + 1) * blockSize > poolRows)
                throw new ArgumentException($"Attention: block {blk} is outside the cache pool");
    }

    /// <summary>Decode over a short context: packing and two pool hand-offs would cost more than the dot products.</summary>
    private static bool DecodesInline(int tq, int tk, int heads) => tq == 1 && (long)tk * heads < 8192;

    /// <summary>Phase 1 packs Kᵀ and V once per (batch, KV head); phase 2's query blocks all read those packs.</summary>
    private static void RunTwoPhases(AttentionJob job)
    {
        try
        {
            job.Packing = true;
            CpuParallel.Run(job, job.PackTasks);
            job.Packing = false;
            CpuParallel.Run(job, job.Tasks);
        }
        finally { job.Clear(); }
    }

    /// <summary>How the decode loop reads one KV head's key and value rows of a paged cache (a struct, so each cache type gets its own compiled loop).</summary>
    private interface IKvRows
    {
        /// <summary>q · K[row, head] over d values.</summary>
        float DotKey(float* q, long row, int head);
        /// <summary>o += weight · V[row, head] over d values.</summary>
        void AddValue(long row, int head, float weight, float* o);
    }

    private readonly struct F32Rows(float* k, float* v, int stride, int d) : IKvRows
    {
        public float DotKey(float* q, long row, int head)
            => TensorPrimitives.Dot(new ReadOnlySpan<float>(q, d), new ReadOnlySpan<float>(k + row * stride + (long)head * d, d));

        public void AddValue(long row, int head, float weight, float* o)
        {
            var oh = new Span<float>(o, d);
            TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(v + row * stride + (long)head * d, d), weight, oh, oh);
        }
    }

    /// <summary>Int8 rows: the scale is applied once per dot product and folded into each value's weight.</summary>
    private readonly struct Int8Rows(sbyte* k, sbyte* v, float* kScales, float* vScales, int stride, int kvHeads, int d, SimdLevel level) : IKvRows
    {
        public float DotKey(float* q, long row, int head)
            => Int8Kernels.Dot(level, q, k + row * stride + (long)head * d, d) * kScales[row * kvHeads + head];

        public void AddValue(long row, int head, float weight, float* o)
            => Int8Kernels.MultiplyAdd(level, v + row * stride + (long)head * d, weight * vScales[row * kvHeads + head], o, d);
    }

    private static void DecodeInline<TRows>(TRows rows, float* q, int* table, int blockSize, float* o,
        int tk, int heads, int kvHeads, int d, float scale) where TRows : struct, IKvRows
    {
        int group = heads / kvHeads;
        Span<float> p = stackalloc float[tk];
        for (int h = 0; h < heads; h++)
        {
            int g = h / group;
            float* qh = q + (long)h * d;
            float max = float.NegativeInfinity;
            for (int j = 0; j < tk; j++)
            {
                long row = (long)table[j / blockSize] * blockSize + j % blockSize;
                float sc = rows.DotKey(qh, row, g) * scale;
                p[j] = sc;
                if (sc > max) max = sc;
            }
            TensorPrimitives.Subtract(p, max, p);
            TensorPrimitives.Exp(p, p);
            float inv = 1f / TensorPrimitives.Sum(p);
            float* oh = o + (long)h * d;
            new Span<float>(oh, d).Clear();
            for (int j = 0; j < tk; j++)
            {
                long row = (long)table[j / blockSize] * blockSize + j % blockSize;
                rows.AddValue(row, g, p[j] * inv, oh);
            }
        }
    }

    [ThreadStatic] private static AttentionJob? t_job;

    private sealed class AttentionJob : CpuParallel.IWork
    {
        private float* _q, _k, _v, _o, _mask;
        // An int8 cache instead of _k/_v: values, and one scale per (pool row, KV head).
        private sbyte* _kInt8, _vInt8;
        private float* _kScales, _vScales;
        private int _batch, _tq, _tk, _heads, _kvHeads, _group, _d, _qBlocks, _maxBlock, _mr, _vPanels;
        private int* _blockTable;
        private int _blockSize;
        public int PackTasks;
        private long _qStride, _kStride, _vStride;
        public bool Packing;
        // Per (batch, head): Kᵀ as 32-key panels [keyPanels][d][32] then V as 32-column panels [vPanels][tkPadded][32].
        private float* _kvPacks;
        private long _kvPackSize;
        private int _keyPanels;
        private readonly AlignedBuffer _kvBuffer = new();
        private float _scale;
        private bool _causal;
        private SimdLevel _level;
        public int Tasks;

        [ThreadStatic] private static AlignedBuffer? t_scratch;

        public void Setup(float* q, long qStride, float* k, long kStride, float* v, long vStride, float* o, float* mask, int batch, int tq, int tk, int heads, int kvHeads, int d,
            float scale, bool causal, SimdLevel level, int* blockTable, int blockSize)
        {
            _kvHeads = kvHeads; _group = heads / kvHeads; _blockTable = blockTable; _blockSize = blockSize;
            _q = q; _k = k; _v = v; _qStride = qStride; _kStride = kStride; _vStride = vStride; _o = o; _mask = mask; _batch = batch; _tq = tq; _tk = tk; _heads = heads; _d = d;
            _scale = scale; _causal = causal; _level = level;
            _mr = GemmKernels.MaxRows(level);
            // Query blocks of up to 4 micro-kernel tiles: big enough to amortise packing each K/V block, small enough
            // to give the pool many tasks.
            int maxBlock = 4 * _mr;
            _qBlocks = (tq + maxBlock - 1) / maxBlock;
            _maxBlock = (tq + _qBlocks - 1) / _qBlocks;
            _vPanels = (d + W - 1) / W;
            Tasks = batch * heads * _qBlocks;
            _keyPanels = (tk + W - 1) / W;
            long tkPadded = (long)_keyPanels * W;
            _kvPackSize = ((long)_keyPanels * d * W + _vPanels * tkPadded * W + 15) & ~15L;
            PackTasks = batch * kvHeads;
            _kvPacks = _kvBuffer.Get(checked((int)(_kvPackSize * PackTasks)));
        }

        /// <summary>Reads K and V from int8 pools (after <see cref="Setup"/>, which leaves the F32 pointers null).</summary>
        public void SetInt8Pools(sbyte* k, sbyte* v, float* kScales, float* vScales) { _kInt8 = k; _vInt8 = v; _kScales = kScales; _vScales = vScales; }

        public void Clear() { _q = _k = _v = _o = _mask = _kvPacks = _kScales = _vScales = null; _kInt8 = _vInt8 = null; _blockTable = null; }

        /// <summary>Packs per (batch, KV head); query head h reads KV head h / group.</summary>
        private float* KeyPack(int b, int g) => _kvPacks + (long)(b * _kvHeads + g) * _kvPackSize;
        private float* ValuePack(int b, int g) => KeyPack(b, g) + (long)_keyPanels * _d * W;

        /// <summary>Row index of token `key` of sequence b in the K/V arrays (through the block table when paged).</summary>
        private long Row(int b, int key) => _blockTable == null ? (long)b * _tk + key : (long)_blockTable[key / _blockSize] * _blockSize + key % _blockSize;

        private void PackKeysAndValues(int task)
        {
            int h = task % _kvHeads, b = task / _kvHeads, d = _d, tk = _tk;
            long tkPadded = (long)_keyPanels * W;
            float* kt = KeyPack(b, h);
            for (int p = 0; p < _keyPanels; p++)
            {
                float* panel = kt + (long)p * d * W;
                for (int c = 0; c < W; c++)
                {
                    int key = p * W + c;
                    if (key < tk && _kInt8 != null)
                    {
                        long row = Row(b, key);
                        sbyte* src = _kInt8 + row * _kStride + (long)h * d;
                        float s = _kScales[row * _kvHeads + h];
                        for (int j = 0; j < d; j++) panel[j * W + c] = s * src[j];
                    }
                    else if (key < tk)
                    {
                        float* src = _k + Row(b, key) * _kStride + (long)h * d;
                        for (int j = 0; j < d; j++) panel[j * W + c] = src[j];
                    }
                    else for (int j = 0; j < d; j++) panel[j * W + c] = 0f;
                }
            }
            float* vp = ValuePack(b, h);
            for (int p = 0; p < _vPanels; p++)
            {
                float* panel = vp + p * tkPadded * W;
                int cols = Math.Min(W, d - p * W);
                for (int j = 0; j < tk; j++)
                {
                    long row = Row(b, j);
                    float* dst = panel + (long)j * W;
                    if (_vInt8 != null)
                        Int8Kernels.Dequantize(_level, _vInt8 + row * _vStride + (long)h * d + p * W, _vScales[row * _kvHeads + h], dst, cols);
                    else
                        new ReadOnlySpan<float>(_v + row * _vStride + (long)h * d + p * W, cols).CopyTo(new Span<float>(dst, cols));
                    if (cols < W) new Span<float>(dst + cols, W - cols).Clear();
                }
            }
        }

        private static int Align16(int n) => (n + 15) & ~15;

        public void Execute(int task)
        {
            if (Packing) { PackKeysAndValues(task); return; }
            int qb = task % _qBlocks, h = task / _qBlocks % _heads, b = task / _qBlocks / _heads;
            int q0 = (int)((long)qb * _tq / _qBlocks), nq = (int)((long)(qb + 1) * _tq / _qBlocks) - q0;
            int d = _d, tq = _tq, tk = _tk, mr = _mr, dv = _vPanels * W;
            long hd = (long)_heads * d;
            int tiles = (nq + mr - 1) / mr;
            int offset = tk - tq; // causal: query i sees keys ≤ i + offset

            // Keys beyond what the block's last query may see are never touched.
            int kEnd = _causal ? Math.Clamp(q0 + nq - 1 + offset + 1, 0, tk) : tk;

            // Scratch layout (each part 64-byte aligned).
            int qSize = Align16(_maxBlock * d), sSize = _maxBlock * KeyBlock, pSize = Align16(KeyBlock * _maxBlock),
                oSize = _maxBlock * dv, rowSize = Align16(_maxBlock);
            float* scratch = (t_scratch ??= new AlignedBuffer()).Get(qSize + sSize + pSize + oSize + 2 * rowSize);
            float* qPack = scratch, s = qPack + qSize, pPack = s + sSize,
                oAcc = pPack + pSize, rowMax = oAcc + oSize, rowSum = rowMax + rowSize;
            float* kt = KeyPack(b, h / _group), vPack = ValuePack(b, h / _group);
            long tkPadded = (long)_keyPanels * W;

            if (kEnd > 0)
            {
                // Q tiles packed d-major ([d][rows]) with the softmax scale folded in.
                for (int t = 0; t < tiles; t++)
                {
                    int r0 = t * nq / tiles, rows = (t + 1) * nq / tiles - r0;
                    float* tile = qPack + r0 * d;
                    for (int i = 0; i < rows; i++)
                    {
                        float* src = _q + ((long)b * tq + q0 + r0 + i) * _qStride + (long)h * d;
                        for (int j = 0; j < d; j++) tile[j * rows + i] = src[j] * _scale;
                    }
                }
                new Span<float>(oAcc, nq * dv).Clear();
                new Span<float>(rowMax, nq).Fill(float.NegativeInfinity);
                new Span<float>(rowSum, nq).Clear();
            }

            for (int j0 = 0; j0 < kEnd; j0 += KeyBlock)
            {
                int cnt = Math.Min(KeyBlock, kEnd - j0), kPanels = (cnt + W - 1) / W;

                // S = Q·Kᵀ over this key block's (pre-packed) 32-key panels.
                for (int p = 0; p < kPanels; p++)
                    for (int t = 0; t < tiles; t++)
                    {
                        int r0 = t * nq / tiles, rows = (t + 1) * nq / tiles - r0;
                        GemmKernels.Tile(_level, rows, d, qPack + r0 * d, kt + (long)(j0 / W + p) * d * W, s + r0 * KeyBlock + p * W, KeyBlock, null, false);
                    }

                // Masks, then the online-softmax update: rescale what was accumulated by exp(oldMax − newMax).
                for (int i = 0; i < nq; i++)
                {
                    var row = new Span<float>(s + i * KeyBlock, KeyBlock);
                    int visible = _causal ? Math.Clamp(q0 + i + offset - j0 + 1, 0, cnt) : cnt;
                    row.Slice(visible).Fill(float.NegativeInfinity);
                    if (_mask != null)
                    {
                        float* m = _mask + (long)b * tk + j0;
                        for (int j = 0; j < visible; j++) if (m[j] == 0f) row[j] = float.NegativeInfinity;
                    }
                    float newMax = Math.Max(rowMax[i], TensorPrimitives.Max(row));
                    if (float.IsNegativeInfinity(newMax)) { row.Clear(); continue; } // nothing visible yet
                    float alpha = MathF.Exp(rowMax[i] - newMax);
                    if (alpha != 1f)
                    {
                        var acc = new Span<float>(oAcc + i * dv, dv);
                        TensorPrimitives.Multiply(acc, alpha, acc);
                        rowSum[i] *= alpha;
                    }
                    rowMax[i] = newMax;
                    TensorPrimitives.Subtract(row, newMax, row);
                    TensorPrimitives.Exp(row, row);
                    rowSum[i] += TensorPrimitives.Sum(row.Slice(0, cnt));
                }

                // P tiles packed key-major ([cnt][rows]) and V as 32-wide panels ([cnt][32]): O += P·V is a GEMM.
                for (int t = 0; t < tiles; t++)
                {
                    int r0 = t * nq / tiles, rows = (t + 1) * nq / tiles - r0;
                    float* tile = pPack + r0 * cnt;
                    for (int i = 0; i < rows; i++)
                    {
                        float* src = s + (r0 + i) * KeyBlock;
                        for (int j = 0; j < cnt; j++) tile[j * rows + i] = src[j];
                    }
                }
                for (int p = 0; p < _vPanels; p++)
                    for (int t = 0; t < tiles; t++)
                    {
                        int r0 = t * nq / tiles, rows = (t + 1) * nq / tiles - r0;
                        GemmKernels.Tile(_level, rows, cnt, pPack + r0 * cnt, vPack + p * tkPadded * W + (long)j0 * W, oAcc + r0 * dv + p * W, dv, null, true);
                    }
            }

            // Normalise; a query that saw no key (masked out, or before the causal window) outputs zeros.
            for (int i = 0; i < nq; i++)
            {
                var dst = new Span<float>(_o + ((long)b * tq + q0 + i) * hd + (long)h * d, d);
                if (kEnd <= 0 || rowSum[i] <= 0f || float.IsNegativeInfinity(rowMax[i])) { dst.Clear(); continue; }
                TensorPrimitives.Multiply(new ReadOnlySpan<float>(oAcc + i * dv, d), 1f / rowSum[i], dst);
            }
        }
    }
}
