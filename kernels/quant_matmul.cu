// quant_matmul.cu — IBackend.Linear (y[M, N] = act(x[M, K] · Wᵀ + bias), W an HF Linear weight [N, K]) and
// IBackend.MatMulTransposed (the F32 path with no bias). CPU reference: src/FastMM/Cpu/Gemm.cs + MathKernels.Activate.
// `act` is FastMM.Activation (0 none, 1 gelu (erf), 2 gelu_tanh, 3 quick_gelu, 4 silu, 5 relu); bias may be null.
//
// Weight formats:
//   F32 / F16       row-major [N, K].
//   Q8_0 (GGUF)     per row K/32 blocks of 34 bytes: fp16 d, int8 q[32]; value q·d.
//   Q4_0 (GGUF)     per row K/32 blocks of 18 bytes: fp16 d, 16 bytes; element j < 16 is the low nibble of byte j,
//                   element j + 16 its high nibble; value (q − 8)·d.
//   INT4 group-wise asymmetric (AWQ/GPTQ-like): nibbles [N, K/2], each 32-element sub-block packed like Q4_0's
//                   16 bytes; scale_min [N, K/group] half2 (scale, min) with group 32, 64 or 128; value q·scale + min.
//   The GGUF layouts are used as stored (no repacking); blocks are only 2-byte aligned, so the GEMV stages each warp's
//   share of a row through shared memory with 16-byte loads. The host pads every weight allocation by 16 bytes
//   because those loads may run up to 15 bytes past the last row.
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
//                        (one warp per output row, one lane per 32-block), __dp4a int8 dot products, warp-shuffle
//                        reduction. Activation quantization costs ~1e-3 relative error (as llama.cpp's mmvq).

#include "common.cuh"
#include "gemm_simt.cuh"

