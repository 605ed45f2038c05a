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
//   attention_kv_to_f16 / attention_kv_to_f16_int8: keys 0..tk−1 of K and V → f16 copies [B, kv_heads, tk, 64 | 128]
//     (columns ≥ head_dim zero), from dense F32 rows (block_table == nullptr: row = b·tk + j) or from the paged pool
//     (row = block_table[b·table_stride + j / block_size]·block_size + j % block_size), F32 or int8 (value =
//     q · scale[row·kv_heads + head]). Grid-stride, block 256. Run once per attention call, so the prefill kernel's
//     blocks (one per 64 queries) read ready f16 tiles instead of each converting the whole sequence again.
//   attention_prefill_hd64 / attention_prefill_hd128 (head_dim ≤ 64 / ≤ 128; Attention, SelfAttention and
//     CachedAttention with T > 1): block 128 threads → 64 query rows per block, grid (ceil(tq / 64), heads, batch);
//     block 256 → 128 rows (half the K/V reads per query; the host takes it when that grid has ≥ 2 blocks per SM),
//     grid (ceil(tq / 128), heads, batch). 16 query rows per warp. Dynamic shared memory 36 KB / 68 KB
//     (prefill_shared_bytes; the host sets it, CudaKernelNames.DynamicSharedBytes). Flash-attention-2 style: Q
//     (pre-scaled by scale·log2 e) stays in registers as A fragments, S = Q·Kᵀ and O += P·V run on mma.sync m16n8k16
//     (f16 in, f32 accumulate, ldmatrix fragments) with an online softmax in the exp2 domain (ex2.approx). Tiles of 64
//     keys of the f16 copies go round a two-stage cp.async ring: the next tile's K and V land while the block does
//     this tile's math, one barrier per tile; only tiles with a hidden key are masked.
//   attention_decode_paged_f32 / attention_decode_paged_int8 (one new token per sequence):
//     grid (splits, kv_heads · ceil(group / 16), batch), block 128 threads, ≈ 41 KB static shared memory.
//     Split-K over the sequence: split s covers keys [s·n, (s+1)·n) of sequence b, n = ceil(seq_lens[b] / splits)
//     (read on the device, so a captured decode graph serves every length); all ≤ 16 query heads sharing a KV head are handled by one block so each K/V row is
//     read once. Each warp takes 4 consecutive keys at a time, their K/V rows all in flight before the first is
//     used. Each split writes unnormalised partial results (log2-domain max, sum, accumulator); the last split of
//     a (sequence, KV head) to finish, counted in split_counters [batch · gridDim.y] (zero before the launch, and left
//     zero after it), merges them into o [B, heads·head_dim], and with xq != null also writes o's q8_1 activations
//     for the next decode GEMV. One launch per layer: no separate reduction kernel.
//     attention_decode_paged_int8 reads an int8 cache with one scale per (pool row, KV head): value =
//     q · k_scale[row·kv_heads + head] (kv_cache.cu's kv_append_int8 layout).

#include "common.cuh"

