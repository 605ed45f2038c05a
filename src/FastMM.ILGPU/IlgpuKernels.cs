using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime.Cuda;

namespace FastMM.Ilgpu;

/// <summary>Scalars of the attention kernels, in one struct so a launch stays within ILGPU's parameter limit.</summary>
internal struct AttentionShape
{
    public int Batch, Tq, Tk, Heads, KvHeads, HeadDim;
    public int QOffset, QStride, KOffset, KStride, VOffset, VStride, OStride;
    public float Scale;
    public int Causal, HasMask;
    // paged: KV pool rows are blockTable[pos / BlockSize]·BlockSize + pos mod BlockSize, KvStride values each
    public int BlockSize, KvStride, Int8;
}

/// <summary>Scalars of the quantized matmul: the weight format's block layout as data (see FastMM.Quant).</summary>
internal struct QuantShape
{
    public int M, N, K;
    /// <summary>0 = Q8_0 (34-byte blocks of 32), 1 = Q4_0 (18-byte blocks), 2 = group-wise INT4 (4 + G/2 bytes per G).</summary>
    public int Format;
    public int GroupElements, GroupBytes, RowBytes;
    public int HasBias, Act;
}

/// <summary>
/// The ILGPU kernels behind <see cref="IlgpuBackend"/>: the same ops as the CPU reference (src/FastMM/Cpu), written
/// once in C# for every ILGPU accelerator (CUDA, OpenCL, CPU). F32 compute; group-wide reductions go through shared
/// memory so they do not depend on the warp width. Kernels index with int: callers check sizes fit.
/// </summary>
internal static class IlgpuKernels
{
    public const int Tile = 16;        // GEMM output tile side (group = (Tile/2)² threads, 2×2 outputs each)
    public const int KSlab = 64;       // GEMM: K values staged per barrier pair
    // One warp per row / output / (query, head): enough for these widths on a GPU, and a barrier on ILGPU's CPU
    // accelerator costs a switch through every thread of the group, so small groups keep the CPU tests fast.
    public const int RowGroup = 32;    // threads per row for norms, per output of the quantized matmul
    public const int QuantRows = 8;    // activation rows per group in the quantized matmul (prefill reuses each weight block 8×)
    public const int AttnGroup = 32;   // threads per (query, head) in attention, each taking every 32nd key
    public const int MaxHeadDim = 128;

    // ---------------------------------------------------------------- scalar helpers (inlined into kernels)

    /// <summary>The activation of <see cref="Activation"/> (as int) at v, as the CPU reference computes it.</summary>
    public static float Activate(float v, int act)
    {
        switch (act)
        {
            case 1: return GeluErf(v);
            case 2: return v / (1f + XMath.Exp(-1.5957691216057308f * (v + 0.044715f * v * v * v)));
            case 3: return v / (1f + XMath.Exp(-1.702f * v));
            case 4: return v / (1f + XMath.Exp(-v));
            case 5: return v > 0f ? v : 0f;
            default: return v;
        }
    }

    /// <summary>Exact GELU via Numerical Recipes' erfc fit (fractional error &lt; 1.2e-7), as MathKernels.</summary>
    private static float GeluErf(float x)
    {
        float z = XMath.Abs(x) * 0.70710678f;
        float t = 1f / (1f + 0.5f * z);
        float poly = -1.26551223f + t * (1.00002368f + t * (0.37409196f + t * (0.09678418f + t * (-0.18628806f + t * (0.27886807f
            + t * (-1.13520398f + t * (1.48851587f + t * (-0.82215223f + t * 0.17087277f))))))));
        float r = t * XMath.Exp(poly - z * z); // erfc(|x|/√2)
        return x >= 0f ? x * (1f - 0.5f * r) : 0.5f * x * r;
    }

    /// <summary>
    /// Round half to even for |v| &lt; 2²², as the CPU kernels' Math.Round / vroundps. On CUDA one cvt.rni: the
    /// 1.5·2²³ trick there lets ptxas contract the caller's x·y + 1.5·2²³ into one fma that rounds the exact product
    /// (an H200 run saw int8 activations differ from the CPU's), and ILGPU.Algorithms' XMath.Round rounds halves away
    /// from zero in PTX. Elsewhere (the CPU accelerator: .NET arithmetic, no contraction) the trick is exact.
    /// </summary>
    private static float RoundEven(float v)
    {
        if (CudaAsm.IsSupported)
        {
            CudaAsm.Emit("cvt.rni.f32.f32 %0, %1;", out float r, v);
            return r;
        }
        return (v + 12582912f) - 12582912f;
    }

