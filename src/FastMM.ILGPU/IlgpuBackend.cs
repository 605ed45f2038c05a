using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using ILGPU.Runtime.OpenCL;
using FastMM.Backends;
using FastMM.Kv;
using FastMM.Quant;
using Buffer = ILGPU.Runtime.MemoryBuffer1D<float, ILGPU.Stride1D.Dense>;
using K = FastMM.Ilgpu.IlgpuKernels;

namespace FastMM.Ilgpu;

/// <summary>Which ILGPU accelerator an <see cref="IlgpuBackend"/> runs on.</summary>
public enum IlgpuDevice
{
    /// <summary>The first CUDA GPU, else the first OpenCL GPU; fails when there is neither.</summary>
    Gpu,
    Cuda,
    OpenCL,
    /// <summary>ILGPU's CPU accelerator (warp 32, like NVIDIA): every kernel runs as .NET code on the CPU. For tests on tiny shapes; ~100× slower than the CPU backend.</summary>
    Cpu,
}

/// <summary>
/// The portable GPU backend: every <see cref="IBackend"/> op as an ILGPU kernel (<see cref="IlgpuKernels"/>), written
/// once in C# and run on CUDA or OpenCL GPUs, or on ILGPU's CPU accelerator. Tensors are F32 device buffers on the
/// accelerator's default stream; quantized Linears (GGUF Q8_0 / Q4_0 bytes as stored, INT4 groups) quantize the
/// activations to int8 blocks and take integer dot products, exactly as the CPU reference does. Not thread-safe,
/// like the models that drive a backend.
/// </summary>
public sealed class IlgpuBackend : IBackend, IDeviceBandwidth
{
    private readonly Context _context;
    private readonly Accelerator _accelerator;
    private readonly Dictionary<long, Stack<Buffer>> _pool = new();
    private long _pooledBytes;
    private const long MaxPooledBytes = 512L << 20;
    private MemoryBuffer1D<int, Stride1D.Dense>? _indices;
    private MemoryBuffer1D<sbyte, Stride1D.Dense>? _qx;
    private Buffer? _dx, _sx;
    private readonly Buffer _empty;
    private readonly MemoryBuffer1D<sbyte, Stride1D.Dense> _emptyBytes;
    private readonly MemoryBuffer1D<int, Stride1D.Dense> _emptyInts;

    public string Name => "ilgpu";
    /// <summary>The accelerator, e.g. "CPUAccelerator" or the GPU's name.</summary>
    public string DeviceName => _accelerator.Name;
    public AcceleratorType AcceleratorType => _accelerator.AcceleratorType;

    /// <summary>Ten device-to-device copies (512 MiB on a GPU, 64 MiB on the CPU accelerator), timed after one warm-up.</summary>
    public double MeasureCopyBandwidth()
    {
        long n = (_accelerator.AcceleratorType == AcceleratorType.CPU ? 64L : 512L) << 18; // floats
        const int copies = 10;
        using var src = _accelerator.Allocate1D<float>(n);
        using var dst = _accelerator.Allocate1D<float>(n);
        src.MemSetToZero();
        src.View.CopyTo(dst.View);
        _accelerator.Synchronize();
        var sw = System.Diagnostics.Stopwatch.StartNew();
        for (int i = 0; i < copies; i++) src.View.CopyTo(dst.View);
        _accelerator.Synchronize();
        return 2.0 * n * sizeof(float) * copies / sw.Elapsed.TotalSeconds / 1e9;
    }

    // Kernels are compiled on first use (a first compile costs ~0.2–0.7 s, later ones a few ms) and cached here.
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int, int>? _gemm;
    private Action<Index1D, ArrayView<float>, ArrayView<sbyte>, ArrayView<float>, ArrayView<float>>? _quantize;
    private Action<KernelConfig, ArrayView<byte>, ArrayView<sbyte>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, QuantShape>? _quantLinear;
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float>? _layerNorm;
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float>? _rmsNorm;
    private Action<KernelConfig, ArrayView<float>, int>? _l2Normalize;
    private Action<Index1D, ArrayView<float>, int>? _activation;
    private Action<Index1D, ArrayView<float>, ArrayView<float>, int>? _addBroadcast;
    private Action<Index1D, ArrayView<float>, float, float>? _scaleBias;
    private Action<Index1D, ArrayView<float>, ArrayView<float>, int>? _swiGlu;
    private Action<Index3D, ArrayView<float>, ArrayView<float>, int, int>? _rope;
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>,
        ArrayView<sbyte>, ArrayView<sbyte>, ArrayView<float>, ArrayView<float>, AttentionShape>? _attention;
    private Action<Index2D, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<sbyte>, ArrayView<float>, int, int, int, int, int, int, int, int>? _writeKv;
    private Action<Index2D, ArrayView<float>, ArrayView<int>, ArrayView<float>, int>? _gather;
    private Action<Index2D, ArrayView<float>, ArrayView<int>, ArrayView<float>, int>? _scatter;
    private Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>? _prependRow;
    private Action<Index1D, ArrayView<float>, ArrayView<float>, int, int, int, int>? _im2col;
    private Action<Index1D, ArrayView<float>, ArrayView<float>, int, int, int>? _pixelShuffle;

