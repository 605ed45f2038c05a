using System.Buffers;
using System.Numerics.Tensors;
using FastMM.Cpu;
using FastMM.Quant;

namespace FastMM.Backends;

/// <summary>The reference backend: F32 compute on the CPU with SIMD kernels, multi-threaded via <see cref="CpuParallel"/>.</summary>
public sealed class CpuBackend : IBackend
{
    public string Name => "cpu";

    private sealed class CpuLinear : LinearWeight
    {
        public readonly PackedWeight Packed;
        public readonly float[] Bias;
        public CpuLinear(PackedWeight packed, float[] bias)
        {
            Packed = packed; Bias = bias; OutFeatures = packed.N; InFeatures = packed.K;
            WeightBytes = (long)packed.Panels * GemmKernels.PanelWidth * packed.K * sizeof(float);
        }
        public override void Dispose() { }
    }

    /// <summary>A block-quantized Linear: products run on <see cref="QuantGemm"/> straight from the quantized bytes.</summary>
    private sealed class CpuQuantLinearWeight : LinearWeight
    {
        public readonly QuantizedMatrix Matrix;
        public readonly float[] Bias;
        public CpuQuantLinearWeight(QuantizedMatrix matrix, float[] bias)
        {
            Matrix = matrix; Bias = bias; OutFeatures = matrix.Rows; InFeatures = matrix.Columns; WeightBytes = matrix.ByteSize;
        }
        public override void Dispose() { }
    }

    private static float[] Rent(long n) => ArrayPool<float>.Shared.Rent(checked((int)Math.Max(n, 1)));

    /// <summary>The elements of a CPU tensor.</summary>
    public static Span<float> Data(Tensor t)
    {
        if (t.Storage is not float[] a) throw new InvalidOperationException($"{t} is not a live CPU tensor");
        return a.AsSpan(0, (int)t.Length);
    }

    private Tensor New(params int[] shape) => new(this, shape, DType.F32, Rent(Tensor.Product(shape)));

    private void Check(Tensor t)
    {
        if (!ReferenceEquals(t.Backend, this)) throw new ArgumentException($"{t} belongs to another backend");
    }

    public Tensor Zeros(params int[] shape) { var t = New(shape); Data(t).Clear(); return t; }

    public Tensor FromHost(ReadOnlySpan<float> data, params int[] shape)
    {
        if (data.Length != Tensor.Product(shape)) throw new ArgumentException($"{data.Length} values do not fill shape [{string.Join(",", shape)}]");
        var t = New(shape); data.CopyTo(Data(t)); return t;
    }

    public void ToHost(Tensor t, Span<float> dst) { Check(t); Data(t).CopyTo(dst); }

    public Tensor Weight(in TensorData w) { var t = New(w.Shape); w.ToFloat(Data(t)); return t; }

    public LinearWeight Linear(in TensorData weight, in TensorData? bias)
    {
        var (n, k, b) = BackendArgs.Linear(weight, bias);
        return new CpuLinear(PackedWeight.Pack(weight.ToFloatArray(), n, k), b);
    }

    public LinearWeight Linear(in TensorData weight, in TensorData? bias, QuantType type)
    {
        var (n, k, b) = BackendArgs.Linear(weight, bias);
        var w = weight.ToFloatArray();
        var matrix = type == StorageType(weight.DType) ? null : QuantizedMatrix.Quantize(w, n, k, type, weight.Name);
        if (matrix?.Format is BlockQuantFormat) return new CpuQuantLinearWeight(matrix, b);
        // Plain storage: compute in F32 on weights rounded to the requested type, as a file of that type would hold them.
        return new CpuLinear(PackedWeight.Pack(matrix?.DequantizeAll() ?? w, n, k), b);
    }

    public LinearWeight Linear(QuantizedMatrix weight, ReadOnlySpan<float> bias)
    {
        if (bias.Length != 0 && bias.Length != weight.Rows)
            throw new FastMMException($"a bias of {bias.Length} values does not match a weight of {weight.Rows} rows");
        return weight.Format is BlockQuantFormat
            ? new CpuQuantLinearWeight(weight, bias.ToArray())
            : new CpuLinear(PackedWeight.Pack(weight.DequantizeAll(), weight.Rows, weight.Columns), bias.ToArray());
    }