namespace {

constexpr float kLog2e = 1.4426950408889634f;

// Query rows per block, 16 per warp: 64 (128 threads) or 128 (256 threads), by the block size the host launches.
constexpr int kPrefillKeys = 64;   // keys per shared-memory tile
constexpr int kPrefillMaxThreads = 256;

// Row index of key j of sequence b in the K/V arrays: dense, or through a vLLM-style block table.
__device__ __forceinline__ long long kv_row(int b, int j, int tk, const int* block_table, int table_stride, int block_size)
{
    if (block_table == nullptr) return (long long)b * tk + j;
    return (long long)block_table[(long long)b * table_stride + j / block_size] * block_size + j % block_size;
}


__device__ __forceinline__ float4 load4(const float* p, float) { return *reinterpret_cast<const float4*>(p); }
__device__ __forceinline__ float4 load4(const int8_t* p, float s)
{
    const char4 c = *reinterpret_cast<const char4*>(p);
    return make_float4(c.x * s, c.y * s, c.z * s, c.w * s);
}

// ---- prefill: each warp owns 16 query rows of the block's 64 or 128 ----

// Q rows [q0, q0 + Rows) of head h, times scale·log2(e) (so that scores come out in the exp2 domain, for any sign of
// scale), as f16 in `tile` (rows ≥ tq and columns ≥ head_dim zero), then this warp's A fragments in registers. Ends
// with a barrier, so the caller may reuse `tile` at once.
template <int HD, int Rows>
__device__ __forceinline__ void load_q_fragments(uint32_t (&qa)[HD / 16][4], __half* tile, const float* q, int q_stride, int b, int tq,
                                                 int q0, int h, int head_dim, float scale_log2)
{
    constexpr int kStride = HD + 8, kVecPerRow = HD / 4;
    for (int i = threadIdx.x; i < Rows * kVecPerRow; i += Rows * 2)
    {
        const int r = i / kVecPerRow, c = (i % kVecPerRow) * 4;
        float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
        if (c < head_dim && q0 + r < tq) v = load4(q + ((long long)b * tq + q0 + r) * q_stride + (long long)h * head_dim + c, 1.f);
        store_half4(tile + r * kStride + c, make_float4(v.x * scale_log2, v.y * scale_log2, v.z * scale_log2, v.w * scale_log2));
    }
    __syncthreads();
    const int lane = threadIdx.x % FASTMM_WARP;
    const __half* qs = tile + (threadIdx.x / FASTMM_WARP) * 16 * kStride;
#pragma unroll
    for (int c = 0; c < HD / 16; c++) ldmatrix_x4(qa[c], qs + (lane % 16) * kStride + c * 16 + (lane / 16) * 8);
    __syncthreads();
}

// S = Q·Kᵀ for the warp's 16 rows × 64 keys of `k_tile` (8 n-tiles), B fragments by ldmatrix from the n-major tile.
template <int HD>
__device__ __forceinline__ void scores(float (&s)[8][4], const uint32_t (&qa)[HD / 16][4], const __half* k_tile)
{
    constexpr int kStride = HD + 8;
    const int lane = threadIdx.x % FASTMM_WARP;
#pragma unroll
    for (int nt = 0; nt < 8; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
    for (int np = 0; np < 4; np++)
#pragma unroll
        for (int c = 0; c < HD / 16; c++)
        {
            uint32_t kb[4];
            ldmatrix_x4(kb, k_tile + (np * 16 + (lane / 16) * 8 + lane % 8) * kStride + c * 16 + ((lane / 8) % 2) * 8);
            mma_m16n8k16_f16_f32(s[2 * np], qa[c], kb[0], kb[1]);
            mma_m16n8k16_f16_f32(s[2 * np + 1], qa[c], kb[2], kb[3]);
        }
}

// Hides the keys of the tile at n0 that a row may not see: past kv_end, key_mask == 0, and (causal) past the row's
// position. Only tiles that need it call this (the host of the loop decides per tile, for the whole block).
__device__ __forceinline__ void mask_tile(float (&s)[8][4], const float* key_mask, int b, int tk, int kv_end, int n0, int q0, int causal,
                                          int causal_offset)
{
    const int warp = threadIdx.x / FASTMM_WARP, lane = threadIdx.x % FASTMM_WARP, g = lane / 4, t = lane % 4;
#pragma unroll
    for (int nt = 0; nt < 8; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++)
        {
            const int key = n0 + nt * 8 + 2 * t + (e & 1);
            const int row = q0 + warp * 16 + g + 8 * (e >> 1);
            const bool visible = key < kv_end && (key_mask == nullptr || __ldg(key_mask + (long long)b * tk + key) != 0.f) &&
                                 !(causal && key > row + causal_offset);
            if (!visible) s[nt][e] = -INFINITY;
        }
}

// Online softmax over the tile (scores already in the exp2 domain): rescale what was accumulated by
// 2^(old max − new max), turn s into probabilities. A quad of 4 lanes shares a row; row_sum stays a per-lane
// partial, summed over the quad once at the end.
template <int HD>
__device__ __forceinline__ void online_softmax(float (&s)[8][4], float (&row_max)[2], float (&row_sum)[2], float (&acc)[HD / 8][4])
{
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
        const float alpha = fast_exp2(row_max[r] - base);
        row_max[r] = new_max;
        float sum = 0.f;
#pragma unroll
        for (int nt = 0; nt < 8; nt++)
        {
            s[nt][2 * r] = fast_exp2(s[nt][2 * r] - base);
            s[nt][2 * r + 1] = fast_exp2(s[nt][2 * r + 1] - base);
            sum += s[nt][2 * r] + s[nt][2 * r + 1];
        }
        row_sum[r] = row_sum[r] * alpha + sum;
#pragma unroll
        for (int d = 0; d < HD / 8; d++) { acc[d][2 * r] *= alpha; acc[d][2 * r + 1] *= alpha; }
    }
}

// O += P·V. The S accumulator layout is the A-fragment layout, so P goes from registers straight to the mma.
template <int HD>
__device__ __forceinline__ void accumulate_pv(float (&acc)[HD / 8][4], const float (&s)[8][4], const __half* v_tile)
{
    constexpr int kStride = HD + 8;
    const int lane = threadIdx.x % FASTMM_WARP;
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
}

// Normalise and store the warp's rows of out [B, tq, heads·head_dim]; a row that saw no key gets zeros.
template <int HD>
__device__ __forceinline__ void store_rows(const float (&acc)[HD / 8][4], const float (&row_sum)[2], float* out, int b, int tq, int q0, int h,
                                           int heads, int head_dim)
{
    const int warp = threadIdx.x / FASTMM_WARP, lane = threadIdx.x % FASTMM_WARP, g = lane / 4, t = lane % 4;
#pragma unroll
    for (int r = 0; r < 2; r++)
    {
        float sum = row_sum[r];
        sum += __shfl_xor_sync(FASTMM_FULL_MASK, sum, 1);
        sum += __shfl_xor_sync(FASTMM_FULL_MASK, sum, 2);
        const float inv = sum > 0.f ? 1.f / sum : 0.f;
        const int i = q0 + warp * 16 + g + 8 * r;
        if (i >= tq) continue;
        float* o = out + (((long long)b * tq + i) * heads + h) * head_dim;
#pragma unroll
        for (int d = 0; d < HD / 8; d++)
        {
            const int col = d * 8 + 2 * t;
            if (col < head_dim) *reinterpret_cast<float2*>(o + col) = make_float2(acc[d][2 * r] * inv, acc[d][2 * r + 1] * inv);
        }
    }
}

// Keys a block's queries may see: all of them, or (causal) up to its last query's position.
__device__ __forceinline__ int visible_keys(int causal, int tk, int q_end, int causal_offset)
{
    return causal ? min(tk, q_end + causal_offset) : tk;
}

// Dynamic shared memory of the prefill kernels: two stages, each a K and a V tile of 64 keys × (HD + 8) halves
// (the 8 halves of padding spread ldmatrix's rows over the banks). CudaKernelNames.DynamicSharedBytes holds the same.
template <int HD>
__host__ __device__ constexpr unsigned prefill_shared_bytes() { return 2u * 2u * kPrefillKeys * (HD + 8) * sizeof(__half); }

// The prefill kernel, over f16 K/V in attention_kv_to_f16's layout. The tiles go round a two-stage ring: tile n + 1's
// K and V load by cp.async into one stage while the block does all of tile n's math from the other, so each tile
// costs one barrier (after it has landed, which also tells every warp that the stage it is about to refill is no
// longer read). Only tiles with a hidden key (past the end, a key mask, or the causal diagonal) pay for masking.
template <int HD, int Rows>
__device__ __forceinline__ void attention_prefill(
    __half* __restrict__ ring, const float* __restrict__ q, int q_stride, const __half* __restrict__ kh, const __half* __restrict__ vh,
    const float* __restrict__ key_mask, float* __restrict__ out, int tq, int tk, int heads, int kv_heads, int head_dim, float scale, int causal)
{
    constexpr int kThreads = Rows * 2;
    constexpr int kStride = HD + 8, kChunksPerRow = HD / 8, kChunks = kPrefillKeys * kChunksPerRow;  // 16-byte chunks
    constexpr int kTile = kPrefillKeys * kStride;  // halves per K or V tile
    static_assert(kChunks % kThreads == 0 && Rows <= 2 * kPrefillKeys, "whole chunks per thread; Q fits one stage");

    const int q0 = blockIdx.x * Rows, h = blockIdx.y, b = blockIdx.z;
    const int kvh = h / (heads / kv_heads);
    const int causal_offset = tk - tq;
    const long long head_base = ((long long)b * kv_heads + kvh) * tk * HD;  // [B, kv_heads, tk, HD]
    const int kv_end = visible_keys(causal, tk, q0 + Rows, causal_offset);

    // Stage s holds K at ring + 2s·kTile and V right after it. A thread copies the same 16-byte column c of rows
    // r0, r0 + kRowStep, …; rows past kv_end arrive as zeros (their scores are masked; zero V rows keep P·V finite).
    static_assert(kThreads % kChunksPerRow == 0, "a thread keeps its column");
    constexpr int kRowStep = kThreads / kChunksPerRow;
    const int r0 = threadIdx.x / kChunksPerRow, c = (threadIdx.x % kChunksPerRow) * 8;
    const __half* k_src = kh + head_base + c;
    const __half* v_src = vh + head_base + c;
    auto issue_tile = [&](int stage, int n0) {
        __half* k_dst = ring + 2 * stage * kTile + r0 * kStride + c;
#pragma unroll
        for (int i = 0; i < kChunks / kThreads; i++)
        {
            const int r = r0 + i * kRowStep;
            const bool inside = n0 + r < kv_end;
            const long long at = (long long)(inside ? n0 + r : 0) * HD;
            cp_async_16(k_dst + i * kRowStep * kStride, k_src + at, inside ? 16 : 0);
            cp_async_16(k_dst + kTile + i * kRowStep * kStride, v_src + at, inside ? 16 : 0);
        }
        cp_async_commit();
    };

    // The first tile loads into stage 0 while Q is staged through stage 1.
    if (kv_end > 0) issue_tile(0, 0);
    uint32_t qa[HD / 16][4];
    load_q_fragments<HD, Rows>(qa, ring + 2 * kTile, q, q_stride, b, tq, q0, h, head_dim, scale * kLog2e);

    float acc[HD / 8][4];
#pragma unroll
    for (int d = 0; d < HD / 8; d++) acc[d][0] = acc[d][1] = acc[d][2] = acc[d][3] = 0.f;
    float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.f, 0.f};

