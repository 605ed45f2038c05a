using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using System.Runtime.CompilerServices;

namespace FastMM.Cpu;

/// <summary>
/// An HF Linear weight W [N, K] (row-major, out × in) packed once for the GEMM micro-kernels: N is cut into panels of
/// 32 output columns (the last one zero-padded) and each panel stores, for k = 0..K−1, its 32 weights W[n, k]
/// contiguously. A K-block of a panel is therefore one contiguous, 64-byte aligned stream, whatever the block size.
/// </summary>
public sealed unsafe class PackedWeight
{
    public int N { get; }
    public int K { get; }
    internal int Panels => (N + GemmKernels.PanelWidth - 1) / GemmKernels.PanelWidth;
    private readonly AlignedBuffer _data;
    internal float* Data => _data.Get(0);

    private PackedWeight(int n, int k, AlignedBuffer data) { N = n; K = k; _data = data; }

    public static PackedWeight Pack(ReadOnlySpan<float> w, int n, int k)
    {
        if (n < 1 || k < 1) throw new ArgumentException($"weight must be at least 1x1, got {n}x{k}");
        if (w.Length != (long)n * k) throw new ArgumentException($"weight has {w.Length} elements, expected {n}x{k}");
        int panels = (n + GemmKernels.PanelWidth - 1) / GemmKernels.PanelWidth;
        var data = AlignedBuffer.Exact(checked(panels * GemmKernels.PanelWidth * k));
        fixed (float* src = w) Gemm.PackPanels(src, n, k, data.Get(0));
        return new PackedWeight(n, k, data);
    }
}

/// <summary>
/// CPU matrix products: a packed, cache-blocked, multi-threaded SIMD GEMM in the GotoBLAS/BLIS style.
/// C is cut into (M-block × N-block) tasks run on <see cref="CpuParallel"/>; inside a task the K loop is blocked so a
/// packed A block (≤ <see cref="MaxMc"/> × <see cref="MaxKc"/>) stays in L2 while each 32-wide B panel slice streams
/// through L1 once per A tile row-group, and the micro-kernel keeps a rows × 32 tile of C in registers.
/// </summary>
public static unsafe class Gemm
{
    /// <summary>K-block: an A micro-panel (12 × kc) plus a B panel slice (kc × 32) fit in the 48 KiB L1d.</summary>
    internal static int MaxKc = 256;
    /// <summary>M-block: the packed A block (mc × kc floats) should sit in L2 (1 MiB per core on Zen 5).</summary>
    internal static int MaxMc = 192;

    /// <summary>C[M, N] = A[M, K] · Wᵀ + bias (bias may be empty).</summary>
    public static void Linear(ReadOnlySpan<float> a, int m, PackedWeight w, ReadOnlySpan<float> bias, Span<float> c)
    {
        int n = w.N, k = w.K;
        if (a.Length < (long)m * k) throw new ArgumentException($"A has {a.Length} elements, expected {m}x{k}");
        if (c.Length < (long)m * n) throw new ArgumentException($"C has {c.Length} elements, expected {m}x{n}");
        if (bias.Length != 0 && bias.Length != n) throw new ArgumentException($"bias has {bias.Length} elements, expected {n}");
        if (m == 0) return;
        fixed (float* pa = a) fixed (float* pb = bias) fixed (float* pc = c)
        {
            if (m == 1 && CpuFeatures.Level >= SimdLevel.Avx512) Gemv(pa, k, w.Data, n, bias.Length == 0 ? null : pb, pc);
            else Run(pa, m, k, w.Data, n, bias.Length == 0 ? null : pb, pc);
        }
        GC.KeepAlive(w); // only its raw pointer is used above; the pinned panels must outlive the call
    }

    // ---------------- M = 1 (decode): a bandwidth-bound matrix-vector product over the packed panels ----------------

    [ThreadStatic] private static GemvJob? t_gemv;

    private static void Gemv(float* a, int k, float* packedB, int n, float* bias, float* c)
    {
        var job = t_gemv ??= new GemvJob();
        int panels = (n + GemmKernels.PanelWidth - 1) / GemmKernels.PanelWidth;
        job.Setup(a, k, packedB, n, panels, bias, c, Math.Min(panels, CpuParallel.Threads));
        CpuParallel.Run(job, job.Tasks);
        job.Clear();
    }

