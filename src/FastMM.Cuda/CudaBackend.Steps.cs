using System.Runtime.InteropServices;
using FastMM.Cuda.Driver;

namespace FastMM.Cuda;

/// <summary>
/// Decode steps as CUDA graphs (<see cref="IStepGraphs"/>). Inside a step nothing reaches the driver: launches and
/// device copies are recorded, tensors and scratch come from a bump arena whose addresses repeat from step to step,
/// and uploads are staged in pinned host memory (a block table, length or slots once per step) whose device mirror is filled by one
/// copy at the start of the step. At Commit a peephole pass fuses each residual add into the norm that follows it,
/// each decode GEMV's activation quantization into the norm, SwiGLU or attention merge that produced its input, and
/// each KV append into the RoPE launch before it; then the recording is compared with the one the current graph was captured from: equal (same kernels, grids and
/// argument bytes, same staged length; only the staged bytes differ) means one cuGraphLaunch, whose copy node reads
/// the new staged bytes. Anything else is captured anew (stream capture of the recorded work, instantiate, launch).
/// Per-token values therefore never travel as kernel arguments in a step: they are uploaded (slots, sequence
/// length, RoPE rows, token ids).
/// </summary>
public sealed unsafe partial class CudaBackend : IStepGraphs
{
    private const long ArenaChunkBytes = 8L << 20;
    private const long StepStagingBytes = 1L << 20;

    private enum OpKind : byte { Kernel, Memset, Copy }

    /// <summary>One recorded operation; kernel arguments live in the recording's argument buffer.</summary>
    private readonly record struct StepOp(OpKind Kind, CudaFunction? Function, Dim3 Grid, Dim3 Block, int ArgStart, int ArgCount,
        ulong Dst, ulong Src, long Bytes);

    private sealed class Recording
    {
        public readonly List<StepOp> Ops = new();
        public KernelArg[] Args = new KernelArg[4096];
        public int ArgCount;
        /// <summary>Per upload buffer: its device mirror and the staged bytes the step copies into it.</summary>
        public readonly List<(ulong Device, long Bytes)> Uploads = new();

        public void Clear() { Ops.Clear(); ArgCount = 0; Uploads.Clear(); }

        public int AddArgs(ReadOnlySpan<KernelArg> args)
        {
            if (ArgCount + args.Length > Args.Length) Array.Resize(ref Args, Math.Max(Args.Length * 2, ArgCount + args.Length));
            args.CopyTo(Args.AsSpan(ArgCount));
            int start = ArgCount;
            ArgCount += args.Length;
            return start;
        }

        public bool SameAs(Recording other)
        {
            if (Ops.Count != other.Ops.Count || !Uploads.SequenceEqual(other.Uploads)) return false;
            for (int i = 0; i < Ops.Count; i++)
            {
                StepOp a = Ops[i], b = other.Ops[i];
                if (a.Kind != b.Kind || !ReferenceEquals(a.Function, b.Function) || a.Grid != b.Grid || a.Block != b.Block
                    || a.Dst != b.Dst || a.Src != b.Src || a.Bytes != b.Bytes || a.ArgCount != b.ArgCount)
                    return false;
                if (!MemoryMarshal.AsBytes(Args.AsSpan(a.ArgStart, a.ArgCount)).SequenceEqual(MemoryMarshal.AsBytes(other.Args.AsSpan(b.ArgStart, b.ArgCount))))
                    return false;
            }
            return true;
        }
    }

    /// <summary>Tensor storage from the step arena: valid while its generation is the arena's.</summary>
    private sealed class ArenaSlice(ulong pointer, int generation)
    {
        public readonly ulong Pointer = pointer;
        public readonly int Generation = generation;
    }

    /// <summary>Device scratch for one op: from the stream-ordered pool (eager), or the step arena (nothing to free).</summary>
    private readonly struct Scratch(ulong pointer, StreamMemory? owned) : IDisposable
    {
        public ulong Pointer { get; } = pointer;
        public void Dispose() => owned?.Dispose();
    }

