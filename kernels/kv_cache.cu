// kv_cache.cu — the paged KV cache (vLLM-style block pool; CPU reference: CpuBackend.WriteKv, Kv/KvCache.cs).
// A layer's pool holds blocks × block_size token rows of kv_width = kv_heads·head_dim values for K and for V; the
// host turns a sequence's block table into one physical row ("slot") per token:
//   slot = block_table[pos / block_size]·block_size + pos % block_size.
// Entry points and launch configuration:
//   kv_append_f32   copies the k and v parts of fused rows qkv [rows, row_stride] (k at column k_offset, v at
//                   v_offset) into slots[r] of the F32 pools (IBackend.WriteKv): grid rows, block 256.
//   kv_append_int8  the same into int8 pools, quantized with one scale per KV head: q = clamp(round(x / scale), ±127)
//                   (read back by attention_decode_paged_int8): grid rows, block 256.
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

extern "C" __global__ void kv_append_int8(const float* qkv, int row_stride, int k_offset, int v_offset, int kv_width,
                                          const int* slots, int rows, int8_t* k_pool, int8_t* v_pool,
                                          const float* k_scale, const float* v_scale, int head_dim)
{
    const float* src = qkv + (long long)blockIdx.x * row_stride;
    const long long dst = (long long)slots[blockIdx.x] * kv_width;
    for (int c = threadIdx.x; c < kv_width; c += blockDim.x)
    {
        const int head = c / head_dim;
        k_pool[dst + c] = (int8_t)max(-127, min(127, __float2int_rn(src[k_offset + c] / k_scale[head])));
        v_pool[dst + c] = (int8_t)max(-127, min(127, __float2int_rn(src[v_offset + c] / v_scale[head])));
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
