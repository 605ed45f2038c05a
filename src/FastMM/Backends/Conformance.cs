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
/// the same integer dot products). Run by the test project for every backend the machine has, and by
/// <c>fastmm conformance --backend NAME</c> where there is no test runner (the GPU check machine).
/// </summary>
public static class Conformance
{
    public const double F32Tolerance = 1e-5;

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
        QuantType[] types = [QuantType.Q8_0, QuantType.Q4_0, QuantType.Int4G32, QuantType.Int4G64, QuantType.Int4G128];
        (int M, int N, int K)[] shapes = [(1, 7, 128), (5, 33, 256), (2, 3, 384), (19, 9, 128)]; // 19 rows: two full row blocks of 8 and a partial one
        int i = 0;
        foreach (var type in types)
            foreach (var (m, n, k) in shapes)
            {
                if (k % QuantFormats.Get(type).BlockElements != 0) continue;
                var w = QuantizedMatrix.Quantize(r.Random(n * k, 0.5f), n, k, type);
                var b = i % 2 == 0 ? r.Random(n) : [];
                var act = i++ % 2 == 0 ? Activation.None : Activation.Silu;
                var (xr, xt) = r.Both(r.Random(m * k), m, k);
                using (xr) using (xt)
                using (var wr = r.Ref.Linear(w, b))
                using (var wt = r.Target.Linear(w, b))
                {
                    r.Poison((long)m * n);
                    using var yr = r.Ref.Linear(xr, wr, act);
                    using var yt = r.Target.Linear(xt, wt, act);
                    r.Compare($"{QuantFormats.Get(type).Name} {m}x{n}x{k} {act}", yr, yt);
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
                    r.Compare($"b{b} tq{tq} tk{tk} h{heads} d{d}{(causal ? " causal" : "")}{(masked ? " masked" : "")}", or, ot);
                }
            }
    }

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
                r.Compare($"b{b} t{t} h{heads} d{d}{(causal ? " causal" : "")}{(masked ? " masked" : "")}", or, ot);
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
                        r.Compare($"{label} {(step > 1 ? "prefill" : "decode")} at {pos}+{step}", or, ot);
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
}
