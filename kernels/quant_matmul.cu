// quant_matmul.cu — IBackend.Linear (y[M, N] = act(x[M, K] · Wᵀ + bias), W an HF Linear weight [N, K]) and
// IBackend.MatMulTransposed (the F32 path with no bias). CPU reference: src/FastMM/Cpu/Gemm.cs + MathKernels.Activate.
// `act` is FastMM.Activation (0 none, 1 gelu (erf), 2 gelu_tanh, 3 quick_gelu, 4 silu, 5 relu); bias may be null.
//
// Weight formats (as CudaBackend lays them out on the device):
//   F32 / F16       row-major [N, K].
//   Q8_0 / Q4_0     GGUF's blocks of 32 weights split into two planes at upload: the quants qs [N, K/32, 32] int8
//                   (Q8_0) or [N, K/32, 16] bytes (Q4_0: element j < 16 is the low nibble of byte j, element j + 16
//                   its high nibble), then the scales d [N, K/32] fp16; value q·d (Q8_0) or (q − 8)·d (Q4_0). The
//                   same numbers as the file's 34- and 18-byte blocks, but every block's quants are 16-byte aligned,
//                   so kernels read them with 128-bit loads (a GGUF block is only 2-byte aligned).
//   INT4 group-wise asymmetric (AWQ/GPTQ-like): nibbles [N, K/2], each 32-element sub-block packed like Q4_0's
//                   16 bytes; scale_min [N, K/group] half2 (scale, min) with group 32, 64 or 128; value q·scale + min.
//
// Entry points and launch configuration (K % 32 == 0 for every format except F32):
//   linear_f32w_gemm     grid (ceil(N/128), ceil(M/128)), block 256; FP32 SIMT tiles (gemm_simt.cuh), any K.
//   linear_{f16w,q8_0,q4_0,int4g}_gemm   prefill: block 256 → 128×128 output tiles, grid (ceil(N/128), ceil(M/128));
//                        block 128 → 64×64 tiles, grid (ceil(N/64), ceil(M/64)) (the host takes 128×128 when that grid
//                        has at least one block per SM). k-step 32 (one quant block): x converted and W dequantized to
//                        f16 in a two-stage shared-memory pipeline, ldmatrix fragments, mma.sync m16n8k16, f32 accumulation.
//   linear_{f32w,f16w}_gemv              decode, M ≤ 8: grid ceil(N/4), block 128 (one warp per output row),
//                        128-bit weight loads, f32 math, warp-shuffle reduction.
//   quantize_activations_q8_1            x [M, K] → xq int8 [M, K] and xds float2 [M, K/32] (d, d·Σq) per 32-block;
//                        grid ceil(M·K/256), block 256 (one warp per block, d = max|x|/127).
//   linear_{q8_0,q4_0,int4g}_gemv        decode, M ≤ 8, on the quantized activations: grid ceil(N/4), block 128
//                        (one warp per output row, one lane per 32-block, 64 bytes of quants in flight per lane),
//                        __dp4a int8 dot products, warp-shuffle reduction. Activation quantization costs ~1e-3
//                        relative error (as llama.cpp's mmvq). Trailing arguments (GemvInput): `residual` (nullable:
//                        each output is also added into it), then what the input is: kind 0, xq/xds as given; kind 1,
//                        RMSNorm of src [M, K] with norm_weight and eps; kind 2, SwiGLU of src [M, 2K] — computed and
//                        quantized by every block into shared memory (M·K ≤ 8192), block 0 storing the float rows
//                        in `out`. Kinds 1 and 2 are what a recorded decode step fuses (CudaBackend.Steps.cs).

#include "common.cuh"
#include "gemm_simt.cuh"
#include "norm_row.cuh"

