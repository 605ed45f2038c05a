// sampling.cu — next-token choice on the device, as FastMM.Runtime.Generation.Sampler (HF generate()) does it,
// minus the repetition penalty (apply it to the logits first):
//   argmax_rows_f32   greedy: the first maximum of each row (torch.argmax).
//   sample_rows_f32   logits / temperature, then top-k (keep logits ≥ the k-th largest, ties stay; top_k ≤ 0 = off),
//                     then top-p (0 < top_p; rank by (logit, id) descending; a token survives iff the mass ranked above it is
//                     < top_p · total; top_p ≥ 1 = off), then an inverse-CDF draw in token-id order with the
//                     caller's uniform[r] ∈ [0, 1): the same token the CPU sampler picks for the same number
//                     (up to summation order; weights exp(l − max) in float, sums in double).
// out[r] is the token id, or −1 when a logit is NaN or +inf, −2 when every logit is −inf (the host reports both).
// Launch: grid rows, block 1024 for both. sample_rows_f32 finds the top-k and top-p cuts without sorting, by radix
// select (8-bit digits, shared-memory histograms of counts / of probability mass), so it reads the row ~16 times.

#include "common.cuh"

namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / FASTMM_WARP;
constexpr int kDigits = 256;

// Float bits made monotonic as unsigned integers (−0 folded into +0, which compare equal).
__device__ __forceinline__ uint32_t ordered_bits(float v)
{
    const uint32_t b = __float_as_uint(v + 0.f);
    return (b & 0x80000000u) ? ~b : b | 0x80000000u;
}

// Exclusive prefix sum over the block in thread order; also returns the total.
__device__ double block_exclusive_scan(double v, double* warp_totals, double* total)
{
    const int lane = threadIdx.x % FASTMM_WARP, warp = threadIdx.x / FASTMM_WARP;
    double inclusive = v;
#pragma unroll
    for (int o = 1; o < FASTMM_WARP; o <<= 1)
    {
        const double n = __shfl_up_sync(FASTMM_FULL_MASK, inclusive, o);
        if (lane >= o) inclusive += n;
    }
    if (lane == FASTMM_WARP - 1) warp_totals[warp] = inclusive;
    __syncthreads();
    if (warp == 0)
    {
        double w = warp_totals[lane], wi = w;
#pragma unroll
        for (int o = 1; o < FASTMM_WARP; o <<= 1)
        {
            const double n = __shfl_up_sync(FASTMM_FULL_MASK, wi, o);
            if (lane >= o) wi += n;
        }
        warp_totals[lane] = wi - w;  // exclusive per-warp offsets
        if (lane == FASTMM_WARP - 1) *total = wi;
    }
    __syncthreads();
    const double result = warp_totals[warp] + inclusive - v;
    __syncthreads();
    return result;
}

struct Row
{
    const float* logits;
    int vocab;
    float temperature;
    // Divide (not multiply by 1/T) as HF does.
    __device__ __forceinline__ float scaled(int i) const { return temperature != 1.f ? logits[i] / temperature : logits[i]; }
};

}  // namespace

extern "C" __global__ void __launch_bounds__(kThreads) argmax_rows_f32(const float* logits, int rows, int vocab, int* out)
{
    __shared__ float best_value_s[kWarps];
    __shared__ int best_index_s[kWarps];
    __shared__ int invalid_s;
    const float* row = logits + (long long)blockIdx.x * vocab;
    if (threadIdx.x == 0) invalid_s = 0;
    __syncthreads();
    float best = -INFINITY;
    int index = vocab;
    for (int i = threadIdx.x; i < vocab; i += kThreads)
    {
        const float v = row[i];
        if (isnan(v)) invalid_s = 1;
        if (v > best || index == vocab) { best = v; index = i; }  // each thread's indices rise: the first max wins
    }
    // Lower index wins ties across threads.
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
    {
        const float ov = __shfl_xor_sync(FASTMM_FULL_MASK, best, o);
        const int oi = __shfl_xor_sync(FASTMM_FULL_MASK, index, o);
        if (ov > best || (ov == best && oi < index)) { best = ov; index = oi; }
    }
    if (threadIdx.x % FASTMM_WARP == 0) { best_value_s[threadIdx.x / FASTMM_WARP] = best; best_index_s[threadIdx.x / FASTMM_WARP] = index; }
    __syncthreads();
    if (threadIdx.x == 0)
    {
        for (int w = 1; w < kWarps; w++)
            if (best_value_s[w] > best_value_s[0] || (best_value_s[w] == best_value_s[0] && best_index_s[w] < best_index_s[0]))
            { best_value_s[0] = best_value_s[w]; best_index_s[0] = best_index_s[w]; }
        out[blockIdx.x] = invalid_s ? -1 : best_index_s[0];
    }
}