    private IlgpuBackend(Context context, Accelerator accelerator)
    {
        _context = context;
        _accelerator = accelerator;
        _empty = accelerator.Allocate1D<float>(1);
        _emptyBytes = accelerator.Allocate1D<sbyte>(1);
        _emptyInts = accelerator.Allocate1D<int>(1);
    }

    /// <summary>
    /// Opens an accelerator of the given kind; fails with a <see cref="FastMMException"/> saying what ILGPU found when there
    /// is none, never falls back to another device.
    /// </summary>
    public static IlgpuBackend Create(IlgpuDevice device = IlgpuDevice.Gpu)
    {
        var context = Context.Create(b =>
        {
            b.Optimize(OptimizationLevel.O1).EnableAlgorithms();
            // A CPU "GPU" of one multiprocessor with warps of 32 and groups of up to 64 threads (the kernels use at most 64):
            // the accelerator runs a group's threads as OS threads, so fewer of them make launches and barriers cheaper.
            if (device == IlgpuDevice.Cpu) b.CPU(new CPUDevice(32, 2, 1));
            else
            {
                if (device != IlgpuDevice.OpenCL) b.Cuda();
                if (device != IlgpuDevice.Cuda) b.OpenCL();
            }
        });
        try
        {
            var devices = context.Devices;
            Device? chosen = device switch
            {
                IlgpuDevice.Cpu => devices.FirstOrDefault(d => d.AcceleratorType == AcceleratorType.CPU),
                IlgpuDevice.Cuda => devices.FirstOrDefault(d => d.AcceleratorType == AcceleratorType.Cuda),
                IlgpuDevice.OpenCL => devices.FirstOrDefault(IsOpenClGpu),
                _ => devices.FirstOrDefault(d => d.AcceleratorType == AcceleratorType.Cuda) ?? devices.FirstOrDefault(IsOpenClGpu),
            };
            if (chosen is null)
                throw new FastMMException(device switch
                {
                    IlgpuDevice.Cuda => "ilgpu: ILGPU found no CUDA GPU (it needs a working NVIDIA driver and libcuda.so on the library path)",
                    IlgpuDevice.OpenCL => "ilgpu: ILGPU found no OpenCL GPU",
                    IlgpuDevice.Cpu => "ilgpu: ILGPU offered no CPU accelerator",
                    _ => "ilgpu: ILGPU found no CUDA or OpenCL GPU (CUDA needs a working NVIDIA driver and libcuda.so); " +
                         "use --backend ilgpu:cpu to run the ILGPU kernels on ILGPU's CPU accelerator (slow: meant for testing)",
                });
            return new IlgpuBackend(context, chosen.CreateAccelerator(context));
        }
        catch
        {
            context.Dispose();
            throw;
        }
    }

    private static bool IsOpenClGpu(Device d) => d is CLDevice cl && cl.DeviceType == CLDeviceType.CL_DEVICE_TYPE_GPU;

    /// <summary>Parses the device part of "ilgpu:DEVICE" (gpu, cuda, opencl, cpu); null means gpu.</summary>
    public static IlgpuDevice ParseDevice(string? option) => option?.ToLowerInvariant() switch
    {
        null or "" or "gpu" => IlgpuDevice.Gpu,
        "cuda" => IlgpuDevice.Cuda,
        "opencl" => IlgpuDevice.OpenCL,
        "cpu" => IlgpuDevice.Cpu,
        _ => throw new FastMMException($"ilgpu: unknown device '{option}' (choose ilgpu, ilgpu:cuda, ilgpu:opencl or ilgpu:cpu)"),
    };

    /// <summary>Makes <c>--backend ilgpu[:gpu|cuda|opencl|cpu]</c> create this backend.</summary>
    public static void Register() => BackendRegistry.Register("ilgpu", option => Create(ParseDevice(option)));

    // ---------------------------------------------------------------- memory

    private Buffer Storage(Tensor t)
    {
        if (!ReferenceEquals(t.Backend, this)) throw new ArgumentException($"{t} belongs to another backend");
        return t.Storage as Buffer ?? throw new ObjectDisposedException(t.ToString());
    }

    /// <summary>The tensor's elements (a view of a reshaped tensor is the whole shared buffer, so cut it to the tensor's length).</summary>
    private ArrayView<float> View(Tensor t) => Storage(t).View.SubView(0, t.Length);

    private Tensor New(params int[] shape)
    {
        long n = Math.Max(1, Tensor.Product(shape));
        if (n > int.MaxValue) throw new FastMMException($"ilgpu: a tensor of {n} elements is larger than the kernels index (2³¹)");
        Buffer buffer;
        if (_pool.TryGetValue(n, out var stack) && stack.Count > 0)
        {
            buffer = stack.Pop();
            _pooledBytes -= n * sizeof(float);
        }
        else buffer = _accelerator.Allocate1D<float>(n);
        return new Tensor(this, shape, DType.F32, buffer);
    }

