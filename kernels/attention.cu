// attention.cu — fused attention for IBackend.Attention / SelfAttention / CachedAttention
// (CPU reference: src/FastMM/Cpu/AttentionKernel.cs, Run and RunPaged).
//
// Semantics shared by every entry point (as the CPU reference):
//   o[b, i, h] = softmax_j(scale · q[b, i, h] · k[b, j, h / group]) · v[b, j, h / group], group = heads / kv_heads;
//   causal: query i sees keys j ≤ i + (tk − tq); key_mask[b, j] == 0 hides key j; a query with no visible key
//   outputs zeros. q/k/v are F32 rows with explicit row strides (so they can be column slices of one fused QKV
//   projection), output is dense [B, Tq, heads·head_dim] F32. head_dim must be a multiple of 4 and every row
//   stride a multiple of 4 floats (16-byte vector loads).
//
// Entry points and launch configuration:
//   attention_prefill_hd64 / attention_prefill_hd128 (head_dim ≤ 64 / ≤ 128):
//     grid (ceil(tq / 64), heads, batch), block 128 threads (4 warps × 16 query rows), static shared memory
//     (18.4 KB / 34.8 KB). Flash-attention-2 style: Q fragments stay in registers, K/V tiles of 64 keys are
//     converted to f16 in shared memory, S = Q·Kᵀ and O += P·V run on mma.sync m16n8k16 (f16 in, f32 accumulate),
//     with an online softmax in the exp2 domain. K/V rows come from dense tensors (block_table == nullptr:
//     row = b·tk + j) or from a paged KV pool (row = block_table[b·table_stride + j / block_size]·block_size +
//     j % block_size; every sequence of the batch then has tk cached tokens).
//   attention_decode_paged_f32 / attention_decode_paged_int8 (one new token per sequence):
//     grid (splits, kv_heads · ceil(group / 16), batch), block 128 threads, ≈ 41 KB static shared memory.
//     Split-K over the sequence: split s covers keys [s·n, (s+1)·n) of sequence b, n = ceil(seq_lens[b] / splits)
//     (read on the device, so a captured decode graph serves every length); all ≤ 16 query heads sharing a KV head are handled by one block so each K/V row is
//     read once. Writes unnormalised partial results (log2-domain max, sum, accumulator) per split.
//     The int8 variants (attention_decode_paged_int8, attention_prefill_int8_hd64/hd128) read an int8 cache with one
//     scale per (pool row, KV head): value = q · k_scale[row·kv_heads + head] (kv_cache.cu's kv_append_int8 layout).
//   attention_decode_reduce: grid (heads, batch), block 128 threads; merges the splits into o [B, heads·head_dim]
//     (optionally also its q8_1 activations for the next decode GEMV).

#include "common.cuh"

