// elementwise.cu — the small IBackend ops (CPU reference: CpuBackend and MathKernels).
//   activation_f32        x = act(x) in place (ActivationInPlace; act numbered as FastMM.Activation).
//   add_broadcast_f32     x[i] += y[i mod period] (AddInPlace: y's shape is x's trailing dims).
//   scale_bias_f32        x = x·scale + bias (ScaleInPlace; two roundings, not an fma, as the CPU).
//   swiglu_f32            y[r, j] = silu(g[r, j])·g[r, inter + j] (SwiGlu; gate in the first half of each row); with
//                         xq != null also the q8_1 activations of y, as quantize_activations_q8_1 (inter % 32 == 0).
//   softmax_rows_f32      each row of [rows, n] ← softmax(row) in place (max-subtracted).
//   l2_normalize_rows_f32 each row divided by its L2 norm (L2NormalizeInPlace).
//   gather_rows_f32       dst[i, :] = src[index[i], :] for rows of `width` floats: Embedding (index = token ids,
//                         validated by the host), SelectRows, Repeat, and PixelShuffle (rows of s·E floats).
//   scatter_rows_f32      dst[index[i], :] = src[i, :] (SetRows).
// Launch: the elementwise kernels take any 1-D grid (grid-stride loops; e.g. ceil(n/256) capped at 65535, block 256);
// the row kernels take grid = rows (gather/scatter: grid = count), block 256.

#include "common.cuh"

#define GRID_STRIDE(i, n) for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (long long)gridDim.x * blockDim.x)

extern "C" __global__ void activation_f32(float* x, long long n, int act)
{
    GRID_STRIDE(i, n) x[i] = apply_activation(x[i], act);
}

extern "C" __global__ void add_broadcast_f32(float* x, const float* y, long long n, long long period)
{
    GRID_STRIDE(i, n) x[i] += y[i % period];
}

extern "C" __global__ void scale_bias_f32(float* x, long long n, float scale, float bias)
{
    GRID_STRIDE(i, n) x[i] = __fadd_rn(__fmul_rn(x[i], scale), bias);
}

extern "C" __global__ void swiglu_f32(const float* gate_up, float* y, long long rows, int inter, int8_t* xq, float2* xds)
{
    GRID_STRIDE(i, rows * inter)  // inter % 32 == 0 when quantizing: whole warps, whole 32-blocks
    {
        const long long r = i / inter, j = i % inter;
        const float* row = gate_up + r * 2 * inter;
        const float v = __fmul_rn(apply_activation(row[j], ACT_SILU), row[inter + j]);
        y[i] = v;
        if (xq != nullptr) quantize_q8_1_lane(v, xq + i, xds + i / 32);
    }
}

extern "C" __global__ void __launch_bounds__(1024) softmax_rows_f32(float* x, int rows, int n)
{
    __shared__ float scratch[32];
    float* row = x + (long long)blockIdx.x * n;
    float m = -INFINITY;
    for (int i = threadIdx.x; i < n; i += blockDim.x) m = fmaxf(m, row[i]);
    m = block_max(m, scratch);
    float s = 0.f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) { const float e = expf(row[i] - m); row[i] = e; s += e; }
    const float inv = 1.f / block_sum(s, scratch);
    for (int i = threadIdx.x; i < n; i += blockDim.x) row[i] *= inv;
}

extern "C" __global__ void __launch_bounds__(1024) l2_normalize_rows_f32(float* x, int rows, int n)
{
    __shared__ float scratch[32];
    float* row = x + (long long)blockIdx.x * n;
    float s = 0.f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += row[i] * row[i];
    const float norm = sqrtf(block_sum(s, scratch));
    for (int i = threadIdx.x; i < n; i += blockDim.x) row[i] = row[i] / norm;
}

extern "C" __global__ void gather_rows_f32(const float* src, const int* index, float* dst, int count, int width)
{
    const float* from = src + (long long)index[blockIdx.x] * width;
    float* to = dst + (long long)blockIdx.x * width;
    for (int i = threadIdx.x; i < width; i += blockDim.x) to[i] = from[i];
}

extern "C" __global__ void scatter_rows_f32(float* dst, const int* index, const float* src, int count, int width)
{
    const float* from = src + (long long)blockIdx.x * width;
    float* to = dst + (long long)index[blockIdx.x] * width;
    for (int i = threadIdx.x; i < width; i += blockDim.x) to[i] = from[i];
}