    public void Release(Tensor t)
    {
        if (t.Storage is not Buffer b) return;
        long bytes = b.Length * sizeof(float);
        if (_pooledBytes + bytes > MaxPooledBytes) { b.Dispose(); return; }
        if (!_pool.TryGetValue(b.Length, out var stack)) _pool[b.Length] = stack = new Stack<Buffer>();
        stack.Push(b);
        _pooledBytes += bytes;
    }

    public Tensor Zeros(params int[] shape)
    {
        var t = New(shape);
        View(t).MemSetToZero();
        return t;
    }

    public Tensor FromHost(ReadOnlySpan<float> data, params int[] shape)
    {
        if (data.Length != Tensor.Product(shape)) throw new ArgumentException($"{data.Length} values do not fill shape [{string.Join(",", shape)}]");
        var t = New(shape);
        if (data.Length > 0) View(t).CopyFromCPU(data);
        return t;
    }

    public void ToHost(Tensor t, Span<float> dst)
    {
        if (dst.Length != t.Length) throw new ArgumentException($"ToHost: {dst.Length} values for {t}");
        _accelerator.Synchronize();
        if (dst.Length > 0) View(t).CopyToCPU(dst);
    }

    public Tensor Weight(in TensorData w) => FromHost(w.ToFloatArray(), w.Shape);

    /// <summary>Uploads host ints into the backend's index scratch (after the stream drained: an earlier launch may still read it).</summary>
    private ArrayView<int> Indices(ReadOnlySpan<int> values)
    {
        if (values.Length == 0) return _emptyInts.View;
        _accelerator.Synchronize();
        if (_indices is null || _indices.Length < values.Length)
        {
            _indices?.Dispose();
            _indices = _accelerator.Allocate1D<int>(Math.Max(values.Length, 256));
        }
        ArrayView<int> view = _indices.View.SubView(0, values.Length);
        view.CopyFromCPU(values);
        return view;
    }

    private static int CheckedInt(long n, string what) =>
        n <= int.MaxValue ? (int)n : throw new FastMMException($"ilgpu: {what} of {n} elements is larger than the kernels index (2³¹)");

    // ---------------------------------------------------------------- Linear weights

    private sealed class IlgpuLinear : LinearWeight
    {
        public readonly Buffer Weights;
        public readonly Buffer? Bias;
        public IlgpuLinear(Buffer weights, Buffer? bias, int n, int k)
        {
            Weights = weights; Bias = bias; OutFeatures = n; InFeatures = k; WeightBytes = (long)n * k * sizeof(float);
        }
        public override void Dispose() { Weights.Dispose(); Bias?.Dispose(); }
    }

    private sealed class IlgpuQuantLinear : LinearWeight
    {
        public readonly MemoryBuffer1D<byte, Stride1D.Dense> Bytes;
        public readonly Buffer? Bias;
        public readonly QuantShape Shape;
        public IlgpuQuantLinear(MemoryBuffer1D<byte, Stride1D.Dense> bytes, Buffer? bias, QuantShape shape, long weightBytes)
        {
            Bytes = bytes; Bias = bias; Shape = shape; OutFeatures = shape.N; InFeatures = shape.K; WeightBytes = weightBytes;
        }
        public override void Dispose() { Bytes.Dispose(); Bias?.Dispose(); }
    }

    private Buffer? UploadBias(ReadOnlySpan<float> bias, int n)
    {
        if (bias.IsEmpty) return null;
        if (bias.Length != n) throw new FastMMException($"a bias of {bias.Length} values does not match a weight of {n} rows");
        var b = _accelerator.Allocate1D<float>(n);
        ((ArrayView<float>)b.View).CopyFromCPU(bias);
        return b;
    }

    public LinearWeight Linear(ReadOnlySpan<float> weight, int outFeatures, int inFeatures, ReadOnlySpan<float> bias)
    {
        if (weight.Length != (long)outFeatures * inFeatures) throw new ArgumentException($"Linear: {weight.Length} weights for {outFeatures}x{inFeatures}");
        CheckedInt((long)outFeatures * inFeatures, "a weight");
        var w = _accelerator.Allocate1D<float>(Math.Max(1, weight.Length));
        try
        {
            ((ArrayView<float>)w.View).SubView(0, weight.Length).CopyFromCPU(weight);
            return new IlgpuLinear(w, UploadBias(bias, outFeatures), outFeatures, inFeatures);
        }
        catch { w.Dispose(); throw; }
    }

    public LinearWeight Linear(in TensorData weight, in TensorData? bias)
    {
        var (n, k, b) = BackendArgs.Linear(weight, bias);
        return Linear(weight.ToFloatArray(), n, k, b);
    }

