// rope.cu — rotary position embedding, HF rotate_half convention (CPU reference: CpuBackend.RopeTable/RopeInPlace).
// For a head vector x of head_dim D (half = D/2) at position p, with angle_j = p / theta^(2j/D):
//   x[j] ← x[j]·cos − x[j+half]·sin,   x[j+half] ← x[j+half]·cos + x[j]·sin,   j < half.
// Rows are fused QKV rows [rows, row_stride]: the first `rotated_heads` heads (q heads then k heads) are rotated in
// place, v is not. Angles are computed in double, as the CPU reference, and rounded to float once.
// Entry points and launch configuration:
//   rope_table_f32      table [count, D] (cos in the first half, sin in the second) for positions position0 …:
//                       grid count, block min(half, 1024).
//   rope_apply_f32      rotate with table row r for row r (IBackend.RopeInPlace): grid rows, block min(half, 1024).
//   rope_positions_f32  rotate with per-token positions[r] (batched decode, sequences at different positions),
//                       no table: grid rows, block min(half, 1024).

#include "common.cuh"

namespace {

__device__ __forceinline__ void rope_angle(int position, int j, int head_dim, double theta, float* cos_out, float* sin_out)
{
    const double angle = position / pow(theta, 2.0 * j / head_dim);
    double s, c;
    sincos(angle, &s, &c);
    *cos_out = (float)c;
    *sin_out = (float)s;
}

__device__ __forceinline__ void rotate_heads(float* row, int rotated_heads, int head_dim, int j, float cos_v, float sin_v)
{
    const int half = head_dim / 2;
    for (int h = 0; h < rotated_heads; h++)
    {
        float* x = row + (long long)h * head_dim;
        const float x1 = x[j], x2 = x[j + half];
        x[j] = __fmul_rn(x1, cos_v) - __fmul_rn(x2, sin_v);
        x[j + half] = __fmul_rn(x2, cos_v) + __fmul_rn(x1, sin_v);
    }
}

}  // namespace

extern "C" __global__ void rope_table_f32(float* table, int position0, int count, int head_dim, double theta)
{
    const int i = blockIdx.x, half = head_dim / 2;
    for (int j = threadIdx.x; j < half; j += blockDim.x)
        rope_angle(position0 + i, j, head_dim, theta, &table[(long long)i * head_dim + j], &table[(long long)i * head_dim + half + j]);
}

extern "C" __global__ void rope_apply_f32(float* qkv, const float* table, int rows, int row_stride, int rotated_heads, int head_dim)
{
    const int r = blockIdx.x, half = head_dim / 2;
    for (int j = threadIdx.x; j < half; j += blockDim.x)
        rotate_heads(qkv + (long long)r * row_stride, rotated_heads, head_dim, j, table[(long long)r * head_dim + j],
                     table[(long long)r * head_dim + half + j]);
}

extern "C" __global__ void rope_positions_f32(float* qkv, const int* positions, int rows, int row_stride, int rotated_heads,
                                              int head_dim, double theta)
{
    const int r = blockIdx.x, half = head_dim / 2;
    for (int j = threadIdx.x; j < half; j += blockDim.x)
    {
        float c, s;
        rope_angle(positions[r], j, head_dim, theta, &c, &s);
        rotate_heads(qkv + (long long)r * row_stride, rotated_heads, head_dim, j, c, s);
    }
}