extern "C" __global__ void __launch_bounds__(kThreads) sample_rows_f32(
    const float* logits, int rows, int vocab, float temperature, int top_k, float top_p, const float* uniform, int* out)
{
    __shared__ float scratch[32];
    __shared__ unsigned int count_hist[kDigits];
    __shared__ double mass_hist[kDigits];
    __shared__ double warp_totals[kWarps];
    __shared__ double total_s;
    __shared__ uint32_t chosen_digit_s;
    __shared__ double chosen_above_s;
    __shared__ int invalid_s, finite_s, last_survivor_s, drawn_s;

    const Row row{logits + (long long)blockIdx.x * vocab, vocab, temperature};
    if (threadIdx.x == 0) { invalid_s = 0; finite_s = 0; last_survivor_s = -1; drawn_s = -1; }
    __syncthreads();

    // ---- max over finite logits; NaN / +inf are errors, −inf tokens are out ----
    float max_v = -INFINITY;
    int finite = 0;
    for (int i = threadIdx.x; i < vocab; i += kThreads)
    {
        const float v = row.scaled(i);
        if (isnan(v) || v == INFINITY) invalid_s = 1;
        else if (v != -INFINITY) { finite++; max_v = fmaxf(max_v, v); }
    }
    max_v = block_max(max_v, scratch);
    atomicAdd(&finite_s, finite);
    __syncthreads();
    if (invalid_s || finite_s == 0)
    {
        if (threadIdx.x == 0) out[blockIdx.x] = invalid_s ? -1 : -2;
        return;
    }

    // ---- top-k: radix-select the k-th largest key (4 passes over 8-bit digits, counting) ----
    uint32_t key_floor = 0;  // candidates are finite tokens with ordered_bits(logit) ≥ key_floor
    if (top_k > 0 && top_k < finite_s)
    {
        uint32_t prefix = 0, prefix_mask = 0;
        unsigned int remaining = top_k;
        for (int shift = 24; shift >= 0; shift -= 8)
        {
            for (int d = threadIdx.x; d < kDigits; d += kThreads) count_hist[d] = 0;
            __syncthreads();
            for (int i = threadIdx.x; i < vocab; i += kThreads)
            {
                const float v = row.scaled(i);
                const uint32_t key = ordered_bits(v);
                if (v != -INFINITY && (key & prefix_mask) == prefix) atomicAdd(&count_hist[(key >> shift) & 0xff], 1u);
            }
            __syncthreads();
            if (threadIdx.x == 0)
            {
                unsigned int above = 0;
                int d = kDigits - 1;
                for (; d > 0 && above + count_hist[d] < remaining; d--) above += count_hist[d];
                chosen_digit_s = d;
                remaining -= above;
            }
            __syncthreads();
            prefix |= chosen_digit_s << shift;
            prefix_mask |= 0xffu << shift;
            __syncthreads();
        }
        key_floor = prefix;
    }
    auto is_candidate = [&](float v) { return v != -INFINITY && ordered_bits(v) >= key_floor; };

    // ---- top-p: radix-select the lowest 64-bit rank key (logit bits, id) whose mass ranked above is < limit ----
    unsigned long long rank_floor = 0;
    if (top_p < 1.f)
    {
        double mass = 0;
        for (int i = threadIdx.x; i < vocab; i += kThreads)
        {
            const float v = row.scaled(i);
            if (is_candidate(v)) mass += expf(v - max_v);
        }
        block_exclusive_scan(mass, warp_totals, &total_s);
        const double limit = (double)top_p * total_s;
        unsigned long long prefix = 0, prefix_mask = 0;
        double above_prefix = 0;
        for (int shift = 56; shift >= 0; shift -= 8)
        {
            for (int d = threadIdx.x; d < kDigits; d += kThreads) { count_hist[d] = 0; mass_hist[d] = 0; }
            __syncthreads();
            for (int i = threadIdx.x; i < vocab; i += kThreads)
            {
                const float v = row.scaled(i);
                if (!is_candidate(v)) continue;
                const unsigned long long key = ((unsigned long long)ordered_bits(v) << 32) | (uint32_t)i;
                if ((key & prefix_mask) != prefix) continue;
                const int d = (int)((key >> shift) & 0xff);
                atomicAdd(&count_hist[d], 1u);
                atomicAdd(&mass_hist[d], (double)expf(v - max_v));
            }
            __syncthreads();
            if (threadIdx.x == 0)
            {
                // Walk digits from the top: the lowest non-empty digit whose mass above is still < limit holds the cut.
                double above = above_prefix, chosen_above = above_prefix;
                int chosen = -1;
                for (int d = kDigits - 1; d >= 0; d--)
                {
                    if (count_hist[d] == 0) continue;
                    if (above >= limit) break;
                    chosen = d;
                    chosen_above = above;
                    above += mass_hist[d];
                }
                chosen_digit_s = (uint32_t)chosen;
                chosen_above_s = chosen_above;
            }
            __syncthreads();
            prefix |= (unsigned long long)chosen_digit_s << shift;
            prefix_mask |= 0xffull << shift;
            above_prefix = chosen_above_s;
            __syncthreads();
        }
        rank_floor = prefix;
    }
    auto survives = [&](float v, int i) {
        return is_candidate(v) && (((unsigned long long)ordered_bits(v) << 32) | (uint32_t)i) >= rank_floor;
    };

    // ---- inverse-CDF draw in id order: each thread owns a contiguous slice of ids ----
    const int per_thread = (vocab + kThreads - 1) / kThreads;
    const int begin = min(vocab, threadIdx.x * per_thread), end = min(vocab, begin + per_thread);
    double local = 0;
    int last = -1;
    for (int i = begin; i < end; i++)
    {
        const float v = row.scaled(i);
        if (survives(v, i)) { local += expf(v - max_v); last = i; }
    }
    const double before = block_exclusive_scan(local, warp_totals, &total_s);
    if (last >= 0) atomicMax(&last_survivor_s, last);
    const double target = (double)uniform[blockIdx.x] * total_s;
    if (local > 0 && target >= before && target < before + local)
    {
        double cumulative = before;
        int pick = last;  // summation-order rounding may leave the target just past the slice's own sum
        for (int i = begin; i < end; i++)
        {
            const float v = row.scaled(i);
            if (!survives(v, i)) continue;
            cumulative += expf(v - max_v);
            if (target < cumulative) { pick = i; break; }
        }
        drawn_s = pick;
    }
    __syncthreads();
    // Rounding may leave the target past the last cumulative sum: the last survivor catches it, as on the CPU.
    if (threadIdx.x == 0) out[blockIdx.x] = drawn_s >= 0 ? drawn_s : last_survivor_s;
}