    /// <summary>An fp16 stored little-endian at bytes[i], i+1 as a float, exact for every finite half (as FastMM.Quant.Fp16.Load).</summary>
    private static float Half(ArrayView<byte> bytes, int i)
    {
        int h = (short)(bytes[i] | (bytes[i + 1] << 8));
        return Interop.IntAsFloat((uint)((h << 13) & unchecked((int)0x8FFFE000))) * 5.192296858534828e33f;
    }

    // Group-wide reductions: every thread publishes its value, then every thread reads all n of them (the same shared
    // address for the whole group at each step: a broadcast on a GPU). Two barriers per reduction instead of a tree's
    // 2·log2(n): a barrier is what costs on ILGPU's CPU accelerator, where each one switches between n OS threads.

    /// <summary>Sum of v over the group of n threads; every thread gets the result.</summary>
    private static float GroupSum(ArrayView<float> scratch, float v, int t, int n)
    {
        scratch[t] = v;
        Group.Barrier();
        float r = 0f;
        for (int i = 0; i < n; i++) r += scratch[i];
        Group.Barrier();
        return r;
    }

    private static float GroupMax(ArrayView<float> scratch, float v, int t, int n)
    {
        scratch[t] = v;
        Group.Barrier();
        float r = float.NegativeInfinity;
        for (int i = 0; i < n; i++) r = XMath.Max(r, scratch[i]);
        Group.Barrier();
        return r;
    }

    // ---------------------------------------------------------------- GEMM

    /// <summary>
    /// c[M, N] = act(a[M, K] · b[N, K]ᵀ + bias): a Tile×Tile output tile per group of (Tile/2)² threads, each computing a
    /// 2×2 block of it (rows ty, ty + Tile/2; columns tx, tx + Tile/2), K walked in KSlab-wide slabs of A and B staged in
    /// shared memory. Grid = (⌈N/Tile⌉, ⌈M/Tile⌉) groups of (Tile/2, Tile/2).
    /// </summary>
    public static void Gemm(ArrayView<float> a, ArrayView<float> b, ArrayView<float> bias, ArrayView<float> c,
        int m, int n, int k, int hasBias, int act)
    {
        const int H = Tile / 2;
        var sa = SharedMemory.Allocate<float>(Tile * KSlab);
        var sb = SharedMemory.Allocate<float>(Tile * KSlab);
        int tx = Group.IdxX, ty = Group.IdxY;
        int row0 = Grid.IdxY * Tile, col0 = Grid.IdxX * Tile;
        float c00 = 0f, c01 = 0f, c10 = 0f, c11 = 0f;
        for (int k0 = 0; k0 < k; k0 += KSlab)
        {
            // Stage Tile rows of A and of B: thread (tx, ty) loads rows ty and ty + H, every H-th column from tx.
            for (int r = ty; r < Tile; r += H)
                for (int j = tx; j < KSlab; j += H)
                {
                    int kk = k0 + j, ar = row0 + r, br = col0 + r;
                    sa[r * KSlab + j] = ar < m && kk < k ? a[ar * k + kk] : 0f;
                    sb[r * KSlab + j] = br < n && kk < k ? b[br * k + kk] : 0f;
                }
            Group.Barrier();
            int steps = XMath.Min(KSlab, k - k0);
            for (int i = 0; i < steps; i++)
            {
                float a0 = sa[ty * KSlab + i], a1 = sa[(ty + H) * KSlab + i];
                float b0 = sb[tx * KSlab + i], b1 = sb[(tx + H) * KSlab + i];
                c00 += a0 * b0; c01 += a0 * b1; c10 += a1 * b0; c11 += a1 * b1;
            }
            Group.Barrier();
        }
        Store(c, bias, m, n, row0 + ty, col0 + tx, c00, hasBias, act);
        Store(c, bias, m, n, row0 + ty, col0 + tx + H, c01, hasBias, act);
        Store(c, bias, m, n, row0 + ty + H, col0 + tx, c10, hasBias, act);
        Store(c, bias, m, n, row0 + ty + H, col0 + tx + H, c11, hasBias, act);
    }

    private static void Store(ArrayView<float> c, ArrayView<float> bias, int m, int n, int row, int col, float acc, int hasBias, int act)
    {
        if (row >= m || col >= n) return;
        if (hasBias != 0) acc += bias[col];
        c[row * n + col] = Activate(acc, act);
    }