namespace {

constexpr float kLog2e = 1.4426950408889634f;

constexpr int kPrefillRows = 64;   // query rows per block, 16 per warp
constexpr int kPrefillKeys = 64;   // keys per shared-memory tile
constexpr int kPrefillThreads = 128;

// Row index of key j of sequence b in the K/V arrays: dense, or through a vLLM-style block table.
__device__ __forceinline__ long long kv_row(int b, int j, int tk, const int* block_table, int table_stride, int block_size)
{
    if (block_table == nullptr) return (long long)b * tk + j;
    return (long long)block_table[(long long)b * table_stride + j / block_size] * block_size + j % block_size;
}

__device__ __forceinline__ uint32_t load_u32(const __half* p) { return *reinterpret_cast<const uint32_t*>(p); }

__device__ __forceinline__ float4 load4(const float* p, float) { return *reinterpret_cast<const float4*>(p); }
__device__ __forceinline__ float4 load4(const int8_t* p, float s)
{
    const char4 c = *reinterpret_cast<const char4*>(p);
    return make_float4(c.x * s, c.y * s, c.z * s, c.w * s);
}

template <typename T>
struct ScaledRow
{
    const T* p;  // the row's first element, or nullptr for a zero row
    float scale;
};

// 64 rows × HD values → f16 shared tile (row stride HD + 8 halves: conflict-free fragment loads).
// row(r) returns the row and its scale; columns ≥ head_dim are zeroed.
template <int HD, typename T, typename RowOf>
__device__ __forceinline__ void load_tile_f16(__half* tile, int head_dim, RowOf row)
{
    constexpr int kStride = HD + 8, kVecPerRow = HD / 4;
    for (int i = threadIdx.x; i < kPrefillRows * kVecPerRow; i += kPrefillThreads)
    {
        const int r = i / kVecPerRow, c = (i % kVecPerRow) * 4;
        float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
        if (c < head_dim)
        {
            const ScaledRow<T> src = row(r);
            if (src.p != nullptr) v = load4(src.p + c, src.scale);
        }
        store_half4(tile + r * kStride + c, v);
    }
}

template <int HD, typename CacheT>
__device__ __forceinline__ void attention_prefill(
    const float* __restrict__ q, int q_stride, const CacheT* __restrict__ k, const CacheT* __restrict__ v, int kv_stride,
    const float* __restrict__ k_scale, const float* __restrict__ v_scale, const int* __restrict__ block_table, int table_stride, int block_size, const float* __restrict__ key_mask,
    float* __restrict__ out, int tq, int tk, int heads, int kv_heads, int head_dim, float scale, int causal)
{
    constexpr int kStride = HD + 8;
    constexpr int kChunks = HD / 16;  // k-steps of Q·Kᵀ
    constexpr int kDimTiles = HD / 8; // n-tiles of P·V
    __shared__ __align__(16) __half k_tile[kPrefillKeys * kStride];  // also stages Q before the key loop
    __shared__ __align__(16) __half v_tile[kPrefillKeys * kStride];
    __shared__ float key_bias[kPrefillKeys];                          // 0 or −inf: padding, key mask

    const int q0 = blockIdx.x * kPrefillRows, h = blockIdx.y, b = blockIdx.z;
    const int kvh = h / (heads / kv_heads);
    const int warp = threadIdx.x / FASTMM_WARP, lane = threadIdx.x % FASTMM_WARP, g = lane / 4, t = lane % 4;
    const int causal_offset = tk - tq;
    const float scale_log2 = scale * kLog2e;

    load_tile_f16<HD, float>(k_tile, head_dim, [&](int r) -> ScaledRow<float> {
        const int i = q0 + r;
        return {i < tq ? q + ((long long)b * tq + i) * q_stride + (long long)h * head_dim : nullptr, 1.f};
    });
    __syncthreads();
    uint32_t qa[kChunks][4];
    {
        const __half* qs = k_tile + warp * 16 * kStride;
#pragma unroll
        for (int c = 0; c < kChunks; c++)
        {
            qa[c][0] = load_u32(qs + g * kStride + c * 16 + 2 * t);
            qa[c][1] = load_u32(qs + (g + 8) * kStride + c * 16 + 2 * t);
            qa[c][2] = load_u32(qs + g * kStride + c * 16 + 8 + 2 * t);
            qa[c][3] = load_u32(qs + (g + 8) * kStride + c * 16 + 8 + 2 * t);
        }
    }
    __syncthreads();

    float acc[kDimTiles][4];
#pragma unroll
    for (int d = 0; d < kDimTiles; d++) acc[d][0] = acc[d][1] = acc[d][2] = acc[d][3] = 0.f;
    float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.f, 0.f};  // rows g and g + 8 of this warp