namespace {

constexpr int kQk = 32;                 // elements per quant block
constexpr int kGemvMaxRows = 8;
constexpr int kGemvWarps = 4;

__device__ __forceinline__ float epilogue_value(float v, const float* bias, int n, int act)
{
    return apply_activation(bias != nullptr ? v + bias[n] : v, act);
}

// ---------------- dequantization of 16 consecutive elements (one half of a 32-block) to f16 ----------------
// part 0 = elements 0..15 of the block, part 1 = elements 16..31; out holds 8 packed half2.

struct WeightF16
{
    const __half* w;
    int K;
    __device__ __forceinline__ void dequant16(int n, int k0, int part, uint32_t out[8]) const
    {
        const uint4* src = reinterpret_cast<const uint4*>(w + (long long)n * K + k0 + 16 * part);
        const uint4 lo = src[0], hi = src[1];
        out[0] = lo.x; out[1] = lo.y; out[2] = lo.z; out[3] = lo.w;
        out[4] = hi.x; out[5] = hi.y; out[6] = hi.z; out[7] = hi.w;
    }
};

struct WeightQ8_0
{
    const uint8_t* qs;  // [N, K/32, 32]
    const __half* d;    // [N, K/32]
    int K;
    __device__ __forceinline__ void dequant16(int n, int k0, int part, uint32_t out[8]) const
    {
        const long long block = (long long)n * (K / kQk) + k0 / kQk;
        const float scale = __half2float(d[block]);
        const uint4 bytes = *reinterpret_cast<const uint4*>(qs + block * kQk + 16 * part);
        const uint32_t q[4] = {bytes.x, bytes.y, bytes.z, bytes.w};
#pragma unroll
        for (int i = 0; i < 8; i++)
        {
            const uint32_t word = q[i / 2] >> (16 * (i % 2));
            out[i] = pack_half2((float)(int8_t)(word & 0xff) * scale, (float)(int8_t)(word >> 8) * scale);
        }
    }
};

struct WeightQ4_0
{
    const uint8_t* qs;  // [N, K/32, 16]
    const __half* d;    // [N, K/32]
    int K;
    __device__ __forceinline__ void dequant16(int n, int k0, int part, uint32_t out[8]) const
    {
        const long long block = (long long)n * (K / kQk) + k0 / kQk;
        const float scale = __half2float(d[block]);
        const uint4 bytes = *reinterpret_cast<const uint4*>(qs + block * (kQk / 2));
        const uint32_t q[4] = {bytes.x, bytes.y, bytes.z, bytes.w};
#pragma unroll
        for (int i = 0; i < 8; i++)
        {
            const uint32_t word = (q[i / 2] >> (16 * (i % 2))) >> (4 * part);  // low nibbles: part 0, high: part 1
            out[i] = pack_half2((float)((int)(word & 0xf) - 8) * scale, (float)((int)((word >> 8) & 0xf) - 8) * scale);
        }
    }
};

struct WeightInt4Group
{
    const uint8_t* w;        // [N, K/2]
    const __half2* scale_min; // [N, K/group]
    int K, group;
    __device__ __forceinline__ void dequant16(int n, int k0, int part, uint32_t out[8]) const
    {
        const uint4 bytes = *reinterpret_cast<const uint4*>(w + (long long)n * (K / 2) + k0 / 2);
        const float2 sm = __half22float2(scale_min[(long long)n * (K / group) + k0 / group]);
        const uint32_t q[4] = {bytes.x, bytes.y, bytes.z, bytes.w};
#pragma unroll
        for (int i = 0; i < 8; i++)
        {
            const uint32_t word = (q[i / 2] >> (16 * (i % 2))) >> (4 * part);
            out[i] = pack_half2((float)(word & 0xf) * sm.x + sm.y, (float)((word >> 8) & 0xf) * sm.x + sm.y);
        }
    }
};

// ---------------- tensor-core GEMM (prefill) ----------------
// One code path, two tile shapes: 128×128 per block (8 warps of 64×32) where such a grid fills the GPU, 64×64
// (4 warps of 32×32) where it would leave SMs idle; the host picks one by the block size it launches with.
// Per k-step of 32 (one quant block) each thread loads 4 float4 of x and dequantizes 16 weights into registers while
// the block multiplies the other shared-memory stage, then stores them (x converted to f16): two stages, one barrier
// per k-step. Fragments come from shared memory through ldmatrix (rows of 80 bytes: conflict-free).

constexpr int kTcStep = 32, kTcStride = kTcStep + 8;
constexpr int kTcLargeThreads = 256;  // any other block size (the host uses 128) takes the 64×64 tiles
constexpr int kTcSmemHalves = 2 * (128 + 128) * kTcStride;  // two stages of the large tile's x and w: 40 KB

template <int BM, int BN, int WarpsM, int WarpsN, typename Weight>
__device__ __forceinline__ void linear_tc_tiles(__half* __restrict__ smem, const float* __restrict__ x, Weight weight,
                                                const float* __restrict__ bias, float* __restrict__ y, int M, int N, int K, int act)
{
    constexpr int kThreads = WarpsM * WarpsN * FASTMM_WARP;
    constexpr int kWarpM = BM / WarpsM, kWarpN = BN / WarpsN;
    constexpr int kMTiles = kWarpM / 16, kNTiles = kWarpN / 8;
    constexpr int kXVecs = BM * kTcStep / 4 / kThreads;   // float4 of x per thread per k-step
    constexpr int kWParts = BN * 2 / kThreads;            // 16-weight halves of a block row per thread per k-step
    constexpr int kStageHalves = (BM + BN) * kTcStride;
    static_assert(kXVecs >= 1 && kWParts >= 1 && kNTiles % 2 == 0 && 2 * kStageHalves <= kTcSmemHalves, "tile shape");

    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const int warp = threadIdx.x / FASTMM_WARP, lane = threadIdx.x % FASTMM_WARP, g = lane / 4, t = lane % 4;
    const int wm = warp / WarpsN, wn = warp % WarpsN;

    float4 x_next[kXVecs];
    uint32_t w_next[kWParts][8];
    auto fetch = [&](int k0) {
#pragma unroll
        for (int i = 0; i < kXVecs; i++)
        {
            const int e = threadIdx.x + i * kThreads, r = e / (kTcStep / 4), c = (e % (kTcStep / 4)) * 4;
            x_next[i] = m0 + r < M ? *reinterpret_cast<const float4*>(x + (long long)(m0 + r) * K + k0 + c) : make_float4(0.f, 0.f, 0.f, 0.f);
        }
#pragma unroll
        for (int p = 0; p < kWParts; p++)
        {
            const int e = threadIdx.x + p * kThreads, row = e / 2;
            if (n0 + row < N) weight.dequant16(n0 + row, k0, e % 2, w_next[p]);
            else
#pragma unroll
                for (int i = 0; i < 8; i++) w_next[p][i] = 0u;
        }
    };
    auto stash = [&](int stage) {
        __half* xs = smem + stage * kStageHalves;
        __half* ws = xs + BM * kTcStride;
#pragma unroll
        for (int i = 0; i < kXVecs; i++)
        {
            const int e = threadIdx.x + i * kThreads, r = e / (kTcStep / 4), c = (e % (kTcStep / 4)) * 4;
            store_half4(xs + r * kTcStride + c, x_next[i]);
        }
#pragma unroll
        for (int p = 0; p < kWParts; p++)
        {
            const int e = threadIdx.x + p * kThreads;
            uint4* dst = reinterpret_cast<uint4*>(ws + (e / 2) * kTcStride + 16 * (e % 2));
            dst[0] = make_uint4(w_next[p][0], w_next[p][1], w_next[p][2], w_next[p][3]);
            dst[1] = make_uint4(w_next[p][4], w_next[p][5], w_next[p][6], w_next[p][7]);
        }
    };

    float acc[kMTiles][kNTiles][4];
#pragma unroll
    for (int i = 0; i < kMTiles; i++)
#pragma unroll
        for (int j = 0; j < kNTiles; j++) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.f;

    // ldmatrix row addresses: A matrices (rows 0–7 | 8–15) × (k 0–7 | 8–15) in lane order 0–7, 8–15, 16–23, 24–31;
    // B matrices n 0–7 (k 0–7, 8–15), then n 8–15 (k 0–7, 8–15): b0/b1 of two n-tiles.
    const int a_row = wm * kWarpM + lane % 16, a_col = (lane / 16) * 8;
    const int b_row = wn * kWarpN + (lane / 16) * 8 + lane % 8, b_col = ((lane / 8) % 2) * 8;

    fetch(0);
    stash(0);
    __syncthreads();
    int stage = 0;
    for (int k0 = 0; k0 < K; k0 += kTcStep)
    {
        const bool more = k0 + kTcStep < K;
        if (more) fetch(k0 + kTcStep);  // in flight while this stage is multiplied
        const __half* xs = smem + stage * kStageHalves;
        const __half* ws = xs + BM * kTcStride;
#pragma unroll
        for (int kc = 0; kc < kTcStep; kc += 16)
        {
            uint32_t a[kMTiles][4];
#pragma unroll
            for (int mt = 0; mt < kMTiles; mt++) ldmatrix_x4(a[mt], xs + (a_row + mt * 16) * kTcStride + kc + a_col);
#pragma unroll
            for (int np = 0; np < kNTiles / 2; np++)
            {
                uint32_t b[4];
                ldmatrix_x4(b, ws + (b_row + np * 16) * kTcStride + kc + b_col);
#pragma unroll
                for (int mt = 0; mt < kMTiles; mt++)
                {
                    mma_m16n8k16_f16_f32(acc[mt][2 * np], a[mt], b[0], b[1]);
                    mma_m16n8k16_f16_f32(acc[mt][2 * np + 1], a[mt], b[2], b[3]);
                }
            }
        }
        if (more) stash(stage ^ 1);  // the other stage: everyone finished reading it before the last barrier
        __syncthreads();
        stage ^= 1;
    }

    const bool pairs = N % 2 == 0;  // two adjacent outputs as one 8-byte store
#pragma unroll
    for (int mt = 0; mt < kMTiles; mt++)
#pragma unroll
        for (int nt = 0; nt < kNTiles; nt++)
#pragma unroll
            for (int h = 0; h < 2; h++)
            {
                const int m = m0 + wm * kWarpM + mt * 16 + g + 8 * h, n = n0 + wn * kWarpN + nt * 8 + 2 * t;
                if (m >= M || n >= N) continue;
                float* out = y + (long long)m * N + n;
                const float v0 = epilogue_value(acc[mt][nt][2 * h], bias, n, act);
                if (pairs) *reinterpret_cast<float2*>(out) = make_float2(v0, epilogue_value(acc[mt][nt][2 * h + 1], bias, n + 1, act));
                else
                {
                    out[0] = v0;
                    if (n + 1 < N) out[1] = epilogue_value(acc[mt][nt][2 * h + 1], bias, n + 1, act);
                }
            }
}

template <typename Weight>
__device__ __forceinline__ void linear_tensor_core(const float* __restrict__ x, Weight weight, const float* __restrict__ bias,
                                                   float* __restrict__ y, int M, int N, int K, int act)
{
    __shared__ __align__(16) __half smem[kTcSmemHalves];
    if (blockDim.x == kTcLargeThreads) linear_tc_tiles<128, 128, 2, 4>(smem, x, weight, bias, y, M, N, K, act);
    else linear_tc_tiles<64, 64, 2, 2>(smem, x, weight, bias, y, M, N, K, act);
}

// ---------------- GEMV (decode) ----------------
// One warp per output row, up to kGemvMaxRows activation rows at once. A decode GEMV reads every weight once, so its
// speed is how many bytes are in flight: each lane issues kGemvUnroll 16-byte weight loads (64 bytes) before it
// uses the first, straight from global memory into registers (no shared-memory staging, which made the L1 the
// bottleneck when the GGUF blocks were read as stored).

constexpr int kGemvBytesInFlight = 64;  // per lane
// Quantized GEMVs: registers capped for 6 blocks (24 warps, ~48 KB of weight loads in flight) per SM; ptxas would
// otherwise give the fused-input variant ~96 registers (5 blocks), and at 8 blocks it spills.
constexpr int kGemvMinBlocks = 6;

__device__ __forceinline__ void unpack16(const uint4& v, float (&out)[4])
{
    out[0] = __uint_as_float(v.x); out[1] = __uint_as_float(v.y); out[2] = __uint_as_float(v.z); out[3] = __uint_as_float(v.w);
}

__device__ __forceinline__ void unpack16(const uint4& v, float (&out)[8])
{
    const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; i++)
    {
        const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&words[i]));
        out[2 * i] = f.x; out[2 * i + 1] = f.y;
    }
}