    private sealed class StepScope(CudaBackend backend) : IStepScope
    {
        private bool _done;
        public void Commit() { if (!_done) { _done = true; backend.EndStep(commit: true); } }
        public void Dispose() { if (!_done) { _done = true; backend.EndStep(commit: false); } }
    }

    private readonly bool _stepGraphs;
    private bool _inStep;
    private Recording _recording = new(), _graphRecording = new();
    private CudaGraphExec? _graph;
    private bool _graphInFlight;
    private readonly List<DeviceMemory> _arenaChunks = new();
    private int _arenaChunk;
    private long _arenaOffset;
    private int _arenaGeneration;
    /// <summary>Pinned staging and its device mirror; a step that outgrows one adds a larger one (the next step keeps only that).</summary>
    private sealed class UploadBuffer(PinnedHostMemory host, DeviceMemory device) : IDisposable
    {
        public readonly PinnedHostMemory Host = host;
        public readonly DeviceMemory Device = device;
        public long Used;
        public void Dispose() { Host.Dispose(); Device.Dispose(); }
    }

    private readonly List<UploadBuffer> _uploadBuffers = new();
    /// <summary>Memory released inside a step that the step's deferred work may still read: freed after it is issued.</summary>
    private readonly List<IDisposable> _releasedInStep = new();
    /// <summary>This step's uploads (buffer, offset, length), for staging identical bytes once.</summary>
    private readonly List<(UploadKind Kind, int Buffer, long Offset, int Length)> _stepUploads = new();

    /// <summary>Steps run as a replayed graph, steps recorded anew (captures), steps run op by op (graphs off).</summary>
    public (long Replays, long Captures, long Eager) StepCounts => (_replays, _captures, _eagerSteps);
    private long _replays, _captures, _eagerSteps;
    public int OpsPerStep { get; private set; }
    private long _stepStart, _recordTicks, _commitTicks;

    public (double RecordMs, double CommitMs) StepHostMs
    {
        get
        {
            long steps = Math.Max(1, _replays + _captures + _eagerSteps);
            return (_recordTicks * 1000.0 / System.Diagnostics.Stopwatch.Frequency / steps, _commitTicks * 1000.0 / System.Diagnostics.Stopwatch.Frequency / steps);
        }
    }

    public IStepScope BeginStep()
    {
        if (_inStep) throw new InvalidOperationException("cuda: a step is already open (steps do not nest)");
        _context.MakeCurrent();
        // The previous graph reads the staging buffer and writes the arena: both are reused now.
        if (_graphInFlight) { _stream.Synchronize(); _graphInFlight = false; }
        _inStep = true;
        _recording.Clear();
        _arenaGeneration++;
        _arenaChunk = 0;
        _arenaOffset = 0;
        while (_uploadBuffers.Count > 1) { _uploadBuffers[0].Dispose(); _uploadBuffers.RemoveAt(0); }
        foreach (var u in _uploadBuffers) u.Used = 0;
        _stepUploads.Clear();
        _stepStart = System.Diagnostics.Stopwatch.GetTimestamp();
        return new StepScope(this);
    }

    private void EndStep(bool commit)
    {
        _inStep = false;
        try
        {
            if (commit) Run();
        }
        finally
        {
            _recording.Clear();
            FreeReleasedInStep();
        }
    }

    /// <summary>The recorded step: fused, then replayed from the graph, captured anew, or issued op by op.</summary>
    private void Run()
    {
        long recorded = System.Diagnostics.Stopwatch.GetTimestamp();
        _recordTicks += recorded - _stepStart;
        _context.MakeCurrent();
        foreach (var u in _uploadBuffers)
            if (u.Used > 0) _recording.Uploads.Add((u.Device.Pointer, u.Used));
        FuseRecorded(_recording);
        OpsPerStep = _recording.Ops.Count + _recording.Uploads.Count;
        if (!_stepGraphs)
        {
            IssueAll(_recording);
            _eagerSteps++;
        }
        else if (_graph is not null && _recording.SameAs(_graphRecording))
        {
            _graph.Launch(_stream);
            _replays++;
        }
        else
        {
            _graph?.Dispose();
            _graph = null;
            _stream.BeginCapture(CuStreamCaptureMode.ThreadLocal);
            try
            {
                IssueAll(_recording);
            }
            catch
            {
                try { _stream.EndCapture().Dispose(); } catch (FastMMException) { /* the capture is already invalid */ }
                throw;
            }
            using (var graph = _stream.EndCapture()) _graph = graph.Instantiate();
            (_graphRecording, _recording) = (_recording, _graphRecording);
            _graph.Launch(_stream);
            _captures++;
        }
        _graphInFlight = true;
        _commitTicks += System.Diagnostics.Stopwatch.GetTimestamp() - recorded;
    }