    // ---------------------------------------------------------------- quantized matmul (GGUF Q8_0 / Q4_0, INT4 groups)

    /// <summary>
    /// One block of 32 activations per thread, as QuantGemm.QuantizeRow: d = amax/127, q = round-half-even(x·(1/d)),
    /// d·Σq; a block whose 1/d overflows is stored as zeros.
    /// </summary>
    public static void QuantizeActivations(Index1D block, ArrayView<float> x, ArrayView<sbyte> q, ArrayView<float> d, ArrayView<float> scaledSums)
    {
        int o = block * 32;
        float amax = 0f;
        for (int i = 0; i < 32; i++) amax = XMath.Max(amax, XMath.Abs(x[o + i]));
        float db = amax / 127f, id = 1f / db;
        if (id > float.MaxValue) { db = 0f; id = 0f; }
        int sum = 0;
        for (int i = 0; i < 32; i++)
        {
            int v = (int)RoundEven(x[o + i] * id);
            q[o + i] = (sbyte)v;
            sum += v;
        }
        d[block] = db;
        scaledSums[block] = db * sum;
    }

    /// <summary>
    /// y[m, n] = act(Σ over 32-blocks of the weight row n: scale·d_x·Σ(v·q_x) (+ residual min·d_x·Σq_x) + bias[n]), with v
    /// the stored integer minus the format's pivot (Q4_0: 8; INT4: −min/scale rounded into 0..15), as the CPU's
    /// QuantKernels. One group of RowGroup threads per weight row and QuantRows activation rows: the lanes stride over
    /// the row's blocks, each block's header read once for all the rows, then one shared-memory merge per output.
    /// Grid = (N, ⌈M/QuantRows⌉).
    /// </summary>
    public static void QuantLinear(ArrayView<byte> w, ArrayView<sbyte> qx, ArrayView<float> dx, ArrayView<float> sx,
        ArrayView<float> bias, ArrayView<float> y, QuantShape s)
    {
        var partial = SharedMemory.Allocate<float>(QuantRows * RowGroup);
        var acc = LocalMemory.Allocate<float>(QuantRows);
        int n = Grid.IdxX, m0 = Grid.IdxY * QuantRows, t = Group.IdxX;
        int rows = XMath.Min(QuantRows, s.M - m0);
        int blocks = s.K / 32;
        for (int r = 0; r < QuantRows; r++) acc[r] = 0f;
        for (int b = t; b < blocks; b += RowGroup)
        {
            float scale, residualMin = 0f;
            int o, pivot;
            if (s.Format == 0)
            {
                o = n * s.RowBytes + b * 34;
                scale = Half(w, o);
                o += 2;
                pivot = 0;
            }
            else if (s.Format == 1)
            {
                o = n * s.RowBytes + b * 18;
                scale = Half(w, o);
                o += 2;
                pivot = 8;
            }
            else
            {
                int g = b * 32 / s.GroupElements, sub = b * 32 % s.GroupElements / 32;
                int go = n * s.RowBytes + g * s.GroupBytes;
                scale = Half(w, go);
                float min = Half(w, go + 2), ratio = -min / scale;
                pivot = ratio >= 15f ? 15 : ratio > 0f ? (int)(ratio + 0.5f) : 0;
                residualMin = min + pivot * scale;
                o = go + 4 + 16 * sub;
            }
            for (int r = 0; r < rows; r++)
            {
                int xo = (m0 + r) * s.K + b * 32, xb = (m0 + r) * blocks + b;
                int dot = 0;
                if (s.Format == 0)
                    for (int i = 0; i < 32; i++) dot += (sbyte)w[o + i] * qx[xo + i];
                else
                    for (int j = 0; j < 16; j++)
                    {
                        int v = w[o + j];
                        dot += ((v & 15) - pivot) * qx[xo + j] + ((v >> 4) - pivot) * qx[xo + 16 + j];
                    }
                float a = scale * dx[xb] * dot;
                if (s.Format == 2) a += residualMin * sx[xb];
                acc[r] += a;
            }
        }
        for (int r = 0; r < QuantRows; r++) partial[r * RowGroup + t] = acc[r];
        Group.Barrier();
        if (t < rows)
        {
            float total = 0f;
            for (int u = 0; u < RowGroup; u++) total += partial[t * RowGroup + u];
            if (s.HasBias != 0) total += bias[n];
            y[(m0 + t) * s.N + n] = Activate(total, s.Act);
        }
    }