    public LinearWeight Linear(in TensorData weight, in TensorData? bias, QuantType type)
    {
        var (n, k, b) = BackendArgs.Linear(weight, bias);
        var w = weight.ToFloatArray();
        bool plainAsStored = type switch { QuantType.F32 => weight.DType == DType.F32, QuantType.F16 => weight.DType == DType.F16, QuantType.BF16 => weight.DType == DType.BF16, _ => false };
        if (plainAsStored) return Linear(w, n, k, b);
        var matrix = QuantizedMatrix.Quantize(w, n, k, type, weight.Name);
        return Linear(matrix, b);
    }

    public LinearWeight Linear(QuantizedMatrix weight, ReadOnlySpan<float> bias)
    {
        if (bias.Length != 0 && bias.Length != weight.Rows)
            throw new FastMMException($"a bias of {bias.Length} values does not match a weight of {weight.Rows} rows");
        if (weight.Format is not BlockQuantFormat)
            return Linear(weight.DequantizeAll(), weight.Rows, weight.Columns, bias); // f32/f16/bf16: F32 compute on the rounded weights, as the CPU
        var f = weight.Format;
        var shape = new QuantShape
        {
            N = weight.Rows, K = weight.Columns, RowBytes = CheckedInt(weight.RowBytes, "a weight row"),
            Format = weight.Type switch
            {
                QuantType.Q8_0 => 0,
                QuantType.Q4_0 => 1,
                QuantType.Int4G32 or QuantType.Int4G64 or QuantType.Int4G128 => 2,
                _ => throw new NotSupportedException($"ilgpu: no kernel for {f.Name} weights"),
            },
            GroupElements = f.BlockElements, GroupBytes = f.BlockBytes,
        };
        CheckedInt(weight.ByteSize, "a quantized weight");
        var bytes = _accelerator.Allocate1D<byte>(weight.ByteSize);
        try
        {
            ((ArrayView<byte>)bytes.View).CopyFromCPU(weight.Bytes);
            return new IlgpuQuantLinear(bytes, UploadBias(bias, weight.Rows), shape, weight.ByteSize);
        }
        catch { bytes.Dispose(); throw; }
    }

    // ---------------------------------------------------------------- ops

    private void Gemm(ArrayView<float> a, ArrayView<float> b, Buffer? bias, ArrayView<float> c, int m, int n, int k, Activation act)
    {
        _gemm ??= _accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int, int>(K.Gemm);
        var config = new KernelConfig(new Index2D((n + K.Tile - 1) / K.Tile, (m + K.Tile - 1) / K.Tile), new Index2D(K.Tile / 2, K.Tile / 2));
        _gemm(config, a, b, bias?.View ?? _empty.View, c, m, n, k, bias is null ? 0 : 1, (int)act);
    }

    public Tensor Linear(Tensor x, LinearWeight w, Activation act = Activation.None)
    {
        int k = x.Dim(-1);
        if (k != w.InFeatures) throw new ArgumentException($"Linear: input has {k} features, weight expects {w.InFeatures}");
        int m = CheckedInt(x.Length / k, "a Linear input");
        var shape = (int[])x.Shape.Clone();
        shape[^1] = w.OutFeatures;
        var y = New(shape);
        if (m == 0) return y;
        if (w is IlgpuQuantLinear q)
        {
            QuantLinear(x, m, q, y, act);
            return y;
        }
        var lw = w as IlgpuLinear ?? throw new ArgumentException($"Linear: the weight was not prepared by the ilgpu backend");
        Gemm(View(x), lw.Weights.View, lw.Bias, View(y), m, w.OutFeatures, k, act);
        return y;
    }

    private void QuantLinear(Tensor x, int m, IlgpuQuantLinear w, Tensor y, Activation act)
    {
        int k = w.InFeatures, blocks = k / 32;
        long values = (long)m * k;
        CheckedInt(values, "a quantized Linear input");
        // Grow-only scratch for the int8 activations: only kernels on this one stream touch it, so reuse needs no sync.
        if (_qx is null || _qx.Length < values)
        {
            _qx?.Dispose(); _dx?.Dispose(); _sx?.Dispose();
            _qx = _accelerator.Allocate1D<sbyte>(values);
            _dx = _accelerator.Allocate1D<float>(values / 32);
            _sx = _accelerator.Allocate1D<float>(values / 32);
        }
        _quantize ??= _accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<sbyte>, ArrayView<float>, ArrayView<float>>(K.QuantizeActivations);
        _quantize(m * blocks, View(x), _qx.View, _dx!.View, _sx!.View);
        _quantLinear ??= _accelerator.LoadStreamKernel<ArrayView<byte>, ArrayView<sbyte>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, QuantShape>(K.QuantLinear);
        var s = w.Shape;
        s.M = m;
        s.HasBias = w.Bias is null ? 0 : 1;
        s.Act = (int)act;
        _quantLinear(new KernelConfig(new Index2D(w.OutFeatures, (m + K.QuantRows - 1) / K.QuantRows), new Index2D(K.RowGroup, 1)), w.Bytes.View, _qx.View, _dx.View, _sx.View,
            w.Bias?.View ?? _empty.View, View(y), s);
    }