    /// <summary>The staged uploads first (kernels only read them), then the recorded work in order.</summary>
    private void IssueAll(Recording r)
    {
        foreach (var u in _uploadBuffers)
            if (u.Used > 0) _context.CopyToDevice(u.Device.Pointer, u.Host.Pointer, u.Used, _stream);
        foreach (var op in r.Ops) Issue(r, op);
    }

    private void Issue(Recording r, in StepOp op)
    {
        switch (op.Kind)
        {
            case OpKind.Kernel:
                op.Function!.Launch(_stream, op.Grid, op.Block, r.Args.AsSpan(op.ArgStart, op.ArgCount));
                break;
            case OpKind.Memset:
                _context.Clear(op.Dst, op.Bytes, _stream);
                break;
            case OpKind.Copy:
                _context.CopyOnDevice(op.Dst, op.Src, op.Bytes, _stream);
                break;
        }
    }

    private void Record(StepOp op) => _recording.Ops.Add(op);

    private void Launch(string kernel, Dim3 grid, Dim3 block, params ReadOnlySpan<KernelArg> args)
    {
        var f = _kernels[kernel];
        if (_inStep)
        {
            if (grid.X == 0 || grid.Y == 0 || grid.Z == 0) return;
            Record(new StepOp(OpKind.Kernel, f, grid, block, _recording.AddArgs(args), args.Length, 0, 0, 0));
            return;
        }
        _context.MakeCurrent();
        f.Launch(_stream, grid, block, args);
    }

    private void ClearDevice(ulong dst, long bytes)
    {
        if (_inStep) Record(new StepOp(OpKind.Memset, null, default, default, 0, 0, dst, 0, bytes));
        else _context.Clear(dst, bytes, _stream);
    }

    private void CopyDevice(ulong dst, ulong src, long bytes)
    {
        if (_inStep) Record(new StepOp(OpKind.Copy, null, default, default, 0, 0, dst, src, bytes));
        else _context.CopyOnDevice(dst, src, bytes, _stream);
    }

    /// <summary>Bytes from the step arena (256-byte aligned); the same request sequence gets the same addresses every step.</summary>
    private ulong ArenaAllocate(long bytes)
    {
        bytes = Math.Max(256, (bytes + 255) & ~255L);
        while (true)
        {
            if (_arenaChunk == _arenaChunks.Count)
            {
                // New step memory starts as NaN (bytes 0xFF), so an element a step's kernel never writes shows up as NaN.
                var added = _context.Allocate(Math.Max(ArenaChunkBytes, bytes));
                _context.Fill(added.Pointer, added.Bytes, 0xFF, _stream);
                _arenaChunks.Add(added);
            }
            var chunk = _arenaChunks[_arenaChunk];
            if (_arenaOffset + bytes <= chunk.Bytes)
            {
                ulong p = chunk.Pointer + (ulong)_arenaOffset;
                _arenaOffset += bytes;
                return p;
            }
            _arenaChunk++;
            _arenaOffset = 0;
        }
    }

    private Scratch NewScratch(long bytes)
    {
        if (_inStep) return new Scratch(ArenaAllocate(bytes), null);
        _context.MakeCurrent();
        var m = _context.AllocateOnStream(_stream, bytes);
        return new Scratch(m.Pointer, m);
    }

    /// <summary>What an upload holds. Within a step, uploads of one kind with identical bytes share one copy (a decode
    /// step uploads the same block table, length and slots for every layer); uploads of different kinds never do, so
    /// a coincidence of values (a token id equal to the length) cannot change the recorded arguments.</summary>
    private enum UploadKind : byte { Private, BlockTable, SequenceLength, Slots }

