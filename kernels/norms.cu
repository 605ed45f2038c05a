// norms.cu — IBackend.RmsNorm and IBackend.LayerNorm over the last dim, each optionally fused with a residual add
// (CPU reference: CpuBackend.RmsNorm, MathKernels.LayerNorm).
//   h = x + residual (residual may be null: h = x); if sum_out != null it receives h (the new residual stream);
//   rms_norm:   y = h · (1 / sqrt(mean(h²) + eps)) · weight                       (HF Llama)
//   layer_norm: y = (h − mean) · (1 / sqrt(mean((h − mean)²) + eps)) · gamma + beta (two-pass variance, as PyTorch)
// x, residual, y, sum_out are [rows, d]; y may alias x and sum_out may alias residual.
// rms_norm_f32 also quantizes y for a decode GEMV when xq != null (int8 [rows, d] and float2 [rows, d/32], exactly as
// quantize_activations_q8_1; d % 32 == 0): the CUDA backend fuses the two launches inside a recorded decode step.
// Launch: grid rows, block 256 (any multiple of 32 up to 1024); one block per row, strided coalesced passes.

#include "common.cuh"

namespace {

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

}  // namespace

// Elements per thread that rms_norm_f32 keeps in registers between its two passes (with its weights, loaded before
// the reduction): a decode row then costs one round trip to memory before the reduction and one store after it,
// instead of reading the row back and the weights after the barrier. Rows wider than blockDim·kNormCached read the
// rest back as before.
constexpr int kNormCached = 4;

extern "C" __global__ void __launch_bounds__(1024) rms_norm_f32(
    const float* x, const float* residual, float* sum_out, const float* weight, float* y, int rows, int d, float eps,
    int8_t* xq, float2* xds)
{
    __shared__ float scratch[32];
    const long long base = (long long)blockIdx.x * d;
    const ResidualInput in{x, residual, sum_out};
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
            sq += h_cached[u] * h_cached[u];
        }
    }
    for (int i = cached_end + threadIdx.x; i < d; i += blockDim.x) { const float h = in.first_pass(base + i); sq += h * h; }
    const float inv = 1.f / sqrtf(block_sum(sq, scratch) / d + eps);
    // d % 32 == 0 when quantizing: `i < d` is the same for a whole warp, so whole warps reach the quantization.
#pragma unroll
    for (int u = 0; u < kNormCached; u++)
    {
        const int i = threadIdx.x + u * blockDim.x;
        if (i < cached_end)
        {
            const float v = __fmul_rn(h_cached[u], inv) * w_cached[u];
            y[base + i] = v;
            if (xq != nullptr) quantize_q8_1_lane(v, xq + base + i, xds + (base + i) / 32);
        }
    }
    for (int i = cached_end + threadIdx.x; i < d; i += blockDim.x)
    {
        const float v = __fmul_rn(in.again(base + i), inv) * weight[i];
        y[base + i] = v;
        if (xq != nullptr) quantize_q8_1_lane(v, xq + base + i, xds + (base + i) / 32);
    }
}

extern "C" __global__ void __launch_bounds__(1024) layer_norm_f32(
    const float* x, const float* residual, float* sum_out, const float* gamma, const float* beta, float* y, int rows, int d, float eps)
{
    __shared__ float scratch[32];
    const long long base = (long long)blockIdx.x * d;
    const ResidualInput in{x, residual, sum_out};
    float sum = 0.f;
    for (int i = threadIdx.x; i < d; i += blockDim.x) sum += in.first_pass(base + i);
    const float mean = block_sum(sum, scratch) / d;
    float sq = 0.f;
    for (int i = threadIdx.x; i < d; i += blockDim.x) { const float c = in.again(base + i) - mean; sq += c * c; }
    const float rstd = 1.f / sqrtf(block_sum(sq, scratch) / d + eps);
    for (int i = threadIdx.x; i < d; i += blockDim.x) y[base + i] = fmaf((in.again(base + i) - mean) * rstd, gamma[i], beta[i]);
}