    public Tensor MatMulTransposed(Tensor a, Tensor b)
    {
        int m = a.Dim(0), k = a.Dim(1), n = b.Dim(0);
        if (b.Dim(1) != k) throw new ArgumentException($"MatMulTransposed: inner dims {k} and {b.Dim(1)} differ");
        var c = New(m, n);
        if (m > 0 && n > 0) Gemm(View(a), View(b), null, View(c), m, n, k, Activation.None);
        return c;
    }

    private static KernelConfig Rows(int rows, int group) => new(new Index1D(rows), new Index1D(group));

    public Tensor LayerNorm(Tensor x, Tensor gamma, Tensor beta, float eps)
    {
        int d = x.Dim(-1), rows = (int)(x.Length / d);
        if (gamma.Length != d || beta.Length != d) throw new ArgumentException($"LayerNorm: gamma {gamma} / beta {beta} do not match width {d}");
        var y = New((int[])x.Shape.Clone());
        if (rows == 0) return y;
        _layerNorm ??= _accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float>(K.LayerNorm);
        _layerNorm(Rows(rows, K.RowGroup), View(x), View(gamma), View(beta), View(y), d, eps);
        return y;
    }

    public Tensor RmsNorm(Tensor x, Tensor weight, float eps)
    {
        int d = x.Dim(-1), rows = (int)(x.Length / d);
        if (weight.Length != d) throw new ArgumentException($"RmsNorm: weight {weight} does not match width {d}");
        var y = New((int[])x.Shape.Clone());
        if (rows == 0) return y;
        _rmsNorm ??= _accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float>(K.RmsNorm);
        _rmsNorm(Rows(rows, K.RowGroup), View(x), View(weight), View(y), d, eps);
        return y;
    }

    public void L2NormalizeInPlace(Tensor x)
    {
        int d = x.Dim(-1), rows = (int)(x.Length / d);
        if (rows == 0) return;
        _l2Normalize ??= _accelerator.LoadStreamKernel<ArrayView<float>, int>(K.L2Normalize);
        _l2Normalize(Rows(rows, K.RowGroup), View(x), d);
    }

    public void ActivationInPlace(Tensor x, Activation act)
    {
        if (act == Activation.None || x.Length == 0) return;
        _activation ??= _accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, int>(K.ActivationInPlace);
        _activation((int)x.Length, View(x), (int)act);
    }

    public void AddInPlace(Tensor x, Tensor y)
    {
        if (y.Length == 0 || x.Length % y.Length != 0) throw new ArgumentException($"AddInPlace: {y} does not broadcast over {x}");
        _addBroadcast ??= _accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, int>(K.AddBroadcast);
        _addBroadcast((int)x.Length, View(x), View(y), (int)y.Length);
    }

    public void ScaleInPlace(Tensor x, float scale, float bias = 0f)
    {
        if (x.Length == 0) return;
        _scaleBias ??= _accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, float, float>(K.ScaleBias);
        _scaleBias((int)x.Length, View(x), scale, bias);
    }

    public Tensor SwiGlu(Tensor gateUp)
    {
        int w = gateUp.Dim(-1), inter = w / 2;
        if (w % 2 != 0) throw new ArgumentException($"SwiGlu: width {w} is odd");
        var shape = (int[])gateUp.Shape.Clone(); shape[^1] = inter;
        var y = New(shape);
        if (y.Length == 0) return y;
        _swiGlu ??= _accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, int>(K.SwiGlu);
        _swiGlu((int)y.Length, View(gateUp), View(y), inter);
        return y;
    }

    // ---------------------------------------------------------------- attention

    private void RunAttention(ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> o, ArrayView<float> mask, ArrayView<int> table,
        ArrayView<sbyte> k8, ArrayView<sbyte> v8, ArrayView<float> kScales, ArrayView<float> vScales, AttentionShape s)
    {
        if (s.HeadDim > K.MaxHeadDim) throw new NotSupportedException($"ilgpu: attention head size {s.HeadDim} is above the kernel's {K.MaxHeadDim}");
        _attention ??= _accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>,
            ArrayView<sbyte>, ArrayView<sbyte>, ArrayView<float>, ArrayView<float>, AttentionShape>(K.Attention);
        _attention(new KernelConfig(new Index3D(s.Tq, s.Heads, s.Batch), new Index3D(K.AttnGroup, 1, 1)), q, k, v, o, mask, table, k8, v8, kScales, vScales, s);
    }

