// kv_cache.cu — the paged KV cache (vLLM-style block pool; CPU reference: CpuBackend.WriteKv, Kv/KvCache.cs).
// A layer's pool holds blocks × block_size token rows of kv_width = kv_heads·head_dim values for K and for V; the
// host turns a sequence's block table into one physical row ("slot") per token:
//   slot = block_table[pos / block_size]·block_size + pos % block_size.
// Entry points and launch configuration:
//   kv_append_f32   copies the k and v parts of fused rows qkv [rows, row_stride] (k at column k_offset, v at
//                   v_offset) into slots[r] of the F32 pools (IBackend.WriteKv): grid rows, block 256.
//   kv_append_int8  the same into int8 pools with one scale per (slot, KV head), as the CPU's Int8Kernels.Quantize:
//                   s = max|x| / 127 over the head's head_dim values, q = clamp(round_half_even(x / s), ±127), s = 0 and
//                   q = 0 for an all-zero head; a NaN makes s NaN (the row reads back as NaN, never as a plausible value).
//                   Scales live at k_scales/v_scales[slot·kv_heads + head] (read by attention_*_int8): grid rows, block
//                   256 (a warp per head).
//   kv_copy_blocks  copies whole blocks src → dst for each (src, dst) pair in K and V (copy-on-write / prefix sharing),
//                   block_words = block_size·kv_width·sizeof(element) / 4: grid pairs, block 256.

#include "common.cuh"

extern "C" __global__ void kv_append_f32(const float* qkv, int row_stride, int k_offset, int v_offset, int kv_width,
                                         const int* slots, int rows, float* k_pool, float* v_pool)
{
    const float* src = qkv + (long long)blockIdx.x * row_stride;
    const long long dst = (long long)slots[blockIdx.x] * kv_width;
    for (int c = threadIdx.x; c < kv_width; c += blockDim.x)
    {
        k_pool[dst + c] = src[k_offset + c];
        v_pool[dst + c] = src[v_offset + c];
    }
}

namespace {

// One head's head_dim values → int8 and its scale, by one warp.
__device__ __forceinline__ void quantize_head(const float* x, int head_dim, int8_t* q, float* scale_out)
{
    const int lane = threadIdx.x % FASTMM_WARP;
    float amax = 0.f;
    for (int c = lane; c < head_dim; c += FASTMM_WARP)
    {
        const float a = fabsf(x[c]);
        amax = (a > amax || isnan(a)) ? a : amax;  // NaN wins: the head is poisoned, not hidden
    }
#pragma unroll
    for (int o = FASTMM_WARP / 2; o > 0; o /= 2)
    {
        const float other = __shfl_xor_sync(FASTMM_FULL_MASK, amax, o);
        amax = (other > amax || isnan(other)) ? other : amax;
    }
    const float s = amax / 127.f;
    for (int c = lane; c < head_dim; c += FASTMM_WARP)
        q[c] = amax == 0.f || isnan(s) ? (int8_t)0 : (int8_t)max(-127, min(127, __float2int_rn(__fdiv_rn(x[c], s))));
    if (lane == 0) *scale_out = s;
}

}  // namespace

extern "C" __global__ void kv_append_int8(const float* qkv, int row_stride, int k_offset, int v_offset, int kv_width,
                                          const int* slots, int rows, int8_t* k_pool, int8_t* v_pool,
                                          float* k_scales, float* v_scales, int head_dim)
{
    const float* src = qkv + (long long)blockIdx.x * row_stride;
    const long long slot = slots[blockIdx.x];
    const int kv_heads = kv_width / head_dim, warp = threadIdx.x / FASTMM_WARP, warps = blockDim.x / FASTMM_WARP;
    for (int h = warp; h < kv_heads; h += warps)
    {
        const long long at = slot * kv_width + (long long)h * head_dim;
        quantize_head(src + k_offset + h * head_dim, head_dim, k_pool + at, k_scales + slot * kv_heads + h);
        quantize_head(src + v_offset + h * head_dim, head_dim, v_pool + at, v_scales + slot * kv_heads + h);
    }
}

extern "C" __global__ void kv_copy_blocks(uint32_t* k_pool, uint32_t* v_pool, const int* src_dst_pairs, int pairs, long long block_words)
{
    const long long src = src_dst_pairs[2 * blockIdx.x] * block_words, dst = src_dst_pairs[2 * blockIdx.x + 1] * block_words;
    for (long long i = threadIdx.x; i < block_words; i += blockDim.x)
    {
        k_pool[dst + i] = k_pool[src + i];
        v_pool[dst + i] = v_pool[src + i];
    }
}
