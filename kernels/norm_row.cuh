// norm_row.cuh — one row of RMSNorm as every kernel that computes it does: rms_norm_f32 (norms.cu) and the decode
// GEMVs that normalise their input themselves (quant_matmul.cu). One function, so that both give the same bits for the
// same block size (the sum of squares is reduced in an order that depends on blockDim.x).
#pragma once

#include "common.cuh"

// h[i], reading back sum_out once it was written (it may alias residual, which then no longer holds the input).
// Every pass visits the same indices with the same thread, so no barrier is needed between write and read-back.
struct ResidualInput
{
    const float* x;
    const float* residual;
    float* sum_out;
    __device__ __forceinline__ float first_pass(long long i) const
    {
        const float h = residual != nullptr ? x[i] + residual[i] : x[i];
        if (sum_out != nullptr) sum_out[i] = h;
        return h;
    }
    __device__ __forceinline__ float again(long long i) const
    {
        if (sum_out != nullptr) return sum_out[i];
        return residual != nullptr ? x[i] + residual[i] : x[i];
    }
};

// Elements per thread kept in registers between the two passes (with their weights, loaded before the reduction): a
// decode row then costs one round trip to memory before the reduction and one store after it, instead of reading the
// row back and the weights after the barrier. Rows wider than blockDim·kNormCached read the rest back.
constexpr int kNormCached = 8;

// y = h · (1 / sqrt(mean(h²) + eps)) · weight for the row at `base`; store(i, y_i) for each column i (whole warps
// reach it together when d % 32 == 0, so it may quantize). Every thread of the block must call it. Roundings are
// spelled out (_rn intrinsics) so that no copy of this function is contracted differently from another.
template <typename Store>
__device__ __forceinline__ void rms_norm_row(const ResidualInput& in, const float* __restrict__ weight, long long base, int d, float eps,
                                             float* scratch, Store store)
{
    const int cached_end = min(d, kNormCached * (int)blockDim.x);
    float h_cached[kNormCached], w_cached[kNormCached];
    float sq = 0.f;
#pragma unroll
    for (int u = 0; u < kNormCached; u++)
    {
        const int i = threadIdx.x + u * blockDim.x;
        if (i < cached_end)
        {
            h_cached[u] = in.first_pass(base + i);
            w_cached[u] = weight[i];
            sq = __fmaf_rn(h_cached[u], h_cached[u], sq);
        }
    }
    for (int i = cached_end + threadIdx.x; i < d; i += blockDim.x) { const float h = in.first_pass(base + i); sq = __fmaf_rn(h, h, sq); }
    const float inv = 1.f / sqrtf(block_sum(sq, scratch) / d + eps);
#pragma unroll
    for (int u = 0; u < kNormCached; u++)
    {
        const int i = threadIdx.x + u * blockDim.x;
        if (i < cached_end) store(i, __fmul_rn(__fmul_rn(h_cached[u], inv), w_cached[u]));
    }
    for (int i = cached_end + threadIdx.x; i < d; i += blockDim.x) store(i, __fmul_rn(__fmul_rn(in.again(base + i), inv), weight[i]));
}