    public Tensor Attention(Tensor q, Tensor k, Tensor v, int heads, float scale, bool causal, Tensor? keyMask)
    {
        var (b, tq, hd, tk) = BackendArgs.Attention(q, k, v, heads, keyMask);
        var o = New(b, tq, hd);
        if (o.Length == 0) return o;
        var s = new AttentionShape
        {
            Batch = b, Tq = tq, Tk = tk, Heads = heads, KvHeads = heads, HeadDim = hd / heads,
            QStride = hd, KStride = hd, VStride = hd, OStride = hd, Scale = scale, Causal = causal ? 1 : 0, HasMask = keyMask is null ? 0 : 1,
        };
        RunAttention(View(q), View(k), View(v), View(o), keyMask is null ? _empty.View : View(keyMask), _emptyInts.View,
            _emptyBytes.View, _emptyBytes.View, _empty.View, _empty.View, s);
        return o;
    }

    public Tensor SelfAttention(Tensor qkv, int heads, float scale, bool causal, Tensor? keyMask)
    {
        int b = qkv.Dim(0), t = qkv.Dim(1), w3 = qkv.Dim(2);
        if (w3 % 3 != 0 || (w3 / 3) % heads != 0) throw new ArgumentException($"SelfAttention: width {w3} is not 3 x heads ({heads}) x head size");
        if (keyMask is not null && keyMask.Length != (long)b * t) throw new ArgumentException($"SelfAttention: key mask {keyMask} is not [{b}, {t}]");
        int hd = w3 / 3;
        var o = New(b, t, hd);
        if (o.Length == 0) return o;
        var all = View(qkv);
        var s = new AttentionShape
        {
            Batch = b, Tq = t, Tk = t, Heads = heads, KvHeads = heads, HeadDim = hd / heads,
            QOffset = 0, KOffset = hd, VOffset = 2 * hd, QStride = w3, KStride = w3, VStride = w3, OStride = hd,
            Scale = scale, Causal = causal ? 1 : 0, HasMask = keyMask is null ? 0 : 1,
        };
        RunAttention(all, all, all, View(o), keyMask is null ? _empty.View : View(keyMask), _emptyInts.View,
            _emptyBytes.View, _emptyBytes.View, _empty.View, _empty.View, s);
        return o;
    }

    public Tensor PatchEmbed(Tensor pixels, LinearWeight weight, int patch)
    {
        int b = pixels.Dim(0), c = pixels.Dim(1), h = pixels.Dim(2), w = pixels.Dim(3);
        int kk = c * patch * patch;
        if (pixels.Rank != 4 || weight.InFeatures != kk || h % patch != 0 || w % patch != 0)
            throw new ArgumentException($"PatchEmbed: {pixels} does not fit a {weight.OutFeatures}x{weight.InFeatures} patch weight with patch {patch}");
        int np = h / patch * (w / patch);
        using var cols = New(b, np, kk);
        _im2col ??= _accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, int, int, int, int>(K.Im2Col);
        _im2col(CheckedInt(cols.Length, "an im2col buffer"), View(pixels), View(cols), c, h, w, patch);
        return Linear(cols, weight);
    }

    // ---------------------------------------------------------------- decoder ops

    public Tensor RopeTable(int position0, int count, int headDim, double theta)
        => FromHost(BackendArgs.RopeTable(position0, count, headDim, theta), count, headDim); // host doubles, as the CPU

    public void RopeInPlace(Tensor qkv, int qHeads, int kvHeads, int headDim, Tensor table)
    {
        int width = qkv.Dim(-1), rows = (int)(qkv.Length / width);
        if (width != (qHeads + 2 * kvHeads) * headDim) throw new ArgumentException($"RoPE: width {width} is not (Hq + 2·Hkv)·D");
        if (table.Dim(0) != rows || table.Dim(1) != headDim) throw new ArgumentException($"RoPE: table {table} does not cover {rows} rows");
        if (rows == 0) return;
        _rope ??= _accelerator.LoadAutoGroupedStreamKernel<Index3D, ArrayView<float>, ArrayView<float>, int, int>(K.Rope);
        _rope(new Index3D(rows, qHeads + kvHeads, headDim / 2), View(qkv), View(table), width, headDim);
    }

    private sealed class IlgpuKvStorage : KvCacheStorage
    {
        public readonly Buffer[] K, V;
        public readonly MemoryBuffer1D<sbyte, Stride1D.Dense>[] K8, V8;
        public readonly Buffer[] KScales, VScales;

