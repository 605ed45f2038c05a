using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using FastMM.Quant;

namespace FastMM.Cpu;

/// <summary>
/// Y[M, N] = X[M, K] · Wᵀ (+ bias, + activation) with W block-quantized, computed as ggml does: each row of X is quantized
/// per block of 32 to int8 once per call (float scale d and d·Σq per block), then every block product is an integer dot
/// product (vpmaddubsw/vpmaddwd or vpdpbusd, see <see cref="QuantKernels"/>) scaled in float. Weights are never
/// dequantized to floats.
/// Work is split over N: a task owns a run of weight rows and walks all of M in tiles of up to 4 rows, so its weights are
/// read from memory once (and stay in L1 across the tiles) while each activation tile is reused by every row of the run.
/// </summary>
public static unsafe class QuantGemm
{
    /// <summary>Tests and benchmarks clear it to run the plain AVX2 path on a machine that has AVX-VNNI.</summary>
    internal static bool AllowAvxVnni { get; set; } = true;

    /// <summary>The kernel path for the current <see cref="CpuFeatures.Level"/>.</summary>
    internal static QuantPath Path => CpuFeatures.Level switch
    {
        SimdLevel.Avx512 => QuantPath.Avx512,
        SimdLevel.Avx2 => AvxVnni.IsSupported && AllowAvxVnni ? QuantPath.AvxVnni : QuantPath.Avx2,
        _ => QuantPath.Scalar,
    };

    /// <summary>Activation rows per kernel call: 4 accumulators plus the shared decode fit even AVX2's 16 ymm registers.</summary>
    private const int TileRows = 4;
    /// <summary>Weight bytes a task keeps hot while it walks the M tiles (inside the 48 KiB L1d with the activation tile).</summary>
    private const int WeightRunBytes = 16 * 1024;

    [ThreadStatic] private static Job? t_job;

    /// <summary>y[M, N] = x[M, K] · wᵀ + bias (bias may be empty), then <paramref name="act"/>.</summary>
    public static void Linear(ReadOnlySpan<float> x, int m, QuantizedMatrix w, ReadOnlySpan<float> bias, Span<float> y, Activation act = Activation.None)
    {
        if (w.Format is not BlockQuantFormat format)
            throw new ArgumentException($"QuantGemm multiplies block-quantized weights; {w.Format.Name} is a plain storage format");
        int n = w.Rows, k = w.Columns;
        if (m < 0 || x.Length < (long)m * k) throw new ArgumentException($"X has {x.Length} elements, expected {m}x{k}");
        if (y.Length < (long)m * n) throw new ArgumentException($"Y has {y.Length} elements, expected {m}x{n}");
        if (bias.Length != 0 && bias.Length != n) throw new ArgumentException($"bias has {bias.Length} elements, expected {n}");
        if (m == 0) return;
        var job = t_job ??= new Job();
        fixed (float* px = x) fixed (float* pb = bias) fixed (float* py = y)
        {
            job.Setup(px, m, k, format, w.Pointer, w.RowBytes, n, pb, py, act, Path, CpuParallel.Threads);
            try
            {
                job.Quantizing = true;
                CpuParallel.Run(job, job.QuantizeTasks);
                job.Quantizing = false;
                CpuParallel.Run(job, job.Tasks);
            }
            finally { job.Clear(); }
        }
        GC.KeepAlive(w); // only its raw pointer is used above
    }

    /// <summary>Quantizes one activation row as the kernels see it (tests rebuild the exact product from this): q, d and d·Σq per block.</summary>
    internal static void QuantizeActivations(ReadOnlySpan<float> x, Span<sbyte> q, Span<float> d, Span<float> scaledSums)
    {
        int k = x.Length, blocks = k / BlockQuantFormat.ActivationBlock;
        if (k % BlockQuantFormat.ActivationBlock != 0 || q.Length < k || d.Length < blocks || scaledSums.Length < blocks)
            throw new ArgumentException("QuantizeActivations: sizes do not match");
        var u = new byte[k];
        var d8 = new float[8 * blocks];
        fixed (float* px = x) fixed (byte* pu = u) fixed (float* pd = d8) fixed (float* ps = scaledSums)
            QuantizeRow(px, k, pu, pd, ps);
        for (int i = 0; i < k; i++) q[i] = (sbyte)(u[i] - 128);
        for (int b = 0; b < blocks; b++) d[b] = d8[8 * b];
    }

