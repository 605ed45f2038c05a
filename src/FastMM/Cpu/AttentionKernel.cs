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
        long hd = (long)heads * headDim;
        if (q.Length < batch * tq * hd || o.Length < batch * tq * hd || k.Length < batch * tk * hd || v.Length < batch * tk * hd)
            throw new ArgumentException("Attention: q/k/v/o spans are shorter than their shapes");
        if (keyMask.Length != 0 && keyMask.Length < (long)batch * tk) throw new ArgumentException("Attention: key mask is shorter than [B, Tk]");
        if (batch == 0 || tq == 0 || heads == 0 || headDim == 0) return;
        fixed (float* pq = q) fixed (float* pk = k) fixed (float* pv = v) fixed (float* po = o) fixed (float* pm = keyMask)
        {
            var job = t_job ??= new AttentionJob();
            job.Setup(pq, pk, pv, po, keyMask.Length == 0 ? null : pm, batch, tq, tk, heads, headDim, scale, causal, CpuFeatures.Level);
            try { CpuParallel.Run(job, job.Tasks); }
            finally { job.Clear(); }
        }
    }

    [ThreadStatic] private static AttentionJob? t_job;

    private sealed class AttentionJob : CpuParallel.IWork
    {
        private float* _q, _k, _v, _o, _mask;
        private int _batch, _tq, _tk, _heads, _d, _qBlocks, _maxBlock, _mr, _vPanels;
        private float _scale;
        private bool _causal;
        private SimdLevel _level;
        public int Tasks;

        [ThreadStatic] private static AlignedBuffer? t_scratch;

        public void Setup(float* q, float* k, float* v, float* o, float* mask, int batch, int tq, int tk, int heads, int d,
            float scale, bool causal, SimdLevel level)
        {
            _q = q; _k = k; _v = v; _o = o; _mask = mask; _batch = batch; _tq = tq; _tk = tk; _heads = heads; _d = d;
            _scale = scale; _causal = causal; _level = level;
            _mr = GemmKernels.MaxRows(level);
            // Query blocks of up to 4 micro-kernel tiles: big enough to amortise packing each K/V block, small enough
            // to give the pool many tasks.
            int maxBlock = 4 * _mr;
            _qBlocks = (tq + maxBlock - 1) / maxBlock;
            _maxBlock = (tq + _qBlocks - 1) / _qBlocks;
            _vPanels = (d + W - 1) / W;
            Tasks = batch * heads * _qBlocks;
        }

        public void Clear() { _q = _k = _v = _o = _mask = null; }

        private static int Align16(int n) => (n + 15) & ~15;

        public void Execute(int task)
        {
            int qb = task % _qBlocks, h = task / _qBlocks % _heads, b = task / _qBlocks / _heads;
            int q0 = (int)((long)qb * _tq / _qBlocks), nq = (int)((long)(qb + 1) * _tq / _qBlocks) - q0;
            int d = _d, tq = _tq, tk = _tk, mr = _mr, dv = _vPanels * W;
            long hd = (long)_heads * d;
            int tiles = (nq + mr - 1) / mr;
            int offset = tk - tq; // causal: query i sees keys ≤ i + offset

            // Keys beyond what the block's last query may see are never touched.
            int kEnd = _causal ? Math.Clamp(q0 + nq - 1 + offset + 1, 0, tk) : tk;

            // Scratch layout (each part 64-byte aligned).
            int qSize = Align16(_maxBlock * d), ktSize = 2 * d * W, sSize = _maxBlock * KeyBlock, pSize = Align16(KeyBlock * _maxBlock),
                vSize = _vPanels * KeyBlock * W, oSize = _maxBlock * dv, rowSize = Align16(_maxBlock);
            float* scratch = (t_scratch ??= new AlignedBuffer()).Get(qSize + ktSize + sSize + pSize + vSize + oSize + 2 * rowSize);
            float* qPack = scratch, kt = qPack + qSize, s = kt + ktSize, pPack = s + sSize, vPack = pPack + pSize,
                oAcc = vPack + vSize, rowMax = oAcc + oSize, rowSum = rowMax + rowSize;

            if (kEnd > 0)
            {
                // Q tiles packed d-major ([d][rows]) with the softmax scale folded in.
                for (int t = 0; t < tiles; t++)
                {
                    int r0 = t * nq / tiles, rows = (t + 1) * nq / tiles - r0;
                    float* tile = qPack + r0 * d;
                    for (int i = 0; i < rows; i++)
                    {
                        float* src = _q + ((long)b * tq + q0 + r0 + i) * hd + (long)h * d;
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

                // Kᵀ block as 32-key panels ([d][32]), so S = Q·Kᵀ is a GEMM with the keys as columns.
                for (int p = 0; p < kPanels; p++)
                {
                    float* panel = kt + p * d * W;
                    for (int c = 0; c < W; c++)
                    {
                        int key = j0 + p * W + c;
                        if (key < j0 + cnt)
                        {
                            float* src = _k + ((long)b * tk + key) * hd + (long)h * d;
                            for (int j = 0; j < d; j++) panel[j * W + c] = src[j];
                        }
                        else for (int j = 0; j < d; j++) panel[j * W + c] = 0f;
                    }
                }
                for (int p = 0; p < kPanels; p++)
                    for (int t = 0; t < tiles; t++)
                    {
                        int r0 = t * nq / tiles, rows = (t + 1) * nq / tiles - r0;
                        GemmKernels.Tile(_level, rows, d, qPack + r0 * d, kt + p * d * W, s + r0 * KeyBlock + p * W, KeyBlock, null, false);
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
                {
                    float* panel = vPack + p * KeyBlock * W;
                    int cols = Math.Min(W, d - p * W);
                    for (int j = 0; j < cnt; j++)
                    {
                        float* src = _v + ((long)b * tk + j0 + j) * hd + (long)h * d + p * W;
                        float* dst = panel + j * W;
                        new ReadOnlySpan<float>(src, cols).CopyTo(new Span<float>(dst, cols));
                        if (cols < W) new Span<float>(dst + cols, W - cols).Clear();
                    }
                }
                for (int p = 0; p < _vPanels; p++)
                    for (int t = 0; t < tiles; t++)
                    {
                        int r0 = t * nq / tiles, rows = (t + 1) * nq / tiles - r0;
                        GemmKernels.Tile(_level, rows, cnt, pPack + r0 * cnt, vPack + p * KeyBlock * W, oAcc + r0 * dv + p * W, dv, null, true);
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