    private static QuantType? StorageType(DType t) => t switch
    {
        DType.F32 => QuantType.F32,
        DType.F16 => QuantType.F16,
        DType.BF16 => QuantType.BF16,
        _ => null,
    };

    public LinearWeight Linear(ReadOnlySpan<float> weight, int outFeatures, int inFeatures, ReadOnlySpan<float> bias)
        => new CpuLinear(PackedWeight.Pack(weight, outFeatures, inFeatures), bias.ToArray());

    public void Release(Tensor t)
    {
        if (t.Storage is float[] a) ArrayPool<float>.Shared.Return(a);
    }

    public Tensor Linear(Tensor x, LinearWeight w, Activation act = Activation.None)
    {
        Check(x);
        int k = x.Dim(-1);
        if (k != w.InFeatures) throw new ArgumentException($"Linear: input has {k} features, weight expects {w.InFeatures}");
        int m = (int)(x.Length / k);
        var shape = (int[])x.Shape.Clone();
        shape[^1] = w.OutFeatures;
        var y = New(shape);
        if (w is CpuQuantLinearWeight q)
        {
            QuantGemm.Linear(Data(x), m, q.Matrix, q.Bias, Data(y), act); // the activation is fused into the kernel's tasks
            return y;
        }
        var lw = (CpuLinear)w;
        Gemm.Linear(Data(x), m, lw.Packed, lw.Bias, Data(y));
        if (act != Activation.None) ActivationInPlace(y, act);
        return y;
    }

    public Tensor MatMulTransposed(Tensor a, Tensor b)
    {
        Check(a); Check(b);
        int m = a.Dim(0), k = a.Dim(1), n = b.Dim(0);
        if (b.Dim(1) != k) throw new ArgumentException($"MatMulTransposed: inner dims {k} and {b.Dim(1)} differ");
        var c = New(m, n);
        Gemm.MatMulTransposed(Data(a), m, Data(b), n, k, Data(c));
        return c;
    }

    public Tensor LayerNorm(Tensor x, Tensor gamma, Tensor beta, float eps)
    {
        Check(x);
        var y = New((int[])x.Shape.Clone());
        int d = x.Dim(-1);
        var xs = x; var ys = y;
        int rows = (int)(x.Length / d);
        float[] g = (float[])gamma.Storage!, bt = (float[])beta.Storage!;
        float[] xa = (float[])xs.Storage!, ya = (float[])ys.Storage!;
        CpuParallel.For(rows, r => MathKernels.LayerNorm(xa.AsSpan(r * d, d), ya.AsSpan(r * d, d), d, g.AsSpan(0, d), bt.AsSpan(0, d), eps));
        return y;
    }

    public void ActivationInPlace(Tensor x, Activation act)
    {
        Check(x);
        if (act == Activation.None) return;
        // Transcendentals (erf/tanh/exp) cost enough to split over threads in 16K-element chunks.
        const int Chunk = 16384;
        float[] a = (float[])x.Storage!;
        long n = x.Length;
        CpuParallel.For((int)((n + Chunk - 1) / Chunk), i =>
        {
            int start = i * Chunk;
            MathKernels.Activate(a.AsSpan(start, (int)Math.Min(Chunk, n - start)), act);
        });
    }

    public void AddInPlace(Tensor x, Tensor y)
    {
        Check(x); Check(y);
        var xd = Data(x); var yd = Data(y);
        if (xd.Length % yd.Length != 0) throw new ArgumentException($"AddInPlace: {y} does not broadcast over {x}");
        for (int off = 0; off < xd.Length; off += yd.Length)
            TensorPrimitives.Add(xd.Slice(off, yd.Length), yd, xd.Slice(off, yd.Length));
    }

    public void ScaleInPlace(Tensor x, float scale, float bias = 0f)
    {
        var d = Data(x);
        TensorPrimitives.Multiply(d, scale, d);
        if (bias != 0f) TensorPrimitives.Add(d, bias, d);
    }