    /// <summary>
    /// Per block of 32: d = amax / 127, q = round-half-even(x · (1/d)) stored as u = q + 128, d written 8 times, and d·Σq.
    /// A block whose 1/d overflows (all zero, or below ~1e-36) is stored as zeros; a NaN keeps d NaN so it reaches the
    /// output. The SIMD and scalar paths give bit-identical results for finite input.
    /// </summary>
    private static void QuantizeRow(float* x, int k, byte* u, float* d8, float* scaledSums)
    {
        int blocks = k / BlockQuantFormat.ActivationBlock;
        if (CpuFeatures.Level >= SimdLevel.Avx2)
        {
            for (int b = 0; b < blocks; b++)
            {
                float* xb = x + 32 * b;
                Vector256<float> v0 = Vector256.Load(xb), v1 = Vector256.Load(xb + 8), v2 = Vector256.Load(xb + 16), v3 = Vector256.Load(xb + 24);
                var peak = Vector256.Max(Vector256.Max(Vector256.Abs(v0), Vector256.Abs(v1)), Vector256.Max(Vector256.Abs(v2), Vector256.Abs(v3)));
                var p4 = Vector128.Max(peak.GetLower(), peak.GetUpper());
                p4 = Vector128.Max(p4, Vector128.Shuffle(p4, Vector128.Create(2, 3, 0, 1)));
                p4 = Vector128.Max(p4, Vector128.Shuffle(p4, Vector128.Create(1, 0, 3, 2)));
                float db = p4.ToScalar() / 127f, id = 1f / db;
                if (float.IsInfinity(id)) { db = 0f; id = 0f; }
                var scale = Vector256.Create(id);
                Vector256<int> i0 = Vector256.ConvertToInt32(Vector256.Round(v0 * scale)), i1 = Vector256.ConvertToInt32(Vector256.Round(v1 * scale)),
                    i2 = Vector256.ConvertToInt32(Vector256.Round(v2 * scale)), i3 = Vector256.ConvertToInt32(Vector256.Round(v3 * scale));
                var q = Vector256.Narrow(Vector256.Narrow(i0, i1), Vector256.Narrow(i2, i3));
                (q.AsByte() ^ Vector256.Create((byte)0x80)).Store(u + 32 * b);
                Vector256.Create(db).Store(d8 + 8 * b);
                scaledSums[b] = db * Vector256.Sum(i0 + i1 + i2 + i3);
            }
            return;
        }
        for (int b = 0; b < blocks; b++)
        {
            float* xb = x + 32 * b;
            float amax = 0f;
            for (int i = 0; i < 32; i++) amax = Math.Max(amax, MathF.Abs(xb[i]));
            float db = amax / 127f, id = 1f / db;
            if (float.IsInfinity(id)) { db = 0f; id = 0f; }
            int sum = 0;
            for (int i = 0; i < 32; i++)
            {
                int v = (int)MathF.Round(xb[i] * id);
                u[32 * b + i] = (byte)(v + 128);
                sum += v;
            }
            for (int i = 0; i < 8; i++) d8[8 * b + i] = db;
            scaledSums[b] = db * sum;
        }
    }

    /// <summary>One call's plan, reused per calling thread so a call allocates nothing (the activation buffer only grows).</summary>
    private sealed class Job : CpuParallel.IWork
    {
        private readonly AlignedBuffer _activations = new();
        private float* _x, _bias, _y;
        private byte* _w;
        private nint _rowBytes;
        private int _m, _k, _n, _run, _quantizeRows;
        private bool _split;
        private float* _splitScratch;
        private BlockQuantFormat? _format;
        private Activation _act;
        private QuantPath _path;
        private QuantizedRows _rows;
        public int Tasks, QuantizeTasks;
        public bool Quantizing;