    // ---------------------------------------------------------------- norms

    /// <summary>LayerNorm of each row of width d (mean, then the centred variance, as MathKernels). Grid = rows.</summary>
    public static void LayerNorm(ArrayView<float> x, ArrayView<float> gamma, ArrayView<float> beta, ArrayView<float> y, int d, float eps)
    {
        var scratch = SharedMemory.Allocate<float>(RowGroup);
        int o = Grid.IdxX * d, t = Group.IdxX;
        float s = 0f;
        for (int i = t; i < d; i += RowGroup) s += x[o + i];
        float mean = GroupSum(scratch, s, t, RowGroup) / d;
        float v = 0f;
        for (int i = t; i < d; i += RowGroup) { float c = x[o + i] - mean; v += c * c; }
        float rstd = 1f / XMath.Sqrt(GroupSum(scratch, v, t, RowGroup) / d + eps);
        for (int i = t; i < d; i += RowGroup) y[o + i] = (x[o + i] - mean) * rstd * gamma[i] + beta[i];
    }

    /// <summary>RMSNorm (HF Llama): x · rsqrt(mean(x²) + eps) · weight. Grid = rows.</summary>
    public static void RmsNorm(ArrayView<float> x, ArrayView<float> weight, ArrayView<float> y, int d, float eps)
    {
        var scratch = SharedMemory.Allocate<float>(RowGroup);
        int o = Grid.IdxX * d, t = Group.IdxX;
        float s = 0f;
        for (int i = t; i < d; i += RowGroup) s += x[o + i] * x[o + i];
        float inv = 1f / XMath.Sqrt(GroupSum(scratch, s, t, RowGroup) / d + eps);
        for (int i = t; i < d; i += RowGroup) y[o + i] = x[o + i] * inv * weight[i];
    }

    /// <summary>Each row divided by its L2 norm, in place. Grid = rows.</summary>
    public static void L2Normalize(ArrayView<float> x, int d)
    {
        var scratch = SharedMemory.Allocate<float>(RowGroup);
        int o = Grid.IdxX * d, t = Group.IdxX;
        float s = 0f;
        for (int i = t; i < d; i += RowGroup) s += x[o + i] * x[o + i];
        float norm = XMath.Sqrt(GroupSum(scratch, s, t, RowGroup));
        for (int i = t; i < d; i += RowGroup) x[o + i] = x[o + i] / norm;
    }

    // ---------------------------------------------------------------- elementwise

    public static void ActivationInPlace(Index1D i, ArrayView<float> x, int act) => x[i] = Activate(x[i], act);

    /// <summary>x[i] += y[i mod yLength].</summary>
    public static void AddBroadcast(Index1D i, ArrayView<float> x, ArrayView<float> y, int yLength) => x[i] += y[i % yLength];

    public static void ScaleBias(Index1D i, ArrayView<float> x, float scale, float bias) => x[i] = x[i] * scale + bias;

    /// <summary>y[r, j] = silu(g[r, j]) · g[r, inter + j] for rows of width 2·inter.</summary>
    public static void SwiGlu(Index1D i, ArrayView<float> gateUp, ArrayView<float> y, int inter)
    {
        int r = i / inter, j = i % inter;
        float g = gateUp[r * 2 * inter + j];
        y[i] = g / (1f + XMath.Exp(-g)) * gateUp[r * 2 * inter + inter + j];
    }

    // ---------------------------------------------------------------- RoPE

    /// <summary>HF rotate_half on the q and k heads (the first `rotated` heads of each row). Index = (row, head, j &lt; D/2).</summary>
    public static void Rope(Index3D i, ArrayView<float> qkv, ArrayView<float> table, int width, int headDim)
    {
        int r = i.X, h = i.Y, j = i.Z, half = headDim / 2;
        int o = r * width + h * headDim;
        float c = table[r * headDim + j], s = table[r * headDim + half + j];
        float x1 = qkv[o + j], x2 = qkv[o + j + half];
        qkv[o + j] = x1 * c - x2 * s;
        qkv[o + j + half] = x2 * c + x1 * s;
    }

    // ---------------------------------------------------------------- attention

