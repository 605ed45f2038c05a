using System.Runtime.InteropServices;
using FastMM.Quant;
using FastMM.Backends;
using FastMM.Cuda.Driver;
using FastMM.Kv;
using K = FastMM.Cuda.CudaKernelNames;

namespace FastMM.Cuda;

/// <summary>Weight layouts a <see cref="CudaBackend"/> Linear can hold (see kernels/quant_matmul.cu).</summary>
public enum CudaWeightFormat
{
    F32,
    F16,
    /// <summary>GGUF Q8_0 (fp16 d + 32 int8 per 32 weights) split into planes: all blocks' int8 quants, then their d.</summary>
    Q8_0,
    /// <summary>GGUF Q4_0 (fp16 d + 16 bytes of nibbles per 32 weights) split into planes: all blocks' nibbles, then their d.</summary>
    Q4_0,
    /// <summary>Group-wise asymmetric INT4: nibbles [N, K/2] packed like Q4_0 per 32 weights, half2 (scale, min) per group.</summary>
    Int4Group,
}

/// <summary>
/// The CUDA backend: every <see cref="IBackend"/> op runs as kernels/*.cu kernels on one stream of one GPU; tensors are
/// F32 device buffers from the stream-ordered allocator (or, inside a decode step, a bump arena: see
/// CudaBackend.Steps.cs). Checked op by op against the CPU reference by the conformance suite on an H200
/// (scripts/device-check.sh; benchmarks/RESULTS.md has the run).
/// Not thread-safe, like the models that drive a backend.
/// </summary>
public sealed unsafe partial class CudaBackend : IBackend, IDeviceBandwidth, IDeviceArgmax
{
    private const int GemvMaxRows = 8;   // kernels' kGemvMaxRows: more rows than this take the GEMM path
    private const int QuantBlock = 32;
    private const int GemvRowsPerBlock = 4;
    private const int GemvThreads = 32 * GemvRowsPerBlock;
    private const int MaxHeadDim = 128;
    private const int DecodeGroupPerBlock = 16;
    /// <summary>Split counters of the decode attention: one per (sequence, KV head, group slice) of a launch.</summary>
    private const int DecodeSplitCounters = 1 << 16;

    private readonly CudaContext _context;
    private readonly CudaStream _stream;
    private readonly CudaKernels _kernels;
    /// <summary>Zeroed once; each decode attention launch leaves the counters it used at zero again.</summary>
    private readonly DeviceMemory _splitCounters;
    private PinnedHostMemory? _staging;
    private int[] _paddedTable = new int[64];

    public string Name => "cuda";
    /// <summary>Prefill attention and the tensor-core GEMMs (more than <see cref="GemvMaxRows"/> rows over quantized or F16 weights) take F16 operands.</summary>
    public BackendPrecision Precision { get; } = new(F16Attention: true, F16LinearMinRows: GemvMaxRows + 1);
    public CudaContext Context => _context;
    public string DeviceName => _context.DeviceName;

    /// <summary>Ten copies of 512 MiB (several times the L2) between two device buffers, timed with events after one warm-up.</summary>
    public double MeasureCopyBandwidth()
    {
        const long bytes = 512L << 20;
        const int copies = 10;
        ThrowIfInStep("MeasureCopyBandwidth");
        _context.MakeCurrent();
        using var src = _context.Allocate(bytes);
        using var dst = _context.Allocate(bytes);
        using var start = _context.CreateEvent();
        using var end = _context.CreateEvent();
        _context.Clear(src.Pointer, bytes, _stream);
        _context.CopyOnDevice(dst.Pointer, src.Pointer, bytes, _stream);
        start.Record(_stream);
        for (int i = 0; i < copies; i++) _context.CopyOnDevice(dst.Pointer, src.Pointer, bytes, _stream);
        end.Record(_stream);
        end.Synchronize();
        return 2.0 * bytes * copies / (end.ElapsedSince(start) * 1e-3) / 1e9;
    }

