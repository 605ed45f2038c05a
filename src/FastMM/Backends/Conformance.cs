using FastMM.Kv;
using FastMM.Quant;

namespace FastMM.Backends;

/// <summary>One compared output of a conformance check.</summary>
public sealed record ConformanceResult(string Check, string Case, double RelativeL2, double Cosine, double Tolerance, string? Error = null)
{
    public bool Passed => Error is null && RelativeL2 <= Tolerance;
    public override string ToString() => Error is not null
        ? $"{Check} [{Case}]: FAILED: {Error}"
        : $"{Check} [{Case}]: relative L2 {RelativeL2:E2} (bound {Tolerance:E0}), cosine {Cosine:F7}{(Passed ? "" : " FAILED")}";
}

/// <summary>
/// The one conformance suite of the op set: every <see cref="IBackend"/> op on a backend under test against the CPU
/// reference, on fresh random inputs (the seed is in every result's case label), odd sizes, GQA ratios and sequence
/// lengths across KV block boundaries. Before each op the target's allocator is handed a NaN-filled buffer of the
/// output's size to reuse (pooling allocators return it to the next request of that size), so an output element the
/// kernel never writes shows up as NaN. F32 ops must agree to relative L2 ≤ 1e-5; quantized products too (they take
/// the same integer dot products). Ops a backend declares in <see cref="IBackend.Precision"/> as computed with F16
/// operands are held to relative L2 ≤ 2e-3 instead, against the F32 result (for Linear: of the dequantized weights). Run by the test project for every backend the machine has, and by
/// <c>fastmm conformance --backend NAME</c> where there is no test runner (the GPU check machine).
/// </summary>
public static class Conformance
{
    public const double F32Tolerance = 1e-5;
    public const double F16Tolerance = 2e-3;

    private delegate void CheckBody(Runner r);

    private static readonly (string Name, CheckBody Body)[] s_checks =
    [
        ("linear", Linear),
        ("linear-quantized", LinearQuantized),
        ("matmul-transposed", MatMulTransposed),
        ("layer-norm", LayerNorm),
        ("rms-norm", RmsNorm),
        ("elementwise", Elementwise),
        ("attention", Attention),
        ("self-attention", SelfAttention),
        ("patch-embed", PatchEmbed),
        ("rope", Rope),
        ("kv-cache-attention", CachedAttention),
        ("row-movers", RowMovers),
        ("decode-steps", DecodeSteps),
    ];

    public static IReadOnlyList<string> Checks { get; } = s_checks.Select(c => c.Name).ToArray();

