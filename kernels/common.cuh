// Shared device helpers for the kernels/*.cu families: warp/block reductions, the activation functions of
// FastMM.Activation (same numbering as the C# enum), and the mma.sync m16n8k16 f16 tile used by the
// tensor-core kernels. Header only; every .cu file is compiled on its own. The inline-PTX helpers have a
// FASTMM_CUDA_EMU branch for the CPU emulator (native/cuda-emu), which implements those instructions in C++.
#pragma once

#include <cuda_fp16.h>
#include <stdint.h>

#define FASTMM_WARP 32
#define FASTMM_FULL_MASK 0xffffffffu

// ---- FastMM.Activation, numbered as the C# enum: None, Gelu, GeluTanh, QuickGelu, Silu, Relu ----
enum FastmmActivation { ACT_NONE = 0, ACT_GELU = 1, ACT_GELU_TANH = 2, ACT_QUICK_GELU = 3, ACT_SILU = 4, ACT_RELU = 5 };

// 1 + exp(−a) rounded on its own (not folded into expf's last multiply): the CPU's two roundings, and the same bits
// in every kernel that inlines it (swiglu_f32 and the GEMV that takes over its SwiGLU must agree exactly).
__device__ __forceinline__ float sigmoid_gated(float x, float gate_argument) { return x / __fadd_rn(1.0f, expf(-gate_argument)); }

// Accurate expf/erfcf (not the __ intrinsics): the CPU backend is the reference and uses full-precision math.
__device__ __forceinline__ float apply_activation(float x, int act)
{
    switch (act)
    {
        case ACT_GELU: return 0.5f * x * erfcf(-x * 0.70710678118654752f);  // 1 + erf(z) = erfc(-z): no cancellation for x < 0
        case ACT_GELU_TANH: return sigmoid_gated(x, 2.0f * 0.7978845608028654f * (x + 0.044715f * x * x * x));  // 0.5(1+tanh u) = sigmoid(2u)
        case ACT_QUICK_GELU: return sigmoid_gated(x, 1.702f * x);
        case ACT_SILU: return sigmoid_gated(x, x);
        case ACT_RELU: return fmaxf(x, 0.0f);
        default: return x;
    }
}

// ---- reductions ----
__device__ __forceinline__ float warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FASTMM_FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FASTMM_FULL_MASK, v, o));
    return v;
}

// ---- q8_1 activations (decode GEMV input): the CPU's QuantGemm rounding ----
// A warp holds one 32-block of a row, value v per lane: xq = round_half_even(v · (1/d)), d = max|v| / 127, both
// roundings IEEE as the CPU's QuantGemm.QuantizeRow (a product by the reciprocal, not a division: the two differ for
// values near a midpoint); d = 0 and xq = 0 when 1/d overflows (an all-zero or denormal block), as there. ds = (d, d·Σq).
// Every producer (quantize_activations_q8_1, and the norms, SwiGLU and the attention merge when asked to quantize
// their output) goes through this one function, so they give identical bytes. All 32 lanes must call it.
__device__ __forceinline__ void quantize_q8_1_lane(float v, int8_t* xq_out, float2* block_ds)
{
    const float amax = warp_max(fabsf(v));
    float d = __fdiv_rn(amax, 127.f), id = __frcp_rn(d);
    if (isinf(id)) { d = 0.f; id = 0.f; }
    const int q = __float2int_rn(__fmul_rn(v, id));
    *xq_out = (int8_t)q;
    const float qsum = warp_sum((float)q);
    if (threadIdx.x % FASTMM_WARP == 0) *block_ds = make_float2(d, d * qsum);
}

// Sum over the whole block (blockDim.x a multiple of 32, ≤ 1024); every thread gets the result.
// `scratch` holds 32 floats; the trailing barrier lets the caller reuse it immediately.
__device__ __forceinline__ float block_sum(float v, float* scratch)
{
    const int lane = threadIdx.x % FASTMM_WARP, warp = threadIdx.x / FASTMM_WARP, warps = blockDim.x / FASTMM_WARP;
    v = warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.0f;
    v = warp_sum(v);
    __syncthreads();
    return v;
}

