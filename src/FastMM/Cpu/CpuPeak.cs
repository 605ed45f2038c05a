using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace FastMM.Cpu;

/// <summary>Measures the machine's fp32 FMA throughput, the yardstick GEMM benchmarks report against.</summary>
public static class CpuPeak
{
    /// <summary>
    /// fp32 GFLOP/s (an FMA counts as 2 flops) of <paramref name="threads"/> threads each running 12 independent FMA
    /// chains of the widest supported vector (12 chains cover Zen 5's 2 pipes × 4-cycle latency with slack).
    /// Best of several ~50 ms trials, so a co-tenant stealing a core lowers the figure less.
    /// </summary>
    public static double MeasureGflops(int threads, int trials = 5)
    {
        if (threads < 1) throw new ArgumentOutOfRangeException(nameof(threads));
        SimdLevel level = CpuFeatures.Detected;
        long iterations = 1L << 20; // ~12.6M FMAs per thread per trial
        double best = 0;
        for (int trial = 0; trial < trials; trial++)
        {
            using var start = new Barrier(threads + 1);
            var workers = new Thread[threads];
            for (int t = 0; t < threads; t++)
            {
                workers[t] = new Thread(() => { start.SignalAndWait(); Chains(level, iterations); }) { IsBackground = true };
                workers[t].Start();
            }
            start.SignalAndWait();
            var sw = Stopwatch.StartNew();
            foreach (var w in workers) w.Join();
            double seconds = sw.Elapsed.TotalSeconds;
            double flops = (double)threads * iterations * 12 * 2 * Lanes(level);
            best = Math.Max(best, flops / seconds / 1e9);
        }
        return best;
    }