    public void L2NormalizeInPlace(Tensor x)
    {
        var d = Data(x); int n = x.Dim(-1);
        for (int off = 0; off < d.Length; off += n)
        {
            var r = d.Slice(off, n);
            float norm = TensorPrimitives.Norm(r);
            TensorPrimitives.Divide(r, norm, r);
        }
    }

    public Tensor Attention(Tensor q, Tensor k, Tensor v, int heads, float scale, bool causal, Tensor? keyMask)
    {
        Check(q); Check(k); Check(v);
        int b = q.Dim(0), tq = q.Dim(1), hd = q.Dim(2), tk = k.Dim(1);
        if (hd % heads != 0) throw new ArgumentException($"Attention: width {hd} is not divisible by {heads} heads");
        if (k.Dim(0) != b || v.Dim(0) != b || k.Dim(2) != hd || v.Dim(2) != hd || v.Dim(1) != tk)
            throw new ArgumentException($"Attention: q {q}, k {k}, v {v} do not agree");
        if (keyMask is not null && (keyMask.Length != (long)b * tk)) throw new ArgumentException($"Attention: key mask {keyMask} is not [{b}, {tk}]");
        var o = New(b, tq, hd);
        AttentionKernel.Run(Data(q), Data(k), Data(v), Data(o), b, tq, tk, heads, hd / heads, scale, causal,
            keyMask is null ? ReadOnlySpan<float>.Empty : Data(keyMask));
        return o;
    }

    public Tensor SelfAttention(Tensor qkv, int heads, float scale, bool causal, Tensor? keyMask)
    {
        Check(qkv);
        int b = qkv.Dim(0), t = qkv.Dim(1), w3 = qkv.Dim(2);
        if (w3 % 3 != 0 || (w3 / 3) % heads != 0) throw new ArgumentException($"SelfAttention: width {w3} is not 3 x heads ({heads}) x head size");
        if (keyMask is not null && keyMask.Length != (long)b * t) throw new ArgumentException($"SelfAttention: key mask {keyMask} is not [{b}, {t}]");
        int hd = w3 / 3;
        var o = New(b, t, hd);
        var all = Data(qkv);
        AttentionKernel.Run(all, w3, all[hd..], w3, all[(2 * hd)..], w3, Data(o), b, t, t, heads, hd / heads, scale, causal,
            keyMask is null ? ReadOnlySpan<float>.Empty : Data(keyMask));
        return o;
    }

    public Tensor PatchEmbed(Tensor pixels, LinearWeight weight, int patch)
    {
        Check(pixels);
        int b = pixels.Dim(0), c = pixels.Dim(1), h = pixels.Dim(2), w = pixels.Dim(3);
        int kk = c * patch * patch;
        if (pixels.Rank != 4 || weight.InFeatures != kk || h % patch != 0 || w % patch != 0)
            throw new ArgumentException($"PatchEmbed: {pixels} does not fit a {weight.OutFeatures}x{weight.InFeatures} patch weight with patch {patch}");
        int gh = h / patch, gw = w / patch, np = gh * gw;
        // im2col: each patch flattened in (c, py, px) order to match the conv weight's [D, C, P, P] layout,
        // then one GEMM does the convolution.
        using var cols = New(b, np, kk);
        float[] src = (float[])pixels.Storage!, dst = (float[])cols.Storage!;
        CpuParallel.For(b * np, row =>
        {
            int bi = row / np, p = row % np, py = p / gw, px = p % gw;
            int o = row * kk;
            for (int ci = 0; ci < c; ci++)
                for (int y = 0; y < patch; y++)
                {
                    int s = ((bi * c + ci) * h + py * patch + y) * w + px * patch;
                    Array.Copy(src, s, dst, o, patch);
                    o += patch;
                }
        });
        return Linear(cols, weight);
    }

    public Tensor Embedding(Tensor table, ReadOnlySpan<int> ids)
    {
        Check(table);
        int vocab = table.Dim(0), d = table.Dim(1);
        var y = New(ids.Length, d);
        var td = Data(table); var yd = Data(y);
        for (int i = 0; i < ids.Length; i++)
        {
            int id = ids[i];
            if ((uint)id >= (uint)vocab) { y.Dispose(); throw new FastMMException($"input_ids: token id {id} at position {i} is outside the vocabulary [0, {vocab})"); }
            td.Slice(id * d, d).CopyTo(yd.Slice(i * d, d));
        }
        return y;
    }

