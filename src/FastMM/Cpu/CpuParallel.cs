using System.Diagnostics;
using System.Runtime.ExceptionServices;

namespace FastMM.Cpu;

/// <summary>
/// Degree of parallelism for CPU kernels, and a persistent worker pool to run them on. Set <see cref="Threads"/> once
/// (e.g. the CLI's --threads). The pool keeps <c>Threads − 1</c> parked workers; the calling thread is the last worker,
/// so a parallel call costs a semaphore release and a wait, and allocates nothing.
/// </summary>
public static class CpuParallel
{
    private static int _threads = Environment.ProcessorCount;

    public static int Threads
    {
        get => _threads;
        set => _threads = value >= 1 ? value : throw new ArgumentOutOfRangeException(nameof(value), "threads must be >= 1");
    }

    /// <summary>One parallel loop body. Implemented by reusable kernel job objects so that dispatch does not allocate.</summary>
    internal interface IWork
    {
        void Execute(int index);
    }

    /// <summary>Runs body(i) for i in [0, count) over up to <see cref="Threads"/> workers, in contiguous chunks.</summary>
    public static void For(int count, Action<int> body)
    {
        if (count <= 0) return;
        int threads = Math.Min(_threads, count);
        if (threads <= 1 || !Pool.TryEnter())
        {
            for (int i = 0; i < count; i++) body(i);
            return;
        }
        // The wrapper is cached per calling thread; TryEnter guarantees this thread is not already inside a parallel call.
        var work = t_actionWork ??= new ActionWork();
        work.Body = body;
        try { Pool.RunEntered(work, count, threads, chunk: Math.Max(1, count / (threads * 8))); }
        finally { work.Body = null; }
    }

    /// <summary>Runs work.Execute(i) for i in [0, count), handing out single indices (kernel tasks are coarse).</summary>
    internal static void Run(IWork work, int count, int chunk = 1)
    {
        if (count <= 0) return;
        int threads = Math.Min(_threads, count);
        if (threads <= 1 || !Pool.TryEnter())
        {
            // Serial, or nested inside another parallel call (workers are busy): run inline.
            for (int i = 0; i < count; i++) work.Execute(i);
            return;
        }
        Pool.RunEntered(work, count, threads, chunk);
    }

    [ThreadStatic] private static ActionWork? t_actionWork;

    private sealed class ActionWork : IWork
    {
        public Action<int>? Body;
        public void Execute(int index) => Body!(index);
    }

    private static class Pool
    {
        /// <summary>
        /// How long an idle worker polls for the next call before it blocks. Decode issues a parallel call every few
        /// microseconds with single-threaded work between; waking a blocked thread costs several microseconds (more in
        /// a VM), which at ~120 small matmuls a token adds up to a tenth of the token.
        /// </summary>
        private static readonly long s_spinTicks = Stopwatch.Frequency / 10_000; // 100 µs

        private static readonly SemaphoreSlim s_wake = new(0);
        private static readonly ManualResetEventSlim s_done = new(false);
        private static readonly object s_grow = new();
        private static int s_workerCount;
        private static int s_busy;

        // The current call; written before workers are released, read after they wake (the semaphore is a full fence).
        private static IWork? s_work;
        private static int s_count, s_chunk, s_next, s_pending;
        private static Exception? s_error;

        public static bool TryEnter() => Interlocked.CompareExchange(ref s_busy, 1, 0) == 0;

        public static void RunEntered(IWork work, int count, int threads, int chunk)
        {
            try
            {
                EnsureWorkers(threads - 1);
                s_work = work; s_count = count; s_chunk = chunk; s_next = 0; s_error = null;
                s_pending = threads - 1;
                s_done.Reset();
                s_wake.Release(threads - 1);
                Drain();
                // The event is only a wake-up hint: a worker's Set from the previous call can land after our Reset,
                // so completion is decided by the pending count alone.
                while (Volatile.Read(ref s_pending) != 0)
                {
                    s_done.Wait();
                    s_done.Reset();
                }
                s_work = null;
                if (s_error is { } e) ExceptionDispatchInfo.Throw(e);
            }
            finally { Volatile.Write(ref s_busy, 0); }
        }

        private static void Drain()
        {
            IWork work = s_work!;
            int count = s_count, chunk = s_chunk;
            try
            {
                while (true)
                {
                    int start = Interlocked.Add(ref s_next, chunk) - chunk;
                    if (start >= count) break;
                    int end = Math.Min(count, start + chunk);
                    for (int i = start; i < end; i++) work.Execute(i);
                }
            }
            catch (Exception e)
            {
                Interlocked.CompareExchange(ref s_error, e, null);
                Volatile.Write(ref s_next, count); // stop handing out work
            }
        }

        /// <summary>Takes one count of <see cref="s_wake"/> (one worker's place in a call): polls first, then blocks.</summary>
        private static void WaitForCall()
        {
            if (s_wake.Wait(0)) return;
            long deadline = Stopwatch.GetTimestamp() + s_spinTicks;
            while (Stopwatch.GetTimestamp() < deadline)
            {
                Thread.SpinWait(8);
                if (s_wake.CurrentCount > 0 && s_wake.Wait(0)) return;
            }
            s_wake.Wait();
        }

        private static void EnsureWorkers(int needed)
        {
            if (Volatile.Read(ref s_workerCount) >= needed) return;
            lock (s_grow)
            {
                while (s_workerCount < needed)
                {
                    var t = new Thread(WorkerLoop) { IsBackground = true, Name = $"FastMM CPU worker {s_workerCount + 1}" };
                    t.Start();
                    s_workerCount++;
                }
            }
        }

        private static void WorkerLoop()
        {
            while (true)
            {
                WaitForCall();
                Drain();
                if (Interlocked.Decrement(ref s_pending) == 0) s_done.Set();
            }
        }
    }
}
