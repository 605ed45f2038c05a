// rope.cu — rotary position embedding, HF rotate_half convention (CPU reference: CpuBackend.RopeTable/RopeInPlace).
// For a head vector x of head_dim D (half = D/2) at position p, with angle_j = p / theta^(2j/D):
//   x[j] ← x[j]·cos − x[j+half]·sin,   x[j+half] ← x[j+half]·cos + x[j]·sin,   j < half.
// Rows are fused QKV rows [rows, row_stride]: the first `rotated_heads` heads (q heads then k heads) are rotated in
// place, v is not. Angles are computed in double, as the CPU reference, and rounded to float once.
// Entry points and launch configuration:
//   rope_apply_f32      rotate with table row r for row r (IBackend.RopeInPlace; the host builds the table [rows, D],
//                       cos in the first half, sin in the second, as BackendArgs.RopeTable): grid rows, block min(half, 1024).
//                       With slots != null it then does kv_append_f32's work for the row (the backend fuses the two in
//                       a recorded decode step).
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

extern "C" __global__ void rope_apply_f32(float* qkv, const float* table, int rows, int row_stride, int rotated_heads, int head_dim,
                                          const int* slots, int k_offset, int v_offset, int kv_width, float* k_pool, float* v_pool)
{
    const int r = blockIdx.x, half = head_dim / 2;
    float* row = qkv + (long long)r * row_stride;
    for (int j = threadIdx.x; j < half; j += blockDim.x)
        rotate_heads(row, rotated_heads, head_dim, j, table[(long long)r * head_dim + j], table[(long long)r * head_dim + half + j]);
    if (slots == nullptr) return;
    // Fused kv_append_f32: the rotated k and the v of this row into its cache slot.
    __syncthreads();
    const long long dst = (long long)slots[r] * kv_width;
    for (int c = threadIdx.x; c < kv_width; c += blockDim.x)
    {
        k_pool[dst + c] = row[k_offset + c];
        v_pool[dst + c] = row[v_offset + c];
    }
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