    // Keys past what the block's last query may see are never loaded.
    const int kv_end = causal ? min(tk, q0 + kPrefillRows + causal_offset) : tk;
    for (int n0 = 0; n0 < kv_end; n0 += kPrefillKeys)
    {
        auto key_row = [&](int r) -> long long { return kv_row(b, n0 + r, tk, block_table, table_stride, block_size); };
        load_tile_f16<HD, CacheT>(k_tile, head_dim, [&](int r) -> ScaledRow<CacheT> {
            if (n0 + r >= kv_end) return {nullptr, 0.f};
            const long long row = key_row(r);
            return {k + row * kv_stride + (long long)kvh * head_dim, k_scale != nullptr ? k_scale[row * kv_heads + kvh] : 1.f};
        });
        load_tile_f16<HD, CacheT>(v_tile, head_dim, [&](int r) -> ScaledRow<CacheT> {
            if (n0 + r >= kv_end) return {nullptr, 0.f};
            const long long row = key_row(r);
            return {v + row * kv_stride + (long long)kvh * head_dim, v_scale != nullptr ? v_scale[row * kv_heads + kvh] : 1.f};
        });
        if (threadIdx.x < kPrefillKeys)
        {
            const int j = n0 + threadIdx.x;
            const bool visible = j < kv_end && (key_mask == nullptr || key_mask[(long long)b * tk + j] != 0.f);
            key_bias[threadIdx.x] = visible ? 0.f : -INFINITY;
        }
        __syncthreads();

        // S = Q·Kᵀ for this warp's 16 rows × 64 keys (8 n-tiles).
        float s[8][4];
#pragma unroll
        for (int nt = 0; nt < 8; nt++)
        {
            s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
            const __half* krow = k_tile + (nt * 8 + g) * kStride;
#pragma unroll
            for (int c = 0; c < kChunks; c++)
                mma_m16n8k16_f16_f32(s[nt], qa[c], load_u32(krow + c * 16 + 2 * t), load_u32(krow + c * 16 + 8 + 2 * t));
        }

        // Scale into the exp2 domain and mask.
#pragma unroll
        for (int nt = 0; nt < 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++)
            {
                const int key = nt * 8 + 2 * t + (e & 1);
                const int row = q0 + warp * 16 + g + 8 * (e >> 1);
                float x = s[nt][e] * scale_log2 + key_bias[key];
                if (causal && n0 + key > row + causal_offset) x = -INFINITY;
                s[nt][e] = x;
            }

        // Online softmax: rescale what was accumulated by exp2(old max − new max). A quad of 4 lanes shares a row.
#pragma unroll
        for (int r = 0; r < 2; r++)
        {
            float tile_max = -INFINITY;
#pragma unroll
            for (int nt = 0; nt < 8; nt++) tile_max = fmaxf(tile_max, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
            tile_max = fmaxf(tile_max, __shfl_xor_sync(FASTMM_FULL_MASK, tile_max, 1));
            tile_max = fmaxf(tile_max, __shfl_xor_sync(FASTMM_FULL_MASK, tile_max, 2));
            const float new_max = fmaxf(row_max[r], tile_max);
            const float base = new_max == -INFINITY ? 0.f : new_max;  // nothing visible yet: keep exp2 finite
            const float alpha = exp2f(row_max[r] - base);
            row_max[r] = new_max;
            float sum = 0.f;
#pragma unroll
            for (int nt = 0; nt < 8; nt++)
            {
                s[nt][2 * r] = exp2f(s[nt][2 * r] - base);
                s[nt][2 * r + 1] = exp2f(s[nt][2 * r + 1] - base);
                sum += s[nt][2 * r] + s[nt][2 * r + 1];
            }
            row_sum[r] = row_sum[r] * alpha + sum;  // per-lane partial; the quad is summed once at the end
#pragma unroll
            for (int d = 0; d < kDimTiles; d++) { acc[d][2 * r] *= alpha; acc[d][2 * r + 1] *= alpha; }
        }

        // O += P·V. The S accumulator layout is the A-fragment layout, so P goes from registers straight to the mma.
#pragma unroll
        for (int c = 0; c < kPrefillKeys / 16; c++)
        {
            const uint32_t pa[4] = {
                pack_half2(s[2 * c][0], s[2 * c][1]), pack_half2(s[2 * c][2], s[2 * c][3]),
                pack_half2(s[2 * c + 1][0], s[2 * c + 1][1]), pack_half2(s[2 * c + 1][2], s[2 * c + 1][3])};
#pragma unroll
            for (int dp = 0; dp < HD / 16; dp++)
            {
                uint32_t vb[4];
                ldmatrix_x4_trans(vb, v_tile + (c * 16 + (lane & 15)) * kStride + dp * 16 + (lane >> 4) * 8);
                mma_m16n8k16_f16_f32(acc[2 * dp], pa, vb[0], vb[1]);
                mma_m16n8k16_f16_f32(acc[2 * dp + 1], pa, vb[2], vb[3]);
            }
        }
        __syncthreads();
    }

#pragma unroll
    for (int r = 0; r < 2; r++)
    {
        float sum = row_sum[r];
        sum += __shfl_xor_sync(FASTMM_FULL_MASK, sum, 1);
        sum += __shfl_xor_sync(FASTMM_FULL_MASK, sum, 2);
        const float inv = sum > 0.f ? 1.f / sum : 0.f;  // no visible key: zeros
        const int i = q0 + warp * 16 + g + 8 * r;
        if (i >= tq) continue;
        float* o = out + (((long long)b * tq + i) * heads + h) * head_dim;
#pragma unroll
        for (int d = 0; d < kDimTiles; d++)
        {
            const int col = d * 8 + 2 * t;
            if (col < head_dim) *reinterpret_cast<float2*>(o + col) = make_float2(acc[d][2 * r] * inv, acc[d][2 * r + 1] * inv);
        }
    }
}

// ---------------- decode over the paged cache, split-K ----------------

constexpr int kDecodeThreads = 128;
constexpr int kDecodeWarps = kDecodeThreads / FASTMM_WARP;
constexpr int kDecodeMaxGroup = 16;   // query heads per block (a larger GQA group uses several blocks per KV head)
constexpr int kDecodeMaxDim = 128;
constexpr int kDimsPerLane = kDecodeMaxDim / FASTMM_WARP;  // lane owns dims lane, lane + 32, …: coalesced rows

__device__ __forceinline__ float cache_value(float x, float) { return x; }
__device__ __forceinline__ float cache_value(int8_t x, float scale) { return (float)x * scale; }

template <typename CacheT>
__device__ __forceinline__ void attention_decode_paged(
    const float* __restrict__ q, int q_stride, const CacheT* __restrict__ k_pool, const CacheT* __restrict__ v_pool,
    int kv_stride, const float* __restrict__ k_scale, const float* __restrict__ v_scale,
    const int* __restrict__ block_tables, int table_stride, const int* __restrict__ seq_lens, int block_size,
    float* __restrict__ partial_acc, float* __restrict__ partial_max, float* __restrict__ partial_sum,
    int heads, int kv_heads, int head_dim, float scale)
{
    __shared__ float q_s[kDecodeMaxGroup][kDecodeMaxDim];
    __shared__ float warp_max_s[kDecodeWarps][kDecodeMaxGroup];
    __shared__ float warp_sum_s[kDecodeWarps][kDecodeMaxGroup];
    __shared__ float warp_acc_s[kDecodeWarps][kDecodeMaxGroup][kDecodeMaxDim];

    const int group = heads / kv_heads, slices = (group + kDecodeMaxGroup - 1) / kDecodeMaxGroup;
    const int split = blockIdx.x, splits = gridDim.x, b = blockIdx.z;
    const int kvh = blockIdx.y / slices, slice = blockIdx.y % slices;
    const int h0 = kvh * group + slice * kDecodeMaxGroup;                  // first query head of this block
    const int nh = min(kDecodeMaxGroup, group - slice * kDecodeMaxGroup);  // query heads in this block
    const int warp = threadIdx.x / FASTMM_WARP, lane = threadIdx.x % FASTMM_WARP;

    // Queries pre-scaled into the exp2 domain; dims past head_dim are zero so they add nothing.
    for (int i = threadIdx.x; i < kDecodeMaxGroup * kDecodeMaxDim; i += kDecodeThreads)
    {
        const int j = i / kDecodeMaxDim, d = i % kDecodeMaxDim;
        q_s[j][d] = j < nh && d < head_dim ? q[(long long)b * q_stride + (long long)(h0 + j) * head_dim + d] * scale * kLog2e : 0.f;
    }
    __syncthreads();

    float m[kDecodeMaxGroup], l[kDecodeMaxGroup], acc[kDecodeMaxGroup][kDimsPerLane];
#pragma unroll
    for (int j = 0; j < kDecodeMaxGroup; j++)
    {
        m[j] = -INFINITY; l[j] = 0.f;
#pragma unroll
        for (int i = 0; i < kDimsPerLane; i++) acc[j][i] = 0.f;
    }

    const int seq_len = seq_lens[b], keys_per_split = (seq_len + splits - 1) / splits;
    const int key_begin = split * keys_per_split, key_end = min(seq_len, key_begin + keys_per_split);
    for (int key = key_begin + warp; key < key_end; key += kDecodeWarps)
    {
        const long long row = (long long)block_tables[(long long)b * table_stride + key / block_size] * block_size + key % block_size;
        const CacheT* krow = k_pool + row * kv_stride + (long long)kvh * head_dim;
        const CacheT* vrow = v_pool + row * kv_stride + (long long)kvh * head_dim;
        const float ks = k_scale != nullptr ? k_scale[row * kv_heads + kvh] : 1.f, vs = v_scale != nullptr ? v_scale[row * kv_heads + kvh] : 1.f;
        float kx[kDimsPerLane], vx[kDimsPerLane];
#pragma unroll
        for (int i = 0; i < kDimsPerLane; i++)
        {
            const int d = lane + i * FASTMM_WARP;
            kx[i] = d < head_dim ? cache_value(krow[d], ks) : 0.f;
            vx[i] = d < head_dim ? cache_value(vrow[d], vs) : 0.f;
        }
#pragma unroll
        for (int j = 0; j < kDecodeMaxGroup; j++)
        {
            if (j >= nh) break;
            float dot = 0.f;
#pragma unroll
            for (int i = 0; i < kDimsPerLane; i++) dot += q_s[j][lane + i * FASTMM_WARP] * kx[i];
            dot = warp_sum(dot);
            const float new_max = fmaxf(m[j], dot);
            const float alpha = exp2f(m[j] - new_max), p = exp2f(dot - new_max);
            m[j] = new_max;
            l[j] = l[j] * alpha + p;
#pragma unroll
            for (int i = 0; i < kDimsPerLane; i++) acc[j][i] = acc[j][i] * alpha + p * vx[i];
        }
    }

    // Merge the 4 warps' states, then write this split's unnormalised result.
#pragma unroll
    for (int j = 0; j < kDecodeMaxGroup; j++)
    {
        if (lane == 0) { warp_max_s[warp][j] = m[j]; warp_sum_s[warp][j] = l[j]; }
#pragma unroll
        for (int i = 0; i < kDimsPerLane; i++) warp_acc_s[warp][j][lane + i * FASTMM_WARP] = acc[j][i];
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < nh * head_dim; idx += kDecodeThreads)
    {
        const int j = idx / head_dim, d = idx % head_dim;
        float block_max_v = -INFINITY;
        for (int w = 0; w < kDecodeWarps; w++) block_max_v = fmaxf(block_max_v, warp_max_s[w][j]);
        float sum = 0.f, value = 0.f;
        for (int w = 0; w < kDecodeWarps; w++)
        {
            const float weight = warp_max_s[w][j] == -INFINITY ? 0.f : exp2f(warp_max_s[w][j] - block_max_v);
            sum += warp_sum_s[w][j] * weight;
            value += warp_acc_s[w][j][d] * weight;
        }
        const long long slot = ((long long)b * heads + h0 + j) * splits + split;
        partial_acc[slot * head_dim + d] = value;
        if (d == 0) { partial_max[slot] = block_max_v; partial_sum[slot] = sum; }
    }
}

}  // namespace

