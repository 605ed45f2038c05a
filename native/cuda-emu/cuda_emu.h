// cuda_emu.h — the CUDA device language, as far as kernels/*.cu use it, for compiling those kernels as ordinary C++
// that runs on the CPU (see README.md). Every CUDA thread is a fiber; a block's fibers run on the launching OS thread,
// one block after another, so `__shared__` (a function-local static here) is per block as on a GPU. Barriers and warp
// operations switch fibers: __syncthreads waits for every live thread of the block, the warp operations (shuffles,
// __syncwarp, mma.sync, ldmatrix) for every live lane of the warp. A kernel that reaches different barriers in
// different threads of one warp or block is reported as a deadlock instead of hanging.
//
// This is for correctness on small shapes (CI without a GPU), not for speed, and it is not a model of the memory system:
// it cannot show races that the real hardware would expose, nor timing.
#pragma once

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <cstddef>
#include <type_traits>

// ---- qualifiers ----
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __restrict__ __restrict
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static

// ---- vector types (CUDA's alignment, so reinterpret_casts of 16-byte loads keep their meaning) ----
struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(4) char4 { signed char x, y, z, w; };
struct alignas(8) int2 { int x, y; };
struct alignas(16) int4 { int x, y, z, w; };
struct alignas(8) uint2 { unsigned x, y; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct uint3 { unsigned x, y, z; };
struct dim3 { unsigned x = 1, y = 1, z = 1; };

inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

namespace fastmm_emu {

/// The running CUDA thread (a fiber) and the launch it belongs to.
struct ThreadContext
{
    uint3 thread_idx;
    int warp, lane;
};
extern thread_local ThreadContext* current;
extern thread_local uint3 block_idx;
extern thread_local dim3 block_dim, grid_dim;

void sync_block();
void sync_warp();
/// The running launch's dynamic shared memory (`extern __shared__` on a GPU; kernels/common.cuh's
/// FASTMM_DYNAMIC_SHARED) and its size in bytes.
unsigned char* dynamic_shared();
unsigned dynamic_shared_bytes();
/// __trap(): the launch fails with `why` (the calling thread should return at once, as it would stop on a GPU).
void fail_launch(const char* why);
/// Every live lane of the calling warp publishes `value`; returns the value lane `source(lane)` published.
uint64_t warp_exchange(uint64_t value, int source_lane);
/// The calling warp's scratch, valid between two sync_warp calls that every live lane makes: 32 lanes × words.
uint64_t* warp_scratch();

template <class T>
inline uint64_t to_bits(T v)
{
    static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
    uint64_t b = 0;
    memcpy(&b, &v, sizeof(T));
    return b;
}
template <class T>
inline T from_bits(uint64_t b)
{
    T v;
    memcpy(&v, &b, sizeof(T));
    return v;
}

}  // namespace fastmm_emu

#define threadIdx (fastmm_emu::current->thread_idx)
#define blockIdx (fastmm_emu::block_idx)
#define blockDim (fastmm_emu::block_dim)
#define gridDim (fastmm_emu::grid_dim)
#define warpSize 32

inline void __syncthreads() { fastmm_emu::sync_block(); }
inline void __syncwarp(unsigned = 0xffffffffu) { fastmm_emu::sync_warp(); }

template <class T>
inline T __shfl_sync(unsigned, T v, int src_lane, int = 32)
{
    return fastmm_emu::from_bits<T>(fastmm_emu::warp_exchange(fastmm_emu::to_bits(v), src_lane & 31));
}
template <class T>
inline T __shfl_xor_sync(unsigned, T v, int lane_mask, int = 32)
{
    return fastmm_emu::from_bits<T>(fastmm_emu::warp_exchange(fastmm_emu::to_bits(v), (fastmm_emu::current->lane ^ lane_mask) & 31));
}
template <class T>
inline T __shfl_up_sync(unsigned, T v, unsigned delta, int = 32)
{
    const int src = fastmm_emu::current->lane - (int)delta;
    return fastmm_emu::from_bits<T>(fastmm_emu::warp_exchange(fastmm_emu::to_bits(v), src < 0 ? fastmm_emu::current->lane : src));
}
template <class T>
inline T __shfl_down_sync(unsigned, T v, unsigned delta, int = 32)
{
    const int src = fastmm_emu::current->lane + (int)delta;
    return fastmm_emu::from_bits<T>(fastmm_emu::warp_exchange(fastmm_emu::to_bits(v), src > 31 ? fastmm_emu::current->lane : src));
}

// ---- integer and float intrinsics ----
template <class A, class B>
inline std::common_type_t<A, B> min(A a, B b) { return b < a ? b : a; }
template <class A, class B>
inline std::common_type_t<A, B> max(A a, B b) { return a < b ? b : a; }

// Read-only loads through the texture path on a GPU; a plain load here.
template <class T>
inline T __ldg(const T* p) { return *p; }
// Loads cached in L2 only (not L1) on a GPU; a plain load here.
template <class T>
inline T __ldcg(const T* p) { return *p; }

inline int __dp4a(int a, int b, int c)
{
    for (int i = 0; i < 4; i++) c += (int)(int8_t)(a >> (8 * i)) * (int)(int8_t)(b >> (8 * i));
    return c;
}
inline unsigned __dp4a(unsigned a, unsigned b, unsigned c)
{
    for (int i = 0; i < 4; i++) c += ((a >> (8 * i)) & 0xffu) * ((b >> (8 * i)) & 0xffu);
    return c;
}

// The CPU's default rounding is round-to-nearest-even, as these intrinsics ask; volatile keeps the compiler from
// contracting them into fused multiply-adds, which is what the _rn forms promise on the GPU.
inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
inline float __fadd_rn(float a, float b) { volatile float r = a + b; return r; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }  // one rounding, as on the GPU
inline float __fdiv_rn(float a, float b) { volatile float r = a / b; return r; }
inline float __frcp_rn(float a) { volatile float r = 1.0f / a; return r; }
inline int __float2int_rn(float v) { return isnan(v) ? 0 : v >= 2147483647.f ? 2147483647 : v <= -2147483648.f ? (-2147483647 - 1) : (int)nearbyintf(v); }
inline unsigned __float_as_uint(float v) { return fastmm_emu::from_bits<unsigned>(fastmm_emu::to_bits(v)); }
inline int __float_as_int(float v) { return fastmm_emu::from_bits<int>(fastmm_emu::to_bits(v)); }
inline float __uint_as_float(unsigned v) { return fastmm_emu::from_bits<float>(fastmm_emu::to_bits(v)); }
inline float __int_as_float(int v) { return fastmm_emu::from_bits<float>(fastmm_emu::to_bits(v)); }
inline float __expf(float v) { return expf(v); }
inline float rsqrtf(float v) { return 1.0f / sqrtf(v); }

// Blocks run one at a time, so every write of an earlier block is visible to a later one without a fence.
inline void __threadfence() {}

// ---- atomics: blocks run one at a time on one OS thread and fibers switch only at barriers, so plain updates are atomic ----
template <class T>
inline T atomicAdd(T* p, T v) { T old = *p; *p = old + v; return old; }
template <class T>
inline T atomicMax(T* p, T v) { T old = *p; if (old < v) *p = v; return old; }
template <class T>
inline T atomicMin(T* p, T v) { T old = *p; if (v < old) *p = v; return old; }

// ---- fp16: IEEE binary16, conversions rounding to nearest even ----
struct __half
{
    uint16_t bits;
};
struct __half2
{
    __half x, y;
};

namespace fastmm_emu {
inline uint16_t float_to_half_bits(float f)
{
    const uint32_t x = __float_as_uint(f), sign = (x >> 16) & 0x8000u;
    const uint32_t abs = x & 0x7fffffffu;
    if (abs >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u));  // inf, nan
    if (abs >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);                                     // rounds past 65504
    if (abs < 0x38800000u)                                                                          // half subnormal or zero
    {
        // value / 2^-24 rounded to an integer, ties to even: the float unit does it exactly.
        const float scaled = __uint_as_float(abs) * 16777216.0f;
        return (uint16_t)(sign | (uint32_t)nearbyintf(scaled));
    }
    const uint32_t mantissa = abs & 0x7fffffu;
    const uint32_t exponent = (abs >> 23) - 127 + 15;
    uint32_t h = (exponent << 10) | (mantissa >> 13);
    const uint32_t rest = mantissa & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++;  // may carry into the exponent: still correct
    return (uint16_t)(sign | h);
}

inline float half_bits_to_float(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
    if (exponent == 0) return (sign ? -1.f : 1.f) * (float)mantissa * 5.9604644775390625e-8f;  // 2^-24
    if (exponent == 31) return __uint_as_float(sign | 0x7f800000u | (mantissa << 13));
    return __uint_as_float(sign | ((exponent + 112) << 23) | (mantissa << 13));
}
}  // namespace fastmm_emu