    // A tile needs masking if it reaches past kv_end, if there is a key mask, or (causal) if a key of it lies past
    // the block's first row's position. The same for the whole block, so the branch does not diverge.
    const int first_masked = causal ? min(kv_end, q0 + causal_offset + 1) : kv_end;
    int stage = 0;
    for (int n0 = 0; n0 < kv_end; n0 += kPrefillKeys, stage ^= 1)
    {
        cp_async_wait<0>();  // this thread's copies of tile n0
        __syncthreads();     // everyone's; and every warp is done with the other stage (tile n0 − 64)
        if (n0 + kPrefillKeys < kv_end) issue_tile(stage ^ 1, n0 + kPrefillKeys);

        const __half* k_tile = ring + 2 * stage * kTile;
        float s[8][4];
        scores<HD>(s, qa, k_tile);
        if (key_mask != nullptr || n0 + kPrefillKeys > first_masked)
            mask_tile(s, key_mask, b, tk, kv_end, n0, q0, causal, causal_offset);
        online_softmax<HD>(s, row_max, row_sum, acc);
        accumulate_pv<HD>(acc, s, k_tile + kTile);
    }
    store_rows<HD>(acc, row_sum, out, b, tq, q0, h, heads, head_dim);
}

// ---------------- decode over the paged cache, split-K ----------------

