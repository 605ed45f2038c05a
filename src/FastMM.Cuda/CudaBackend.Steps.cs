using System.Runtime.InteropServices;
using FastMM.Cuda.Driver;

namespace FastMM.Cuda;

/// <summary>
/// Decode steps as CUDA graphs (<see cref="IStepGraphs"/>). Inside a step nothing reaches the driver: launches and
/// device copies are recorded, tensors and scratch come from a bump arena whose addresses repeat from step to step,
/// and uploads are staged in pinned host memory (a block table, length or slots once per step) whose device mirror is filled by one
/// copy at the start of the step. At Commit a peephole pass fuses each residual add into the quantized GEMV before it
/// (or the norm after it), each decode GEMV's activation quantization into the norm, SwiGLU or attention that
/// produced its input and then that norm or SwiGLU into the GEMV, and each KV append into the RoPE launch before
/// it (<see cref="FuseRecorded"/>); then the recording is compared with the one the current graph was captured from: equal (same kernels, grids and
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
        /// <summary>Per upload buffer: its device mirror, its pinned source (a captured copy reads that address) and the staged bytes.</summary>
        public readonly List<(ulong Device, nint Host, long Bytes)> Uploads = new();

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

    /// <summary>Tensor storage from a slot's step arena: valid while the slot still holds the step that made it.</summary>
    private sealed class ArenaSlice(ulong pointer, int slot, long generation)
    {
        public readonly ulong Pointer = pointer;
        public readonly int Slot = slot;
        public readonly long Generation = generation;
    }

    /// <summary>Device scratch for one op: from the stream-ordered pool (eager), or the step arena (nothing to free).</summary>
    private readonly struct Scratch(ulong pointer, StreamMemory? owned) : IDisposable
    {
        public ulong Pointer { get; } = pointer;
        public void Dispose() => owned?.Dispose();
    }

    private sealed class StepScope(CudaBackend backend, long id) : IStepScope
    {
        private bool _done;
        public void Seal() { Open(); backend.SealStep(); }
        public void Commit() { if (!_done) { _done = true; backend.EndStep(commit: true); } }
        public void Dispose() { if (!_done) { _done = true; backend.EndStep(commit: false); } }
        public Tensor DeferredTokenEmbedding(Tensor table, int count) { Open(); return backend.DeferredTokenEmbedding(table, count); }
        public void SetTokens(ReadOnlySpan<int> ids) { Open(); backend.SetStepTokens(ids); }

        private void Open()
        {
            if (_done || backend._stepId != id) throw new InvalidOperationException("cuda: this step has already run or been dropped");
        }
    }

    /// <summary>
    /// What steps alternate between: two slots, each with its own arena, staging and graph, so that step n + 1 can be
    /// recorded (and step n's results read) while step n runs on the device. A slot is reused two steps later, after
    /// its last launch has finished.
    /// </summary>
    private sealed class StepSlot : IDisposable
    {
        public readonly List<DeviceMemory> ArenaChunks = new();
        public readonly List<UploadBuffer> UploadBuffers = new();
        public Recording GraphRecording = new();
        public CudaGraphExec? Graph;
        public CudaEvent? Finished;
        public bool InFlight;

        public void Dispose()
        {
            Graph?.Dispose();
            Finished?.Dispose();
            foreach (var c in ArenaChunks) c.Dispose();
            ArenaChunks.Clear();
            foreach (var u in UploadBuffers) u.Dispose();
            UploadBuffers.Clear();
        }
    }

    private enum StepState : byte { None, Recording, Sealed }

    private readonly bool _stepGraphs;
    /// <summary>True while a step records (ops are deferred); false again once it is sealed.</summary>
    private bool _inStep;
    private StepState _stepState;
    private bool _sealedReplays;
    private Recording _recording = new();
    private readonly StepSlot[] _slots = [new(), new()];
    private int _slotIndex;
    private StepSlot Slot => _slots[_slotIndex];
    private int _arenaChunk;
    private long _arenaOffset;
    /// <summary>Per slot, the step its arena holds (a count over all steps); a slice of another step is stale.</summary>
    private readonly long[] _slotGeneration = new long[2];
    private long _generations;
    /// <summary>Pinned staging and its device mirror; a step that outgrows one adds a larger one (the next step keeps only that).</summary>
    private sealed class UploadBuffer(PinnedHostMemory host, DeviceMemory device) : IDisposable
    {
        public readonly PinnedHostMemory Host = host;
        public readonly DeviceMemory Device = device;
        public long Used;
        public void Dispose() { Host.Dispose(); Device.Dispose(); }
    }

    /// <summary>Memory released inside a step that the step's deferred work may still read: freed after it is issued.</summary>
    private readonly List<IDisposable> _releasedInStep = new();
    /// <summary>This step's uploads (buffer, offset, length), for staging identical bytes once.</summary>
    private readonly List<(UploadKind Kind, int Buffer, long Offset, int Length)> _stepUploads = new();
    /// <summary>Where this step's deferred token ids are staged (buffer, offset, count), or Count 0; and whether they were set.</summary>
    private (int Buffer, long Offset, int Count) _stepTokens;
    private bool _stepTokensSet;
    private int _deferredVocab;
    /// <summary>The open step's number: a scope acts only on its own step.</summary>
    private long _stepId;

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
        if (_stepState != StepState.None) throw new InvalidOperationException("cuda: a step is already open (steps do not nest; commit or dispose the last one first)");
        _context.MakeCurrent();
        var slot = _slots[_slotIndex ^ 1];
        // Two steps ago this slot's graph read its staging and wrote its arena: both are reused now.
        if (slot.InFlight) { slot.Finished!.Synchronize(); slot.InFlight = false; }
        slot.Finished ??= _context.CreateEvent();
        _slotIndex ^= 1;
        _stepState = StepState.Recording;
        _inStep = true;
        _recording.Clear();
        _slotGeneration[_slotIndex] = ++_generations;
        _arenaChunk = 0;
        _arenaOffset = 0;
        while (slot.UploadBuffers.Count > 1) { slot.UploadBuffers[0].Dispose(); slot.UploadBuffers.RemoveAt(0); }
        foreach (var u in slot.UploadBuffers) u.Used = 0;
        _stepUploads.Clear();
        _stepTokens = default;
        _stepTokensSet = false;
        _stepStart = System.Diagnostics.Stopwatch.GetTimestamp();
        return new StepScope(this, ++_stepId);
    }

    /// <summary>
    /// Ends the recording without running it: the step is fused and matched against its slot's graph now, so that
    /// Commit only launches. Until then eager work may run (it runs before the step), e.g. reading the last step's logits.
    /// </summary>
    private void SealStep()
    {
        if (_stepState != StepState.Recording) throw new InvalidOperationException("cuda: only a recording step can be sealed");
        long sealedAt = System.Diagnostics.Stopwatch.GetTimestamp();
        _recordTicks += sealedAt - _stepStart;
        _inStep = false;
        _stepState = StepState.Sealed;
        foreach (var u in Slot.UploadBuffers)
            if (u.Used > 0) _recording.Uploads.Add((u.Device.Pointer, (nint)u.Host.Pointer, u.Used));
        FuseRecorded(_recording);
        OpsPerStep = _recording.Ops.Count + _recording.Uploads.Count;
        _sealedReplays = _stepGraphs && Slot.Graph is not null && _recording.SameAs(Slot.GraphRecording);
        _commitTicks += System.Diagnostics.Stopwatch.GetTimestamp() - sealedAt;
    }

    private void EndStep(bool commit)
    {
        try
        {
            if (commit)
            {
                if (_stepTokens.Count > 0 && !_stepTokensSet)
                    throw new InvalidOperationException("cuda: the step's deferred token embedding has no tokens (SetTokens before Commit)");
                if (_stepState == StepState.Recording) SealStep();
                Run();
            }
            else
                _slotIndex ^= 1; // nothing ran: the next step takes this slot again, and the last step's tensors stay valid
        }
        finally
        {
            _inStep = false;
            _stepState = StepState.None;
            _recording.Clear();
            FreeReleasedInStep();
        }
    }

    /// <summary>The sealed step: replayed from its slot's graph, captured anew, or issued op by op.</summary>
    private void Run()
    {
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        _context.MakeCurrent();
        var slot = Slot;
        // From the first launch on, the slot's staging and arena are in use until its event says otherwise.
        slot.InFlight = true;
        try
        {
            if (!_stepGraphs)
            {
                IssueAll(_recording);
                _eagerSteps++;
            }
            else if (_sealedReplays)
            {
                slot.Graph!.Launch(_stream);
                _replays++;
            }
            else
            {
                slot.Graph?.Dispose();
                slot.Graph = null;
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
                using (var graph = _stream.EndCapture()) slot.Graph = graph.Instantiate();
                (slot.GraphRecording, _recording) = (_recording, slot.GraphRecording);
                slot.Graph.Launch(_stream);
                _captures++;
            }
        }
        finally
        {
            slot.Finished!.Record(_stream); // after whatever was enqueued, so the next use of the slot waits for it
        }
        _commitTicks += System.Diagnostics.Stopwatch.GetTimestamp() - start;
    }

    /// <summary>Rows of <paramref name="table"/> for token ids staged as zeros now and set by <see cref="SetStepTokens"/> before the step runs.</summary>
    private Tensor DeferredTokenEmbedding(Tensor table, int count)
    {
        if (_stepState != StepState.Recording) throw new InvalidOperationException("cuda: a deferred token embedding belongs inside a recording step");
        if (_stepTokens.Count != 0) throw new InvalidOperationException("cuda: a step has one deferred token embedding");
        int d = table.Dim(1);
        var y = GatherRows(table, new int[count], d, UploadKind.DeferredTokens, count, d);
        var (_, buffer, offset, _) = _stepUploads[^1];
        _stepTokens = (buffer, offset, count);
        _deferredVocab = table.Dim(0);
        return y;
    }

    /// <summary>The token ids of this step's deferred embedding, written into its staging before it runs.</summary>
    private void SetStepTokens(ReadOnlySpan<int> ids)
    {
        if (_stepState == StepState.None) throw new InvalidOperationException("cuda: no open step to set tokens for");
        if (ids.Length != _stepTokens.Count)
            throw new ArgumentException($"cuda: the step's deferred embedding takes {_stepTokens.Count} token ids, got {ids.Length}");
        for (int i = 0; i < ids.Length; i++)
            if ((uint)ids[i] >= (uint)_deferredVocab)
                throw new FastMMException($"input_ids: token id {ids[i]} at position {i} is outside the vocabulary [0, {_deferredVocab})");
        var u = Slot.UploadBuffers[_stepTokens.Buffer];
        MemoryMarshal.AsBytes(ids).CopyTo(new Span<byte>((byte*)u.Host.Pointer + _stepTokens.Offset, ids.Length * sizeof(int)));
        _stepTokensSet = true;
    }

    /// <summary>The staged uploads first (kernels only read them), then the recorded work in order.</summary>
    private void IssueAll(Recording r)
    {
        foreach (var u in Slot.UploadBuffers)
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
            var chunks = Slot.ArenaChunks;
            if (_arenaChunk == chunks.Count)
            {
                // New step memory starts as NaN (bytes 0xFF), so an element a step's kernel never writes shows up as NaN.
                var added = _context.Allocate(Math.Max(ArenaChunkBytes, bytes));
                _context.Fill(added.Pointer, added.Bytes, 0xFF, _stream);
                chunks.Add(added);
            }
            var chunk = chunks[_arenaChunk];
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
    private enum UploadKind : byte { Private, BlockTable, SequenceLength, Slots, DeferredTokens }

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
        var buffers = Slot.UploadBuffers;
        if (kind is not (UploadKind.Private or UploadKind.DeferredTokens))
            foreach (var (k, bi, offset, length) in _stepUploads)
            {
                var u = buffers[bi];
                if (k == kind && length == bytes.Length && bytes.SequenceEqual(new ReadOnlySpan<byte>((byte*)u.Host.Pointer + offset, length)))
                    return new Scratch(u.Device.Pointer + (ulong)offset, null);
            }
        long aligned = Math.Max(16, (bytes.Length + 15) & ~15L);
        if (buffers.Count == 0 || buffers[^1].Used + aligned > buffers[^1].Host.Bytes)
        {
            long size = Math.Max(StepStagingBytes, 2 * aligned + (buffers.Count == 0 ? 0 : buffers[^1].Host.Bytes));
            var host = _context.AllocatePinned(size);
            try { buffers.Add(new UploadBuffer(host, _context.Allocate(size))); }
            catch { host.Dispose(); throw; }
        }
        var buffer = buffers[^1];
        bytes.CopyTo(new Span<byte>((byte*)buffer.Host.Pointer + buffer.Used, bytes.Length));
        if (kind != UploadKind.Private) _stepUploads.Add((kind, buffers.Count - 1, buffer.Used, bytes.Length));
        ulong dst = buffer.Device.Pointer + (ulong)buffer.Used;
        buffer.Used += aligned;
        return new Scratch(dst, null);
    }

    /// <summary>
    /// Peephole fusion over a recorded step, in one pass (kept ops are compacted in place):
    /// add_broadcast(h, o) (no broadcast) right after a quantized GEMV that wrote o becomes that GEMV adding into h
    /// as well; otherwise, followed by a norm of h, it becomes the norm alone with the residual fused,
    /// norm(x = o, residual = h, sum_out = h), which stores h + o into h (the same float sum) and normalises it;
    /// rms_norm, swiglu or the decode attention writing y, followed by quantize_activations_q8_1 of exactly y, becomes
    /// the producer alone with its quantizing outputs set (the same quantize_q8_1_lane arithmetic, so the GEMV reads
    /// identical bytes); and such an rms_norm or swiglu followed by its quantized GEMV becomes the GEMV alone, which
    /// computes its input itself (<see cref="FuseInputIntoGemv"/>). A Llama layer's decode is then six launches:
    /// QKV (with the norm), RoPE with the KV append, attention, O (with the residual add), gate/up (with the norm),
    /// down (with SwiGLU and the residual add).
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
                if (FuseInputIntoGemv(r, previous, op)) { ops[kept - 1] = op; continue; }
                if (FuseResidualIntoGemv(r, previous, op)) continue;
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
            case CudaKernelNames.AttentionDecodePagedF32: // q, q_stride, k, v, kv_stride, table, table_stride, seq_lens, block_size,
                                                          // acc, max, sum, out, counters, heads, kv_heads, head_dim, scale, xq, xds (grid.z = batch)
                yAt = 12; xqAt = 18; rows = producer.Grid.Z; width = (long)p[14].Int32 * p[16].Int32;
                if (p[16].Int32 % QuantBlock != 0) return false;
                break;
            case CudaKernelNames.AttentionDecodePagedInt8: // as F32 with k_scale, v_scale after kv_stride
                yAt = 14; xqAt = 20; rows = producer.Grid.Z; width = (long)p[16].Int32 * p[18].Int32;
                if (p[18].Int32 % QuantBlock != 0) return false;
                break;
            default:
                return false;
        }
        if (p[yAt].Bits != q[0].Bits || p[xqAt].Bits != 0 || rows != m || width != k || k % QuantBlock != 0) return false;
        p[xqAt] = q[1];
        p[xqAt + 1] = q[2];
        return true;
    }

    // Quantized decode GEMVs: xq, xds, qs, d, bias, y, M, N, K, act, then the fusable tail residual, input kind, src,
    // norm_weight, eps, out (linear_int4g_gemv has w, scale_min, group in place of qs, d: its tail starts one later).
    private static int GemvTailAt(in StepOp op) => op.Function!.Name switch
    {
        CudaKernelNames.LinearQ8_0Gemv or CudaKernelNames.LinearQ4_0Gemv => 10,
        CudaKernelNames.LinearInt4GroupGemv => 11,
        _ => -1,
    };

    /// <summary>The kernels' GemvInputKind: where a quantized decode GEMV takes its activations from.</summary>
    private enum GemvInput { Quantized = 0, RmsNorm = 1, SwiGlu = 2 }

    /// <summary>Whether the byte ranges [a, a + aBytes) and [b, b + bBytes) of device memory share a byte.</summary>
    private static bool Overlap(ulong a, long aBytes, ulong b, long bBytes) => a < b + (ulong)bBytes && b < a + (ulong)aBytes;

    /// <summary>The kernels' kGemvPrologueValues: the M·K int8 activations a GEMV block can build in shared memory.</summary>
    private const long GemvPrologueValues = 8192;
    /// <summary>
    /// Every block of a fused GEMV re-reads the producer's input rows (8 bytes per value: x and the norm weight, or
    /// gate and up), from L2. Fused only while that is small beside one launch (SmolLM2-135M's gate/up GEMV: 3.5 MB);
    /// wider outputs (an LM head) keep the separate launch.
    /// </summary>
    private const long GemvPrologueRereadBytes = 4L << 20;

    /// <summary>
    /// rms_norm_f32 (no residual; 128 threads, the GEMV's block size, so the sum of squares is reduced in the same
    /// order) or swiglu_f32 that quantized its output for exactly this quantized GEMV becomes the GEMV alone, which
    /// computes and quantizes its input itself (block 0 still stores the float rows the producer wrote).
    /// </summary>
    private static bool FuseInputIntoGemv(Recording r, in StepOp producer, in StepOp gemv)
    {
        int t = GemvTailAt(gemv);
        if (t < 0) return false;
        var g = r.Args.AsSpan(gemv.ArgStart, gemv.ArgCount);
        var p = r.Args.AsSpan(producer.ArgStart, producer.ArgCount);
        long m = g[t - 4].Int32, n = g[t - 3].Int32, k = g[t - 2].Int32;
        if ((GemvInput)g[t + 1].Int32 != GemvInput.Quantized || m * k > GemvPrologueValues
            || Ceil(n, GemvRowsPerBlock) * m * k * 8 > GemvPrologueRereadBytes)
            return false;
        // Block 0 stores the producer's output while every block reads its input (through the read-only cache): they
        // must not overlap.
        switch (producer.Function!.Name)
        {
            case CudaKernelNames.RmsNorm: // x, residual, sum_out, weight, y, rows, d, eps, xq, xds
                if (p[1].Bits != 0 || p[2].Bits != 0 || Overlap(p[4].Bits, m * k * 4, p[0].Bits, m * k * 4) || producer.Block.X != GemvThreads
                    || p[8].Bits != g[0].Bits || p[9].Bits != g[1].Bits || p[5].Int32 != m || p[6].Int32 != k)
                    return false;
                g[t + 1] = (int)GemvInput.RmsNorm;
                g[t + 2] = p[0];
                g[t + 3] = p[3];
                g[t + 4] = p[7];
                g[t + 5] = p[4];
                return true;
            case CudaKernelNames.SwiGlu:  // gate_up, y, rows (long long), inter, xq, xds
                if (p[4].Bits != g[0].Bits || p[5].Bits != g[1].Bits || (long)p[2].Bits != m || p[3].Int32 != k
                    || Overlap(p[1].Bits, m * k * 4, p[0].Bits, m * k * 8))
                    return false;
                g[t + 1] = (int)GemvInput.SwiGlu;
                g[t + 2] = p[0];
                g[t + 5] = p[1];
                return true;
            default:
                return false;
        }
    }

    /// <summary>A quantized GEMV writing o followed by add_broadcast(h, o) (no broadcast) becomes the GEMV adding each output into h too.</summary>
    private static bool FuseResidualIntoGemv(Recording r, in StepOp gemv, in StepOp add)
    {
        int t = GemvTailAt(gemv);
        if (t < 0 || add.Function!.Name != CudaKernelNames.AddBroadcast) return false;
        var g = r.Args.AsSpan(gemv.ArgStart, gemv.ArgCount);
        var a = r.Args.AsSpan(add.ArgStart, add.ArgCount);     // x, y, n, period
        long m = g[t - 4].Int32, outputs = m * g[t - 3].Int32;
        if (a[2].Bits != a[3].Bits || a[1].Bits != g[t - 5].Bits || a[0].Bits == a[1].Bits || (ulong)outputs != a[2].Bits || g[t].Bits != 0) return false;
        // A GEMV that computes its own input reads src in every block: adding into it from other blocks would race.
        var input = (GemvInput)g[t + 1].Int32;
        long srcBytes = m * g[t - 2].Int32 * (input == GemvInput.SwiGlu ? 2 : 1) * sizeof(float);
        if (input != GemvInput.Quantized && Overlap(g[t + 2].Bits, srcBytes, a[0].Bits, outputs * sizeof(float))) return false;
        g[t] = a[0];
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
        foreach (var slot in _slots) slot.Dispose();
    }
}