    /// <summary>Runs one check on <paramref name="target"/>; an exception thrown by the target is a failed result, not a crash.</summary>
    public static IReadOnlyList<ConformanceResult> Run(IBackend target, string check, int seed)
    {
        var body = s_checks.FirstOrDefault(c => c.Name == check).Body
            ?? throw new ArgumentException($"unknown conformance check '{check}' (checks: {string.Join(", ", Checks)})");
        using var reference = new CpuBackend();
        var r = new Runner(check, reference, target, seed);
        try { body(r); }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            r.Results.Add(new ConformanceResult(check, r.LastCase + $" seed {seed}", double.NaN, double.NaN, F32Tolerance, $"{e.GetType().Name}: {e.Message}"));
        }
        return r.Results;
    }

    /// <summary>Runs every check with seeds drawn from <paramref name="seed"/>.</summary>
    public static IReadOnlyList<ConformanceResult> RunAll(IBackend target, int seed)
    {
        var rng = new Random(seed);
        return Checks.SelectMany(c => Run(target, c, rng.Next())).ToList();
    }

    // ------------------------------------------------------------------ harness

    private sealed class Runner(string check, CpuBackend reference, IBackend target, int seed)
    {
        public readonly List<ConformanceResult> Results = new();
        public readonly Random Rng = new(seed);
        public readonly CpuBackend Ref = reference;
        public readonly IBackend Target = target;
        public string LastCase = "";

        public float[] Random(int n, float scale = 1f)
        {
            var a = new float[n];
            for (int i = 0; i < n; i++) a[i] = (float)(Rng.NextDouble() * 2 - 1) * scale;
            return a;
        }

        /// <summary>A tensor with the same values on both backends.</summary>
        public (Tensor R, Tensor T) Both(float[] values, params int[] shape) => (Ref.FromHost(values, shape), Target.FromHost(values, shape));

        /// <summary>Hands the target's allocator a NaN buffer of n elements to reuse for the next output.</summary>
        public void Poison(long n)
        {
            var nan = new float[Math.Max(1, n)];
            Array.Fill(nan, float.NaN);
            Target.FromHost(nan, nan.Length).Dispose();
        }

        public void Case(string label) => LastCase = label;

        public void Compare(string label, Tensor expected, Tensor actual, double tolerance = F32Tolerance)
        {
            LastCase = label;
            string where = $"{label} seed {seed}";
            if (!expected.Shape.SequenceEqual(actual.Shape))
            {
                Results.Add(new(check, where, double.NaN, double.NaN, tolerance,
                    $"shape [{string.Join(", ", actual.Shape)}], expected [{string.Join(", ", expected.Shape)}]"));
                return;
            }
            Results.Add(Measure(check, where, expected.ToArray(), actual.ToArray(), tolerance));
        }
    }

    private static ConformanceResult Measure(string check, string where, float[] e, float[] a, double tolerance)
    {
        double num = 0, den = 0, dot = 0, na = 0;
        for (int i = 0; i < e.Length; i++)
        {
            double d = (double)a[i] - e[i];
            num += d * d; den += (double)e[i] * e[i]; dot += (double)a[i] * e[i]; na += (double)a[i] * a[i];
        }
        if (double.IsNaN(num)) return new(check, where, double.NaN, double.NaN, tolerance, "NaN in the output (an element was not written, or the kernel produced NaN)");
        double rel = den == 0 ? Math.Sqrt(num) : Math.Sqrt(num / den);
        double cos = den == 0 || na == 0 ? (num == 0 ? 1 : 0) : dot / Math.Sqrt(den * na);
        return new(check, where, rel, cos, tolerance);
    }

    // ------------------------------------------------------------------ checks

    private static readonly (int M, int N, int K)[] s_gemmShapes = [(1, 1, 1), (1, 67, 33), (3, 17, 33), (37, 65, 19), (64, 48, 96), (5, 129, 160)];

    private static void Linear(Runner r)
    {
        int i = 0;
        foreach (var (m, n, k) in s_gemmShapes)
        {
            var act = (Activation)(i++ % 6);
            bool bias = i % 2 == 0;
            var w = r.Random(n * k, 0.5f);
            var b = bias ? r.Random(n) : [];
            var (xr, xt) = r.Both(r.Random(m * k), m, k);
            using (xr) using (xt)
            using (var wr = r.Ref.Linear(w, n, k, b))
            using (var wt = r.Target.Linear(w, n, k, b))
            {
                r.Poison((long)m * n);
                using var yr = r.Ref.Linear(xr, wr, act);
                using var yt = r.Target.Linear(xt, wt, act);
                r.Compare($"{m}x{n}x{k} {act}{(bias ? " +bias" : "")}", yr, yt);
            }
        }
    }

    private static void LinearQuantized(Runner r)
    {
        QuantType[] types = [QuantType.Q8_0, QuantType.Q4_0, QuantType.Int4G32, QuantType.Int4G64, QuantType.Int4G128, QuantType.F16, QuantType.BF16];
        // 19 rows: two full row blocks of 8 and a partial one; K = 8224 (257 blocks): a decode GEMV's row over more than
        // two of its 128-block strides; 9 × 16891 outputs: 132 tiles of 128×128, the CUDA GEMM's large-tile shape on GPUs
        // of up to 132 SMs (partial row and column tiles, an odd width, two k-steps through its two-stage pipeline;
        // smaller products take 64×64 tiles), and for Q4_0 33,782 blocks, which CudaBackend repacks on upload in three
        // chunks; for F16 and Q4_0 weights only: ILGPU's CPU accelerator takes ~10 s per format on it.
        (int M, int N, int K)[] shapes = [(1, 7, 128), (5, 33, 256), (2, 3, 384), (19, 9, 128), (70, 40, 160), (3, 5, 8224), (9, 16891, 64)];
        int f16From = r.Target.Precision.F16LinearMinRows, i = 0;
        foreach (var type in types)
            foreach (var (m, n, k) in shapes)
            {
                if (k % QuantFormats.Get(type).BlockElements != 0) continue;
                if (n > 10_000 && type is not (QuantType.F16 or QuantType.Q4_0)) continue; // the wide case is about tiling, once per weight width
                var w = QuantizedMatrix.Quantize(r.Random(n * k, 0.5f), n, k, type);
                var b = i % 2 == 0 ? r.Random(n) : [];
                var act = i++ % 2 == 0 ? Activation.None : Activation.Silu;
                bool f16 = m >= f16From && type != QuantType.F32;
                var (xr, xt) = r.Both(r.Random(m * k), m, k);
                using (xr) using (xt)
                // A backend that declares F16 activations here is measured against the exact product of the dequantized weights.
                using (var wr = f16 ? r.Ref.Linear(w.DequantizeAll(), n, k, b) : r.Ref.Linear(w, b))
                using (var wt = r.Target.Linear(w, b))
                {
                    r.Poison((long)m * n);
                    using var yr = r.Ref.Linear(xr, wr, act);
                    using var yt = r.Target.Linear(xt, wt, act);
                    r.Compare($"{QuantFormats.Get(type).Name} {m}x{n}x{k} {act}{(f16 ? " (declared F16 activations)" : "")}", yr, yt,
                        f16 ? F16Tolerance : F32Tolerance);
                }
            }

        // Activations on the midpoints between int8 steps, as float rounds them: each 32-block's first value fixes its
        // scale d, the rest are (k + ½)·d rounded to float, so x·(1/d) lands within an ulp of a half. An implementation
        // that rounds x·(1/d) any other way than the CPU flips many of them (an fma contracting the product into the
        // 1.5·2²³ rounding trick: 378 of 1,024 in a simulation).
        {
            const int m = 4, n = 16, k = 256;
            var x = new float[m * k];
            for (int b = 0; b < m * k / 32; b++)
            {
                float d = (float)(0.004 + 0.02 * r.Rng.NextDouble());
                x[b * 32] = 127 * d;
                for (int j = 1; j < 32; j++)
                    x[b * 32 + j] = (float)((r.Rng.Next(-120, 120) + 0.5) * d);
            }
            var w = QuantizedMatrix.Quantize(r.Random(n * k, 0.5f), n, k, QuantType.Q8_0);
            var (xr, xt) = r.Both(x, m, k);
            using (xr) using (xt)
            using (var wr = r.Ref.Linear(w, []))
            using (var wt = r.Target.Linear(w, []))
            {
                r.Poison((long)m * n);
                using var yr = r.Ref.Linear(xr, wr);
                using var yt = r.Target.Linear(xt, wt);
                r.Compare($"q8_0 {m}x{n}x{k} activations near rounding midpoints", yr, yt);
            }
        }
    }

    private static void MatMulTransposed(Runner r)
    {
        foreach (var (m, n, k) in s_gemmShapes)
        {
            var (ar, at) = r.Both(r.Random(m * k), m, k);
            var (br, bt) = r.Both(r.Random(n * k), n, k);
            using (ar) using (at) using (br) using (bt)
            {
                r.Poison((long)m * n);
                using var cr = r.Ref.MatMulTransposed(ar, br);
                using var ct = r.Target.MatMulTransposed(at, bt);
                r.Compare($"{m}x{n}x{k}", cr, ct);
            }
        }
    }

    private static readonly (int Rows, int Width)[] s_rowShapes = [(1, 1), (3, 7), (5, 64), (2, 129), (7, 577)];

    private static void LayerNorm(Runner r)
    {
        foreach (var (rows, d) in s_rowShapes)
        {
            var x = r.Random(rows * d, 3f);
            for (int i = 0; i < x.Length; i++) x[i] += 2f; // a mean far from 0 tests the centred variance
            var (xr, xt) = r.Both(x, rows, d);
            var (gr, gt) = r.Both(r.Random(d), d);
            var (br, bt) = r.Both(r.Random(d), d);
            using (xr) using (xt) using (gr) using (gt) using (br) using (bt)
            {
                r.Poison((long)rows * d);
                using var yr = r.Ref.LayerNorm(xr, gr, br, 1e-5f);
                using var yt = r.Target.LayerNorm(xt, gt, bt, 1e-5f);
                r.Compare($"{rows}x{d}", yr, yt);
            }
        }
    }

    private static void RmsNorm(Runner r)
    {
        foreach (var (rows, d) in s_rowShapes)
        {
            var (xr, xt) = r.Both(r.Random(rows * d, 2f), rows, d);
            var (wr, wt) = r.Both(r.Random(d), d);
            using (xr) using (xt) using (wr) using (wt)
            {
                r.Poison((long)rows * d);
                using var yr = r.Ref.RmsNorm(xr, wr, 1e-6f);
                using var yt = r.Target.RmsNorm(xt, wt, 1e-6f);
                r.Compare($"{rows}x{d}", yr, yt);
            }
        }
    }

    private static void Elementwise(Runner r)
    {
        foreach (var act in Enum.GetValues<Activation>())
        {
            var (xr, xt) = r.Both(r.Random(1000, 6f), 8, 125);
            using (xr) using (xt)
            {
                r.Ref.ActivationInPlace(xr, act);
                r.Target.ActivationInPlace(xt, act);
                r.Compare($"activation {act}", xr, xt);
            }
        }
        {
            var (xr, xt) = r.Both(r.Random(3 * 5 * 7), 3, 5, 7);
            var (yr, yt) = r.Both(r.Random(5 * 7), 5, 7);
            using (xr) using (xt) using (yr) using (yt)
            {
                r.Ref.AddInPlace(xr, yr); r.Target.AddInPlace(xt, yt);
                r.Compare("add broadcast [3,5,7] + [5,7]", xr, xt);
                r.Ref.ScaleInPlace(xr, 0.37f, -1.5f); r.Target.ScaleInPlace(xt, 0.37f, -1.5f);
                r.Compare("scale 0.37 bias -1.5", xr, xt);
                r.Ref.L2NormalizeInPlace(xr); r.Target.L2NormalizeInPlace(xt);
                r.Compare("l2 normalize rows of 7", xr, xt);
            }
        }
        foreach (int inter in new[] { 1, 19, 256 })
        {
            var (gr, gt) = r.Both(r.Random(3 * 2 * inter, 4f), 3, 2 * inter);
            using (gr) using (gt)
            {
                r.Poison(3L * inter);
                using var yr = r.Ref.SwiGlu(gr);
                using var yt = r.Target.SwiGlu(gt);
                r.Compare($"swiglu 3x{inter}", yr, yt);
            }
        }
    }

    private static readonly (int B, int Tq, int Tk, int Heads, int D)[] s_attentionShapes =
        [(1, 1, 1, 1, 8), (2, 5, 7, 3, 16), (1, 70, 70, 2, 64), (2, 3, 130, 4, 24), (1, 17, 17, 1, 128), (1, 9, 9, 5, 72)];

    private static void Attention(Runner r)
    {
        int i = 0;
        foreach (var (b, tq, tk, heads, d) in s_attentionShapes)
            foreach (bool causal in new[] { false, true })
            {
                bool masked = i++ % 2 == 0 && tk > 1;
                int hd = heads * d;
                var (qr, qt) = r.Both(r.Random(b * tq * hd, 2f), b, tq, hd);
                var (kr, kt) = r.Both(r.Random(b * tk * hd, 2f), b, tk, hd);
                var (vr, vt) = r.Both(r.Random(b * tk * hd), b, tk, hd);
                var mask = new float[b * tk];
                for (int j = 0; j < mask.Length; j++) mask[j] = !masked || r.Rng.Next(4) > 0 ? 1f : 0f;
                if (masked) mask[0] = 0f; // a query that sees nothing (causal row 0) must output zeros
                var (mr, mt) = r.Both(mask, b, tk);
                using (qr) using (qt) using (kr) using (kt) using (vr) using (vt) using (mr) using (mt)
                {
                    float scale = 1f / MathF.Sqrt(d);
                    r.Poison((long)b * tq * hd);
                    using var or = r.Ref.Attention(qr, kr, vr, heads, scale, causal, masked ? mr : null);
                    using var ot = r.Target.Attention(qt, kt, vt, heads, scale, causal, masked ? mt : null);
                    r.Compare($"b{b} tq{tq} tk{tk} h{heads} d{d}{(causal ? " causal" : "")}{(masked ? " masked" : "")}{F16Note(r)}", or, ot, AttentionTolerance(r));
                }
            }
    }

    private static double AttentionTolerance(Runner r) => r.Target.Precision.F16Attention ? F16Tolerance : F32Tolerance;
    private static string F16Note(Runner r) => r.Target.Precision.F16Attention ? " (declared F16)" : "";

    private static void SelfAttention(Runner r)
    {
        int i = 0;
        foreach (var (b, t, heads, d) in new[] { (1, 1, 1, 8), (2, 7, 3, 16), (1, 70, 2, 64), (2, 33, 1, 24), (1, 17, 1, 128), (1, 9, 5, 72) })
        {
            bool causal = i % 2 == 1, masked = i++ % 3 == 0 && t > 1;
            int w3 = 3 * heads * d;
            var (xr, xt) = r.Both(r.Random(b * t * w3, 2f), b, t, w3);
            var mask = new float[b * t];
            for (int j = 0; j < mask.Length; j++) mask[j] = !masked || j % t < t - 2 ? 1f : 0f; // right padding
            var (mr, mt) = r.Both(mask, b, t);
            using (xr) using (xt) using (mr) using (mt)
            {
                r.Poison((long)b * t * heads * d);
                using var or = r.Ref.SelfAttention(xr, heads, 0.125f, causal, masked ? mr : null);
                using var ot = r.Target.SelfAttention(xt, heads, 0.125f, causal, masked ? mt : null);
                r.Compare($"b{b} t{t} h{heads} d{d}{(causal ? " causal" : "")}{(masked ? " masked" : "")}{F16Note(r)}", or, ot, AttentionTolerance(r));
            }
        }
    }

    private static void PatchEmbed(Runner r)
    {
        foreach (var (b, c, side, patch, dim) in new[] { (1, 3, 4, 4, 5), (2, 3, 12, 4, 33), (1, 3, 30, 6, 64) })
        {
            int kk = c * patch * patch;
            var w = r.Random(dim * kk, 0.3f);
            var bias = r.Random(dim);
            var (pr, pt) = r.Both(r.Random(b * c * side * side), b, c, side, side);
            using (pr) using (pt)
            using (var wr = r.Ref.Linear(w, dim, kk, bias))
            using (var wt = r.Target.Linear(w, dim, kk, bias))
            {
                r.Poison((long)b * (side / patch) * (side / patch) * dim);
                using var yr = r.Ref.PatchEmbed(pr, wr, patch);
                using var yt = r.Target.PatchEmbed(pt, wt, patch);
                r.Compare($"b{b} c{c} {side}px patch {patch} -> {dim}", yr, yt);
            }
        }
    }

    private static void Rope(Runner r)
    {
        foreach (var (rows, qh, kvh, d, p0) in new[] { (1, 1, 1, 2, 0), (5, 4, 2, 64, 3), (3, 3, 1, 32, 4000) })
        {
            using var tr = r.Ref.RopeTable(p0, rows, d, 10000.0);
            using var tt = r.Target.RopeTable(p0, rows, d, 10000.0);
            r.Compare($"table p0 {p0} rows {rows} d {d}", tr, tt);
            int width = (qh + 2 * kvh) * d;
            var (xr, xt) = r.Both(r.Random(rows * width), rows, width);
            using (xr) using (xt)
            {
                r.Ref.RopeInPlace(xr, qh, kvh, d, tr);
                r.Target.RopeInPlace(xt, qh, kvh, d, tt);
                r.Compare($"rotate q{qh} kv{kvh} d{d} p0 {p0}", xr, xt);
            }
        }
    }

    private static void CachedAttention(Runner r)
    {
        foreach (var type in new[] { KvCacheType.F32, KvCacheType.Int8 })
            foreach (var (qh, kvh, d, bs, prompt, decode) in new[] { (2, 2, 16, 4, 7, 3), (4, 1, 32, 16, 17, 2), (6, 2, 64, 3, 10, 4), (3, 3, 128, 16, 1, 2) })
            {
                int width = (qh + 2 * kvh) * d, total = prompt + decode, blocks = (total + bs - 1) / bs + 2;
                // A shuffled block table: logical block i lives in pool block table[i].
                var table = Enumerable.Range(0, blocks).OrderBy(_ => r.Rng.Next()).ToArray();
                using var cr = r.Ref.CreateKvCache(1, kvh, d, bs, blocks, type);
                using var ct = r.Target.CreateKvCache(1, kvh, d, bs, blocks, type);
                float scale = 1f / MathF.Sqrt(d);
                string label = $"{type} q{qh} kv{kvh} d{d} block {bs}";
                int pos = 0;
                foreach (int step in new[] { prompt }.Concat(Enumerable.Repeat(1, decode)))
                {
                    var (xr, xt) = r.Both(r.Random(step * width, 2f), step, width);
                    using (xr) using (xt)
                    {
                        r.Case($"{label} write at {pos}");
                        r.Ref.WriteKv(cr, 0, xr, qh, table, pos);
                        r.Target.WriteKv(ct, 0, xt, qh, table, pos);
                        r.Poison((long)step * qh * d);
                        using var or = r.Ref.CachedAttention(xr, qh, cr, 0, table, pos, scale);
                        using var ot = r.Target.CachedAttention(xt, qh, ct, 0, table, pos, scale);
                        // Decode (one query row) is F32 on every backend; prefill may be declared F16.
                        if (step > 1) r.Compare($"{label} prefill at {pos}+{step}{F16Note(r)}", or, ot, AttentionTolerance(r));
                        else r.Compare($"{label} decode at {pos}+{step}", or, ot);
                    }
                    pos += step;
                }
            }
    }

    private static void RowMovers(Runner r)
    {
        var (tabR, tabT) = r.Both(r.Random(11 * 6), 11, 6);
        using (tabR) using (tabT)
        {
            int[] ids = [3, 0, 10, 3, 7];
            r.Poison(ids.Length * 6);
            using (var er = r.Ref.Embedding(tabR, ids)) using (var et = r.Target.Embedding(tabT, ids)) r.Compare("embedding", er, et);
            r.Case("embedding rejects an id outside the vocabulary");
            try
            {
                r.Target.Embedding(tabT, [2, 11]).Dispose();
                r.Results.Add(new("row-movers", "embedding id 11 of 11", double.NaN, double.NaN, 0, "an id outside [0, vocab) was accepted"));
            }
            catch (FastMMException) { }
        }
        var (xr, xt) = r.Both(r.Random(3 * 4 * 5), 3, 4, 5);
        var (rowR, rowT) = r.Both(r.Random(5), 5);
        using (xr) using (xt) using (rowR) using (rowT)
        {
            r.Poison(3 * 5);
            using (var a = r.Ref.SelectRows(xr, [3, 0, 2])) using (var b = r.Target.SelectRows(xt, [3, 0, 2])) r.Compare("select rows", a, b);
            r.Poison(3 * 5 * 5);
            using (var a = r.Ref.PrependRow(xr, rowR)) using (var b = r.Target.PrependRow(xt, rowT)) r.Compare("prepend row", a, b);
            r.Poison(4 * 5);
            using (var a = r.Ref.Repeat(rowR, 4)) using (var b = r.Target.Repeat(rowT, 4)) r.Compare("repeat", a, b);
            var (vr, vt) = r.Both(r.Random(2 * 5), 2, 5);
            using (vr) using (vt)
            {
                r.Ref.SetRows(xr, [7, 1], vr); r.Target.SetRows(xt, [7, 1], vt);
                r.Compare("set rows", xr, xt);
            }
        }
        foreach (var (b, side, scale, e) in new[] { (1, 4, 2, 3), (2, 6, 3, 5), (1, 8, 4, 16) })
        {
            var (pr, pt) = r.Both(r.Random(b * side * side * e), b, side * side, e);
            using (pr) using (pt)
            {
                r.Poison((long)b * side * side * e);
                using var a = r.Ref.PixelShuffle(pr, scale);
                using var c = r.Target.PixelShuffle(pt, scale);
                r.Compare($"pixel shuffle b{b} {side}x{side} by {scale}, width {e}", a, c);
            }
        }
    }

    /// <summary>
    /// A two-layer toy decoder (attention and a SwiGLU MLP) run token by token, each token one step where the target
    /// records steps (<see cref="IStepGraphs"/>): replays of a recorded graph, fed new token ids, slots, lengths and
    /// RoPE rows, must give exactly the logits the same backend gives op by op, across KV block boundaries and the
    /// lengths where the split count moves. A step-recording target must also have replayed most steps rather than
    /// recording every one anew. It runs twice:
    /// - with F32 weights, every token's logits within <see cref="DecodeStepsF32Tolerance"/> of the CPU's;
    /// - with Q8_0/Q4_0 weights (the int8-activation GEMVs that a recorded step fuses with their neighbours), last, so
    ///   that the backend's latest recorded step is this one. Against the CPU these only get a sanity bound: once an
    ///   int8 activation rounds the other way after an ulp-level difference upstream (attention summed in another
    ///   order), the K/V rows written from it differ, which makes later flips likely, so the difference grows over
    ///   the tokens instead of staying at the ops' 1e-5. 40 seeds on the CUDA emulator: 70% saw no flip (7e-7 at
    ///   worst); the rest up to 9e-3 (3e-2 before the weights were scaled by 1/√K, as trained models' are).
    /// </summary>
    private const double DecodeStepsF32Tolerance = 1e-4, DecodeStepsQuantizedTolerance = 1e-1;

    private static void DecodeSteps(Runner r)
    {
        DecodeToyModel(r, quantized: false);
        DecodeToyModel(r, quantized: true);
    }

    private static void DecodeToyModel(Runner r, bool quantized)
    {
        const int vocab = 37, heads = 4, kvHeads = 2, d = 32, layers = 2, blockSize = 4, tokens = 48, inter = 96;
        int hidden = heads * d, width = (heads + 2 * kvHeads) * d, blocks = tokens / blockSize + 2;
        string weights = quantized ? "Q8_0/Q4_0 weights" : "F32 weights";
        double tolerance = quantized ? DecodeStepsQuantizedTolerance : DecodeStepsF32Tolerance;
        var (embR, embT) = r.Both(r.Random(vocab * hidden), vocab, hidden);
        var (normR, normT) = r.Both(r.Random(hidden, 0.5f).Select(v => 1f + v).ToArray(), hidden);
        // Uniform weights of variance 1/K (as trained models' are), so a layer neither grows nor shrinks its input.
        float wh = MathF.Sqrt(3f / hidden), wi = MathF.Sqrt(3f / inter);
        var qkvW = Enumerable.Range(0, layers).Select(_ => r.Random(width * hidden, wh)).ToArray();
        var oW = Enumerable.Range(0, layers).Select(_ => r.Random(hidden * hidden, wh)).ToArray();
        var gateUpW = Enumerable.Range(0, layers).Select(_ => r.Random(2 * inter * hidden, wh)).ToArray();
        var downW = Enumerable.Range(0, layers).Select(_ => r.Random(hidden * inter, wi)).ToArray();
        var lmW = r.Random(vocab * hidden, wh);
        var disposables = new List<IDisposable> { embR, embT, normR, normT };
        try
        {
            // The same weights for both backends; gate/up stays F32 (a step cannot fuse SwiGLU's producer then).
            (LinearWeight[] R, LinearWeight[] T) Linears(float[][] w, int n, int k, QuantType type)
            {
                if (!quantized)
                    return (w.Select(x => Track(r.Ref.Linear(x, n, k, []))).ToArray(), w.Select(x => Track(r.Target.Linear(x, n, k, []))).ToArray());
                var q = w.Select(x => QuantizedMatrix.Quantize(x, n, k, type)).ToArray();
                return (q.Select(x => Track(r.Ref.Linear(x, []))).ToArray(), q.Select(x => Track(r.Target.Linear(x, []))).ToArray());
            }
            var (qkvR, qkvT) = Linears(qkvW, width, hidden, QuantType.Q8_0);
            var (oR, oT) = Linears(oW, hidden, hidden, QuantType.Q8_0);
            LinearWeight[] guR = gateUpW.Select(w => Track(r.Ref.Linear(w, 2 * inter, hidden, []))).ToArray(), guT = gateUpW.Select(w => Track(r.Target.Linear(w, 2 * inter, hidden, []))).ToArray();
            var (downR, downT) = Linears(downW, hidden, inter, QuantType.Q4_0);
            var lmR = Track(r.Ref.Linear(lmW, vocab, hidden, [])); var lmT = Track(r.Target.Linear(lmW, vocab, hidden, []));
            var cacheR = Track(r.Ref.CreateKvCache(layers, kvHeads, d, blockSize, blocks, KvCacheType.F32));
            var cacheT = Track(r.Target.CreateKvCache(layers, kvHeads, d, blockSize, blocks, KvCacheType.F32));
            var cacheE = Track(r.Target.CreateKvCache(layers, kvHeads, d, blockSize, blocks, KvCacheType.F32));
            var table = Enumerable.Range(0, blocks).OrderBy(_ => r.Rng.Next()).ToArray();
            var steps = r.Target as IStepGraphs;
            var before = steps?.StepCounts ?? default;
            for (int pos = 0; pos < tokens; pos++)
            {
                int token = r.Rng.Next(vocab);
                var used = table.AsSpan(0, pos / blockSize + 1);
                r.Case($"{weights}, token {pos}");
                using var yr = Step(r.Ref, embR, normR, qkvR, oR, guR, downR, lmR, cacheR, used, token, pos);
                using var ye = Step(r.Target, embT, normT, qkvT, oT, guT, downT, lmT, cacheE, used, token, pos);
                using var scope = steps?.BeginStep();
                using var yt = Step(r.Target, embT, normT, qkvT, oT, guT, downT, lmT, cacheT, used, token, pos);
                scope?.Commit();
                // Recorded, fused and replayed, the step must give exactly what the same backend gives op by op.
                r.Compare($"{weights}, token {pos}: step against the same ops one by one", ye, yt, 0);
                r.Compare($"{weights}, token {pos}: step against the CPU (block size {blockSize})", yr, yt, tolerance);
            }
            if (steps is not null)
            {
                var (replays, captures, eager) = steps.StepCounts;
                long replayed = replays - before.Replays, recorded = captures - before.Captures, direct = eager - before.Eager;
                string what = $"{weights}, {tokens} steps: {replayed} replayed, {recorded} recorded, {direct} op by op";
                bool ok = replayed + recorded + direct == tokens && (direct == tokens || replayed >= tokens / 2);
                r.Results.Add(new ConformanceResult("decode-steps", what, 0, 1, F32Tolerance, ok ? null : "steps were not replayed from the recorded graph"));
            }
        }
        finally
        {
            foreach (var x in disposables) x.Dispose();
        }

        T Track<T>(T x) where T : IDisposable { disposables.Add(x); return x; }

        Tensor Step(IBackend b, Tensor emb, Tensor norm, LinearWeight[] qkv, LinearWeight[] o, LinearWeight[] gateUp, LinearWeight[] down,
            LinearWeight lm, KvCacheStorage cache, ReadOnlySpan<int> used, int token, int pos)
        {
            using var rope = b.RopeTable(pos, 1, d, 10000);
            using var h = b.Embedding(emb, [token]);
            for (int l = 0; l < layers; l++)
            {
                using var n = b.RmsNorm(h, norm, 1e-6f);
                using var x = b.Linear(n, qkv[l]);
                b.RopeInPlace(x, heads, kvHeads, d, rope);
                b.WriteKv(cache, l, x, heads, used, pos);
                using var a = b.CachedAttention(x, heads, cache, l, used, pos, 1f / MathF.Sqrt(d));
                using var y = b.Linear(a, o[l], Activation.Silu);
                b.AddInPlace(h, y);
                using var n2 = b.RmsNorm(h, norm, 1e-6f);
                using var gu = b.Linear(n2, gateUp[l]);
                using var m = b.SwiGlu(gu);
                using var y2 = b.Linear(m, down[l]);
                b.AddInPlace(h, y2);
            }
            using var last = b.RmsNorm(h, norm, 1e-6f);
            return b.Linear(last, lm);
        }
    }
}
