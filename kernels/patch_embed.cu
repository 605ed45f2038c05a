// patch_embed.cu — IBackend.PatchEmbed: the patch-embedding convolution (kernel = stride = patch, no padding),
// fused with the conv bias and an optional position-embedding add (CPU reference: CpuBackend.PatchEmbed, an im2col
// followed by Linear; the position add is what the vision embeddings do next).
//   out[b, p, d] = bias[d] + pos[p, d] + Σ_{c, y, x} W[d, (c·P + y)·P + x] · pixels[b, c, py·P + y, px·P + x]
//   pixels [B, C, H, W] F32, W the conv weight [D, C, P, P] viewed as [D, C·P·P] (F32 or F16), p = py·(W/P) + px
//   in row-major patch order, out [B, (H/P)·(W/P), D]. bias and pos may be null.
// Launch: grid (ceil(D/128), ceil(B·patches/128)), block 256 — one FP32 SIMT GEMM (gemm_simt.cuh) whose A operand
// is the implicit im2col of the image, so no patch matrix is ever written to memory.

#include "common.cuh"
#include "gemm_simt.cuh"

namespace {

template <typename WeightT>
__device__ __forceinline__ void patch_embed(const float* __restrict__ pixels, const WeightT* __restrict__ w, const float* __restrict__ bias,
                                            const float* __restrict__ pos, float* __restrict__ out, int batch, int channels, int height,
                                            int width, int patch, int dim)
{
    const int grid_w = width / patch, patches = (height / patch) * grid_w, area = patch * patch;
    auto im2col = [&](int m, int k) {
        const int b = m / patches, p = m % patches, c = k / area, y = k % area / patch, x = k % patch;
        return pixels[(((long long)b * channels + c) * height + (p / grid_w) * patch + y) * width + (p % grid_w) * patch + x];
    };
    gemm_simt::run(batch * patches, dim, channels * area, im2col, w, [&](int m, int n, float v) {
        if (bias != nullptr) v += bias[n];
        if (pos != nullptr) v += pos[(long long)(m % patches) * dim + n];
        out[(long long)m * dim + n] = v;
    });
}

}  // namespace

extern "C" __global__ void __launch_bounds__(gemm_simt::kThreads) patch_embed_f32w(
    const float* pixels, const float* w, const float* bias, const float* pos, float* out, int batch, int channels, int height,
    int width, int patch, int dim)
{
    patch_embed(pixels, w, bias, pos, out, batch, channels, height, width, patch, dim);
}

extern "C" __global__ void __launch_bounds__(gemm_simt::kThreads) patch_embed_f16w(
    const float* pixels, const __half* w, const float* bias, const float* pos, float* out, int batch, int channels, int height,
    int width, int patch, int dim)
{
    patch_embed(pixels, w, bias, pos, out, batch, channels, height, width, patch, dim);
}