    public Tensor PrependRow(Tensor x, Tensor row)
    {
        int b = x.Dim(0), t = x.Dim(1), d = x.Dim(2);
        var y = New(b, t + 1, d);
        var xd = Data(x); var yd = Data(y); var rd = Data(row);
        for (int i = 0; i < b; i++)
        {
            rd.CopyTo(yd.Slice(i * (t + 1) * d, d));
            xd.Slice(i * t * d, t * d).CopyTo(yd.Slice((i * (t + 1) + 1) * d, t * d));
        }
        return y;
    }

    public Tensor SelectRows(Tensor x, ReadOnlySpan<int> positions)
    {
        int b = x.Dim(0), t = x.Dim(1), d = x.Dim(2);
        if (positions.Length != b) throw new ArgumentException("SelectRows: one position per batch row");
        var y = New(b, d);
        var xd = Data(x); var yd = Data(y);
        for (int i = 0; i < b; i++)
        {
            if ((uint)positions[i] >= (uint)t) throw new ArgumentOutOfRangeException(nameof(positions));
            xd.Slice((i * t + positions[i]) * d, d).CopyTo(yd.Slice(i * d, d));
        }
        return y;
    }

    public Tensor Repeat(Tensor row, int batch)
    {
        int d = (int)row.Length;
        var y = New(batch, 1, d);
        var rd = Data(row); var yd = Data(y);
        for (int i = 0; i < batch; i++) rd.CopyTo(yd.Slice(i * d, d));
        return y;
    }

    // ---- decoder ops ----

    public Tensor RmsNorm(Tensor x, Tensor weight, float eps)
    {
        Check(x);
        int d = x.Dim(-1), rows = (int)(x.Length / d);
        if (weight.Length != d) throw new ArgumentException($"RmsNorm: weight {weight} does not match width {d}");
        var y = New((int[])x.Shape.Clone());
        float[] xa = (float[])x.Storage!, ya = (float[])y.Storage!, wa = (float[])weight.Storage!;
        CpuParallel.For(rows, r =>
        {
            var xr = xa.AsSpan(r * d, d); var yr = ya.AsSpan(r * d, d);
            float inv = 1f / MathF.Sqrt(TensorPrimitives.Dot(xr, xr) / d + eps);
            TensorPrimitives.Multiply(xr, inv, yr);
            TensorPrimitives.Multiply(yr, wa.AsSpan(0, d), yr);
        });
        return y;
    }

    public Tensor RopeTable(int position0, int count, int headDim, double theta)
        => FromHost(BackendArgs.RopeTable(position0, count, headDim, theta), count, headDim);

    public void RopeInPlace(Tensor qkv, int qHeads, int kvHeads, int headDim, Tensor table)
    {
        Check(qkv);
        int width = qkv.Dim(-1), rows = (int)(qkv.Length / width), half = headDim / 2;
        if (width != (qHeads + 2 * kvHeads) * headDim) throw new ArgumentException($"RoPE: width {width} is not (Hq + 2·Hkv)·D");
        if (table.Dim(0) != rows || table.Dim(1) != headDim) throw new ArgumentException($"RoPE: table {table} does not cover {rows} rows");
        float[] a = (float[])qkv.Storage!, tb = (float[])table.Storage!;
        int rotated = qHeads + kvHeads; // q heads then k heads sit first in each row; v is not rotated
        CpuParallel.For(rows, r =>
        {
            var cos = tb.AsSpan(r * headDim, half); var sin = tb.AsSpan(r * headDim + half, half);
            for (int h = 0; h < rotated; h++)
            {
                var x = a.AsSpan(r * width + h * headDim, headDim);
                for (int j = 0; j < half; j++)
                {
                    float x1 = x[j], x2 = x[j + half];
                    x[j] = x1 * cos[j] - x2 * sin[j];
                    x[j + half] = x2 * cos[j] + x1 * sin[j];
                }
            }
        });
    }