constexpr int kDecodeThreads = 128;
constexpr int kDecodeWarps = kDecodeThreads / FASTMM_WARP;
constexpr int kDecodeMaxGroup = 16;   // query heads per block (a larger GQA group uses several blocks per KV head)
constexpr int kDecodeMaxDim = 128;
constexpr int kDimsPerLane = kDecodeMaxDim / FASTMM_WARP;  // lane owns dims lane, lane + 32, …: coalesced rows
constexpr int kDecodeKeysPerWarp = 4;   // keys whose K/V rows a warp has in flight at once

__device__ __forceinline__ float cache_value(float x, float) { return x; }
__device__ __forceinline__ float cache_value(int8_t x, float scale) { return (float)x * scale; }

// o[b, h·D + d] = Σ_s acc_s[d]·2^(max_s − M) / Σ_s sum_s·2^(max_s − M), M = max_s max_s; zero if no split saw a key.
// With xq != null it also writes the q8_1 activations of o for the next decode GEMV (head_dim % 32 == 0; all 32 lanes
// of a warp call it), as quantize_activations_q8_1 would. Partials are read with __ldcg (L2, not L1): other blocks
// wrote them during this kernel.
__device__ __forceinline__ void merge_splits(const float* partial_acc, const float* partial_max, const float* partial_sum, float* out,
                                             int8_t* xq, float2* xds, int b, int h, int d, int heads, int head_dim, int splits)
{
    const long long first = ((long long)b * heads + h) * splits;
    float global_max = -INFINITY;
    for (int s = 0; s < splits; s++) global_max = fmaxf(global_max, __ldcg(partial_max + first + s));
    float sum = 0.f, value = 0.f;
    for (int s = 0; s < splits; s++)
    {
        const float pm = __ldcg(partial_max + first + s);
        const float weight = pm == -INFINITY ? 0.f : exp2f(pm - global_max);
        sum += __ldcg(partial_sum + first + s) * weight;
        value += __ldcg(partial_acc + (first + s) * head_dim + d) * weight;
    }
    const long long at = ((long long)b * heads + h) * head_dim + d;
    const float o = sum > 0.f ? value / sum : 0.f;
    out[at] = o;
    if (xq != nullptr) quantize_q8_1_lane(o, xq + at, xds + at / 32);
}