        public IlgpuKvStorage(Accelerator acc, int layers, int kvHeads, int headDim, int blockSize, int blocks, KvCacheType type)
        {
            Layers = layers; KvHeads = kvHeads; HeadDim = headDim; BlockSize = blockSize; Blocks = blocks; Type = type;
            long rows = (long)blocks * blockSize, values = rows * kvHeads * headDim;
            if (values > int.MaxValue) throw new FastMMException($"ilgpu: a KV pool of {rows} tokens is larger than the kernels index (2³¹ values per layer)");
            bool int8 = type == KvCacheType.Int8;
            K = new Buffer[int8 ? 0 : layers]; V = new Buffer[int8 ? 0 : layers];
            K8 = new MemoryBuffer1D<sbyte, Stride1D.Dense>[int8 ? layers : 0]; V8 = new MemoryBuffer1D<sbyte, Stride1D.Dense>[int8 ? layers : 0];
            KScales = new Buffer[int8 ? layers : 0]; VScales = new Buffer[int8 ? layers : 0];
            try
            {
                for (int l = 0; l < layers; l++)
                {
                    if (int8)
                    {
                        K8[l] = acc.Allocate1D<sbyte>(values); V8[l] = acc.Allocate1D<sbyte>(values);
                        KScales[l] = acc.Allocate1D<float>(rows * kvHeads); VScales[l] = acc.Allocate1D<float>(rows * kvHeads);
                        K8[l].MemSetToZero(); V8[l].MemSetToZero(); KScales[l].MemSetToZero(); VScales[l].MemSetToZero();
                    }
                    else
                    {
                        K[l] = acc.Allocate1D<float>(values); V[l] = acc.Allocate1D<float>(values);
                        K[l].MemSetToZero(); V[l].MemSetToZero();
                    }
                }
            }
            catch { Dispose(); throw; }
            Bytes = int8 ? 2L * layers * (values + rows * kvHeads * sizeof(float)) : 2L * layers * values * sizeof(float);
        }

        public override long Bytes { get; }

        public override void Dispose()
        {
            foreach (var b in K.Concat(V).Concat(KScales).Concat(VScales)) b?.Dispose();
            foreach (var b in K8.Concat(V8)) b?.Dispose();
        }
    }

    public KvCacheStorage CreateKvCache(int layers, int kvHeads, int headDim, int blockSize, int blocks, KvCacheType type) => type switch
    {
        KvCacheType.F32 or KvCacheType.Int8 => new IlgpuKvStorage(_accelerator, layers, kvHeads, headDim, blockSize, blocks, type),
        _ => throw new NotSupportedException($"ilgpu: no KV cache of type {type}"),
    };

    private static IlgpuKvStorage Kv(KvCacheStorage cache) => cache as IlgpuKvStorage ?? throw new ArgumentException("the KV cache was not created by the ilgpu backend");

    private static void CheckTable(ReadOnlySpan<int> blockTable, int blocks, int positions, int blockSize, string op)
    {
        if ((long)blockTable.Length * blockSize < positions) throw new ArgumentException($"{op}: positions beyond the reserved blocks");
        int used = (positions + blockSize - 1) / blockSize;
        for (int i = 0; i < used; i++)
            if ((uint)blockTable[i] >= (uint)blocks) throw new ArgumentException($"{op}: block {blockTable[i]} is outside the pool of {blocks} blocks");
    }

    public void WriteKv(KvCacheStorage cache, int layer, Tensor qkv, int qHeads, ReadOnlySpan<int> blockTable, int position0)
    {
        var c = Kv(cache);
        int d = c.HeadDim, kvw = c.KvHeads * d, width = qkv.Dim(-1), rows = (int)(qkv.Length / width);
        if (width != qHeads * d + 2 * kvw) throw new ArgumentException($"WriteKv: width {width} does not match the cache's heads");
        if ((uint)layer >= (uint)c.Layers) throw new ArgumentOutOfRangeException(nameof(layer));
        CheckTable(blockTable, c.Blocks, position0 + rows, c.BlockSize, "WriteKv");
        if (rows == 0) return;
        _writeKv ??= _accelerator.LoadAutoGroupedStreamKernel<Index2D, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<sbyte>, ArrayView<float>,
            int, int, int, int, int, int, int, int>(K.WriteKv);
        var table = Indices(blockTable[..((position0 + rows + c.BlockSize - 1) / c.BlockSize)]);
        bool int8 = c.Type == KvCacheType.Int8;
        for (int part = 0; part < 2; part++) // K then V, each into its own pool
        {
            var pool = int8 ? _empty.View : (part == 0 ? c.K : c.V)[layer].View;
            var pool8 = int8 ? (part == 0 ? c.K8 : c.V8)[layer].View : _emptyBytes.View;
            var scales = int8 ? (part == 0 ? c.KScales : c.VScales)[layer].View : _empty.View;
            _writeKv(new Index2D(rows, c.KvHeads), View(qkv), table, pool, pool8, scales,
                width, qHeads * d, c.KvHeads, d, c.BlockSize, position0, int8 ? 1 : 0, part);
        }
    }