namespace {

constexpr int kQk = 32;                 // elements per quant block
constexpr int kQ8Bytes = 2 + kQk;       // block_q8_0
constexpr int kQ4Bytes = 2 + kQk / 2;   // block_q4_0
constexpr int kGemvMaxRows = 8;
constexpr int kGemvWarps = 4;

__device__ __forceinline__ float epilogue_value(float v, const float* bias, int n, int act)
{
    return apply_activation(bias != nullptr ? v + bias[n] : v, act);
}

__device__ __forceinline__ float half_at(const uint8_t* p) { return __half2float(*reinterpret_cast<const __half*>(p)); }

// 16 bytes from a 2-byte-aligned address as four little-endian 32-bit words.
__device__ __forceinline__ void load_16_bytes_aligned2(const uint8_t* p, uint32_t out[4])
{
    const uint16_t* h = reinterpret_cast<const uint16_t*>(p);
#pragma unroll
    for (int i = 0; i < 4; i++) out[i] = (uint32_t)h[2 * i] | ((uint32_t)h[2 * i + 1] << 16);
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
    const uint8_t* w;
    int K;
    __device__ __forceinline__ void dequant16(int n, int k0, int part, uint32_t out[8]) const
    {
        const uint8_t* block = w + ((long long)n * (K / kQk) + k0 / kQk) * kQ8Bytes;
        const float d = half_at(block);
        uint32_t q[4];
        load_16_bytes_aligned2(block + 2 + 16 * part, q);
#pragma unroll
        for (int i = 0; i < 8; i++)
        {
            const uint32_t word = q[i / 2] >> (16 * (i % 2));
            out[i] = pack_half2((float)(int8_t)(word & 0xff) * d, (float)(int8_t)(word >> 8) * d);
        }
    }
};

struct WeightQ4_0
{
    const uint8_t* w;
    int K;
    __device__ __forceinline__ void dequant16(int n, int k0, int part, uint32_t out[8]) const
    {
        const uint8_t* block = w + ((long long)n * (K / kQk) + k0 / kQk) * kQ4Bytes;
        const float d = half_at(block);
        uint32_t q[4];
        load_16_bytes_aligned2(block + 2, q);
#pragma unroll
        for (int i = 0; i < 8; i++)
        {
            const uint32_t word = (q[i / 2] >> (16 * (i % 2))) >> (4 * part);  // low nibbles: part 0, high: part 1
            out[i] = pack_half2((float)((int)(word & 0xf) - 8) * d, (float)((int)((word >> 8) & 0xf) - 8) * d);
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

// ---------------- GEMV (decode), float activations ----------------

template <int VecElems, typename LoadW>
__device__ __forceinline__ void gemv_float(const float* __restrict__ x, LoadW load_w, const float* __restrict__ bias,
                                           float* __restrict__ y, int M, int N, int K, int act)
{
    const int n = blockIdx.x * kGemvWarps + threadIdx.x / FASTMM_WARP, lane = threadIdx.x % FASTMM_WARP;
    if (n >= N) return;
    float acc[kGemvMaxRows] = {};
    for (int k = lane * VecElems; k < K; k += FASTMM_WARP * VecElems)
    {
        float wv[VecElems];
        load_w(n, k, wv);
#pragma unroll
        for (int r = 0; r < kGemvMaxRows; r++)
        {
            if (r >= M) break;
            const float4* xr = reinterpret_cast<const float4*>(x + (long long)r * K + k);
#pragma unroll
            for (int v = 0; v < VecElems / 4; v++)
            {
                const float4 xv = xr[v];
                acc[r] += wv[4 * v] * xv.x + wv[4 * v + 1] * xv.y + wv[4 * v + 2] * xv.z + wv[4 * v + 3] * xv.w;
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

// ---------------- GEMV (decode), int8 activations × quantized weights ----------------

__device__ __forceinline__ int dot_8_words(const uint32_t w[8], const int4 x0, const int4 x1)
{
    int s = __dp4a((int)w[0], x0.x, 0);
    s = __dp4a((int)w[1], x0.y, s); s = __dp4a((int)w[2], x0.z, s); s = __dp4a((int)w[3], x0.w, s);
    s = __dp4a((int)w[4], x1.x, s); s = __dp4a((int)w[5], x1.y, s); s = __dp4a((int)w[6], x1.z, s); s = __dp4a((int)w[7], x1.w, s);
    return s;
}

// One lane per 32-block; `block_dot(weights, xq0, xq1, xds)` returns the block's contribution. A warp stages up to
// kGemvChunks·32 blocks of its row per pass, every 16-byte load issued before the first is stored: the loads of a
// pass are in flight together (one chunk at a time left decode GEMVs latency-bound at ~27% of copy bandwidth).
constexpr int kGemvChunks = 4;

template <int BlockBytes, typename BlockDot>
__device__ __forceinline__ void gemv_gguf(const int8_t* __restrict__ xq, const float2* __restrict__ xds, const uint8_t* __restrict__ w,
                                          const float* __restrict__ bias, float* __restrict__ y, int M, int N, int K, int act, BlockDot block_dot)
{
    constexpr int kPassBlocks = kGemvChunks * FASTMM_WARP;
    constexpr int kPassWords = kPassBlocks * BlockBytes / 16 + 2;  // plus alignment slack
    constexpr int kWordsPerLane = (kPassWords + FASTMM_WARP - 1) / FASTMM_WARP;
    __shared__ uint4 stage[kGemvWarps][kWordsPerLane * FASTMM_WARP];

    const int warp = threadIdx.x / FASTMM_WARP, lane = threadIdx.x % FASTMM_WARP;
    const int n = blockIdx.x * kGemvWarps + warp;
    if (n >= N) return;  // whole warps only: the __syncwarp below never waits on an exited lane
    const int blocks = K / kQk;
    const long long row_begin = (long long)n * blocks * BlockBytes;
    float acc[kGemvMaxRows] = {};
    for (int b0 = 0; b0 < blocks; b0 += kPassBlocks)
    {
        const int count = min(kPassBlocks, blocks - b0);
        const long long begin = row_begin + (long long)b0 * BlockBytes, end = begin + (long long)count * BlockBytes;
        const long long aligned = begin & ~15LL;
        const int words = (int)((end - aligned + 15) / 16);
        const uint4* src = reinterpret_cast<const uint4*>(w + aligned);
        uint4 held[kWordsPerLane];
#pragma unroll
        for (int j = 0; j < kWordsPerLane; j++)
            if (lane + j * FASTMM_WARP < words) held[j] = src[lane + j * FASTMM_WARP];
#pragma unroll
        for (int j = 0; j < kWordsPerLane; j++)
            if (lane + j * FASTMM_WARP < words) stage[warp][lane + j * FASTMM_WARP] = held[j];
        __syncwarp();
        const uint8_t* staged = reinterpret_cast<const uint8_t*>(stage[warp]) + (begin - aligned);
        for (int i = lane; i < count; i += FASTMM_WARP)
        {
            const uint8_t* block = staged + i * BlockBytes;
            const int kb = b0 + i;
#pragma unroll
            for (int r = 0; r < kGemvMaxRows; r++)
            {
                if (r >= M) break;
                const int4* xr = reinterpret_cast<const int4*>(xq + (long long)r * K + kb * kQk);
                acc[r] += block_dot(block, xr[0], xr[1], xds[(long long)r * blocks + kb]);
            }
        }
        __syncwarp();
    }
#pragma unroll
    for (int r = 0; r < kGemvMaxRows; r++)
    {
        if (r >= M) break;
        const float total = warp_sum(acc[r]);
        if (lane == 0) y[(long long)r * N + n] = epilogue_value(total, bias, n, act);
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
    const float* x, const uint8_t* w, const float* bias, float* y, int M, int N, int K, int act)
{
    linear_tensor_core(x, WeightQ8_0{w, K}, bias, y, M, N, K, act);
}

extern "C" __global__ void __launch_bounds__(kTcLargeThreads) linear_q4_0_gemm(
    const float* x, const uint8_t* w, const float* bias, float* y, int M, int N, int K, int act)
{
    linear_tensor_core(x, WeightQ4_0{w, K}, bias, y, M, N, K, act);
}

extern "C" __global__ void __launch_bounds__(kTcLargeThreads) linear_int4g_gemm(
    const float* x, const uint8_t* w, const __half2* scale_min, int group, const float* bias, float* y, int M, int N, int K, int act)
{
    linear_tensor_core(x, WeightInt4Group{w, scale_min, K, group}, bias, y, M, N, K, act);
}

extern "C" __global__ void __launch_bounds__(kGemvWarps * FASTMM_WARP) linear_f32w_gemv(
    const float* x, const float* w, const float* bias, float* y, int M, int N, int K, int act)
{
    if ((K & 3) == 0)
        gemv_float<4>(x, [&](int n, int k, float* out) {
            const float4 v = *reinterpret_cast<const float4*>(w + (long long)n * K + k);
            out[0] = v.x; out[1] = v.y; out[2] = v.z; out[3] = v.w;
        }, bias, y, M, N, K, act);
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
    gemv_float<8>(x, [&](int n, int k, float* out) {
        const uint4 v = *reinterpret_cast<const uint4*>(w + (long long)n * K + k);
        const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; i++)
        {
            const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&words[i]));
            out[2 * i] = f.x; out[2 * i + 1] = f.y;
        }
    }, bias, y, M, N, K, act);
}

extern "C" __global__ void __launch_bounds__(256) quantize_activations_q8_1(const float* x, int8_t* xq, float2* xds, int M, int K)
{
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;  // whole warps map to whole 32-blocks
    if (i >= (long long)M * K) return;
    quantize_q8_1_lane(x[i], xq + i, xds + i / kQk);
}

extern "C" __global__ void __launch_bounds__(kGemvWarps * FASTMM_WARP) linear_q8_0_gemv(
    const int8_t* xq, const float2* xds, const uint8_t* w, const float* bias, float* y, int M, int N, int K, int act)
{
    gemv_gguf<kQ8Bytes>(xq, xds, w, bias, y, M, N, K, act, [](const uint8_t* block, int4 x0, int4 x1, float2 ds) {
        uint32_t q[8];
        load_16_bytes_aligned2(block + 2, q);
        load_16_bytes_aligned2(block + 18, q + 4);
        return half_at(block) * ds.x * (float)dot_8_words(q, x0, x1);
    });
}

extern "C" __global__ void __launch_bounds__(kGemvWarps * FASTMM_WARP) linear_q4_0_gemv(
    const int8_t* xq, const float2* xds, const uint8_t* w, const float* bias, float* y, int M, int N, int K, int act)
{
    gemv_gguf<kQ4Bytes>(xq, xds, w, bias, y, M, N, K, act, [](const uint8_t* block, int4 x0, int4 x1, float2 ds) {
        uint32_t packed[4], q[8];
        load_16_bytes_aligned2(block + 2, packed);
#pragma unroll
        for (int i = 0; i < 4; i++) { q[i] = packed[i] & 0x0f0f0f0fu; q[4 + i] = (packed[i] >> 4) & 0x0f0f0f0fu; }
        // Σ (q − 8)·x·d_x = d_x·Σ q·x − 8·(d_x·Σ x)
        return half_at(block) * (ds.x * (float)dot_8_words(q, x0, x1) - 8.f * ds.y);
    });
}

extern "C" __global__ void __launch_bounds__(kGemvWarps * FASTMM_WARP) linear_int4g_gemv(
    const int8_t* xq, const float2* xds, const uint8_t* w, const __half2* scale_min, int group, const float* bias, float* y,
    int M, int N, int K, int act)
{
    // Sub-blocks are 16-byte aligned here, so each lane loads its 32 nibbles directly with one 128-bit load.
    const int n = blockIdx.x * kGemvWarps + threadIdx.x / FASTMM_WARP, lane = threadIdx.x % FASTMM_WARP;
    if (n >= N) return;
    const int blocks = K / kQk;
    float acc[kGemvMaxRows] = {};
    for (int kb = lane; kb < blocks; kb += FASTMM_WARP)
    {
        const uint4 bytes = *reinterpret_cast<const uint4*>(w + (long long)n * (K / 2) + kb * (kQk / 2));
        const float2 sm = __half22float2(scale_min[(long long)n * (K / group) + kb * kQk / group]);
        // As the CPU's Int4Blocks: weights are q − pivot with pivot = −min/scale rounded into 0..15, and the residual
        // min = min + pivot·scale (exact) is what multiplies d_x·Σx. Applying the full min instead cancels against
        // q·scale in float and drifts from the CPU over long rows.
        const float ratio = -sm.y / sm.x;  // NaN (scale = min = 0) takes the last branch
        const int pivot = ratio >= 15.f ? 15 : ratio > 0.f ? (int)(ratio + 0.5f) : 0;
        const float residual_min = sm.y + pivot * sm.x;
        const uint32_t packed[4] = {bytes.x, bytes.y, bytes.z, bytes.w};
        uint32_t q[8];
#pragma unroll
        for (int i = 0; i < 4; i++) { q[i] = packed[i] & 0x0f0f0f0fu; q[4 + i] = (packed[i] >> 4) & 0x0f0f0f0fu; }
        const uint32_t ones[8] = {0x01010101u, 0x01010101u, 0x01010101u, 0x01010101u, 0x01010101u, 0x01010101u, 0x01010101u, 0x01010101u};
#pragma unroll
        for (int r = 0; r < kGemvMaxRows; r++)
        {
            if (r >= M) break;
            const int4* xr = reinterpret_cast<const int4*>(xq + (long long)r * K + kb * kQk);
            const float2 ds = xds[(long long)r * blocks + kb];
            // Σ (q − p)·x exactly in integers: Σ q·x − p·Σ x
            const int dot = dot_8_words(q, xr[0], xr[1]) - pivot * dot_8_words(ones, xr[0], xr[1]);
            acc[r] += sm.x * ds.x * (float)dot + residual_min * ds.y;
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