template <typename CacheT>
__device__ __forceinline__ void attention_decode_paged(
    const float* __restrict__ q, int q_stride, const CacheT* __restrict__ k_pool, const CacheT* __restrict__ v_pool,
    int kv_stride, const float* __restrict__ k_scale, const float* __restrict__ v_scale,
    const int* __restrict__ block_tables, int table_stride, const int* __restrict__ seq_lens, int block_size,
    float* __restrict__ partial_acc, float* __restrict__ partial_max, float* __restrict__ partial_sum, float* __restrict__ out,
    int* __restrict__ split_counters, int8_t* __restrict__ xq, float2* __restrict__ xds, int heads, int kv_heads, int head_dim, float scale)
{
    __shared__ bool last_split;
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
    // Each warp takes kDecodeKeysPerWarp consecutive keys per round and loads all their K/V rows before using the
    // first: a key costs two dependent memory round trips (block table, then the row), and one key at a time left
    // the kernel waiting on them back to back.
    for (int key0 = key_begin + warp * kDecodeKeysPerWarp; key0 < key_end; key0 += kDecodeWarps * kDecodeKeysPerWarp)
    {
        float kx[kDecodeKeysPerWarp][kDimsPerLane], vx[kDecodeKeysPerWarp][kDimsPerLane];
#pragma unroll
        for (int u = 0; u < kDecodeKeysPerWarp; u++)
        {
            const int key = min(key0 + u, key_end - 1);  // past the split's end: a valid row, never used
            const long long row = (long long)block_tables[(long long)b * table_stride + key / block_size] * block_size + key % block_size;
            const CacheT* krow = k_pool + row * kv_stride + (long long)kvh * head_dim;
            const CacheT* vrow = v_pool + row * kv_stride + (long long)kvh * head_dim;
            const float ks = k_scale != nullptr ? k_scale[row * kv_heads + kvh] : 1.f, vs = v_scale != nullptr ? v_scale[row * kv_heads + kvh] : 1.f;
#pragma unroll
            for (int i = 0; i < kDimsPerLane; i++)
            {
                const int d = lane + i * FASTMM_WARP;
                kx[u][i] = d < head_dim ? cache_value(krow[d], ks) : 0.f;
                vx[u][i] = d < head_dim ? cache_value(vrow[d], vs) : 0.f;
            }
        }
#pragma unroll
        for (int u = 0; u < kDecodeKeysPerWarp; u++)
        {
            if (key0 + u >= key_end) break;
#pragma unroll
            for (int j = 0; j < kDecodeMaxGroup; j++)
            {
                if (j >= nh) break;
                float dot = 0.f;
#pragma unroll
                for (int i = 0; i < kDimsPerLane; i++) dot += q_s[j][lane + i * FASTMM_WARP] * kx[u][i];
                dot = warp_sum(dot);
                const float new_max = fmaxf(m[j], dot);
                const float alpha = exp2f(m[j] - new_max), p = exp2f(dot - new_max);
                m[j] = new_max;
                l[j] = l[j] * alpha + p;
#pragma unroll
                for (int i = 0; i < kDimsPerLane; i++) acc[j][i] = acc[j][i] * alpha + p * vx[u][i];
            }
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

    // The last of the splits to finish merges them all (the threadFenceReduction pattern): each block makes its
    // partials visible device-wide before it is counted, and the counter is left at zero for the next launch.
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0)
    {
        int* counter = split_counters + (long long)b * gridDim.y + blockIdx.y;
        last_split = atomicAdd(counter, 1) == splits - 1;
        if (last_split) *counter = 0;
    }
    __syncthreads();
    if (!last_split) return;
    __threadfence();
    for (int idx = threadIdx.x; idx < nh * head_dim; idx += kDecodeThreads)  // whole warps per head when head_dim % 32 == 0
        merge_splits(partial_acc, partial_max, partial_sum, out, xq, xds, b, h0 + idx / head_dim, idx % head_dim, heads, head_dim, splits);
}

}  // namespace