__device__ __forceinline__ float block_max(float v, float* scratch)
{
    const int lane = threadIdx.x % FASTMM_WARP, warp = threadIdx.x / FASTMM_WARP, warps = blockDim.x / FASTMM_WARP;
    v = warp_max(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : -INFINITY;
    v = warp_max(v);
    __syncthreads();
    return v;
}

// ---- f16 packing ----
__device__ __forceinline__ uint32_t pack_half2(float lo, float hi)
{
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
}

// Four floats → four halves stored as one 8-byte word (dst 8-byte aligned).
__device__ __forceinline__ void store_half4(__half* dst, float4 v)
{
    uint2 packed = make_uint2(pack_half2(v.x, v.y), pack_half2(v.z, v.w));
    *reinterpret_cast<uint2*>(dst) = packed;
}

// ---- tensor cores: D = A·B + D, A 16×16 row-major f16, B 16×8 column-major f16, D 16×8 f32 ----
// Fragment layout (PTX ISA, mma.m16n8k16, g = lane / 4, t = lane % 4):
//   a[0] = A[g][2t..2t+1]   a[1] = A[g+8][2t..2t+1]   a[2] = A[g][2t+8..2t+9]   a[3] = A[g+8][2t+8..2t+9]
//   b[0] = B[2t..2t+1][g]   b[1] = B[2t+8..2t+9][g]
//   d[0..1] = D[g][2t..2t+1]   d[2..3] = D[g+8][2t..2t+1]
__device__ __forceinline__ void mma_m16n8k16_f16_f32(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
{
#ifdef FASTMM_CUDA_EMU
    fastmm_emu::mma_m16n8k16_f16_f32(d, a, b0, b1);
#else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

// Four 8×8 b16 matrices from shared memory; lane i supplies the 16-byte aligned address of row i % 8 of matrix i / 8,
// and lane 4g + t receives elements (g, 2t..2t+1) of matrix j in r[j]: mma A fragments from a row-major tile, and
// B fragments from a tile stored n-major ([n][k], as an HF Linear weight).
__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const __half* smem_row)
{
#ifdef FASTMM_CUDA_EMU
    fastmm_emu::ldmatrix_x4(r, smem_row);
#else
    const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem_row));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
#endif
}

// ---- asynchronous global → shared copies (cp.async, sm_80+) ----
// 16 bytes from global `src` to shared `dst` (both 16-byte aligned), of which the first `src_bytes` are read and the
// rest zero-filled (0: sixteen zero bytes; `src` must still be a valid address). Copies issued by a thread since its
// last commit form one group; cp_async_wait<N>() returns once at most N of the thread's groups are still in flight.
// Other threads' copies are visible only after the wait and a barrier.
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, int src_bytes)
{
#ifdef FASTMM_CUDA_EMU
    fastmm_emu::cp_async(dst, src, 16, src_bytes);
#else
    const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(addr), "l"(src), "r"(src_bytes) : "memory");
#endif
}

__device__ __forceinline__ void cp_async_commit()
{
#ifdef FASTMM_CUDA_EMU
    fastmm_emu::cp_async_commit();
#else
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

template <int N>
__device__ __forceinline__ void cp_async_wait()
{
#ifdef FASTMM_CUDA_EMU
    fastmm_emu::cp_async_wait(N);
#else
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");  // no shared-memory access moves above the wait
#endif
}

// Four transposed 8×8 b16 matrices from shared memory; lane i supplies the address of row i % 8 of matrix i / 8.
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const __half* smem_row)
{
#ifdef FASTMM_CUDA_EMU
    fastmm_emu::ldmatrix_x4_trans(r, smem_row);
#else
    const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem_row));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
#endif
}

// ---- dynamic shared memory (the launch's sharedMemBytes; above 48 KB only after the host raises the function's
// CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, CudaKernelNames.DynamicSharedBytes) ----
#ifdef FASTMM_CUDA_EMU
#define FASTMM_DYNAMIC_SHARED(name) unsigned char* name = fastmm_emu::dynamic_shared()
#else
#define FASTMM_DYNAMIC_SHARED(name) extern __shared__ __align__(128) unsigned char name[]
#endif

// Bytes of dynamic shared memory this launch has: a kernel that finds less than its layout needs stops the launch
// (an error at the next synchronisation) rather than writing past the window.
__device__ __forceinline__ unsigned dynamic_shared_bytes()
{
#ifdef FASTMM_CUDA_EMU
    return fastmm_emu::dynamic_shared_bytes();
#else
    unsigned bytes;
    asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(bytes));
    return bytes;
#endif
}

// Stops the launch (the calling thread should return at once). On a GPU this is __trap(): the context is unusable
// afterwards and the host sees a generic launch failure at its next synchronisation (only the emulator reports `why`),
// so it is for mismatches that a correct host never causes, not for bad input.
__device__ __forceinline__ void fail_launch(const char* why)
{
#ifdef FASTMM_CUDA_EMU
    fastmm_emu::fail_launch(why);
#else
    (void)why;
    __trap();
#endif
}

// 2^x with one MUFU.EX2 (ex2.approx.ftz: relative error ~2^-22, subnormal results flushed to zero): the prefill
// attention's softmax, which is held to the F16 bound. exp2f proper adds range handling around the same instruction.
__device__ __forceinline__ float fast_exp2(float x)
{
#ifdef FASTMM_CUDA_EMU
    const float r = exp2f(x);
    return fabsf(r) < 1.17549435e-38f ? 0.f : r;
#else
    float r;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
    return r;
#endif
}
