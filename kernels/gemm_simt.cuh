// FP32 SIMT tile GEMM shared by quant_matmul.cu (linear_f32w_gemm) and patch_embed.cu:
//   C[m, n] = Σ_k A(m, k) · W[n, k], then epilogue(m, n, C[m, n]).
// A is read through a functor (dense rows or an implicit im2col); W is row-major [N, K] of float or __half.
// Block 256 threads computes a 128×128 tile (8×8 per thread, rows ty + 16i, columns tx + 16j), k-step 8,
// with the next k-step's global loads issued before the current one is multiplied (register double buffer).
// FP32 throughout: this is the path that matches the CPU reference to rounding.
#pragma once

#include "common.cuh"

namespace gemm_simt {

constexpr int kTile = 128, kStep = 8, kThreads = 256, kPad = 4;
constexpr int kLoadsPerThread = kTile * kStep / kThreads;  // 4 elements of A and 4 of W per thread per k-step

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }

template <typename WeightT, typename LoadA, typename Epilogue>
__device__ __forceinline__ void run(int M, int N, int K, LoadA load_a, const WeightT* __restrict__ w, Epilogue epilogue)
{
    __shared__ float a_tile[kStep][kTile + kPad];  // k-major so a thread's 8 rows are one broadcast read each
    __shared__ float w_tile[kStep][kTile + kPad];

    const int m0 = blockIdx.y * kTile, n0 = blockIdx.x * kTile;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;

    float a_next[kLoadsPerThread], w_next[kLoadsPerThread];
    auto fetch = [&](int k0) {
#pragma unroll
        for (int i = 0; i < kLoadsPerThread; i++)
        {
            const int e = threadIdx.x + i * kThreads, r = e / kStep, k = k0 + e % kStep;
            a_next[i] = m0 + r < M && k < K ? load_a(m0 + r, k) : 0.f;
            w_next[i] = n0 + r < N && k < K ? to_float(w[(long long)(n0 + r) * K + k]) : 0.f;
        }
    };
    auto stash = [&]() {
#pragma unroll
        for (int i = 0; i < kLoadsPerThread; i++)
        {
            const int e = threadIdx.x + i * kThreads, r = e / kStep, k = e % kStep;
            a_tile[k][r] = a_next[i];
            w_tile[k][r] = w_next[i];
        }
    };

    float c[8][8];
#pragma unroll
    for (int i = 0; i < 8; i++)
#pragma unroll
        for (int j = 0; j < 8; j++) c[i][j] = 0.f;

    fetch(0);
    for (int k0 = 0; k0 < K; k0 += kStep)
    {
        stash();
        __syncthreads();
        if (k0 + kStep < K) fetch(k0 + kStep);
#pragma unroll
        for (int k = 0; k < kStep; k++)
        {
            float a[8], b[8];
#pragma unroll
            for (int i = 0; i < 8; i++) { a[i] = a_tile[k][ty + 16 * i]; b[i] = w_tile[k][tx + 16 * i]; }
#pragma unroll
            for (int i = 0; i < 8; i++)
#pragma unroll
                for (int j = 0; j < 8; j++) c[i][j] = fmaf(a[i], b[j], c[i][j]);
        }
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < 8; i++)
    {
        const int m = m0 + ty + 16 * i;
        if (m >= M) continue;
#pragma unroll
        for (int j = 0; j < 8; j++)
        {
            const int n = n0 + tx + 16 * j;
            if (n < N) epilogue(m, n, c[i][j]);
        }
    }
}

}  // namespace gemm_simt