    /// <summary>Each task streams a contiguous run of panels once; two k-interleaved accumulator pairs and a software prefetch keep loads in flight.</summary>
    private sealed class GemvJob : CpuParallel.IWork
    {
        private float* _a, _b, _bias, _c;
        private int _k, _n, _panels;
        public int Tasks;

        public void Setup(float* a, int k, float* b, int n, int panels, float* bias, float* c, int tasks)
        {
            _a = a; _k = k; _b = b; _n = n; _panels = panels; _bias = bias; _c = c; Tasks = tasks;
        }

        public void Clear() { _a = _b = _bias = _c = null; }

        public void Execute(int task)
        {
            const int W = GemmKernels.PanelWidth;
            int p0 = (int)((long)task * _panels / Tasks), p1 = (int)((long)(task + 1) * _panels / Tasks);
            int k = _k;
            float* tmp = stackalloc float[W];
            for (int p = p0; p < p1; p++)
            {
                float* bp = _b + (long)p * W * k;
                Vector512<float> s0 = default, s1 = default, t0 = default, t1 = default;
                int kk = 0;
                for (; kk + 2 <= k; kk += 2)
                {
                    float* row = bp + (long)kk * W;
                    Sse.Prefetch0(row + 16 * W); // 2 KiB ahead in this panel's stream
                    var x0 = Vector512.Create(_a[kk]);
                    var x1 = Vector512.Create(_a[kk + 1]);
                    s0 = Avx512F.FusedMultiplyAdd(x0, Vector512.Load(row), s0);
                    s1 = Avx512F.FusedMultiplyAdd(x0, Vector512.Load(row + 16), s1);
                    t0 = Avx512F.FusedMultiplyAdd(x1, Vector512.Load(row + W), t0);
                    t1 = Avx512F.FusedMultiplyAdd(x1, Vector512.Load(row + W + 16), t1);
                }
                if (kk < k)
                {
                    float* row = bp + (long)kk * W;
                    var x0 = Vector512.Create(_a[kk]);
                    s0 = Avx512F.FusedMultiplyAdd(x0, Vector512.Load(row), s0);
                    s1 = Avx512F.FusedMultiplyAdd(x0, Vector512.Load(row + 16), s1);
                }
                s0 += t0; s1 += t1;
                int n0 = p * W, cols = Math.Min(W, _n - n0);
                if (_bias != null && cols == W) { s0 += Vector512.Load(_bias + n0); s1 += Vector512.Load(_bias + n0 + 16); }
                if (cols == W) { s0.Store(_c + n0); s1.Store(_c + n0 + 16); continue; }
                s0.Store(tmp); s1.Store(tmp + 16);
                for (int j = 0; j < cols; j++) _c[n0 + j] = tmp[j] + (_bias != null ? _bias[n0 + j] : 0f);
            }
        }
    }

    /// <summary>C[M, N] = A[M, K] · B[N, K]ᵀ for two activations: B is packed on the fly into a reusable per-thread buffer.</summary>
    public static void MatMulTransposed(ReadOnlySpan<float> a, int m, ReadOnlySpan<float> b, int n, int k, Span<float> c)
    {
        if (a.Length < (long)m * k || b.Length < (long)n * k || c.Length < (long)m * n)
            throw new ArgumentException($"MatMulTransposed: spans too short for [{m}x{k}]·[{n}x{k}]ᵀ");
        if (m == 0 || n == 0) return;
        if (k == 0) { c.Slice(0, m * n).Clear(); return; }
        int panels = (n + GemmKernels.PanelWidth - 1) / GemmKernels.PanelWidth;
        var buffer = t_transposedB ??= new AlignedBuffer();
        float* packed = buffer.Get(checked(panels * GemmKernels.PanelWidth * k));
        fixed (float* pa = a) fixed (float* pb = b) fixed (float* pc = c)
        {
            PackPanels(pb, n, k, packed);
            Run(pa, m, k, packed, n, null, pc);
        }
    }

