using System.Diagnostics;
using FastMM.Cpu;

namespace FastMM.Benchmarks;

/// <summary>
/// `gemm-quick`: a fast, non-BenchmarkDotNet table of GEMM and attention throughput as a fraction of the FMA peak
/// measured in the same process (the machine is shared, so only same-run ratios are meaningful).
/// Options: --threads N (default 2), --level avx512|avx2|vector128|scalar, --before (also time the old kernels).
/// </summary>
public static class QuickBench
{
    public static void Run(string[] args)
    {
        int threads = 2;
        bool before = false;
        for (int i = 0; i < args.Length; i++)
        {
            if (args[i] == "--threads") threads = int.Parse(args[++i]);
            else if (args[i] == "--level") CpuFeatures.Override = Enum.Parse<SimdLevel>(args[++i], ignoreCase: true);
            else if (args[i] == "--before") before = true;
        }
        CpuParallel.Threads = threads;
        Console.WriteLine($"threads {threads}, SIMD level {CpuFeatures.Level} (detected {CpuFeatures.Detected}), {Environment.ProcessorCount} logical CPUs");
        double peak = CpuPeak.MeasureGflops(threads);
        Console.WriteLine($"measured fp32 FMA peak: {peak:F1} GFLOP/s");
        Console.WriteLine();
        Console.WriteLine($"| {"shape",-36} | {"ms",9} | {"GFLOP/s",8} | {"of peak",7} |" + (before ? $" {"before ms",9} | {"before GFLOP/s",14} | speedup |" : ""));
        Console.WriteLine($"|{new string('-', 38)}|{new string('-', 11)}|{new string('-', 10)}|{new string('-', 9)}|" + (before ? $"{new string('-', 11)}|{new string('-', 16)}|---------|" : ""));
        var rng = new Random(1);
        foreach (var s in GemmShape.All)
        {
            float[] a = Random(rng, s.M * s.K), w = Random(rng, s.N * s.K), bias = Random(rng, s.N), c = new float[s.M * s.N];
            var packed = PackedWeight.Pack(w, s.N, s.K);
            double ms = TimeMs(() => Gemm.Linear(a, s.M, packed, bias, c));
            string row = $"| {s,-36} | {ms,9:F3} | {s.Flops / ms / 1e6,8:F1} | {s.Flops / ms / 1e6 / peak,7:P0} |";
            if (before)
            {
                double msRef = TimeMs(() => ReferenceKernels.Linear(a, s.M, w, s.N, s.K, bias, c, threads), minSeconds: 0.3);
                row += $" {msRef,9:F3} | {s.Flops / msRef / 1e6,14:F1} | {msRef / ms,6:F1}x |";
            }
            Console.WriteLine(row);
        }
        foreach (var s in AttentionShape.All)
        {
            int hd = s.H * s.D;
            float[] q = Random(rng, s.B * s.T * hd), k = Random(rng, s.B * s.T * hd), v = Random(rng, s.B * s.T * hd), o = new float[s.B * s.T * hd];
            float scale = 1f / MathF.Sqrt(s.D);
            double ms = TimeMs(() => AttentionKernel.Run(q, k, v, o, s.B, s.T, s.T, s.H, s.D, scale, false, default));
            Console.WriteLine($"| attention {s,-26} | {ms,9:F3} | {s.Flops / ms / 1e6,8:F1} | {s.Flops / ms / 1e6 / peak,7:P0} |");
        }
        Console.WriteLine();
        Console.WriteLine($"peak re-measured after the runs: {CpuPeak.MeasureGflops(threads):F1} GFLOP/s");
    }

    private static float[] Random(Random rng, int n)
    {
        var x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        return x;
    }

    /// <summary>Median of repeated runs after warm-up (tiered JIT reaches full optimisation during warm-up).</summary>
    private static double TimeMs(Action body, double minSeconds = 1.0)
    {
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed.TotalSeconds < 0.3) body(); // warm-up + tier-up
        var times = new List<double>();
        sw.Restart();
        while (sw.Elapsed.TotalSeconds < minSeconds || times.Count < 5)
        {
            long t0 = Stopwatch.GetTimestamp();
            body();
            times.Add(Stopwatch.GetElapsedTime(t0).TotalMilliseconds);
        }
        times.Sort();
        return times[times.Count / 2];
    }
}
