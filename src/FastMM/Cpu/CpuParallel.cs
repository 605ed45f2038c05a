namespace FastMM.Cpu;

/// <summary>Degree of parallelism for CPU kernels. Set once by the host (e.g. the CLI's --threads).</summary>
public static class CpuParallel
{
    private static int _threads = Environment.ProcessorCount;

    public static int Threads
    {
        get => _threads;
        set => _threads = value >= 1 ? value : throw new ArgumentOutOfRangeException(nameof(value), "threads must be >= 1");
    }

    /// <summary>Runs body(i) for i in [0, count) over up to <see cref="Threads"/> workers, in contiguous chunks.</summary>
    public static void For(int count, Action<int> body)
    {
        int t = Math.Min(_threads, count);
        if (t <= 1) { for (int i = 0; i < count; i++) body(i); return; }
        Parallel.For(0, t, new ParallelOptions { MaxDegreeOfParallelism = t }, w =>
        {
            int start = (int)((long)count * w / t), end = (int)((long)count * (w + 1) / t);
            for (int i = start; i < end; i++) body(i);
        });
    }
}