    [ThreadStatic] private static AlignedBuffer? t_transposedB;
    [ThreadStatic] private static GemmJob? t_job;

    /// <summary>Packs B [n, k] (row-major) into 32-column panels, zero-padding the last panel.</summary>
    internal static void PackPanels(float* src, int n, int k, float* dst)
    {
        const int W = GemmKernels.PanelWidth;
        int panels = (n + W - 1) / W;
        // Weights are packed at load: spread the panels over the pool (each panel is independent).
        nint s = (nint)src, d = (nint)dst;
        CpuParallel.For(panels, p => PackPanel((float*)s, n, k, (float*)d, p));
    }

    private static void PackPanel(float* src, int n, int k, float* dst, int p)
    {
        const int W = GemmKernels.PanelWidth;
        float* panel = dst + (long)p * W * k;
        // Walk k in cache-sized strips so the 32 source rows being interleaved stay in L1.
        const int Strip = 64;
        for (int k0 = 0; k0 < k; k0 += Strip)
        {
            int k1 = Math.Min(k, k0 + Strip);
            for (int j = 0; j < W; j++)
            {
                int row = p * W + j;
                if (row < n)
                {
                    float* s = src + (long)row * k;
                    for (int kk = k0; kk < k1; kk++) panel[(long)kk * W + j] = s[kk];
                }
                else
                {
                    for (int kk = k0; kk < k1; kk++) panel[(long)kk * W + j] = 0f;
                }
            }
        }
    }

    private static void Run(float* a, int m, int k, float* packedB, int n, float* bias, float* c)
    {
        var job = t_job ??= new GemmJob();
        job.Setup(a, m, k, packedB, n, bias, c, CpuFeatures.Level, CpuParallel.Threads);
        if (job.PackTasks > 0)
        {
            // Several N-blocks would each re-pack the same A blocks: pack all of A once, in parallel, first.
            job.Packing = true;
            CpuParallel.Run(job, job.PackTasks);
            job.Packing = false;
        }
        CpuParallel.Run(job, job.Tasks);
        job.Clear();
    }

    /// <summary>
    /// One GEMM call's blocking plan; reused per calling thread so a call allocates nothing. Task t covers
    /// M-block (t mod mBlocks) × N-block (t div mBlocks).
    /// </summary>
    private sealed class GemmJob : CpuParallel.IWork
    {
        private float* _a, _b, _bias, _c;
        private int _m, _k, _n, _kc, _kBlocks, _mr, _mBlocks, _panelsPerBlock, _panels;
        private SimdLevel _level;
        public int Tasks, PackTasks;
        public bool Packing;
        /// <summary>All of A packed (when N is split over several tasks): M-block mb, K-block at pc starts at m0·K + pc·mc.</summary>
        private float* _sharedA;
        private readonly AlignedBuffer _sharedABuffer = new();

        [ThreadStatic] private static AlignedBuffer? t_packA;

        public void Setup(float* a, int m, int k, float* b, int n, float* bias, float* c, SimdLevel level, int threads)
        {
            _a = a; _m = m; _k = k; _b = b; _n = n; _bias = bias; _c = c; _level = level;
            _mr = GemmKernels.MaxRows(level);
            int kBlocks = (k + MaxKc - 1) / MaxKc;
            _kc = (k + kBlocks - 1) / kBlocks;            // balanced K blocks: no sliver at the end
            _mBlocks = (m + MaxMc - 1) / MaxMc;
            _panels = (n + GemmKernels.PanelWidth - 1) / GemmKernels.PanelWidth;
            // Enough tasks for dynamic load balancing (other processes share the cores), but few N-blocks,
            // because every N-block re-packs its A block.
            int targetTasks = threads > 1 ? 4 * threads : 1;
            int nBlocks = Math.Clamp((targetTasks + _mBlocks - 1) / _mBlocks, 1, _panels);
            _panelsPerBlock = (_panels + nBlocks - 1) / nBlocks;
            nBlocks = (_panels + _panelsPerBlock - 1) / _panelsPerBlock;
            Tasks = _mBlocks * nBlocks;
            _kBlocks = kBlocks;
            PackTasks = nBlocks > 1 ? _mBlocks * kBlocks : 0;
            _sharedA = PackTasks > 0 ? _sharedABuffer.Get(checked(m * k)) : null;
        }

