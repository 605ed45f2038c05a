using System.Diagnostics;
using FastMM.Cpu;
using FastMM.Quant;

namespace FastMM.Benchmarks;

/// <summary>
/// `quant-quick`: quantized products against the F32 ones, in one process (the machine is shared, so only same-run
/// ratios are meaningful). Reports, per SmolLM2-135M shape:
/// decode GEMV (M = 1) with the weights hot in cache (one matrix reused) and cold (a rotation through copies totalling
/// at least 256 MB, as a model's layers stream from memory), as µs, GB/s of weight bytes and speed-up over F32;
/// the whole SmolLM2-135M matmul set of one decoded token (30 layers + the tied LM head), as tokens/s;
/// and prefill GEMMs (M = 128), as GMAC/s.
/// Options: --threads N (default 2), --level avx512|avx2|vector128|scalar, --no-vnni, --formats q8_0,q4_0,...
/// </summary>
public static class QuantQuickBench
{
    private const long ColdBytes = 256L << 20;

    public static void Run(string[] args)
    {
        int threads = 2;
        var formats = new List<QuantType> { QuantType.Q8_0, QuantType.Q4_0, QuantType.Int4G32, QuantType.Int4G64, QuantType.Int4G128 };
        for (int i = 0; i < args.Length; i++)
        {
            if (args[i] == "--threads") threads = int.Parse(args[++i]);
            else if (args[i] == "--level") CpuFeatures.Override = Enum.Parse<SimdLevel>(args[++i], ignoreCase: true);
            else if (args[i] == "--no-vnni") QuantGemm.AllowAvxVnni = false;
            else if (args[i] == "--formats") formats = args[++i].Split(',').Select(n => QuantFormats.Parse(n).Type).ToList();
        }
        CpuParallel.Threads = threads;
        Console.WriteLine($"threads {threads}, SIMD level {CpuFeatures.Level} (detected {CpuFeatures.Detected}), quantized kernel path {QuantGemm.Path}");
        Console.WriteLine($"memory read bandwidth (same process): {CpuPeak.MeasureReadBandwidth(threads):F1} GB/s");
        var rng = new Random(1);

        Console.WriteLine();
        Console.WriteLine("Decode GEMV (M = 1): hot = one matrix reused; cold = rotating through >= 256 MB of copies");
        Console.WriteLine($"| {"shape (N x K)",-28} | {"format",-9} | {"MB",6} | {"hot us",8} | {"hot GB/s",8} | {"hot x F32",9} | {"cold us",8} | {"cold GB/s",9} | {"cold x F32",10} |");
        Console.WriteLine($"|{new string('-', 30)}|{new string('-', 11)}|{new string('-', 8)}|{new string('-', 10)}|{new string('-', 10)}|{new string('-', 11)}|{new string('-', 10)}|{new string('-', 11)}|{new string('-', 12)}|");
        foreach (var (name, n, k) in new[] { ("gate/up 576->1536", 1536, 576), ("down 1536->576", 576, 1536), ("qkv 576->960", 960, 576), ("lm_head 576->49152", 49152, 576), ("7B-style 4096->4096", 4096, 4096) })
        {
            float[] w = RandomArray(rng, n * k), x = RandomArray(rng, k), y = new float[n];
            var f32 = new Copies(n, k, w, null);
            var (f32Hot, f32Cold) = (TimeUs(i => f32.Run(0, x, 1, y)), TimeUs(i => f32.Run(i, x, 1, y)));
            Row(name, n, k, "f32", f32.Bytes, f32Hot, f32Cold, f32Hot, f32Cold);
            foreach (var type in formats.Where(t => k % QuantFormats.Get(t).BlockElements == 0))
            {
                var q = new Copies(n, k, w, type);
                Row(name, n, k, QuantFormats.Get(type).Name, q.Bytes, TimeUs(i => q.Run(0, x, 1, y)), TimeUs(i => q.Run(i, x, 1, y)), f32Hot, f32Cold);
            }
        }

        Console.WriteLine();
        Console.WriteLine("SmolLM2-135M matmuls of one decoded token (30 x [qkv 960x576, o 576x576, gate_up 3072x576, down 576x1536] + lm_head 49152x576), cold");
        Console.WriteLine($"| {"format",-9} | {"weight MB",9} | {"ms/token",8} | {"tok/s",7} | {"GB/s",6} | {"x F32",6} |");
        Console.WriteLine($"|{new string('-', 11)}|{new string('-', 11)}|{new string('-', 10)}|{new string('-', 9)}|{new string('-', 8)}|{new string('-', 8)}|");
        double f32Token = 0;
        // SmolLM2's 576 and 1536 are multiples of 64, not of 128.
        foreach (var type in new QuantType?[] { null }.Concat(formats.Where(t => 576 % QuantFormats.Get(t).BlockElements == 0).Select(t => (QuantType?)t)))
        {
            var model = new DecoderMatmuls(rng, type);
            double ms = TimeUs(_ => model.Token(), minSeconds: 2) / 1000;
            if (type is null) f32Token = ms;
            Console.WriteLine($"| {(type is null ? "f32" : QuantFormats.Get(type.Value).Name),-9} | {model.Bytes / 1e6,9:F1} | {ms,8:F2} | {1000 / ms,7:F1} | {model.Bytes / ms / 1e6,6:F1} | {f32Token / ms,5:F2}x |");
        }

        Console.WriteLine();
        Console.WriteLine("Prefill GEMM (M = 128), weights hot");
        Console.WriteLine($"| {"shape (M x N x K)",-32} | {"format",-9} | {"ms",7} | {"GMAC/s",7} | {"x F32",6} |");
        Console.WriteLine($"|{new string('-', 34)}|{new string('-', 11)}|{new string('-', 9)}|{new string('-', 9)}|{new string('-', 8)}|");
        foreach (var (name, n, k) in new[] { ("gate_up 576->3072", 3072, 576), ("down 1536->576", 576, 1536) })
        {
            const int m = 128;
            float[] w = RandomArray(rng, n * k), x = RandomArray(rng, m * k), y = new float[m * n];
            double macs = (double)m * n * k;
            var f32 = PackedWeight.Pack(w, n, k);
            double f32Ms = TimeUs(_ => Gemm.Linear(x, m, f32, [], y)) / 1000;
            Console.WriteLine($"| {$"{name} {m}x{n}x{k}",-32} | {"f32",-9} | {f32Ms,7:F3} | {macs / f32Ms / 1e6,7:F1} | {1,5:F2}x |");
            foreach (var type in formats.Where(t => k % QuantFormats.Get(t).BlockElements == 0))
            {
                var q = QuantizedMatrix.Quantize(w, n, k, type);
                double ms = TimeUs(_ => QuantGemm.Linear(x, m, q, [], y)) / 1000;
                Console.WriteLine($"| {$"{name} {m}x{n}x{k}",-32} | {QuantFormats.Get(type).Name,-9} | {ms,7:F3} | {macs / ms / 1e6,7:F1} | {f32Ms / ms,5:F2}x |");
            }
        }
    }

