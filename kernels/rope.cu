// rope.cu — rotary position embedding, HF rotate_half convention (CPU reference: CpuBackend.RopeTable/RopeInPlace).
// For a head vector x of head_dim D (half = D/2) at position p, with angle_j = p / theta^(2j/D):
//   x[j] ← x[j]·cos − x[j+half]·sin,   x[j+half] ← x[j+half]·cos + x[j]·sin,   j < half.
// Rows are fused QKV rows [rows, row_stride]: the first `rotated_heads` heads (q heads then k heads) are rotated in
// place, v is not. Angles are computed in double, as the CPU reference, and rounded to float once.
// Entry points and launch configuration:
//   rope_apply_f32      rotate with table row r for row r (IBackend.RopeInPlace; the host builds the table [rows, D],
//                       cos in the first half, sin in the second, as BackendArgs.RopeTable): grid rows, block
//                       min(rotated_heads·half rounded up to 32, 1024), one thread per (head, j) pair so that a decode
//                       step's row costs one round trip to memory, not one per head. With slots != null it also does
//                       kv_append_f32's work for the row (the backend fuses the two in a recorded decode step): each
//                       rotated element that lies in the K (or V) range goes to the pool from the thread that rotated
//                       it, and the elements no thread rotates are copied as they are, so no barrier is needed.
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
    const int r = blockIdx.x, half = head_dim / 2, rotated_end = rotated_heads * head_dim;
    float* row = qkv + (long long)r * row_stride;
    const float* angles = table + (long long)r * head_dim;
    const long long dst = slots != nullptr ? (long long)slots[r] * kv_width : 0;
    // Fused kv_append_f32: element p of the row to the K and/or V pool when it lies in their ranges.
    auto to_pools = [&](int p, float value) {
        if (p >= k_offset && p < k_offset + kv_width) k_pool[dst + p - k_offset] = value;
        if (p >= v_offset && p < v_offset + kv_width) v_pool[dst + p - v_offset] = value;
    };
    for (int e = threadIdx.x; e < rotated_heads * half; e += blockDim.x)
    {
        const int h = e / half, j = e % half, p1 = h * head_dim + j, p2 = p1 + half;
        const float cos_v = angles[j], sin_v = angles[half + j], x1 = row[p1], x2 = row[p2];
        const float y1 = __fmul_rn(x1, cos_v) - __fmul_rn(x2, sin_v), y2 = __fmul_rn(x2, cos_v) + __fmul_rn(x1, sin_v);
        row[p1] = y1;
        row[p2] = y2;
        if (slots != nullptr) { to_pools(p1, y1); to_pools(p2, y2); }
    }
    if (slots == nullptr) return;
    // K and V elements past the rotated heads (V, normally) are read by no other thread's rotation: copied as they are.
    for (int c = threadIdx.x; c < kv_width; c += blockDim.x)
    {
        if (k_offset + c >= rotated_end) k_pool[dst + c] = row[k_offset + c];
        if (v_offset + c >= rotated_end) v_pool[dst + c] = row[v_offset + c];
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