extern "C" __global__ void __launch_bounds__(kPrefillThreads) attention_prefill_hd64(
    const float* q, int q_stride, const float* k, const float* v, int kv_stride, const int* block_table, int table_stride,
    int block_size, const float* key_mask, float* out, int tq, int tk, int heads, int kv_heads, int head_dim, float scale, int causal)
{
    attention_prefill<64, float>(q, q_stride, k, v, kv_stride, nullptr, nullptr, block_table, table_stride, block_size, key_mask, out, tq, tk,
                                heads, kv_heads, head_dim, scale, causal);
}

extern "C" __global__ void __launch_bounds__(kPrefillThreads) attention_prefill_hd128(
    const float* q, int q_stride, const float* k, const float* v, int kv_stride, const int* block_table, int table_stride,
    int block_size, const float* key_mask, float* out, int tq, int tk, int heads, int kv_heads, int head_dim, float scale, int causal)
{
    attention_prefill<128, float>(q, q_stride, k, v, kv_stride, nullptr, nullptr, block_table, table_stride, block_size, key_mask, out, tq, tk,
                                heads, kv_heads, head_dim, scale, causal);
}

extern "C" __global__ void __launch_bounds__(kPrefillThreads) attention_prefill_int8_hd64(
    const float* q, int q_stride, const int8_t* k, const int8_t* v, int kv_stride, const float* k_scale,
    const float* v_scale, const int* block_table, int table_stride,
    int block_size, const float* key_mask, float* out, int tq, int tk, int heads, int kv_heads, int head_dim, float scale, int causal)
{
    attention_prefill<64, int8_t>(q, q_stride, k, v, kv_stride, k_scale, v_scale, block_table, table_stride, block_size, key_mask, out, tq, tk,
                                heads, kv_heads, head_dim, scale, causal);
}