    /// <summary>
    /// Sustained memory read bandwidth in GB/s: each thread sums its own slice of a buffer far larger than the caches
    /// (4 independent vector streams), best of several passes. Decode speed is bounded by this ÷ bytes read per token.
    /// </summary>
    public static unsafe double MeasureReadBandwidth(int threads, long bytes = 1L << 30, int passes = 3)
    {
        if (threads < 1) throw new ArgumentOutOfRangeException(nameof(threads));
        long floats = bytes / sizeof(float) / (threads * 64L) * (threads * 64L);
        var buffer = GC.AllocateUninitializedArray<float>((int)Math.Min(floats, Array.MaxLength), pinned: true);
        floats = buffer.Length / (threads * 64L) * (threads * 64L);
        Array.Fill(buffer, 1f); // touch every page before timing
        double best = 0;
        fixed (float* p = buffer)
        {
            nint basePtr = (nint)p;
            long per = floats / threads;
            for (int pass = 0; pass < passes; pass++)
            {
                using var start = new Barrier(threads + 1);
                var workers = new Thread[threads];
                for (int t = 0; t < threads; t++)
                {
                    long offset = t * per;
                    workers[t] = new Thread(() => { start.SignalAndWait(); s_sink += SumStream((float*)basePtr + offset, per); }) { IsBackground = true };
                    workers[t].Start();
                }
                start.SignalAndWait();
                var sw = Stopwatch.StartNew();
                foreach (var w in workers) w.Join();
                best = Math.Max(best, floats * 4.0 / sw.Elapsed.TotalSeconds / 1e9);
            }
        }
        return best;
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static unsafe float SumStream(float* p, long n)
    {
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        for (long i = 0; i + 32 <= n; i += 32)
        {
            a0 += Vector256.Load(p + i); a1 += Vector256.Load(p + i + 8);
            a2 += Vector256.Load(p + i + 16); a3 += Vector256.Load(p + i + 24);
        }
        return Vector256.Sum(a0 + a1 + a2 + a3);
    }

    private static int Lanes(SimdLevel level) => level switch
    {
        SimdLevel.Avx512 => 16,
        SimdLevel.Avx2 => 8,
        SimdLevel.Vector128 => 4,
        _ => 1,
    };

    private static float s_sink;

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void Chains(SimdLevel level, long iterations)
    {
        switch (level)
        {
            case SimdLevel.Avx512: s_sink = Chains512(iterations); break;
            case SimdLevel.Avx2: s_sink = Chains256(iterations); break;
            default: s_sink = Chains128(iterations); break;
        }
    }

    // acc = acc·m + c converges (|m| < 1), so values stay normal and the loop cannot be folded away.
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static float Chains512(long iterations)
    {
        var m = Vector512.Create(0.999f); var c = Vector512.Create(1e-3f);
        Vector512<float> a0 = Vector512.Create(1f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0;
        for (long i = 0; i < iterations; i++)
        {
            a0 = Avx512F.FusedMultiplyAdd(a0, m, c); a1 = Avx512F.FusedMultiplyAdd(a1, m, c); a2 = Avx512F.FusedMultiplyAdd(a2, m, c);
            a3 = Avx512F.FusedMultiplyAdd(a3, m, c); a4 = Avx512F.FusedMultiplyAdd(a4, m, c); a5 = Avx512F.FusedMultiplyAdd(a5, m, c);
            a6 = Avx512F.FusedMultiplyAdd(a6, m, c); a7 = Avx512F.FusedMultiplyAdd(a7, m, c); a8 = Avx512F.FusedMultiplyAdd(a8, m, c);
            a9 = Avx512F.FusedMultiplyAdd(a9, m, c); a10 = Avx512F.FusedMultiplyAdd(a10, m, c); a11 = Avx512F.FusedMultiplyAdd(a11, m, c);
        }
        return Vector512.Sum(a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11);
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static float Chains256(long iterations)
    {
        var m = Vector256.Create(0.999f); var c = Vector256.Create(1e-3f);
        Vector256<float> a0 = Vector256.Create(1f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0;
        for (long i = 0; i < iterations; i++)
        {
            a0 = Fma.MultiplyAdd(a0, m, c); a1 = Fma.MultiplyAdd(a1, m, c); a2 = Fma.MultiplyAdd(a2, m, c);
            a3 = Fma.MultiplyAdd(a3, m, c); a4 = Fma.MultiplyAdd(a4, m, c); a5 = Fma.MultiplyAdd(a5, m, c);
            a6 = Fma.MultiplyAdd(a6, m, c); a7 = Fma.MultiplyAdd(a7, m, c); a8 = Fma.MultiplyAdd(a8, m, c);
            a9 = Fma.MultiplyAdd(a9, m, c); a10 = Fma.MultiplyAdd(a10, m, c); a11 = Fma.MultiplyAdd(a11, m, c);
        }
        return Vector256.Sum(a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11);
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static float Chains128(long iterations)
    {
        var m = Vector128.Create(0.999f); var c = Vector128.Create(1e-3f);
        Vector128<float> a0 = Vector128.Create(1f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0;
        for (long i = 0; i < iterations; i++)
        {
            a0 = Vector128.MultiplyAddEstimate(a0, m, c); a1 = Vector128.MultiplyAddEstimate(a1, m, c); a2 = Vector128.MultiplyAddEstimate(a2, m, c);
            a3 = Vector128.MultiplyAddEstimate(a3, m, c); a4 = Vector128.MultiplyAddEstimate(a4, m, c); a5 = Vector128.MultiplyAddEstimate(a5, m, c);
            a6 = Vector128.MultiplyAddEstimate(a6, m, c); a7 = Vector128.MultiplyAddEstimate(a7, m, c); a8 = Vector128.MultiplyAddEstimate(a8, m, c);
            a9 = Vector128.MultiplyAddEstimate(a9, m, c); a10 = Vector128.MultiplyAddEstimate(a10, m, c); a11 = Vector128.MultiplyAddEstimate(a11, m, c);
        }
        return Vector128.Sum(a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11);
    }
}