    /// <summary>
    /// Attention of one (query, head) per group of AttnGroup threads, the keys split across the threads (thread t takes
    /// keys t, t + AttnGroup, …): each thread runs its own online softmax and output accumulator over its keys, then the
    /// partial results are merged once through shared memory (log-sum-exp rescaling). Three barriers per group whatever
    /// the sequence length. Dense K/V rows (kv row j of batch b at (b·Tk + j)·stride) or, when <c>s.BlockSize</c> &gt; 0,
    /// paged pool rows through the block table (batch 1), F32 or int8 with one scale per (row, KV head). Causal: query i
    /// sees keys ≤ i + Tk − Tq; a key mask value of 0 hides a key; a query that sees no key outputs zeros.
    /// Grid = (Tq, Heads, Batch).
    /// </summary>
    public static void Attention(ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> o, ArrayView<float> mask,
        ArrayView<int> blockTable, ArrayView<sbyte> k8, ArrayView<sbyte> v8, ArrayView<float> kScales, ArrayView<float> vScales, AttentionShape s)
    {
        var qs = SharedMemory.Allocate<float>(MaxHeadDim);
        var maxes = SharedMemory.Allocate<float>(AttnGroup);
        var sums = SharedMemory.Allocate<float>(AttnGroup);
        var parts = SharedMemory.Allocate<float>(AttnGroup * MaxHeadDim);
        var acc = LocalMemory.Allocate<float>(MaxHeadDim);
        int i = Grid.IdxX, h = Grid.IdxY, b = Grid.IdxZ, t = Group.IdxX;
        int d = s.HeadDim, g = h / (s.Heads / s.KvHeads);
        int qRow = s.QOffset + (b * s.Tq + i) * s.QStride + h * d;
        for (int c = t; c < d; c += AttnGroup) qs[c] = q[qRow + c];
        for (int c = 0; c < d; c++) acc[c] = 0f;
        Group.Barrier();

        int kEnd = s.Tk;
        if (s.Causal != 0) kEnd = XMath.Clamp(i + s.Tk - s.Tq + 1, 0, s.Tk);
        float mRun = float.NegativeInfinity, lRun = 0f;
        for (int j = t; j < kEnd; j += AttnGroup)
        {
            if (s.HasMask != 0 && mask[b * s.Tk + j] == 0f) continue;
            int ko, vo, row = 0;
            if (s.BlockSize > 0)
            {
                row = blockTable[j / s.BlockSize] * s.BlockSize + j % s.BlockSize;
                ko = vo = row * s.KvStride + g * d;
            }
            else
            {
                ko = s.KOffset + (b * s.Tk + j) * s.KStride + h * d;
                vo = s.VOffset + (b * s.Tk + j) * s.VStride + h * d;
            }
            float dot = 0f;
            if (s.Int8 != 0)
            {
                for (int c = 0; c < d; c++) dot += qs[c] * k8[ko + c];
                dot *= kScales[row * s.KvHeads + g];
            }
            else
                for (int c = 0; c < d; c++) dot += qs[c] * k[ko + c];
            float score = dot * s.Scale;
            if (score > mRun)
            {
                float correction = mRun == float.NegativeInfinity ? 0f : XMath.Exp(mRun - score);
                lRun *= correction;
                for (int c = 0; c < d; c++) acc[c] *= correction;
                mRun = score;
            }
            float p = XMath.Exp(score - mRun);
            lRun += p;
            if (s.Int8 != 0)
            {
                float pv = p * vScales[row * s.KvHeads + g];
                for (int c = 0; c < d; c++) acc[c] += pv * v8[vo + c];
            }
            else
                for (int c = 0; c < d; c++) acc[c] += p * v[vo + c];
        }

        // Merge: rescale every thread's partial sums to the group's maximum.
        maxes[t] = mRun;
        Group.Barrier();
        float mAll = float.NegativeInfinity;
        for (int u = 0; u < AttnGroup; u++) mAll = XMath.Max(mAll, maxes[u]);
        float w = mRun == float.NegativeInfinity ? 0f : XMath.Exp(mRun - mAll);
        sums[t] = lRun * w;
        for (int c = 0; c < d; c++) parts[t * MaxHeadDim + c] = acc[c] * w;
        Group.Barrier();
        float lAll = 0f;
        for (int u = 0; u < AttnGroup; u++) lAll += sums[u];
        float inv = lAll > 0f ? 1f / lAll : 0f;
        int oRow = (b * s.Tq + i) * s.OStride + h * d;
        for (int c = t; c < d; c += AttnGroup)
        {
            float total = 0f;
            for (int u = 0; u < AttnGroup; u++) total += parts[u * MaxHeadDim + c];
            o[oRow + c] = total * inv;
        }
    }