extern "C" __global__ void __launch_bounds__(kPrefillThreads) attention_prefill_int8_hd128(
    const float* q, int q_stride, const int8_t* k, const int8_t* v, int kv_stride, const float* k_scale,
    const float* v_scale, const int* block_table, int table_stride,
    int block_size, const float* key_mask, float* out, int tq, int tk, int heads, int kv_heads, int head_dim, float scale, int causal)
{
    attention_prefill<128, int8_t>(q, q_stride, k, v, kv_stride, k_scale, v_scale, block_table, table_stride, block_size, key_mask, out, tq, tk,
                                heads, kv_heads, head_dim, scale, causal);
}

extern "C" __global__ void __launch_bounds__(kDecodeThreads) attention_decode_paged_f32(
    const float* q, int q_stride, const float* k_pool, const float* v_pool, int kv_stride, const int* block_tables,
    int table_stride, const int* seq_lens, int block_size, float* partial_acc, float* partial_max, float* partial_sum,
    int heads, int kv_heads, int head_dim, float scale)
{
    attention_decode_paged<float>(q, q_stride, k_pool, v_pool, kv_stride, nullptr, nullptr, block_tables, table_stride, seq_lens,
                                  block_size, partial_acc, partial_max, partial_sum, heads, kv_heads, head_dim, scale);
}