    /// <summary>A device copy of host values for one op; within a step, staged bytes (see <see cref="UploadKind"/>).</summary>
    private Scratch Upload<T>(ReadOnlySpan<T> values, UploadKind kind = UploadKind.Private) where T : unmanaged
    {
        var bytes = MemoryMarshal.AsBytes(values);
        if (!_inStep)
        {
            _context.MakeCurrent();
            var m = _context.AllocateOnStream(_stream, bytes.Length);
            _context.CopyToDevice(m.Pointer, bytes, _stream);
            return new Scratch(m.Pointer, m);
        }
        if (kind != UploadKind.Private)
            foreach (var (k, bi, offset, length) in _stepUploads)
            {
                var u = _uploadBuffers[bi];
                if (k == kind && length == bytes.Length && bytes.SequenceEqual(new ReadOnlySpan<byte>((byte*)u.Host.Pointer + offset, length)))
                    return new Scratch(u.Device.Pointer + (ulong)offset, null);
            }
        long aligned = Math.Max(16, (bytes.Length + 15) & ~15L);
        if (_uploadBuffers.Count == 0 || _uploadBuffers[^1].Used + aligned > _uploadBuffers[^1].Host.Bytes)
        {
            long size = Math.Max(StepStagingBytes, 2 * aligned + (_uploadBuffers.Count == 0 ? 0 : _uploadBuffers[^1].Host.Bytes));
            var host = _context.AllocatePinned(size);
            try { _uploadBuffers.Add(new UploadBuffer(host, _context.Allocate(size))); }
            catch { host.Dispose(); throw; }
        }
        var buffer = _uploadBuffers[^1];
        bytes.CopyTo(new Span<byte>((byte*)buffer.Host.Pointer + buffer.Used, bytes.Length));
        if (kind != UploadKind.Private) _stepUploads.Add((kind, _uploadBuffers.Count - 1, buffer.Used, bytes.Length));
        ulong dst = buffer.Device.Pointer + (ulong)buffer.Used;
        buffer.Used += aligned;
        return new Scratch(dst, null);
    }

    /// <summary>
    /// Peephole fusion over a recorded step, in one pass (kept ops are compacted in place):
    /// add_broadcast(h, o) (no broadcast) followed by a norm of h becomes the norm alone with the residual fused,
    /// norm(x = o, residual = h, sum_out = h), which stores h + o into h (the same float sum) and normalises it; and
    /// rms_norm or swiglu writing y, followed by quantize_activations_q8_1 of exactly y, becomes the producer alone with
    /// its quantizing outputs set (the same quantize_q8_1_lane arithmetic, so the GEMV reads identical bytes).
    /// </summary>
    private static void FuseRecorded(Recording r)
    {
        var ops = r.Ops;
        int kept = 0;
        for (int i = 0; i < ops.Count; i++)
        {
            StepOp op = ops[i];
            if (kept > 0 && op.Kind == OpKind.Kernel && ops[kept - 1].Kind == OpKind.Kernel)
            {
                StepOp previous = ops[kept - 1];
                if (FuseResidualIntoNorm(r, previous, op)) { ops[kept - 1] = op; continue; }
                if (FuseQuantizeIntoProducer(r, previous, op)) continue;
                if (FuseKvAppendIntoRope(r, previous, op)) continue;
            }
            ops[kept++] = op;
        }
        ops.RemoveRange(kept, ops.Count - kept);
    }