    private static void Row(string name, int n, int k, string format, long bytes, double hotUs, double coldUs, double f32Hot, double f32Cold)
        => Console.WriteLine($"| {$"{name} {n}x{k}",-28} | {format,-9} | {bytes / 1e6,6:F2} | {hotUs,8:F1} | {bytes / hotUs / 1e3,8:F1} | {f32Hot / hotUs,8:F2}x | {coldUs,8:F1} | {bytes / coldUs / 1e3,9:F1} | {f32Cold / coldUs,9:F2}x |");

    /// <summary>Enough copies of one weight matrix (F32 packed, or quantized) that rotating through them streams from memory.</summary>
    private sealed class Copies
    {
        private readonly PackedWeight[] _f32 = [];
        private readonly QuantizedMatrix[] _quant = [];
        public readonly long Bytes;

        public Copies(int n, int k, float[] w, QuantType? type)
        {
            if (type is null)
            {
                Bytes = (long)n * k * sizeof(float);
                _f32 = new PackedWeight[(int)Math.Max(2, (ColdBytes + Bytes - 1) / Bytes)];
                _f32[0] = PackedWeight.Pack(w, n, k);
                for (int i = 1; i < _f32.Length; i++) _f32[i] = PackedWeight.Pack(w, n, k);
                return;
            }
            var first = QuantizedMatrix.Quantize(w, n, k, type.Value);
            Bytes = first.ByteSize;
            _quant = new QuantizedMatrix[(int)Math.Max(2, (ColdBytes + Bytes - 1) / Bytes)];
            _quant[0] = first;
            for (int i = 1; i < _quant.Length; i++) _quant[i] = QuantizedMatrix.FromBytes(first.Bytes, n, k, type.Value);
        }