    public Tensor CachedAttention(Tensor qkv, int qHeads, KvCacheStorage cache, int layer, ReadOnlySpan<int> blockTable, int position0, float scale)
    {
        var c = Kv(cache);
        int width = qkv.Dim(-1), rows = (int)(qkv.Length / width), d = c.HeadDim, kvw = c.KvHeads * d;
        if (qHeads % c.KvHeads != 0) throw new ArgumentException($"Attention: {qHeads} query heads are not a multiple of {c.KvHeads} KV heads");
        if (width < qHeads * d) throw new ArgumentException($"CachedAttention: width {width} is narrower than {qHeads} heads of {d}");
        if ((uint)layer >= (uint)c.Layers) throw new ArgumentOutOfRangeException(nameof(layer));
        int tk = position0 + rows;
        CheckTable(blockTable, c.Blocks, tk, c.BlockSize, "CachedAttention");
        var o = New(rows, qHeads * d);
        if (rows == 0) return o;
        var table = Indices(blockTable[..((tk + c.BlockSize - 1) / c.BlockSize)]);
        bool int8 = c.Type == KvCacheType.Int8;
        var s = new AttentionShape
        {
            Batch = 1, Tq = rows, Tk = tk, Heads = qHeads, KvHeads = c.KvHeads, HeadDim = d,
            QStride = width, OStride = qHeads * d, Scale = scale, Causal = 1, BlockSize = c.BlockSize, KvStride = kvw, Int8 = int8 ? 1 : 0,
        };
        RunAttention(View(qkv), int8 ? _empty.View : c.K[layer].View, int8 ? _empty.View : c.V[layer].View, View(o), _empty.View, table,
            int8 ? c.K8[layer].View : _emptyBytes.View, int8 ? c.V8[layer].View : _emptyBytes.View,
            int8 ? c.KScales[layer].View : _empty.View, int8 ? c.VScales[layer].View : _empty.View, s);
        return o;
    }

    // ---------------------------------------------------------------- row movers

    private Tensor Gather(Tensor src, int d, ReadOnlySpan<int> rows, params int[] shape)
    {
        var y = New(shape);
        if (rows.Length == 0 || d == 0) return y;
        _gather ??= _accelerator.LoadAutoGroupedStreamKernel<Index2D, ArrayView<float>, ArrayView<int>, ArrayView<float>, int>(K.GatherRows);
        _gather(new Index2D(rows.Length, d), View(src), Indices(rows), View(y), d);
        return y;
    }

    public Tensor Embedding(Tensor table, ReadOnlySpan<int> ids)
    {
        int vocab = table.Dim(0), d = table.Dim(1);
        for (int i = 0; i < ids.Length; i++)
            if ((uint)ids[i] >= (uint)vocab) throw new FastMMException($"input_ids: token id {ids[i]} at position {i} is outside the vocabulary [0, {vocab})");
        return Gather(table, d, ids, ids.Length, d);
    }

    public Tensor SelectRows(Tensor x, ReadOnlySpan<int> positions)
    {
        int b = x.Dim(0), t = x.Dim(1), d = x.Dim(2);
        return Gather(x, d, BackendArgs.SelectedRows(b, t, positions), b, d);
    }

    public Tensor Repeat(Tensor row, int batch)
    {
        int d = (int)row.Length;
        return Gather(row, d, new int[batch], batch, 1, d);
    }

    public Tensor PrependRow(Tensor x, Tensor row)
    {
        int b = x.Dim(0), t = x.Dim(1), d = x.Dim(2);
        if (row.Length != d) throw new ArgumentException($"PrependRow: row {row} does not match width {d}");
        var y = New(b, t + 1, d);
        if (y.Length == 0) return y;
        _prependRow ??= _accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>(K.PrependRow);
        _prependRow((int)y.Length, View(x), View(row), View(y), t, d);
        return y;
    }

    public void SetRows(Tensor x, ReadOnlySpan<int> rows, Tensor values)
    {
        BackendArgs.SetRows(x, rows, values);
        int d = x.Dim(-1);
        if (rows.Length == 0) return;
        _scatter ??= _accelerator.LoadAutoGroupedStreamKernel<Index2D, ArrayView<float>, ArrayView<int>, ArrayView<float>, int>(K.ScatterRows);
        _scatter(new Index2D(rows.Length, d), View(values), Indices(rows), View(x), d);
    }

    public Tensor PixelShuffle(Tensor x, int scale)
    {
        int b = x.Dim(0), seq = x.Dim(1), e = x.Dim(2), side = (int)Math.Round(Math.Sqrt(seq));
        if (side * side != seq || side % scale != 0) throw new ArgumentException($"PixelShuffle: {seq} patches are not a square grid divisible by {scale}");
        int outSide = side / scale;
        var y = New(b, outSide * outSide, e * scale * scale);
        if (y.Length == 0) return y;
        _pixelShuffle ??= _accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, int, int, int>(K.PixelShuffle);
        _pixelShuffle((int)y.Length, View(x), View(y), side, scale, e);
        return y;
    }

    public void Dispose()
    {
        foreach (var stack in _pool.Values)
            foreach (var b in stack) b.Dispose();
        _pool.Clear();
        _indices?.Dispose();
        _qx?.Dispose(); _dx?.Dispose(); _sx?.Dispose();
        _empty.Dispose(); _emptyBytes.Dispose(); _emptyInts.Dispose();
        _accelerator.Dispose();
        _context.Dispose();
    }
}