extern "C" __global__ void __launch_bounds__(kDecodeThreads) attention_decode_paged_int8(
    const float* q, int q_stride, const int8_t* k_pool, const int8_t* v_pool, int kv_stride, const float* k_scale,
    const float* v_scale, const int* block_tables, int table_stride, const int* seq_lens, int block_size, float* partial_acc,
    float* partial_max, float* partial_sum, int heads, int kv_heads, int head_dim, float scale)
{
    attention_decode_paged<int8_t>(q, q_stride, k_pool, v_pool, kv_stride, k_scale, v_scale, block_tables, table_stride, seq_lens,
                                   block_size, partial_acc, partial_max, partial_sum, heads, kv_heads, head_dim, scale);
}

// o[b, h·D + d] = Σ_s acc_s[d]·2^(max_s − M) / Σ_s sum_s·2^(max_s − M), M = max_s max_s; zeros if no split saw a key.
// With xq != null it also writes the q8_1 activations of out for the next decode GEMV (head_dim % 32 == 0), as
// quantize_activations_q8_1 would: the CUDA backend fuses the two inside a recorded decode step.
extern "C" __global__ void __launch_bounds__(kDecodeThreads) attention_decode_reduce(
    const float* partial_acc, const float* partial_max, const float* partial_sum, float* out, int heads, int head_dim, int splits,
    int8_t* xq, float2* xds)
{
    const int h = blockIdx.x, b = blockIdx.y;
    const long long first = ((long long)b * heads + h) * splits;
    float global_max = -INFINITY;
    for (int s = 0; s < splits; s++) global_max = fmaxf(global_max, partial_max[first + s]);
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x)
    {
        float sum = 0.f, value = 0.f;
        for (int s = 0; s < splits; s++)
        {
            const float pm = partial_max[first + s];
            const float weight = pm == -INFINITY ? 0.f : exp2f(pm - global_max);
            sum += partial_sum[first + s] * weight;
            value += partial_acc[(first + s) * head_dim + d] * weight;
        }
        const long long at = ((long long)b * heads + h) * head_dim + d;
        const float o = sum > 0.f ? value / sum : 0.f;
        out[at] = o;
        if (xq != nullptr) quantize_q8_1_lane(o, xq + at, xds + at / 32);  // whole warps: head_dim % 32 == 0
    }
}