template <int HD>
__device__ __forceinline__ void attention_prefill_entry(const float* q, int q_stride, const __half* kh, const __half* vh, const float* key_mask,
                                                        float* out, int tq, int tk, int heads, int kv_heads, int head_dim, float scale, int causal)
{
    FASTMM_DYNAMIC_SHARED(shared);
    if (dynamic_shared_bytes() < prefill_shared_bytes<HD>())
    {
        fail_launch("the kernel found less dynamic shared memory than its layout needs");
        return;
    }
    __half* ring = reinterpret_cast<__half*>(shared);
    if (blockDim.x == kPrefillMaxThreads)
        attention_prefill<HD, 128>(ring, q, q_stride, kh, vh, key_mask, out, tq, tk, heads, kv_heads, head_dim, scale, causal);
    else
        attention_prefill<HD, 64>(ring, q, q_stride, kh, vh, key_mask, out, tq, tk, heads, kv_heads, head_dim, scale, causal);
}

extern "C" __global__ void __launch_bounds__(kPrefillMaxThreads, 2) attention_prefill_hd64(
    const float* q, int q_stride, const __half* kh, const __half* vh, const float* key_mask, float* out, int tq, int tk, int heads,
    int kv_heads, int head_dim, float scale, int causal)
{
    attention_prefill_entry<64>(q, q_stride, kh, vh, key_mask, out, tq, tk, heads, kv_heads, head_dim, scale, causal);
}

extern "C" __global__ void __launch_bounds__(kPrefillMaxThreads) attention_prefill_hd128(
    const float* q, int q_stride, const __half* kh, const __half* vh, const float* key_mask, float* out, int tq, int tk, int heads,
    int kv_heads, int head_dim, float scale, int causal)
{
    attention_prefill_entry<128>(q, q_stride, kh, vh, key_mask, out, tq, tk, heads, kv_heads, head_dim, scale, causal);
}