        public void Run(int i, float[] x, int m, float[] y)
        {
            if (_f32.Length > 0) Gemm.Linear(x, m, _f32[i % _f32.Length], [], y);
            else QuantGemm.Linear(x, m, _quant[i % _quant.Length], [], y);
        }
    }

    /// <summary>The Linear weights SmolLM2-135M reads per decoded token, each layer its own memory.</summary>
    private sealed class DecoderMatmuls
    {
        private readonly List<(PackedWeight? F32, QuantizedMatrix? Quant, int K)> _layers = new();
        private readonly float[] _x = new float[1536], _y = new float[49152];
        public readonly long Bytes;

        public DecoderMatmuls(Random rng, QuantType? type)
        {
            (int N, int K)[] layer = [(960, 576), (576, 576), (3072, 576), (576, 1536)];
            var prototypes = layer.Select(s => (s, RandomArray(rng, s.N * s.K))).ToArray();
            var quantized = type is null ? null : prototypes.Select(p => QuantizedMatrix.Quantize(p.Item2, p.s.N, p.s.K, type.Value)).ToArray();
            for (int l = 0; l < 30; l++)
                for (int i = 0; i < layer.Length; i++)
                {
                    var (n, k) = layer[i];
                    if (quantized is null) _layers.Add((PackedWeight.Pack(prototypes[i].Item2, n, k), null, k));
                    else _layers.Add((null, QuantizedMatrix.FromBytes(quantized[i].Bytes, n, k, type!.Value), k));
                }
            var head = RandomArray(rng, 49152 * 576);
            _layers.Add(type is null ? (PackedWeight.Pack(head, 49152, 576), null, 576) : (null, QuantizedMatrix.Quantize(head, 49152, 576, type.Value), 576));
            Bytes = _layers.Sum(l => l.F32 is { } p ? (long)p.N * p.K * sizeof(float) : l.Quant!.ByteSize);
            RandomArray(rng, _x.Length).CopyTo(_x, 0);
        }

        public void Token()
        {
            foreach (var (f32, quant, k) in _layers)
            {
                if (f32 is not null) Gemm.Linear(_x.AsSpan(0, k), 1, f32, [], _y);
                else QuantGemm.Linear(_x.AsSpan(0, k), 1, quant!, [], _y);
            }
        }
    }

    private static float[] RandomArray(Random rng, int n)
    {
        var x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        return x;
    }

    /// <summary>Median µs of body(call index) after warm-up (tiered JIT reaches full optimisation during warm-up).</summary>
    private static double TimeUs(Action<int> body, double minSeconds = 1.0)
    {
        int call = 0;
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed.TotalSeconds < 0.3) body(call++);
        var times = new List<double>();
        sw.Restart();
        while (sw.Elapsed.TotalSeconds < minSeconds || times.Count < 5)
        {
            long t0 = Stopwatch.GetTimestamp();
            body(call++);
            times.Add(Stopwatch.GetElapsedTime(t0).TotalMicroseconds);
        }
        times.Sort();
        return times[times.Count / 2];
    }
}