    public Tensor SwiGlu(Tensor gateUp)
    {
        Check(gateUp);
        int w = gateUp.Dim(-1), inter = w / 2, rows = (int)(gateUp.Length / w);
        if (w % 2 != 0) throw new ArgumentException($"SwiGlu: width {w} is odd");
        var shape = (int[])gateUp.Shape.Clone(); shape[^1] = inter;
        var y = New(shape);
        float[] g = (float[])gateUp.Storage!, ya = (float[])y.Storage!;
        CpuParallel.For(rows, r =>
        {
            var dst = ya.AsSpan(r * inter, inter);
            g.AsSpan(r * w, inter).CopyTo(dst);
            MathKernels.Activate(dst, Activation.Silu);
            TensorPrimitives.Multiply(dst, g.AsSpan(r * w + inter, inter), dst);
        });
        return y;
    }

    /// <summary>Per layer, one pool array for K and one for V (pool row r at r·KvHeads·HeadDim); int8 pools add one scale per (row, KV head).</summary>
    private abstract class CpuKvStorage : Kv.KvCacheStorage
    {
        protected CpuKvStorage(int layers, int kvHeads, int headDim, int blockSize, int blocks, Kv.KvCacheType type)
        {
            Layers = layers; KvHeads = kvHeads; HeadDim = headDim; BlockSize = blockSize; Blocks = blocks; Type = type;
            if (PoolValues > Array.MaxLength) throw new FastMMException($"KV cache of {blocks * blockSize} tokens is too large for one CPU array per layer");
        }
        protected long PoolRows => (long)Blocks * BlockSize;
        protected long PoolValues => PoolRows * KvHeads * HeadDim;
        public override void Dispose() { }
    }

    private sealed class CpuF32KvStorage : CpuKvStorage
    {
        public readonly float[][] K, V;
        public CpuF32KvStorage(int layers, int kvHeads, int headDim, int blockSize, int blocks) : base(layers, kvHeads, headDim, blockSize, blocks, Kv.KvCacheType.F32)
        {
            K = new float[layers][]; V = new float[layers][];
            for (int l = 0; l < layers; l++) { K[l] = new float[PoolValues]; V[l] = new float[PoolValues]; }
        }
        public override long Bytes => 2L * Layers * PoolValues * sizeof(float);
    }

    private sealed class CpuInt8KvStorage : CpuKvStorage
    {
        public readonly sbyte[][] K, V;
        public readonly float[][] KScales, VScales;
        public CpuInt8KvStorage(int layers, int kvHeads, int headDim, int blockSize, int blocks) : base(layers, kvHeads, headDim, blockSize, blocks, Kv.KvCacheType.Int8)
        {
            K = new sbyte[layers][]; V = new sbyte[layers][]; KScales = new float[layers][]; VScales = new float[layers][];
            for (int l = 0; l < layers; l++)
            {
                K[l] = new sbyte[PoolValues]; V[l] = new sbyte[PoolValues];
                KScales[l] = new float[PoolRows * kvHeads]; VScales[l] = new float[PoolRows * kvHeads];
            }
        }
        public override long Bytes => 2L * Layers * (PoolValues + PoolRows * KvHeads * sizeof(float));
    }

    public Kv.KvCacheStorage CreateKvCache(int layers, int kvHeads, int headDim, int blockSize, int blocks, Kv.KvCacheType type) => type switch
    {
        Kv.KvCacheType.F32 => new CpuF32KvStorage(layers, kvHeads, headDim, blockSize, blocks),
        Kv.KvCacheType.Int8 => new CpuInt8KvStorage(layers, kvHeads, headDim, blockSize, blocks),
        _ => throw new ArgumentOutOfRangeException(nameof(type)),
    };