// Keys 0..tk−1 of each sequence → kh / vh [B, kv_heads, tk, padded_dim] f16 (columns ≥ head_dim zero), one thread per
// 4 columns of both. Rows come from dense tensors or the paged pool (kv_row), F32 or int8 with one scale per (row, head).
template <typename CacheT>
__device__ __forceinline__ void kv_to_f16(const CacheT* __restrict__ k, const CacheT* __restrict__ v, int kv_stride, const float* __restrict__ k_scale,
                                          const float* __restrict__ v_scale, const int* __restrict__ block_table, int table_stride, int block_size,
                                          __half* __restrict__ kh, __half* __restrict__ vh, int batch, int tk, int kv_heads, int head_dim, int padded_dim)
{
    const int quads = padded_dim / 4;
    const long long total = (long long)batch * kv_heads * tk * quads;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total; e += (long long)gridDim.x * blockDim.x)
    {
        const int c = (int)(e % quads) * 4;
        const long long rest = e / quads;
        const int j = (int)(rest % tk), h = (int)(rest / tk % kv_heads), b = (int)(rest / tk / kv_heads);
        float4 kv4 = make_float4(0.f, 0.f, 0.f, 0.f), vv4 = kv4;
        if (c < head_dim)
        {
            const long long row = kv_row(b, j, tk, block_table, table_stride, block_size);
            const long long src = row * kv_stride + (long long)h * head_dim + c;
            kv4 = load4(k + src, k_scale != nullptr ? k_scale[row * kv_heads + h] : 1.f);
            vv4 = load4(v + src, v_scale != nullptr ? v_scale[row * kv_heads + h] : 1.f);
        }
        store_half4(kh + e * 4, kv4);
        store_half4(vh + e * 4, vv4);
    }
}

extern "C" __global__ void __launch_bounds__(256) attention_kv_to_f16(
    const float* k, const float* v, int kv_stride, const int* block_table, int table_stride, int block_size, __half* kh, __half* vh,
    int batch, int tk, int kv_heads, int head_dim, int padded_dim)
{
    kv_to_f16<float>(k, v, kv_stride, nullptr, nullptr, block_table, table_stride, block_size, kh, vh, batch, tk, kv_heads, head_dim, padded_dim);
}

extern "C" __global__ void __launch_bounds__(256) attention_kv_to_f16_int8(
    const int8_t* k, const int8_t* v, int kv_stride, const float* k_scale, const float* v_scale, const int* block_table, int table_stride,
    int block_size, __half* kh, __half* vh, int batch, int tk, int kv_heads, int head_dim, int padded_dim)
{
    kv_to_f16<int8_t>(k, v, kv_stride, k_scale, v_scale, block_table, table_stride, block_size, kh, vh, batch, tk, kv_heads, head_dim, padded_dim);
}

extern "C" __global__ void __launch_bounds__(kDecodeThreads, 1) attention_decode_paged_f32(
    const float* q, int q_stride, const float* k_pool, const float* v_pool, int kv_stride, const int* block_tables,
    int table_stride, const int* seq_lens, int block_size, float* partial_acc, float* partial_max, float* partial_sum,
    float* out, int* split_counters, int heads, int kv_heads, int head_dim, float scale, int8_t* xq, float2* xds)
{
    attention_decode_paged<float>(q, q_stride, k_pool, v_pool, kv_stride, nullptr, nullptr, block_tables, table_stride, seq_lens,
                                  block_size, partial_acc, partial_max, partial_sum, out, split_counters, xq, xds, heads, kv_heads,
                                  head_dim, scale);
}

extern "C" __global__ void __launch_bounds__(kDecodeThreads, 1) attention_decode_paged_int8(
    const float* q, int q_stride, const int8_t* k_pool, const int8_t* v_pool, int kv_stride, const float* k_scale,
    const float* v_scale, const int* block_tables, int table_stride, const int* seq_lens, int block_size, float* partial_acc,
    float* partial_max, float* partial_sum, float* out, int* split_counters, int heads, int kv_heads, int head_dim, float scale,
    int8_t* xq, float2* xds)
{
    attention_decode_paged<int8_t>(q, q_stride, k_pool, v_pool, kv_stride, k_scale, v_scale, block_tables, table_stride, seq_lens,
                                   block_size, partial_acc, partial_max, partial_sum, out, split_counters, xq, xds, heads, kv_heads,
                                   head_dim, scale);
}