// F32 or F16 weights, float activations; rows must be 16-byte aligned (K % 4 == 0 for F32, K % 8 == 0 for F16).
template <typename T>
__device__ __forceinline__ void gemv_float(const float* __restrict__ x, const T* __restrict__ w, const float* __restrict__ bias,
                                           float* __restrict__ y, int M, int N, int K, int act)
{
    constexpr int kVec = 16 / sizeof(T), kUnroll = kGemvBytesInFlight / 16;
    const int n = blockIdx.x * kGemvWarps + threadIdx.x / FASTMM_WARP, lane = threadIdx.x % FASTMM_WARP;
    if (n >= N) return;
    const int vecs = K / kVec;
    const uint4* row = reinterpret_cast<const uint4*>(w + (long long)n * K);
    float acc[kGemvMaxRows] = {};
    for (int v0 = lane; v0 < vecs; v0 += kUnroll * FASTMM_WARP)
    {
        uint4 held[kUnroll];
#pragma unroll
        for (int u = 0; u < kUnroll; u++)
            if (v0 + u * FASTMM_WARP < vecs) held[u] = __ldg(row + v0 + u * FASTMM_WARP);
#pragma unroll
        for (int u = 0; u < kUnroll; u++)
        {
            const int v = v0 + u * FASTMM_WARP;
            if (v >= vecs) break;
            float wv[kVec];
            unpack16(held[u], wv);
#pragma unroll
            for (int r = 0; r < kGemvMaxRows; r++)
            {
                if (r >= M) break;
                const float4* xr = reinterpret_cast<const float4*>(x + (long long)r * K + (long long)v * kVec);
#pragma unroll
                for (int i = 0; i < kVec / 4; i++)
                {
                    const float4 xv = xr[i];
                    acc[r] += wv[4 * i] * xv.x + wv[4 * i + 1] * xv.y + wv[4 * i + 2] * xv.z + wv[4 * i + 3] * xv.w;
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < kGemvMaxRows; r++)
    {
        if (r >= M) break;
        const float total = warp_sum(acc[r]);
        if (lane == 0) y[(long long)r * N + n] = epilogue_value(total, bias, n, act);
    }
}

__device__ __forceinline__ int dot_8_words(const uint32_t w[8], const int4 x0, const int4 x1)
{
    int s = __dp4a((int)w[0], x0.x, 0);
    s = __dp4a((int)w[1], x0.y, s); s = __dp4a((int)w[2], x0.z, s); s = __dp4a((int)w[3], x0.w, s);
    s = __dp4a((int)w[4], x1.x, s); s = __dp4a((int)w[5], x1.y, s); s = __dp4a((int)w[6], x1.z, s); s = __dp4a((int)w[7], x1.w, s);
    return s;
}

// Nibbles of a Q4_0-packed 32-block (16 bytes) as 8 words of bytes 0..15 in element order: 0..15 then 16..31.
__device__ __forceinline__ void unpack_nibbles(const uint4& packed, uint32_t q[8])
{
    const uint32_t p[4] = {packed.x, packed.y, packed.z, packed.w};
#pragma unroll
    for (int i = 0; i < 4; i++) { q[i] = p[i] & 0x0f0f0f0fu; q[4 + i] = (p[i] >> 4) & 0x0f0f0f0fu; }
}

// Quantized weights × q8_1 activations. A format gives each 32-block's quants as kWords 16-byte words of the quant
// plane, a header (its scale data) loaded beside them and decoded only when used, and the block's contribution
// to one output from the activations' 32 int8 (x0, x1) and (d, d·Σq).
// Q8_0 and Q4_0: one fp16 scale per block, in the d plane; BlockDot gives kWords and the block's dot product.
template <typename BlockDot>
struct GemvHalfScale
{
    static constexpr int kWords = BlockDot::kWords;
    using Raw = __half;
    using Header = float;
    const __half* d;
    __device__ __forceinline__ Raw load_header(int n, int kb, int blocks) const { return d[(long long)n * blocks + kb]; }
    __device__ static __forceinline__ Header decode(Raw raw) { return __half2float(raw); }
    __device__ static __forceinline__ float dot(const uint4 (&q)[kWords], Header scale, int4 x0, int4 x1, float2 ds)
    {
        return BlockDot::dot(q, scale, x0, x1, ds);
    }
};

struct Q8_0Dot
{
    static constexpr int kWords = 2;
    __device__ static __forceinline__ float dot(const uint4 (&q)[kWords], float scale, int4 x0, int4 x1, float2 ds)
    {
        const uint32_t w[8] = {q[0].x, q[0].y, q[0].z, q[0].w, q[1].x, q[1].y, q[1].z, q[1].w};
        return scale * ds.x * (float)dot_8_words(w, x0, x1);
    }
};

struct Q4_0Dot
{
    static constexpr int kWords = 1;
    __device__ static __forceinline__ float dot(const uint4 (&q)[kWords], float scale, int4 x0, int4 x1, float2 ds)
    {
        uint32_t w[8];
        unpack_nibbles(q[0], w);
        // Σ (q − 8)·x·d_x = d_x·Σ q·x − 8·(d_x·Σ x)
        return scale * (ds.x * (float)dot_8_words(w, x0, x1) - 8.f * ds.y);
    }
};

using GemvQ8_0 = GemvHalfScale<Q8_0Dot>;
using GemvQ4_0 = GemvHalfScale<Q4_0Dot>;

struct GemvInt4Group
{
    static constexpr int kWords = 1;
    using Raw = __half2;  // (scale, min) of the block's group
    struct Header { float scale, residual_min; int pivot; };
    const __half2* scale_min;
    int group;
    __device__ __forceinline__ Raw load_header(int n, int kb, int blocks) const
    {
        const int groups = blocks * kQk / group;
        return scale_min[(long long)n * groups + kb * kQk / group];
    }
    __device__ static __forceinline__ Header decode(Raw raw)
    {
        // As the CPU's Int4Blocks: weights are q − pivot with pivot = −min/scale rounded into 0..15, and the residual
        // min = min + pivot·scale (exact) is what multiplies d_x·Σx. Applying the full min instead cancels against
        // q·scale in float and drifts from the CPU over long rows.
        const float2 sm = __half22float2(raw);
        const float ratio = -sm.y / sm.x;  // NaN (scale = min = 0) takes the last branch
        const int pivot = ratio >= 15.f ? 15 : ratio > 0.f ? (int)(ratio + 0.5f) : 0;
        return Header{sm.x, sm.y + pivot * sm.x, pivot};
    }
    __device__ static __forceinline__ float dot(const uint4 (&q)[kWords], Header h, int4 x0, int4 x1, float2 ds)
    {
        uint32_t w[8];
        unpack_nibbles(q[0], w);
        const uint32_t ones[8] = {0x01010101u, 0x01010101u, 0x01010101u, 0x01010101u, 0x01010101u, 0x01010101u, 0x01010101u, 0x01010101u};
        // Σ (q − p)·x exactly in integers: Σ q·x − p·Σ x
        const int dot = dot_8_words(w, x0, x1) - h.pivot * dot_8_words(ones, x0, x1);
        return h.scale * ds.x * (float)dot + h.residual_min * ds.y;
    }
};

// Where a quantized decode GEMV takes its activations from. Inside a recorded decode step the CUDA backend fuses the
// launch that produced them into the GEMV: every block then normalises (or gates) the input rows itself and quantizes
// them into shared memory, with its first weight loads already in flight, and block 0 also stores the float result
// the separate launch would have written. Same functions as rms_norm_f32 / swiglu_f32 with the same block size, so the
// bytes are identical.
enum GemvInputKind { kGemvQuantizedInput = 0, kGemvRmsNormInput = 1, kGemvSwiGluInput = 2 };
constexpr int kGemvPrologueValues = 8192;  // M·K a fused GEMV can hold in shared memory as int8

struct GemvInput
{
    int kind;
    const float* src;          // rms norm: x [M, K]; swiglu: gate_up [M, 2K]
    const float* norm_weight;  // rms norm: weight [K]
    float eps;
    float* out;                // the float rows the fused launch would have written: [M, K]
};

// One lane per 32-block (lane, lane + 32, ...), kGemvBytesInFlight of quants per lane loaded before any is used.
// residual != null adds each output into residual[r, n] as well (the residual add that followed the GEMV).
template <typename Format>
__device__ __forceinline__ void gemv_quantized(const int8_t* __restrict__ xq, const float2* __restrict__ xds, const uint8_t* __restrict__ qs,
                                               Format format, const float* __restrict__ bias, float* __restrict__ y, int M, int N, int K, int act,
                                               float* __restrict__ residual, const GemvInput& input)
{
    constexpr int kWords = Format::kWords, kUnroll = kGemvBytesInFlight / (16 * kWords);
    __shared__ __align__(16) int8_t xq_s[kGemvPrologueValues];
    __shared__ float2 xds_s[kGemvPrologueValues / kQk];
    __shared__ float scratch[32];
    const int n = blockIdx.x * kGemvWarps + threadIdx.x / FASTMM_WARP, lane = threadIdx.x % FASTMM_WARP;
    const int blocks = K / kQk;
    const int row_n = min(n, N - 1);  // warps past the last row load a valid row and leave after the prologue
    const uint4* row = reinterpret_cast<const uint4*>(qs) + (long long)row_n * blocks * kWords;
    uint4 q[kUnroll][kWords];
    typename Format::Raw raw[kUnroll];
    auto load_chunk = [&](int kb0) {
#pragma unroll
        for (int u = 0; u < kUnroll; u++)
        {
            const int kb = kb0 + u * FASTMM_WARP;
            if (kb >= blocks) break;
#pragma unroll
            for (int i = 0; i < kWords; i++) q[u][i] = __ldg(row + (long long)kb * kWords + i);
            raw[u] = format.load_header(row_n, kb, blocks);
        }
    };
    load_chunk(lane);

    if (input.kind != kGemvQuantizedInput)
    {
        // Whole warps throughout: K % 32 == 0.
        const bool keep = blockIdx.x == 0;
        for (int r = 0; r < M; r++)
        {
            const long long base = (long long)r * K;
            auto store = [&](int i, float v) {
                if (keep) input.out[base + i] = v;
                quantize_q8_1_lane(v, xq_s + base + i, xds_s + (base + i) / kQk);
            };
            if (input.kind == kGemvRmsNormInput)
                rms_norm_row(ResidualInput{input.src, nullptr, nullptr}, input.norm_weight, base, K, input.eps, scratch, store);
            else
                for (int i = threadIdx.x; i < K; i += blockDim.x)
                {
                    const float* g = input.src + 2 * base;
                    store(i, __fmul_rn(apply_activation(g[i], ACT_SILU), g[K + i]));
                }
        }
        __syncthreads();
        xq = xq_s;
        xds = xds_s;
    }
    if (n >= N) return;

    float acc[kGemvMaxRows] = {};
    for (int kb0 = lane; kb0 < blocks; kb0 += kUnroll * FASTMM_WARP)
    {
        if (kb0 != lane) load_chunk(kb0);
#pragma unroll
        for (int u = 0; u < kUnroll; u++)
        {
            const int kb = kb0 + u * FASTMM_WARP;
            if (kb >= blocks) break;
            const typename Format::Header header = Format::decode(raw[u]);
#pragma unroll
            for (int r = 0; r < kGemvMaxRows; r++)
            {
                if (r >= M) break;
                const int4* xr = reinterpret_cast<const int4*>(xq + (long long)r * K + kb * kQk);
                acc[r] += Format::dot(q[u], header, xr[0], xr[1], xds[(long long)r * blocks + kb]);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < kGemvMaxRows; r++)
    {
        if (r >= M) break;
        const float total = warp_sum(acc[r]);
        if (lane == 0)
        {
            const long long at = (long long)r * N + n;
            const float v = epilogue_value(total, bias, n, act);
            y[at] = v;
            if (residual != nullptr) residual[at] = __fadd_rn(residual[at], v);  // never contracted with v's last multiply
        }
    }
}

}  // namespace

// ---------------- entry points ----------------

extern "C" __global__ void __launch_bounds__(gemm_simt::kThreads) linear_f32w_gemm(
    const float* x, const float* w, const float* bias, float* y, int M, int N, int K, int act)
{
    gemm_simt::run(M, N, K, [&](int m, int k) { return x[(long long)m * K + k]; }, w,
                   [&](int m, int n, float v) { y[(long long)m * N + n] = epilogue_value(v, bias, n, act); });
}

extern "C" __global__ void __launch_bounds__(kTcLargeThreads) linear_f16w_gemm(
    const float* x, const __half* w, const float* bias, float* y, int M, int N, int K, int act)
{
    linear_tensor_core(x, WeightF16{w, K}, bias, y, M, N, K, act);
}

extern "C" __global__ void __launch_bounds__(kTcLargeThreads) linear_q8_0_gemm(
    const float* x, const uint8_t* qs, const __half* d, const float* bias, float* y, int M, int N, int K, int act)
{
    linear_tensor_core(x, WeightQ8_0{qs, d, K}, bias, y, M, N, K, act);
}

extern "C" __global__ void __launch_bounds__(kTcLargeThreads) linear_q4_0_gemm(
    const float* x, const uint8_t* qs, const __half* d, const float* bias, float* y, int M, int N, int K, int act)
{
    linear_tensor_core(x, WeightQ4_0{qs, d, K}, bias, y, M, N, K, act);
}

extern "C" __global__ void __launch_bounds__(kTcLargeThreads) linear_int4g_gemm(
    const float* x, const uint8_t* w, const __half2* scale_min, int group, const float* bias, float* y, int M, int N, int K, int act)
{
    linear_tensor_core(x, WeightInt4Group{w, scale_min, K, group}, bias, y, M, N, K, act);
}

extern "C" __global__ void __launch_bounds__(kGemvWarps * FASTMM_WARP) linear_f32w_gemv(
    const float* x, const float* w, const float* bias, float* y, int M, int N, int K, int act)
{
    if ((K & 3) == 0) gemv_float(x, w, bias, y, M, N, K, act);
    else
    {
        // Rows not 16-byte aligned: scalar loads, still coalesced across the warp.
        const int n = blockIdx.x * kGemvWarps + threadIdx.x / FASTMM_WARP, lane = threadIdx.x % FASTMM_WARP;
        if (n >= N) return;
        for (int r = 0; r < M && r < kGemvMaxRows; r++)
        {
            float acc = 0.f;
            for (int k = lane; k < K; k += FASTMM_WARP) acc += w[(long long)n * K + k] * x[(long long)r * K + k];
            acc = warp_sum(acc);
            if (lane == 0) y[(long long)r * N + n] = epilogue_value(acc, bias, n, act);
        }
    }
}

extern "C" __global__ void __launch_bounds__(kGemvWarps * FASTMM_WARP) linear_f16w_gemv(
    const float* x, const __half* w, const float* bias, float* y, int M, int N, int K, int act)
{
    gemv_float(x, w, bias, y, M, N, K, act);
}

extern "C" __global__ void __launch_bounds__(256) quantize_activations_q8_1(const float* x, int8_t* xq, float2* xds, int M, int K)
{
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;  // whole warps map to whole 32-blocks
    if (i >= (long long)M * K) return;
    quantize_q8_1_lane(x[i], xq + i, xds + i / kQk);
}

// The quantized GEMVs' trailing arguments: residual (nullable), then the input (GemvInput: kind, src, norm_weight,
// eps, out; kind 0 reads xq/xds).
#define FASTMM_GEMV_INPUT_PARAMS float* residual, int input_kind, const float* input_src, const float* norm_weight, float eps, float* input_out
#define FASTMM_GEMV_INPUT residual, GemvInput{input_kind, input_src, norm_weight, eps, input_out}

extern "C" __global__ void __launch_bounds__(kGemvWarps * FASTMM_WARP, kGemvMinBlocks) linear_q8_0_gemv(
    const int8_t* xq, const float2* xds, const uint8_t* qs, const __half* d, const float* bias, float* y, int M, int N, int K, int act,
    FASTMM_GEMV_INPUT_PARAMS)
{
    gemv_quantized(xq, xds, qs, GemvQ8_0{d}, bias, y, M, N, K, act, FASTMM_GEMV_INPUT);
}

extern "C" __global__ void __launch_bounds__(kGemvWarps * FASTMM_WARP, kGemvMinBlocks) linear_q4_0_gemv(
    const int8_t* xq, const float2* xds, const uint8_t* qs, const __half* d, const float* bias, float* y, int M, int N, int K, int act,
    FASTMM_GEMV_INPUT_PARAMS)
{
    gemv_quantized(xq, xds, qs, GemvQ4_0{d}, bias, y, M, N, K, act, FASTMM_GEMV_INPUT);
}

extern "C" __global__ void __launch_bounds__(kGemvWarps * FASTMM_WARP, kGemvMinBlocks) linear_int4g_gemv(
    const int8_t* xq, const float2* xds, const uint8_t* w, const __half2* scale_min, int group, const float* bias, float* y,
    int M, int N, int K, int act, FASTMM_GEMV_INPUT_PARAMS)
{
    gemv_quantized(xq, xds, w, GemvInt4Group{scale_min, group}, bias, y, M, N, K, act, FASTMM_GEMV_INPUT);
}