    public void WriteKv(Kv.KvCacheStorage cache, int layer, Tensor qkv, int qHeads, ReadOnlySpan<int> blockTable, int position0)
    {
        Check(qkv);
        var c = (CpuKvStorage)cache;
        int d = c.HeadDim, kvw = c.KvHeads * d, width = qkv.Dim(-1), rows = (int)(qkv.Length / width), bs = c.BlockSize;
        if (width != qHeads * d + 2 * kvw) throw new ArgumentException($"WriteKv: width {width} does not match the cache's heads");
        if ((long)blockTable.Length * bs < position0 + rows) throw new ArgumentException("WriteKv: positions beyond the reserved blocks");
        var src = Data(qkv);
        int qw = qHeads * d;
        for (int i = 0; i < rows; i++)
        {
            int pos = position0 + i;
            long row = (long)blockTable[pos / bs] * bs + pos % bs;
            var k = src.Slice(i * width + qw, kvw);
            var v = src.Slice(i * width + qw + kvw, kvw);
            if (c is CpuInt8KvStorage int8)
            {
                for (int g = 0; g < c.KvHeads; g++)
                {
                    int values = (int)(row * kvw) + g * d, scale = (int)(row * c.KvHeads) + g;
                    int8.KScales[layer][scale] = Int8Kernels.Quantize(k.Slice(g * d, d), int8.K[layer].AsSpan(values, d));
                    int8.VScales[layer][scale] = Int8Kernels.Quantize(v.Slice(g * d, d), int8.V[layer].AsSpan(values, d));
                }
            }
            else
            {
                var f = (CpuF32KvStorage)c;
                k.CopyTo(f.K[layer].AsSpan((int)(row * kvw), kvw));
                v.CopyTo(f.V[layer].AsSpan((int)(row * kvw), kvw));
            }
        }
    }

    public Tensor CachedAttention(Tensor qkv, int qHeads, Kv.KvCacheStorage cache, int layer, ReadOnlySpan<int> blockTable, int position0, float scale)
    {
        Check(qkv);
        var c = (CpuKvStorage)cache;
        int width = qkv.Dim(-1), rows = (int)(qkv.Length / width), kvw = c.KvHeads * c.HeadDim;
        var o = New(rows, qHeads * c.HeadDim);
        if (c is CpuInt8KvStorage int8)
            AttentionKernel.RunPaged(Data(qkv), width, int8.K[layer], int8.V[layer], int8.KScales[layer], int8.VScales[layer], kvw, blockTable, c.BlockSize,
                Data(o), rows, position0 + rows, qHeads, c.KvHeads, c.HeadDim, scale);
        else
        {
            var f = (CpuF32KvStorage)c;
            AttentionKernel.RunPaged(Data(qkv), width, f.K[layer], f.V[layer], kvw, blockTable, c.BlockSize,
                Data(o), rows, position0 + rows, qHeads, c.KvHeads, c.HeadDim, scale);
        }
        return o;
    }

    public void SetRows(Tensor x, ReadOnlySpan<int> rows, Tensor values)
    {
        Check(x); Check(values);
        BackendArgs.SetRows(x, rows, values); // every index checked before any row is written
        int d = x.Dim(-1);
        var xd = Data(x); var vd = Data(values);
        for (int i = 0; i < rows.Length; i++) vd.Slice(i * d, d).CopyTo(xd.Slice(rows[i] * d, d));
    }

    public Tensor PixelShuffle(Tensor x, int scale)
    {
        Check(x);
        int b = x.Dim(0), seq = x.Dim(1), e = x.Dim(2), side = (int)Math.Round(Math.Sqrt(seq));
        if (side * side != seq || side % scale != 0) throw new ArgumentException($"PixelShuffle: {seq} patches are not a square grid divisible by {scale}");
        int outSide = side / scale, k = e * scale * scale, se = scale * e;
        var y = New(b, outSide * outSide, k);
        var xd = Data(x); var yd = Data(y);
        for (int bi = 0; bi < b; bi++)
            for (int h2 = 0; h2 < outSide; h2++)
                for (int w2 = 0; w2 < outSide; w2++)
                    for (int dy = 0; dy < scale; dy++)
                    {
                        // One output row's chunk dy·s·E … holds s consecutive patches of input row h2·s + dy.
                        int srcRow = (h2 * scale + dy) * side + w2 * scale;
                        int dst = ((bi * outSide + h2) * outSide + w2) * k + dy * se;
                        xd.Slice((bi * seq + srcRow) * e, se).CopyTo(yd.Slice(dst, se));
                    }
        return y;
    }

    public void Dispose() { }
}