inline __half __float2half(float f) { return __half{fastmm_emu::float_to_half_bits(f)}; }
inline __half __float2half_rn(float f) { return __float2half(f); }
inline float __half2float(__half h) { return fastmm_emu::half_bits_to_float(h.bits); }
inline __half2 __floats2half2_rn(float lo, float hi) { return __half2{__float2half(lo), __float2half(hi)}; }
inline __half2 __float22half2_rn(float2 v) { return __floats2half2_rn(v.x, v.y); }
inline float2 __half22float2(__half2 h) { return make_float2(__half2float(h.x), __half2float(h.y)); }
inline float __low2float(__half2 h) { return __half2float(h.x); }
inline float __high2float(__half2 h) { return __half2float(h.y); }

// ---- address spaces: one flat host address space here ----
inline size_t __cvta_generic_to_shared(const void* p) { return (size_t)p; }

// ---- tensor-core and matrix-load instructions that kernels/common.cuh wraps (asm there, these here) ----
namespace fastmm_emu {
/// mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 with the fragment layout of the PTX ISA (lane = 4g + t).
void mma_m16n8k16_f16_f32(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1);
/// cp.async.cg.shared.global [dst], [src], bytes, src_bytes: the destination is poisoned (0xff bytes: NaN as f16 and f32)
/// at issue and written when a cp_async_wait lets the copy's group complete, so reading it too early shows.
void cp_async(void* dst, const void* src, int bytes, int src_bytes);
/// cp.async.commit_group
void cp_async_commit();
/// cp.async.wait_group n: complete this thread's groups until at most n are in flight.
void cp_async_wait(int n);
/// ldmatrix.sync.aligned.m8n8.x4.shared.b16: lane i gives the (16-byte aligned) address of row i % 8 of matrix i / 8.
void ldmatrix_x4(uint32_t r[4], const void* row_address);
/// ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16: lane i gives the address of row i % 8 of matrix i / 8.
void ldmatrix_x4_trans(uint32_t r[4], const void* row_address);
}  // namespace fastmm_emu
