// norms.cu — IBackend.RmsNorm and IBackend.LayerNorm over the last dim, each optionally fused with a residual add
// (CPU reference: CpuBackend.RmsNorm, MathKernels.LayerNorm).
//   h = x + residual (residual may be null: h = x); if sum_out != null it receives h (the new residual stream);
//   rms_norm:   y = h · (1 / sqrt(mean(h²) + eps)) · weight                       (HF Llama)
//   layer_norm: y = (h − mean) · (1 / sqrt(mean((h − mean)²) + eps)) · gamma + beta (two-pass variance, as PyTorch)
// x, residual, y, sum_out are [rows, d]; y may alias x and sum_out may alias residual.
// rms_norm_f32 also quantizes y for a decode GEMV when xq != null (int8 [rows, d] and float2 [rows, d/32], exactly as
// quantize_activations_q8_1; d % 32 == 0): the CUDA backend fuses the two launches inside a recorded decode step.
// Launch: grid rows, block 128 (any multiple of 32 up to 1024; the CUDA backend uses 128, the block size of the decode
// GEMVs that normalise their own input with the same code, norm_row.cuh); one block per row, strided coalesced passes.

#include "norm_row.cuh"

extern "C" __global__ void __launch_bounds__(1024) rms_norm_f32(
    const float* x, const float* residual, float* sum_out, const float* weight, float* y, int rows, int d, float eps,
    int8_t* xq, float2* xds)
{
    __shared__ float scratch[32];
    const long long base = (long long)blockIdx.x * d;
    // d % 32 == 0 when quantizing: whole warps reach the quantization.
    rms_norm_row(ResidualInput{x, residual, sum_out}, weight, base, d, eps, scratch, [&](int i, float v) {
        y[base + i] = v;
        if (xq != nullptr) quantize_q8_1_lane(v, xq + base + i, xds + (base + i) / 32);
    });
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