        public void Setup(float* x, int m, int k, BlockQuantFormat format, byte* w, long rowBytes, int n, float* bias, float* y, Activation act, QuantPath path, int threads)
        {
            _x = x; _m = m; _k = k; _format = format; _w = w; _rowBytes = (nint)rowBytes; _n = n; _bias = bias; _y = y; _act = act; _path = path;

            int blocks = k / BlockQuantFormat.ActivationBlock;
            nint uStride = (k + 63) & ~63; // each row's bytes start on a cache line
            long uFloats = m * uStride / sizeof(float), perBlock = (long)m * blocks;
            _split = m == 1 && path == QuantPath.Avx512 && format.UsesSplitActivations;
            int splitFloats = _split ? SplitActivations.FloatsFor(blocks) : 0;
            float* buffer = _activations.Get(checked((int)(uFloats + 9 * perBlock + splitFloats + 16)));
            float* d8 = buffer + uFloats;
            _rows = new QuantizedRows((byte*)buffer, d8, d8 + 8 * perBlock, uStride, blocks);
            _splitScratch = (float*)(((nint)(d8 + 9 * perBlock) + 63) & ~(nint)63);

            // Quantizing X is cheap: split it only when it is big enough to pay for a pool hand-off.
            _quantizeRows = Math.Max(1, 16384 / k);
            QuantizeTasks = (long)m * k >= 65536 ? (m + _quantizeRows - 1) / _quantizeRows : 1;
            if (QuantizeTasks == 1) _quantizeRows = m;

            // Decode (one tile of M): a few contiguous runs per thread, for load balance on shared cores.
            // Prefill: runs small enough to stay in L1 while every M tile passes over them.
            int run = (n + 4 * threads - 1) / (4 * threads);
            if (m > TileRows) run = Math.Clamp(WeightRunBytes / (int)Math.Min(rowBytes, WeightRunBytes), 1, Math.Max(1, (n + 2 * threads - 1) / (2 * threads)));
            _run = Math.Max(1, run);
            Tasks = (n + _run - 1) / _run;
        }

        public void Clear() { _x = _bias = _y = null; _w = null; _format = null; }

        public void Execute(int task)
        {
            if (Quantizing)
            {
                int r0 = task * _quantizeRows, r1 = Math.Min(_m, r0 + _quantizeRows);
                for (int r = r0; r < r1; r++)
                {
                    var row = _rows.From(r);
                    QuantizeRow(_x + (long)r * _k, _k, row.U, row.D8, row.ScaledSums);
                }
                if (_split) // m = 1: one quantize task
                {
                    var rows = _rows;
                    _rows = new QuantizedRows(rows.U, rows.D8, rows.ScaledSums, rows.UStride, rows.Blocks, SplitActivations.Build(rows, _splitScratch));
                }
                return;
            }
            int n0 = task * _run, count = Math.Min(_run, _n - n0);
            byte* w = _w + n0 * _rowBytes;
            float* bias = _bias == null ? null : _bias + n0;
            int tiles = (_m + TileRows - 1) / TileRows;
            for (int t = 0; t < tiles; t++)
            {
                // Balanced tile heights (M = 5 → 2 + 3, not 4 + 1).
                int r0 = t * _m / tiles, rows = (t + 1) * _m / tiles - r0;
                _format!.Dot(_path, rows, w, _rowBytes, count, _rows.From(r0), _y + (long)r0 * _n + n0, _n, bias);
            }
            if (_act != Activation.None)
                for (int r = 0; r < _m; r++) MathKernels.Activate(new Span<float>(_y + (long)r * _n + n0, count), _act);
        }
    }
}