    private static bool FuseResidualIntoNorm(Recording r, in StepOp add, in StepOp norm)
    {
        string name = norm.Function!.Name;
        if (add.Function!.Name != CudaKernelNames.AddBroadcast || (name != CudaKernelNames.RmsNorm && name != CudaKernelNames.LayerNorm)) return false;
        var a = r.Args.AsSpan(add.ArgStart, add.ArgCount);     // x, y, n, period
        var n = r.Args.AsSpan(norm.ArgStart, norm.ArgCount);   // x, residual, sum_out, …, rows, d, eps
        int rowsAt = name == CudaKernelNames.RmsNorm ? 5 : 6;
        long rows = n[rowsAt].Int32, d = n[rowsAt + 1].Int32;
        if (a[2].Bits != a[3].Bits || n[0].Bits != a[0].Bits || n[1].Bits != 0 || n[2].Bits != 0 || (ulong)(rows * d) != a[2].Bits) return false;
        ulong h = a[0].Bits, o = a[1].Bits;
        n[0] = KernelArg.Pointer(o);
        n[1] = KernelArg.Pointer(h);
        n[2] = KernelArg.Pointer(h);
        return true;
    }

    private static bool FuseQuantizeIntoProducer(Recording r, in StepOp producer, in StepOp quantize)
    {
        if (quantize.Function!.Name != CudaKernelNames.QuantizeActivations) return false;
        var p = r.Args.AsSpan(producer.ArgStart, producer.ArgCount);
        var q = r.Args.AsSpan(quantize.ArgStart, quantize.ArgCount); // x, xq, xds, M, K
        long m = q[3].Int32, k = q[4].Int32;
        int yAt, xqAt;
        long rows, width;
        switch (producer.Function!.Name)
        {
            case CudaKernelNames.RmsNorm: // x, residual, sum_out, weight, y, rows, d, eps, xq, xds
                yAt = 4; xqAt = 8; rows = p[5].Int32; width = p[6].Int32;
                break;
            case CudaKernelNames.SwiGlu:  // gate_up, y, rows (long long), inter, xq, xds
                yAt = 1; xqAt = 4; rows = (long)p[2].Bits; width = p[3].Int32;
                break;
            case CudaKernelNames.AttentionDecodeReduce: // acc, max, sum, out, heads, head_dim, splits, xq, xds (grid.y = batch)
                yAt = 3; xqAt = 7; rows = producer.Grid.Y; width = (long)p[4].Int32 * p[5].Int32;
                if (p[5].Int32 % QuantBlock != 0) return false;
                break;
            default:
                return false;
        }
        if (p[yAt].Bits != q[0].Bits || p[xqAt].Bits != 0 || rows != m || width != k || k % QuantBlock != 0) return false;
        p[xqAt] = q[1];
        p[xqAt + 1] = q[2];
        return true;
    }

    /// <summary>rope_apply of qkv followed by kv_append_f32 of the same rows becomes rope_apply with the append fused.</summary>
    private static bool FuseKvAppendIntoRope(Recording r, in StepOp rope, in StepOp append)
    {
        if (rope.Function!.Name != CudaKernelNames.RopeApply || append.Function!.Name != CudaKernelNames.KvAppendF32) return false;
        var p = r.Args.AsSpan(rope.ArgStart, rope.ArgCount);     // qkv, table, rows, row_stride, rotated_heads, head_dim, slots, k_offset, v_offset, kv_width, k_pool, v_pool
        var a = r.Args.AsSpan(append.ArgStart, append.ArgCount); // qkv, row_stride, k_offset, v_offset, kv_width, slots, rows, k_pool, v_pool
        if (p[0].Bits != a[0].Bits || p[3].Bits != a[1].Bits || p[2].Bits != a[6].Bits || p[6].Bits != 0) return false;
        p[6] = a[5];
        p[7] = a[2];
        p[8] = a[3];
        p[9] = a[4];
        p[10] = a[7];
        p[11] = a[8];
        return true;
    }

    /// <summary>Stream-ordered frees queued after the step's work, so they happen after it on the device too.</summary>
    private void FreeReleasedInStep()
    {
        foreach (var m in _releasedInStep) m.Dispose();
        _releasedInStep.Clear();
    }

    private void ThrowIfInStep(string what)
    {
        if (_inStep) throw new InvalidOperationException($"cuda: {what} inside a step (a step's results are ready after Commit)");
    }

    private void DisposeSteps()
    {
        _graph?.Dispose();
        foreach (var c in _arenaChunks) c.Dispose();
        _arenaChunks.Clear();
        foreach (var u in _uploadBuffers) u.Dispose();
        _uploadBuffers.Clear();
    }
}