        public void Clear() { _a = _b = _bias = _c = _sharedA = null; }

        private (int M0, int Mc) MBlock(int mb)
        {
            int m0 = (int)((long)mb * _m / _mBlocks);
            return (m0, (int)((long)(mb + 1) * _m / _mBlocks) - m0);
        }

        public void Execute(int task)
        {
            if (Packing)
            {
                int pmb = task % _mBlocks, kb = task / _mBlocks;
                var (pm0, pmc) = MBlock(pmb);
                int pc0 = kb * _kc, pkc = Math.Min(_kc, _k - pc0);
                if (pkc <= 0) return;
                PackA(_a + (long)pm0 * _k + pc0, _k, pmc, pkc, (pmc + _mr - 1) / _mr, _sharedA + (long)pm0 * _k + (long)pc0 * pmc);
                return;
            }
            Compute(task);
        }

        private void Compute(int task)
        {
            const int W = GemmKernels.PanelWidth;
            int mb = task % _mBlocks, nb = task / _mBlocks;
            int m0 = (int)((long)mb * _m / _mBlocks), mc = (int)((long)(mb + 1) * _m / _mBlocks) - m0;
            int p0 = nb * _panelsPerBlock, p1 = Math.Min(_panels, p0 + _panelsPerBlock);
            int mr = _mr, tiles = (mc + mr - 1) / mr;
            float* packA = _sharedA != null ? null : (t_packA ??= new AlignedBuffer()).Get(mc * _kc);
            float* edge = stackalloc float[12 * W]; // a tile that overhangs N is computed here, then copied
            nint ldc = _n;

            for (int pc = 0; pc < _k; pc += _kc)
            {
                int kc = Math.Min(_kc, _k - pc);
                bool accumulate = pc > 0;
                float* aBlock;
                if (_sharedA != null) aBlock = _sharedA + (long)m0 * _k + (long)pc * mc;
                else { PackA(_a + (long)m0 * _k + pc, _k, mc, kc, tiles, packA); aBlock = packA; }
                for (int p = p0; p < p1; p++)
                {
                    int n0 = p * W, cols = Math.Min(W, _n - n0);
                    float* bPanel = _b + (long)p * W * _k + (long)pc * W;
                    float* bias = !accumulate && _bias != null ? _bias + n0 : null;
                    for (int t = 0; t < tiles; t++)
                    {
                        int r0 = t * mc / tiles, rows = (t + 1) * mc / tiles - r0;
                        float* aTile = aBlock + (long)r0 * kc;
                        float* cTile = _c + (long)(m0 + r0) * ldc + n0;
                        if (cols == W)
                        {
                            GemmKernels.Tile(_level, rows, kc, aTile, bPanel, cTile, ldc, bias, accumulate);
                        }
                        else
                        {
                            GemmKernels.Tile(_level, rows, kc, aTile, bPanel, edge, W, null, false);
                            for (int i = 0; i < rows; i++)
                                for (int j = 0; j < cols; j++)
                                {
                                    float v = edge[i * W + j];
                                    float* dst = cTile + i * ldc + j;
                                    *dst = accumulate ? *dst + v : bias != null ? v + bias[j] : v;
                                }
                        }
                    }
                }
            }
        }

        /// <summary>
        /// Packs an mc × kc block of A (row stride lda) as consecutive tiles of balanced heights, each stored k-major
        /// ([kc][rows]) so the micro-kernel's broadcasts read one contiguous stream.
        /// </summary>
        private static void PackA(float* a, nint lda, int mc, int kc, int tiles, float* dst)
        {
            for (int t = 0; t < tiles; t++)
            {
                int r0 = t * mc / tiles, rows = (t + 1) * mc / tiles - r0;
                float* tile = dst + (long)r0 * kc;
                for (int i = 0; i < rows; i++)
                {
                    float* src = a + (r0 + i) * lda;
                    float* d = tile + i;
                    for (int kk = 0; kk < kc; kk++) d[kk * rows] = src[kk];
                }
            }
        }
    }
}