    // ---------------------------------------------------------------- paged KV cache

    /// <summary>
    /// Token i's K and V heads (after the q heads in fused rows of `width`) into pool row blockTable[p / bs]·bs + p mod bs,
    /// p = position0 + i; int8 pools get q = clamp(round(x / s), ±127), s = max|x|/127 per (row, KV head), as
    /// Int8Kernels.Quantize. `part` 0 writes K, 1 writes V (to that part's pool). Index = (token, KV head).
    /// </summary>
    public static void WriteKv(Index2D idx, ArrayView<float> qkv, ArrayView<int> blockTable, ArrayView<float> pool, ArrayView<sbyte> pool8,
        ArrayView<float> scales, int width, int qWidth, int kvHeads, int headDim, int blockSize, int position0, int int8, int part)
    {
        int i = idx.X, g = idx.Y, which = part;
        int p = position0 + i, kvw = kvHeads * headDim;
        int row = blockTable[p / blockSize] * blockSize + p % blockSize;
        int src = i * width + qWidth + which * kvw + g * headDim, dst = row * kvw + g * headDim;
        if (int8 == 0)
        {
            for (int c = 0; c < headDim; c++) pool[dst + c] = qkv[src + c];
            return;
        }
        float amax = 0f;
        for (int c = 0; c < headDim; c++) amax = XMath.Max(amax, XMath.Abs(qkv[src + c]));
        float scale = amax / 127f;
        for (int c = 0; c < headDim; c++)
            pool8[dst + c] = amax == 0f ? (sbyte)0 : (sbyte)XMath.Clamp(RoundEven(qkv[src + c] / scale), -127f, 127f);
        scales[row * kvHeads + g] = amax == 0f ? 0f : scale;
    }

    // ---------------------------------------------------------------- row movers

    /// <summary>dst[r, :] = src[rows[r], :] for rows of width d. Index = (row, column).</summary>
    public static void GatherRows(Index2D i, ArrayView<float> src, ArrayView<int> rows, ArrayView<float> dst, int d)
        => dst[i.X * d + i.Y] = src[rows[i.X] * d + i.Y];

    /// <summary>dst[rows[r], :] = src[r, :]. Index = (row, column).</summary>
    public static void ScatterRows(Index2D i, ArrayView<float> src, ArrayView<int> rows, ArrayView<float> dst, int d)
        => dst[rows[i.X] * d + i.Y] = src[i.X * d + i.Y];

    /// <summary>y[b, 0] = row, y[b, 1 + t] = x[b, t] for x [B, T, D]. Index = element of y.</summary>
    public static void PrependRow(Index1D i, ArrayView<float> x, ArrayView<float> row, ArrayView<float> y, int t, int d)
    {
        int c = i % d, r = i / d, b = r / (t + 1), tt = r % (t + 1);
        y[i] = tt == 0 ? row[c] : x[(b * t + tt - 1) * d + c];
    }

    /// <summary>im2col for the patch convolution: cols[row, (c, py, px)] of patch `row` (batch-major, row-major grid). Index = element of cols.</summary>
    public static void Im2Col(Index1D i, ArrayView<float> pixels, ArrayView<float> cols, int channels, int height, int width, int patch)
    {
        int kk = channels * patch * patch, gw = width / patch, np = height / patch * gw;
        int row = i / kk, e = i % kk;
        int b = row / np, p = row % np, py = p / gw, px = p % gw;
        int c = e / (patch * patch), y = e / patch % patch, x = e % patch;
        cols[i] = pixels[((b * channels + c) * height + py * patch + y) * width + px * patch + x];
    }

    /// <summary>Idefics3's pixel shuffle (see IBackend.PixelShuffle). Index = element of y [B, (S/s)², E·s²].</summary>
    public static void PixelShuffle(Index1D i, ArrayView<float> x, ArrayView<float> y, int side, int scale, int e)
    {
        int outSide = side / scale, k = e * scale * scale, se = scale * e;
        int col = i % k, r = i / k;
        int b = r / (outSide * outSide), cell = r % (outSide * outSide), h2 = cell / outSide, w2 = cell % outSide;
        int dy = col / se, within = col % se;
        int srcRow = (h2 * scale + dy) * side + w2 * scale;
        y[i] = x[(b * side * side + srcRow) * e + within];
    }
}