    private CudaBackend(CudaContext context, bool stepGraphs)
    {
        _context = context;
        _stepGraphs = stepGraphs;
        _stream = context.CreateStream();
        try
        {
            _kernels = CudaKernels.Load(context);
            _splitCounters = context.Allocate(DecodeSplitCounters * sizeof(int));
            context.Clear(_splitCounters.Pointer, _splitCounters.Bytes, _stream);
        }
        catch
        {
            _splitCounters?.Dispose();
            _kernels?.Dispose();
            _stream.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Opens GPU <paramref name="device"/>; fails with the driver's reason (no driver, no device, no kernels), never
    /// falls back. <paramref name="stepGraphs"/> false runs decode steps op by op instead of as replayed CUDA graphs.
    /// </summary>
    public static CudaBackend Create(int device = 0, bool stepGraphs = true) => Create(CudaDriver.Default, device, stepGraphs);

    /// <summary>As <see cref="Create(int, bool)"/> through a given driver library (tests pass the CUDA emulator's).</summary>
    public static CudaBackend Create(CudaDriver driver, int device = 0, bool stepGraphs = true)
    {
        var context = CudaContext.Open(driver, device);
        try
        {
            // compute_80 PTX and mma.sync m16n8k16 / ldmatrix need Ampere or newer.
            if (context.ComputeCapability < 80)
                throw new FastMMException($"cuda: {context} is older than sm_80, which the FastMM kernels need");
            return new CudaBackend(context, stepGraphs);
        }
        catch
        {
            context.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Makes <c>BackendRegistry.Create("cuda")</c> (and so <c>--backend cuda</c>) create this backend;
    /// <c>cuda:eager</c> runs decode steps op by op (no CUDA graphs), for comparison.
    /// </summary>
    public static void Register() => BackendRegistry.Register("cuda", option => option switch
    {
        null => Create(),
        "eager" => Create(stepGraphs: false),
        _ => throw new FastMMException($"cuda: unknown option '{option}' (choose cuda, or cuda:eager to run decode steps op by op)"),
    });

    // ---------------- memory ----------------

    private ulong Ptr(Tensor t)
    {
        if (!ReferenceEquals(t.Backend, this)) throw new ArgumentException($"{t} belongs to another backend");
        return t.Storage switch
        {
            StreamMemory m => m.Pointer,
            // Steps alternate between two arenas: a step's tensors live until the step after the next one begins.
            ArenaSlice a when _slotGeneration[a.Slot] == a.Generation => a.Pointer,
            ArenaSlice => throw new InvalidOperationException($"cuda: {t} was made by an earlier decode step; a step's tensors live until the step after the next one begins"),
            _ => throw new ArgumentException($"{t} is not a live CUDA tensor"),
        };
    }
    private static ulong Ptr(DeviceMemory? m) => m?.Pointer ?? 0;

    private Tensor New(params int[] shape)
    {
        long bytes = Tensor.Product(shape) * sizeof(float);
        if (_inStep) return new Tensor(this, shape, DType.F32, new ArenaSlice(ArenaAllocate(bytes), _slotIndex, _slotGeneration[_slotIndex]));
        _context.MakeCurrent();
        return new Tensor(this, shape, DType.F32, _context.AllocateOnStream(_stream, bytes));
    }

    /// <summary>Long-lived device copy of host bytes.</summary>
    private DeviceMemory UploadWeight(ReadOnlySpan<byte> bytes)
    {
        ThrowIfInStep("a weight upload");
        _context.MakeCurrent();
        var m = _context.Allocate(bytes.Length);
        try
        {
            _context.CopyToDevice(m.Pointer, bytes, _stream);
            return m;
        }
        catch
        {
            m.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Quant blocks (a header of scale data, then the quants) uploaded as two planes: every block's quants, then every
    /// block's header. A GGUF block is 18 or 34 bytes, so its quants are only 2-byte aligned as stored; split, each
    /// block's quants are 16-byte aligned and the kernels read them with 128-bit loads. Repacked a chunk at a time, so
    /// a large weight needs no second host copy.
    /// </summary>
    private (DeviceMemory Quants, DeviceMemory Headers) UploadBlockPlanes(ReadOnlySpan<byte> blocks, int blockBytes, int headerBytes)
    {
        ThrowIfInStep("a weight upload");
        _context.MakeCurrent();
        const int ChunkBlocks = 1 << 14;  // 256–544 KB of quants per copy
        int count = blocks.Length / blockBytes, quantBytes = blockBytes - headerBytes;
        var quants = _context.Allocate((long)count * quantBytes);
        DeviceMemory? headers = null;
        byte[] quantChunk = System.Buffers.ArrayPool<byte>.Shared.Rent(ChunkBlocks * quantBytes);
        byte[] headerChunk = System.Buffers.ArrayPool<byte>.Shared.Rent(ChunkBlocks * headerBytes);
        try
        {
            headers = _context.Allocate((long)count * headerBytes);
            for (int first = 0; first < count; first += ChunkBlocks)
            {
                int n = Math.Min(ChunkBlocks, count - first);
                for (int i = 0; i < n; i++)
                {
                    var block = blocks.Slice((first + i) * blockBytes, blockBytes);
                    block[..headerBytes].CopyTo(headerChunk.AsSpan(i * headerBytes));
                    block[headerBytes..].CopyTo(quantChunk.AsSpan(i * quantBytes));
                }
                _context.CopyToDevice(quants.Pointer + (ulong)first * (ulong)quantBytes, quantChunk.AsSpan(0, n * quantBytes), _stream);
                _context.CopyToDevice(headers.Pointer + (ulong)first * (ulong)headerBytes, headerChunk.AsSpan(0, n * headerBytes), _stream);
            }
            return (quants, headers);
        }
        catch
        {
            quants.Dispose();
            headers?.Dispose();
            throw;
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(quantChunk);
            System.Buffers.ArrayPool<byte>.Shared.Return(headerChunk);
        }
    }

    private DeviceMemory? UploadBias(ReadOnlySpan<float> bias, int outFeatures, string what)
    {
        if (bias.IsEmpty) return null;
        if (bias.Length != outFeatures) throw new FastMMException($"{what}: bias has {bias.Length} values, weight has {outFeatures} outputs");
        return UploadWeight(MemoryMarshal.AsBytes(bias));
    }

    private static KernelArg P(ulong pointer) => KernelArg.Pointer(pointer);
    private static int Ceil(long n, int d) => checked((int)((n + d - 1) / d));
    private static int ElementwiseBlocks(long n) => (int)Math.Clamp((n + 255) / 256, 1, 65535);

    public Tensor Zeros(params int[] shape)
    {
        var t = New(shape);
        ClearDevice(Ptr(t), t.Length * sizeof(float));
        return t;
    }

    public Tensor FromHost(ReadOnlySpan<float> data, params int[] shape)
    {
        if (data.Length != Tensor.Product(shape)) throw new ArgumentException($"{data.Length} values do not fill shape [{string.Join(",", shape)}]");
        if (_inStep)
        {
            using var staged = Upload(data); // private step memory the tensor can take over
            return new Tensor(this, shape, DType.F32, new ArenaSlice(staged.Pointer, _slotIndex, _slotGeneration[_slotIndex]));
        }
        var t = New(shape);
        _context.CopyToDevice(Ptr(t), MemoryMarshal.AsBytes(data), _stream);
        return t;
    }

    public void ToHost(Tensor t, Span<float> dst)
    {
        long bytes = t.Length * sizeof(float);
        if (dst.Length < t.Length) throw new ArgumentException($"ToHost: destination holds {dst.Length} values, {t} has {t.Length}");
        ThrowIfInStep("ToHost");
        _context.MakeCurrent();
        if (_staging is null || _staging.Bytes < bytes)
        {
            _staging?.Dispose();
            _staging = _context.AllocatePinned(Math.Max(bytes, 1 << 20));
        }
        _context.CopyToHost(_staging.Pointer, Ptr(t), bytes, _stream);
        _stream.Synchronize();
        _staging.AsSpan<float>((int)t.Length).CopyTo(dst);
    }

    public Tensor Weight(in TensorData w) => FromHost(w.ToFloatArray(), w.Shape);

    /// <summary>Arena tensors go with their step; memory released inside a step is freed after the step's work is issued.</summary>
    public void Release(Tensor t)
    {
        if (t.Storage is not StreamMemory m) return;
        if (_stepState != StepState.None) _releasedInStep.Add(m); // a sealed step may still read it when it launches
        else m.Dispose();
    }

    // ---------------- Linear ----------------

    private sealed class CudaLinear : LinearWeight
    {
        public readonly CudaWeightFormat Format;
        public readonly DeviceMemory Weight;
        /// <summary>Q8_0 / Q4_0: the d plane; Int4Group: (scale, min) per group; null for F32 / F16.</summary>
        public readonly DeviceMemory? Scales;
        public readonly DeviceMemory? Bias;
        public readonly int Group;

        public CudaLinear(CudaWeightFormat format, DeviceMemory weight, DeviceMemory? scales, DeviceMemory? bias, int n, int k, int group = 0)
        {
            Format = format; Weight = weight; Scales = scales; Bias = bias; Group = group; OutFeatures = n; InFeatures = k;
            WeightBytes = weight.Bytes + (scales?.Bytes ?? 0);
        }

        public override void Dispose()
        {
            Weight.Dispose();
            Scales?.Dispose();
            Bias?.Dispose();
        }
    }

    /// <summary>F16/BF16 weights stay 16-bit (tensor-core GEMM) when K is a multiple of 32; otherwise they become F32.</summary>
    public LinearWeight Linear(in TensorData weight, in TensorData? bias)
    {
        var (n, k, b) = BackendArgs.Linear(weight, bias);
        if (weight.DType is DType.F16 or DType.BF16 && k % QuantBlock == 0)
        {
            var halves = new Half[weight.ElementCount];
            if (weight.DType == DType.F16) MemoryMarshal.Cast<byte, Half>(weight.Bytes).CopyTo(halves);
            else System.Numerics.Tensors.TensorPrimitives.ConvertToHalf(weight.ToFloatArray(), halves);
            var w16 = UploadWeight(MemoryMarshal.AsBytes(halves.AsSpan()));
            return new CudaLinear(CudaWeightFormat.F16, w16, null, UploadBias(b, n, weight.Name), n, k);
        }
        return Linear(weight.ToFloatArray(), n, k, b);
    }

    public LinearWeight Linear(ReadOnlySpan<float> weight, int outFeatures, int inFeatures, ReadOnlySpan<float> bias)
    {
        if (weight.Length != (long)outFeatures * inFeatures) throw new ArgumentException($"Linear: {weight.Length} weights are not {outFeatures}x{inFeatures}");
        var w = UploadWeight(MemoryMarshal.AsBytes(weight));
        return new CudaLinear(CudaWeightFormat.F32, w, null, UploadBias(bias, outFeatures, "Linear"), outFeatures, inFeatures);
    }

    public LinearWeight Linear(in TensorData weight, in TensorData? bias, QuantType type)
    {
        if (weight.Shape.Length != 2) throw new FastMMException($"tensor '{weight.Name}': a Linear weight must be 2-D, got {weight.ShapeString}");
        float[] b = bias is TensorData bd ? bd.ToFloatArray() : [];
        return Linear(QuantizedMatrix.Quantize(weight.ToFloatArray(), weight.Shape[0], weight.Shape[1], type, weight.Name), b);
    }

    /// <summary>
    /// Q8_0 / Q4_0 blocks upload split into a quant plane and a scale plane, group-wise INT4 into the kernel's nibble
    /// plane and (scale, min) plane; plain formats become F16 (tensor-core path) or F32 weights.
    /// </summary>
    public LinearWeight Linear(QuantizedMatrix weight, ReadOnlySpan<float> bias)
    {
        int n = weight.Rows, k = weight.Columns;
        switch (weight.Type)
        {
            case QuantType.Q8_0: return LinearFromBlocks(CudaWeightFormat.Q8_0, weight.Bytes, 34, 2, QuantBlock, n, k, bias);
            case QuantType.Q4_0: return LinearFromBlocks(CudaWeightFormat.Q4_0, weight.Bytes, 18, 2, QuantBlock, n, k, bias);
            case QuantType.Int4G32 or QuantType.Int4G64 or QuantType.Int4G128:
                // half2 (scale, min), then the group's nibbles packed like Q4_0 per 32 weights
                return LinearFromBlocks(CudaWeightFormat.Int4Group, weight.Bytes, weight.Format.BlockBytes, 4, weight.Format.BlockElements, n, k, bias);
            default:
                {
                    var floats = weight.DequantizeAll();
                    if (weight.Type != QuantType.F32 && k % QuantBlock == 0)
                    {
                        var halves = new Half[floats.Length];
                        System.Numerics.Tensors.TensorPrimitives.ConvertToHalf(floats, halves);
                        return new CudaLinear(CudaWeightFormat.F16, UploadWeight(MemoryMarshal.AsBytes(halves.AsSpan())), null, UploadBias(bias, n, "Linear"), n, k);
                    }
                    return Linear(floats, n, k, bias);
                }
        }
    }

    /// <summary>
    /// A Linear from quant blocks as a <see cref="QuantizedMatrix"/> holds them ([N] rows of blocks, each a header of
    /// scale data then the quants: GGUF Q8_0 / Q4_0, or INT4 with (scale, min) per group), split on upload into the
    /// kernels' quant and scale planes.
    /// </summary>
    private CudaLinear LinearFromBlocks(CudaWeightFormat format, ReadOnlySpan<byte> blocks, int blockBytes, int headerBytes, int group,
        int outFeatures, int inFeatures, ReadOnlySpan<float> bias)
    {
        if (inFeatures % group != 0) throw new FastMMException($"{format}: in-features {inFeatures} is not a multiple of the block size {group}");
        long expected = (long)outFeatures * (inFeatures / group) * blockBytes;
        if (blocks.Length != expected) throw new FastMMException($"{format}: {blocks.Length} bytes, expected {expected} for {outFeatures}x{inFeatures}");
        var b = UploadBias(bias, outFeatures, format.ToString());
        try
        {
            var (quants, scales) = UploadBlockPlanes(blocks, blockBytes, headerBytes);
            return new CudaLinear(format, quants, scales, b, outFeatures, inFeatures, group);
        }
        catch
        {
            b?.Dispose();
            throw;
        }
    }

    public Tensor Linear(Tensor x, LinearWeight w, Activation act = Activation.None)
    {
        var lw = (CudaLinear)w;
        int k = x.Dim(-1), n = lw.OutFeatures;
        if (k != lw.InFeatures) throw new ArgumentException($"Linear: input has {k} features, weight expects {lw.InFeatures}");
        int m = (int)(x.Length / k);
        var shape = (int[])x.Shape.Clone();
        shape[^1] = n;
        var y = New(shape);
        ulong xp = Ptr(x), wp = lw.Weight.Pointer, bp = Ptr(lw.Bias), yp = Ptr(y);
        int a = (int)act;
        bool gemv = m <= GemvMaxRows;
        switch (lw.Format)
        {
            case CudaWeightFormat.F32:
                if (gemv) Launch(K.LinearF32Gemv, Ceil(n, GemvRowsPerBlock), 128, P(xp), P(wp), P(bp), P(yp), m, n, k, a);
                else Launch(K.LinearF32Gemm, new Dim3((uint)Ceil(n, 128), (uint)Ceil(m, 128)), 256, P(xp), P(wp), P(bp), P(yp), m, n, k, a);
                break;
            case CudaWeightFormat.F16:
                if (gemv) Launch(K.LinearF16Gemv, Ceil(n, GemvRowsPerBlock), 128, P(xp), P(wp), P(bp), P(yp), m, n, k, a);
                else
                {
                    var (grid, threads) = TensorCoreTiles(m, n);
                    Launch(K.LinearF16Gemm, grid, threads, P(xp), P(wp), P(bp), P(yp), m, n, k, a);
                }
                break;
            case CudaWeightFormat.Q8_0 or CudaWeightFormat.Q4_0 or CudaWeightFormat.Int4Group when !gemv:
                {
                    var (grid, threads) = TensorCoreTiles(m, n);
                    if (lw.Format == CudaWeightFormat.Int4Group)
                        Launch(K.LinearInt4GroupGemm, grid, threads, P(xp), P(wp), P(Ptr(lw.Scales)), lw.Group, P(bp), P(yp), m, n, k, a);
                    else Launch(lw.Format == CudaWeightFormat.Q8_0 ? K.LinearQ8_0Gemm : K.LinearQ4_0Gemm, grid, threads, P(xp), P(wp), P(Ptr(lw.Scales)), P(bp), P(yp), m, n, k, a);
                }
                break;
            default:
                // Decode: int8 activations per 32-block, then a dp4a GEMV.
                using (var xq = NewScratch((long)m * k))
                using (var xds = NewScratch((long)m * (k / QuantBlock) * 8))
                {
                    Launch(K.QuantizeActivations, Ceil((long)m * k, 256), 256, P(xp), P(xq.Pointer), P(xds.Pointer), m, k);
                    int blocks = Ceil(n, GemvRowsPerBlock);
                    // Trailing arguments: no residual, input kind 0 (the quantized activations) and its unused operands;
                    // a recorded decode step may fuse the producer of x and a following residual add into them.
                    if (lw.Format == CudaWeightFormat.Int4Group)
                        Launch(K.LinearInt4GroupGemv, blocks, GemvThreads, P(xq.Pointer), P(xds.Pointer), P(wp), P(Ptr(lw.Scales)), lw.Group, P(bp), P(yp), m, n, k, a,
                            P(0), (int)GemvInput.Quantized, P(0), P(0), 0f, P(0));
                    else Launch(lw.Format == CudaWeightFormat.Q8_0 ? K.LinearQ8_0Gemv : K.LinearQ4_0Gemv, blocks, GemvThreads,
                        P(xq.Pointer), P(xds.Pointer), P(wp), P(Ptr(lw.Scales)), P(bp), P(yp), m, n, k, a, P(0), (int)GemvInput.Quantized, P(0), P(0), 0f, P(0));
                }
                break;
        }
        return y;
    }

    /// <summary>
    /// Launch shape of the tensor-core GEMMs (kernels/quant_matmul.cu): 128×128 output tiles (256 threads) when that
    /// grid has at least one block per SM, else 64×64 tiles (128 threads), which keep more SMs busy on small products
    /// (SigLIP-B/16-512's 1024×768 outputs: 48 blocks of 128×128 against 192 of 64×64 on 132 SMs).
    /// </summary>
    internal static (Dim3 Grid, int Threads) TensorCoreTiles(int m, int n, int multiprocessors)
        => (long)Ceil(m, 128) * Ceil(n, 128) >= multiprocessors
            ? (new Dim3((uint)Ceil(n, 128), (uint)Ceil(m, 128)), 256)
            : (new Dim3((uint)Ceil(n, 64), (uint)Ceil(m, 64)), 128);

    private (Dim3 Grid, int Threads) TensorCoreTiles(int m, int n) => TensorCoreTiles(m, n, _context.Multiprocessors);

    public Tensor MatMulTransposed(Tensor a, Tensor b)
    {
        int m = a.Dim(0), k = a.Dim(1), n = b.Dim(0);
        if (b.Dim(1) != k) throw new ArgumentException($"MatMulTransposed: inner dims {k} and {b.Dim(1)} differ");
        var c = New(m, n);
        if (m <= GemvMaxRows) Launch(K.LinearF32Gemv, Ceil(n, GemvRowsPerBlock), 128, P(Ptr(a)), P(Ptr(b)), P(0), P(Ptr(c)), m, n, k, 0);
        else Launch(K.LinearF32Gemm, new Dim3((uint)Ceil(n, 128), (uint)Ceil(m, 128)), 256, P(Ptr(a)), P(Ptr(b)), P(0), P(Ptr(c)), m, n, k, 0);
        return c;
    }

    // ---------------- norms and elementwise ----------------

    public Tensor LayerNorm(Tensor x, Tensor gamma, Tensor beta, float eps)
    {
        int d = x.Dim(-1), rows = (int)(x.Length / d);
        if (gamma.Length != d || beta.Length != d) throw new ArgumentException($"LayerNorm: gamma {gamma} / beta {beta} do not match width {d}");
        var y = New((int[])x.Shape.Clone());
        Launch(K.LayerNorm, rows, 256, P(Ptr(x)), P(0), P(0), P(Ptr(gamma)), P(Ptr(beta)), P(Ptr(y)), rows, d, eps);
        return y;
    }

    public Tensor RmsNorm(Tensor x, Tensor weight, float eps)
    {
        int d = x.Dim(-1), rows = (int)(x.Length / d);
        if (weight.Length != d) throw new ArgumentException($"RmsNorm: weight {weight} does not match width {d}");
        var y = New((int[])x.Shape.Clone());
        // 128 threads, as the decode GEMVs that normalise their own input inside a step (norm_row.cuh): same bits.
        Launch(K.RmsNorm, rows, GemvThreads, P(Ptr(x)), P(0), P(0), P(Ptr(weight)), P(Ptr(y)), rows, d, eps, P(0), P(0));
        return y;
    }

    public void ActivationInPlace(Tensor x, Activation act)
    {
        if (act == Activation.None) return;
        Launch(K.Activation, ElementwiseBlocks(x.Length), 256, P(Ptr(x)), x.Length, (int)act);
    }

    public void AddInPlace(Tensor x, Tensor y)
    {
        if (y.Length == 0 || x.Length % y.Length != 0) throw new ArgumentException($"AddInPlace: {y} does not broadcast over {x}");
        Launch(K.AddBroadcast, ElementwiseBlocks(x.Length), 256, P(Ptr(x)), P(Ptr(y)), x.Length, y.Length);
    }

    public void ScaleInPlace(Tensor x, float scale, float bias = 0f)
        => Launch(K.ScaleBias, ElementwiseBlocks(x.Length), 256, P(Ptr(x)), x.Length, scale, bias);

    public void L2NormalizeInPlace(Tensor x)
    {
        int n = x.Dim(-1), rows = (int)(x.Length / n);
        Launch(K.L2NormalizeRows, rows, 256, P(Ptr(x)), rows, n);
    }

    public Tensor SwiGlu(Tensor gateUp)
    {
        int w = gateUp.Dim(-1), inter = w / 2;
        if (w % 2 != 0) throw new ArgumentException($"SwiGlu: width {w} is odd");
        long rows = gateUp.Length / w;
        var shape = (int[])gateUp.Shape.Clone();
        shape[^1] = inter;
        var y = New(shape);
        Launch(K.SwiGlu, ElementwiseBlocks(rows * inter), 256, P(Ptr(gateUp)), P(Ptr(y)), rows, inter, P(0), P(0));
        return y;
    }

    // ---------------- attention ----------------

    private static void CheckHeadDim(int headDim, string op)
    {
        if (headDim % 4 != 0 || headDim > MaxHeadDim)
            throw new NotSupportedException($"{op} on CUDA: head size {headDim} (the kernels take multiples of 4 up to {MaxHeadDim})");
    }

    /// <summary>Where K and V rows are: dense (no block table: row b·tk + j) or the paged pool; int8 rows come with scales.</summary>
    private readonly record struct KvSource(ulong K, ulong V, int Stride, ulong BlockTable = 0, int TableStride = 0, int BlockSize = 1,
                                            bool Int8 = false, ulong KScale = 0, ulong VScale = 0);

    /// <summary>
    /// Prefill attention into <paramref name="o"/> [B, tq, heads·head_dim]: K and V are first converted once to f16
    /// head-major copies, which the prefill kernel then streams with cp.async behind its math (converting per tile
    /// would redo it for every block of 64 queries). q is F32 rows of stride <paramref name="qStride"/>.
    /// </summary>
    private void PrefillAttention(ulong q, int qStride, KvSource kv, Tensor? keyMask, Tensor o, int b, int tq, int tk, int heads, int kvHeads,
                                  int headDim, float scale, bool causal)
    {
        int padded = headDim <= 64 ? 64 : 128;
        long halves = (long)b * kvHeads * tk * padded;
        using var kh = NewScratch(halves * 2);
        using var vh = NewScratch(halves * 2);
        if (kv.Int8)
            Launch(K.AttentionKvToF16Int8, ElementwiseBlocks(halves / 4), 256, P(kv.K), P(kv.V), kv.Stride, P(kv.KScale), P(kv.VScale), P(kv.BlockTable),
                kv.TableStride, kv.BlockSize, P(kh.Pointer), P(vh.Pointer), b, tk, kvHeads, headDim, padded);
        else
            Launch(K.AttentionKvToF16, ElementwiseBlocks(halves / 4), 256, P(kv.K), P(kv.V), kv.Stride, P(kv.BlockTable), kv.TableStride, kv.BlockSize,
                P(kh.Pointer), P(vh.Pointer), b, tk, kvHeads, headDim, padded);
        int rows = PrefillRowsPerBlock(tq, heads, b, _context.Multiprocessors);
        Launch(padded == 64 ? K.AttentionPrefillHd64 : K.AttentionPrefillHd128, new Dim3((uint)Ceil(tq, rows), (uint)heads, (uint)b), 2 * rows,
            P(q), qStride, P(kh.Pointer), P(vh.Pointer), P(keyMask is null ? 0 : Ptr(keyMask)), P(Ptr(o)), tq, tk, heads, kvHeads, headDim, scale, causal ? 1 : 0);
    }

    /// <summary>
    /// Query rows per block of the prefill attention (kernels/attention.cu): 128 (256 threads), which reads each K/V
    /// tile once for twice the queries, when that grid has at least two blocks for every SM (at head size 128 a
    /// 128-row block runs alone on its SM, 8 warps, as two 64-row blocks do; at 64 two of them fit); else 64 (SigLIP-B/16-512's 1024 tokens × 12 heads: 96
    /// blocks of 128 rows would leave a third of an H200's 132 SMs idle).
    /// </summary>
    internal static int PrefillRowsPerBlock(int tq, int heads, int batch, int multiprocessors)
        => (long)Ceil(tq, 128) * heads * batch >= 2L * multiprocessors ? 128 : 64;

    public Tensor Attention(Tensor q, Tensor k, Tensor v, int heads, float scale, bool causal, Tensor? keyMask)
    {
        var (b, tq, hd, tk) = BackendArgs.Attention(q, k, v, heads, keyMask);
        CheckHeadDim(hd / heads, "Attention");
        var o = New(b, tq, hd);
        PrefillAttention(Ptr(q), hd, new KvSource(Ptr(k), Ptr(v), hd), keyMask, o, b, tq, tk, heads, heads, hd / heads, scale, causal);
        return o;
    }

    public Tensor SelfAttention(Tensor qkv, int heads, float scale, bool causal, Tensor? keyMask)
    {
        int b = qkv.Dim(0), t = qkv.Dim(1), w3 = qkv.Dim(2);
        if (w3 % 3 != 0 || (w3 / 3) % heads != 0) throw new ArgumentException($"SelfAttention: width {w3} is not 3 x heads ({heads}) x head size");
        if (keyMask is not null && keyMask.Length != (long)b * t) throw new ArgumentException($"SelfAttention: key mask {keyMask} is not [{b}, {t}]");
        int hd = w3 / 3;
        CheckHeadDim(hd / heads, "SelfAttention");
        var o = New(b, t, hd);
        ulong q = Ptr(qkv);
        PrefillAttention(q, w3, new KvSource(q + (ulong)hd * 4, q + (ulong)hd * 8, w3), keyMask, o, b, t, t, heads, heads, hd / heads, scale, causal);
        return o;
    }

    public Tensor PatchEmbed(Tensor pixels, LinearWeight weight, int patch)
    {
        var lw = (CudaLinear)weight;
        int b = pixels.Dim(0), c = pixels.Dim(1), h = pixels.Dim(2), w = pixels.Dim(3);
        if (pixels.Rank != 4 || lw.InFeatures != c * patch * patch || h % patch != 0 || w % patch != 0)
            throw new ArgumentException($"PatchEmbed: {pixels} does not fit a {lw.OutFeatures}x{lw.InFeatures} patch weight with patch {patch}");
        string kernel = lw.Format switch
        {
            CudaWeightFormat.F32 => K.PatchEmbedF32,
            CudaWeightFormat.F16 => K.PatchEmbedF16,
            _ => throw new NotSupportedException($"PatchEmbed on CUDA with {lw.Format} weights"),
        };
        int patches = (h / patch) * (w / patch), d = lw.OutFeatures;
        var o = New(b, patches, d);
        Launch(kernel, new Dim3((uint)Ceil(d, 128), (uint)Ceil((long)b * patches, 128)), 256, P(Ptr(pixels)), P(lw.Weight.Pointer),
            P(Ptr(lw.Bias)), P(0), P(Ptr(o)), b, c, h, w, patch, d);
        return o;
    }

    // ---------------- decoder ----------------

    /// <summary>Built on the host in doubles, as the CPU's, and uploaded: positions then never travel as kernel arguments (decode graphs).</summary>
    public Tensor RopeTable(int position0, int count, int headDim, double theta)
        => FromHost(BackendArgs.RopeTable(position0, count, headDim, theta), count, headDim);

    public void RopeInPlace(Tensor qkv, int qHeads, int kvHeads, int headDim, Tensor table)
    {
        int width = qkv.Dim(-1), rows = (int)(qkv.Length / width);
        if (width != (qHeads + 2 * kvHeads) * headDim) throw new ArgumentException($"RoPE: width {width} is not (Hq + 2·Hkv)·D");
        if (table.Dim(0) != rows || table.Dim(1) != headDim) throw new ArgumentException($"RoPE: table {table} does not cover {rows} rows");
        // One thread per (rotated head, j < D/2): a decode row is one round trip to memory, not one per head.
        int pairs = (qHeads + kvHeads) * (headDim / 2);
        Launch(K.RopeApply, rows, Math.Clamp((pairs + 31) / 32 * 32, 32, 1024), P(Ptr(qkv)), P(Ptr(table)), rows, width, qHeads + kvHeads, headDim,
            P(0), 0, 0, 0, P(0), P(0));
    }

    /// <summary>
    /// Per layer, one K and one V pool of blocks·blockSize rows of kvHeads·headDim values (F32, or int8 with one F32 scale
    /// per (row, KV head) in KScales/VScales, as the CPU's int8 cache).
    /// </summary>
    private sealed class CudaKvStorage : KvCacheStorage
    {
        public readonly DeviceMemory[] K, V;
        public readonly DeviceMemory[]? KScales, VScales;
        public override long Bytes { get; }

        public CudaKvStorage(CudaBackend backend, int layers, int kvHeads, int headDim, int blockSize, int blocks, KvCacheType type)
        {
            Layers = layers; KvHeads = kvHeads; HeadDim = headDim; BlockSize = blockSize; Blocks = blocks; Type = type;
            long rows = (long)blocks * blockSize;
            long bytes = rows * kvHeads * headDim * (type == KvCacheType.Int8 ? sizeof(sbyte) : sizeof(float));
            long scaleBytes = type == KvCacheType.Int8 ? rows * kvHeads * sizeof(float) : 0;
            Bytes = 2L * layers * (bytes + scaleBytes);
            K = new DeviceMemory[layers];
            V = new DeviceMemory[layers];
            if (type == KvCacheType.Int8) { KScales = new DeviceMemory[layers]; VScales = new DeviceMemory[layers]; }
            try
            {
                for (int l = 0; l < layers; l++)
                {
                    K[l] = backend._context.Allocate(bytes);
                    V[l] = backend._context.Allocate(bytes);
                    if (KScales is not null)
                    {
                        KScales[l] = backend._context.Allocate(scaleBytes);
                        VScales![l] = backend._context.Allocate(scaleBytes);
                    }
                }
            }
            catch
            {
                Dispose();
                throw;
            }
        }

        public ulong KScale(int layer) => KScales?[layer].Pointer ?? 0;
        public ulong VScale(int layer) => VScales?[layer].Pointer ?? 0;

        public override void Dispose()
        {
            foreach (var m in K) m?.Dispose();
            foreach (var m in V) m?.Dispose();
            foreach (var m in KScales ?? []) m?.Dispose();
            foreach (var m in VScales ?? []) m?.Dispose();
        }
    }

    public KvCacheStorage CreateKvCache(int layers, int kvHeads, int headDim, int blockSize, int blocks, KvCacheType type)
    {
        if (type is not (KvCacheType.F32 or KvCacheType.Int8)) throw new NotSupportedException($"{type} KV cache on CUDA");
        _context.MakeCurrent();
        return new CudaKvStorage(this, layers, kvHeads, headDim, blockSize, blocks, type);
    }

    private static void CheckBlocks(CudaKvStorage c, ReadOnlySpan<int> blockTable, int tokens, string op)
    {
        if ((long)blockTable.Length * c.BlockSize < tokens) throw new ArgumentException($"{op}: the block table does not cover {tokens} tokens");
        foreach (int blk in blockTable[..Ceil(tokens, c.BlockSize)])
            if ((uint)blk >= (uint)c.Blocks) throw new ArgumentException($"{op}: block {blk} is outside the cache pool of {c.Blocks}");
    }

    public void WriteKv(KvCacheStorage cache, int layer, Tensor qkv, int qHeads, ReadOnlySpan<int> blockTable, int position0)
    {
        var c = (CudaKvStorage)cache;
        int kvw = c.KvHeads * c.HeadDim, width = qkv.Dim(-1), rows = (int)(qkv.Length / width), bs = c.BlockSize;
        if (width != qHeads * c.HeadDim + 2 * kvw) throw new ArgumentException($"WriteKv: width {width} does not match the cache's heads");
        CheckBlocks(c, blockTable, position0 + rows, "WriteKv");
        Span<int> slots = rows <= 256 ? stackalloc int[rows] : new int[rows];
        for (int i = 0; i < rows; i++)
        {
            int pos = position0 + i;
            slots[i] = blockTable[pos / bs] * bs + pos % bs;
        }
        int qw = qHeads * c.HeadDim;
        using var slotBuffer = Upload<int>(slots, UploadKind.Slots);
        if (c.Type == KvCacheType.Int8)
            Launch(K.KvAppendInt8, rows, 256, P(Ptr(qkv)), width, qw, qw + kvw, kvw, P(slotBuffer.Pointer), rows, P(c.K[layer].Pointer),
                P(c.V[layer].Pointer), P(c.KScale(layer)), P(c.VScale(layer)), c.HeadDim);
        else
            Launch(K.KvAppendF32, rows, 256, P(Ptr(qkv)), width, qw, qw + kvw, kvw, P(slotBuffer.Pointer), rows, P(c.K[layer].Pointer), P(c.V[layer].Pointer));
    }

    public Tensor CachedAttention(Tensor qkv, int qHeads, KvCacheStorage cache, int layer, ReadOnlySpan<int> blockTable, int position0, float scale)
    {
        var c = (CudaKvStorage)cache;
        int width = qkv.Dim(-1), rows = (int)(qkv.Length / width), tk = position0 + rows, d = c.HeadDim, kvw = c.KvHeads * d;
        if (qHeads % c.KvHeads != 0) throw new ArgumentException($"Attention: {qHeads} query heads are not a multiple of {c.KvHeads} KV heads");
        CheckBlocks(c, blockTable, tk, "CachedAttention");
        bool int8 = c.Type == KvCacheType.Int8;
        CheckHeadDim(d, "CachedAttention");
        var o = New(rows, qHeads * d);
        // The table goes up padded to a power of two: its length (an argument) then changes rarely as the sequence grows.
        int tableLength = (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)Math.Max(1, blockTable.Length));
        if (_paddedTable.Length < tableLength) _paddedTable = new int[tableLength];
        blockTable.CopyTo(_paddedTable);
        _paddedTable.AsSpan(blockTable.Length, tableLength - blockTable.Length).Clear();
        using var table = Upload<int>(_paddedTable.AsSpan(0, tableLength), UploadKind.BlockTable);
        ulong k = c.K[layer].Pointer, v = c.V[layer].Pointer;
        if (rows > 1)
        {
            PrefillAttention(Ptr(qkv), width, new KvSource(k, v, kvw, table.Pointer, tableLength, c.BlockSize, int8, c.KScale(layer), c.VScale(layer)),
                null, o, 1, rows, tk, qHeads, c.KvHeads, d, scale, causal: true);
            return o;
        }

        // Decode: split the sequence so that about two blocks per SM are busy; the last split of each KV head to finish
        // merges them (one launch). The split count moves only at powers of two of the length (each kernel divides its
        // own length), so a recorded decode graph stays valid across tokens.
        int slices = Ceil(qHeads / c.KvHeads, DecodeGroupPerBlock);
        int splits = Math.Min(Math.Clamp(Ceil(2L * _context.Multiprocessors, c.KvHeads * slices), 1, 1024),
            (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)Ceil(tk, 32)));
        using var seqLen = Upload<int>([tk], UploadKind.SequenceLength);
        using var partialAcc = NewScratch((long)qHeads * splits * d * sizeof(float));
        using var partialMax = NewScratch((long)qHeads * splits * sizeof(float));
        using var partialSum = NewScratch((long)qHeads * splits * sizeof(float));
        var decodeGrid = new Dim3((uint)splits, (uint)(c.KvHeads * slices), 1);
        if (decodeGrid.Y > DecodeSplitCounters)
            throw new FastMMException($"CachedAttention: {c.KvHeads} KV heads in {slices} slices exceed the decode kernel's {DecodeSplitCounters} split counters");
        if (int8)
            Launch(K.AttentionDecodePagedInt8, decodeGrid, 128, P(Ptr(qkv)), width, P(k), P(v), kvw, P(c.KScale(layer)), P(c.VScale(layer)),
                P(table.Pointer), tableLength, P(seqLen.Pointer), c.BlockSize, P(partialAcc.Pointer), P(partialMax.Pointer),
                P(partialSum.Pointer), P(Ptr(o)), P(_splitCounters.Pointer), qHeads, c.KvHeads, d, scale, P(0), P(0));
        else
            Launch(K.AttentionDecodePagedF32, decodeGrid, 128, P(Ptr(qkv)), width, P(k), P(v), kvw,
                P(table.Pointer), tableLength, P(seqLen.Pointer), c.BlockSize, P(partialAcc.Pointer), P(partialMax.Pointer),
                P(partialSum.Pointer), P(Ptr(o)), P(_splitCounters.Pointer), qHeads, c.KvHeads, d, scale, P(0), P(0));
        return o;
    }

    // ---------------- row movement ----------------

    /// <summary>dst[i] = src[index[i]] for rows of `width` floats.</summary>
    private Tensor GatherRows(Tensor src, ReadOnlySpan<int> index, int width, params int[] shape)
        => GatherRows(src, index, width, UploadKind.Private, shape);

    private Tensor GatherRows(Tensor src, ReadOnlySpan<int> index, int width, UploadKind indexKind, params int[] shape)
    {
        var y = New(shape);
        using var idx = Upload(index, indexKind);
        Launch(K.GatherRows, index.Length, 256, P(Ptr(src)), P(idx.Pointer), P(Ptr(y)), index.Length, width);
        return y;
    }

    public void SetRows(Tensor x, ReadOnlySpan<int> rows, Tensor values)
    {
        BackendArgs.SetRows(x, rows, values);
        int d = x.Dim(-1);
        using var idx = Upload(rows);
        Launch(K.ScatterRows, rows.Length, 256, P(Ptr(x)), P(idx.Pointer), P(Ptr(values)), rows.Length, d);
    }

    public Tensor PixelShuffle(Tensor x, int scale)
    {
        int b = x.Dim(0), seq = x.Dim(1), e = x.Dim(2), side = (int)Math.Round(Math.Sqrt(seq));
        if (side * side != seq || side % scale != 0) throw new ArgumentException($"PixelShuffle: {seq} patches are not a square grid divisible by {scale}");
        int outSide = side / scale, se = scale * e;
        // Viewed as rows of s·E floats, output chunk (b, h2, w2, dy) is input row (b·seq + (h2·s + dy)·side + w2·s) / s.
        var index = new int[b * outSide * outSide * scale];
        for (int bi = 0, i = 0; bi < b; bi++)
            for (int h2 = 0; h2 < outSide; h2++)
                for (int w2 = 0; w2 < outSide; w2++)
                    for (int dy = 0; dy < scale; dy++)
                        index[i++] = (bi * seq + (h2 * scale + dy) * side + w2 * scale) / scale;
        return GatherRows(x, index, se, b, outSide * outSide, se * scale);
    }

    public Tensor Embedding(Tensor table, ReadOnlySpan<int> ids)
    {
        int vocab = table.Dim(0), d = table.Dim(1);
        for (int i = 0; i < ids.Length; i++)
            if ((uint)ids[i] >= (uint)vocab) throw new FastMMException($"input_ids: token id {ids[i]} at position {i} is outside the vocabulary [0, {vocab})");
        return GatherRows(table, ids, d, ids.Length, d);
    }

    public Tensor PrependRow(Tensor x, Tensor row)
    {
        int b = x.Dim(0), t = x.Dim(1), d = x.Dim(2);
        if (row.Length != d) throw new ArgumentException($"PrependRow: {row} is not one row of {d}");
        var y = New(b, t + 1, d);
        ulong yp = Ptr(y), xp = Ptr(x), rp = Ptr(row);
        long rowBytes = (long)d * sizeof(float);
        for (int i = 0; i < b; i++)
        {
            CopyDevice(yp + (ulong)(i * (t + 1) * rowBytes), rp, rowBytes);
            CopyDevice(yp + (ulong)((i * (t + 1) + 1) * rowBytes), xp + (ulong)(i * t * rowBytes), t * rowBytes);
        }
        return y;
    }

    public Tensor SelectRows(Tensor x, ReadOnlySpan<int> positions)
    {
        int b = x.Dim(0), t = x.Dim(1), d = x.Dim(2);
        return GatherRows(x, BackendArgs.SelectedRows(b, t, positions), d, b, d);
    }

    public Tensor Repeat(Tensor row, int batch)
    {
        int d = (int)row.Length;
        return GatherRows(row, new int[batch], d, batch, 1, d);
    }

    // ---------------- sampling (IDeviceArgmax; Sample is for a device-side generation loop) ----------------

    /// <summary>Greedy next tokens of logits [rows, vocab]: the first maximum per row.</summary>
    public int[] Argmax(Tensor logits)
    {
        int vocab = logits.Dim(-1), rows = (int)(logits.Length / vocab);
        ThrowIfInStep("Argmax");
        using var ids = NewScratch(rows * sizeof(int));
        Launch(K.ArgmaxRows, rows, 1024, P(Ptr(logits)), rows, vocab, P(ids.Pointer));
        return DownloadTokens(ids, rows);
    }

    /// <summary>
    /// Temperature / top-k / top-p sampling of logits [rows, vocab] with one uniform number in [0, 1) per row, as
    /// FastMM.Runtime's Sampler draws (without its repetition penalty).
    /// </summary>
    public int[] Sample(Tensor logits, float temperature, int topK, float topP, ReadOnlySpan<float> uniform)
    {
        int vocab = logits.Dim(-1), rows = (int)(logits.Length / vocab);
        if (uniform.Length != rows) throw new ArgumentException($"Sample: {uniform.Length} random numbers for {rows} rows");
        if (!(temperature > 0) || !(topP > 0 && topP <= 1)) throw new FastMMException($"Sample: temperature {temperature} must be > 0 and top_p {topP} in (0, 1]");
        ThrowIfInStep("Sample");
        using var u = Upload(uniform);
        using var ids = NewScratch(rows * sizeof(int));
        Launch(K.SampleRows, rows, 1024, P(Ptr(logits)), rows, vocab, temperature, topK, topP, P(u.Pointer), P(ids.Pointer));
        return DownloadTokens(ids, rows);
    }

    private int[] DownloadTokens(Scratch ids, int rows)
    {
        var tokens = new int[rows];
        fixed (int* p = tokens) _context.CopyToHost(p, ids.Pointer, rows * sizeof(int), _stream);
        _stream.Synchronize();
        foreach (int t in tokens)
            if (t < 0) throw new FastMMException(t == -1 ? "logits contain NaN or +inf: the model produced invalid scores" : "every logit is -inf: no token can be sampled");
        return tokens;
    }

    public void Dispose()
    {
        _context.MakeCurrent();
        _stream.Synchronize();
        DisposeSteps();
        _kernels.Dispose();
        _splitCounters.Dispose();
        _staging?.Dispose();
        _stream.Dispose();
        _context.Dispose();
    }
}
