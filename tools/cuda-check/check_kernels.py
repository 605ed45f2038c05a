#!/usr/bin/env python3
"""Runs every kernels/*.cu entry point on a GPU and compares it with a PyTorch reference.

For a GPU machine without .NET: needs PyTorch with CUDA and the fatbins (or PTX) that scripts/check-kernels.sh
writes to build/kernels. Kernels are loaded and launched through the driver API (ctypes on libcuda.so.1) in
PyTorch's context and stream, exactly as src/FastMM.Cuda launches them (same argument lists).

    python3 tools/cuda-check/check_kernels.py [build/kernels] [--bench]

Prints one line per check (max error against the reference, tolerance) and exits 1 if any check fails.
--bench adds timings for the performance targets (quantized decode GEMV, attention prefill at 4096, and SigLIP-B/16-512's
GEMMs and attention against PyTorch's own kernels on the same shapes);
--gemv-only runs just the GEMV timing (e.g. under ncu).
"""
import ctypes
import math
import os
import sys
import time

import torch

OUT = next((a for a in sys.argv[1:] if not a.startswith("--")), "build/kernels")
BENCH = "--bench" in sys.argv
GEMV_ONLY = "--gemv-only" in sys.argv  # just the GEMV timing (for a profiler run)
# FASTMM_CHECK_EMULATOR=build/cuda-emu/libfastmm_cuda_emu.so runs the checks (not the timings) without a GPU: the CUDA
# emulator serves the driver calls, and its "device memory" is host memory, so CPU tensors' addresses are passed.
EMULATOR = os.environ.get("FASTMM_CHECK_EMULATOR")
DEV = "cpu" if EMULATOR else "cuda"
torch.manual_seed(0)

cuda = ctypes.CDLL(EMULATOR or "libcuda.so.1")
if EMULATOR:
    if BENCH or GEMV_ONLY:
        sys.exit("check_kernels: the emulator has no timings to give (drop --bench / --gemv-only)")
    cuda.cuInit(0)
    torch.cuda.synchronize = lambda: None
    torch.cuda.current_stream = lambda: type("NullStream", (), {"cuda_stream": 0})()
    torch.cuda.get_device_name = lambda: "FastMM CUDA emulator (CPU)"
torch.zeros(1, device=DEV)  # creates PyTorch's primary context and makes it current
failures = []


def check_cu(result, what):
    if result != 0:
        name = ctypes.c_char_p()
        cuda.cuGetErrorName(result, ctypes.byref(name))
        raise RuntimeError(f"{what}: {name.value.decode()} ({result})")


_modules, _functions = {}, {}

# Dynamic shared memory per entry point, as the backend gives it (CudaKernelNames.DynamicSharedBytes): attention.cu's
# prefill kernels hold two stages of 64-key K and V tiles with rows of head_dim + 8 halves, and stop the launch with
# less.
DYNAMIC_SHARED = {f"attention_prefill_hd{d}": 2 * 2 * 64 * (d + 8) * 2 for d in (64, 128)}


def kernel(file, name):
    if name not in _functions:
        if file not in _modules:
            path = os.path.join(OUT, file + ".fatbin")
            if not os.path.exists(path):
                path = os.path.join(OUT, file + ".ptx")
            image = open(path, "rb").read() + b"\0"
            module = ctypes.c_void_p()
            check_cu(cuda.cuModuleLoadData(ctypes.byref(module), ctypes.c_char_p(image)), f"cuModuleLoadData({path})")
            _modules[file] = module
        f = ctypes.c_void_p()
        check_cu(cuda.cuModuleGetFunction(ctypes.byref(f), _modules[file], name.encode()), f"cuModuleGetFunction({name})")
        if DYNAMIC_SHARED.get(name, 0) > 48 * 1024:  # CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
            check_cu(cuda.cuFuncSetAttribute(f, 8, DYNAMIC_SHARED[name]), f"cuFuncSetAttribute({name})")
        _functions[name] = f
    return _functions[name]


class I64(int):
    pass


class F64(float):
    pass


def launch(file, name, grid, block, *args, sync=True):
    """Arguments: tensors (device pointers), None (null), int (int32), I64, float (float32), F64.
    sync=False leaves the launch queued (timing loops: a host synchronize per launch would be timed too)."""
    holders = []
    for a in args:
        if isinstance(a, torch.Tensor):
            holders.append(ctypes.c_uint64(a.data_ptr()))
        elif a is None:
            holders.append(ctypes.c_uint64(0))
        elif isinstance(a, I64):
            holders.append(ctypes.c_int64(a))
        elif isinstance(a, F64):
            holders.append(ctypes.c_double(a))
        elif isinstance(a, bool) or isinstance(a, int):
            holders.append(ctypes.c_int32(int(a)))
        elif isinstance(a, float):
            holders.append(ctypes.c_float(a))
        else:
            raise TypeError(type(a))
    params = (ctypes.c_void_p * len(holders))(*[ctypes.addressof(h) for h in holders])
    grid = (tuple(grid) + (1, 1))[:3] if isinstance(grid, tuple) else (grid, 1, 1)
    block = (tuple(block) + (1, 1))[:3] if isinstance(block, tuple) else (block, 1, 1)
    stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
    check_cu(cuda.cuLaunchKernel(kernel(file, name), *[ctypes.c_uint(g) for g in grid], *[ctypes.c_uint(b) for b in block],
                                 ctypes.c_uint(DYNAMIC_SHARED.get(name, 0)), stream, params, None), f"cuLaunchKernel({name})")
    if sync:
        torch.cuda.synchronize()


def report(what, actual, expected, tol):
    actual, expected = actual.double().cpu(), expected.double().cpu()
    if torch.isnan(actual).any():
        err = float("nan")
    else:
        err = ((actual - expected).norm() / max(expected.norm().item(), 1e-30)).item()
    ok = err <= tol
    print(f"{'ok  ' if ok else 'FAIL'} {what}: relative L2 {err:.2e} (tolerance {tol:.0e})")
    if not ok:
        failures.append(what)


def ceil(a, b):
    return (a + b - 1) // b


def randn(*shape, scale=1.0):
    return (torch.randn(*shape, device=DEV) * scale).float()


# ---------------- references ----------------

ACTS = ["none", "gelu", "gelu_tanh", "quick_gelu", "silu", "relu"]


def act_ref(x, act):
    x = x.double()
    return {
        "none": lambda: x,
        "gelu": lambda: torch.nn.functional.gelu(x),
        "gelu_tanh": lambda: torch.nn.functional.gelu(x, approximate="tanh"),
        "quick_gelu": lambda: x * torch.sigmoid(1.702 * x),
        "silu": lambda: torch.nn.functional.silu(x),
        "relu": lambda: torch.relu(x),
    }[act]()


def attention_ref(q, k, v, heads, kv_heads, scale, causal, key_mask):
    """q [B, Tq, H, D], k/v [B, Tk, Hkv, D] → [B, Tq, H·D]; fully hidden queries give zeros."""
    b, tq, _, d = q.shape
    tk = k.shape[1]
    group = heads // kv_heads
    k = k.double().repeat_interleave(group, dim=2)
    v = v.double().repeat_interleave(group, dim=2)
    s = torch.einsum("bqhd,bkhd->bhqk", q.double(), k) * scale
    visible = torch.ones(b, 1, tq, tk, dtype=torch.bool, device=q.device)
    if causal:
        i = torch.arange(tq, device=q.device)[:, None]
        j = torch.arange(tk, device=q.device)[None, :]
        visible &= (j <= i + (tk - tq))[None, None]
    if key_mask is not None:
        visible &= (key_mask != 0)[:, None, None, :]
    s = s.masked_fill(~visible, float("-inf"))
    p = torch.softmax(s, dim=-1).nan_to_num(0.0)
    return torch.einsum("bhqk,bkhd->bqhd", p, v).reshape(b, tq, heads * d)


# ---------------- attention ----------------

def prefill(q, q_stride, k, v, kv_stride, out, b, tq, tk, heads, kv_heads, d, scale, causal, key_mask=None, table=None, table_stride=0,
            block_size=1, k_scale=None, v_scale=None, rows=64):
    """The backend's prefill attention: K/V (dense or paged, F32 or int8) converted once to f16 [B, Hkv, tk, 64|128]
    by attention_kv_to_f16[_int8] (the copies start as NaN: every element must be written), then the prefill kernel
    with 64 or 128 query rows per block (128 or 256 threads). Returns the f16 copies."""
    padded = 64 if d <= 64 else 128
    kh = torch.full((b, kv_heads, tk, padded), float("nan"), dtype=torch.half, device=DEV)
    vh = torch.full_like(kh, float("nan"))
    grid = min(ceil(kh.numel() // 4, 256), 65535)
    if k_scale is None:
        launch("attention", "attention_kv_to_f16", grid, 256, k, v, kv_stride, table, table_stride, block_size, kh, vh, b, tk, kv_heads, d, padded)
    else:
        launch("attention", "attention_kv_to_f16_int8", grid, 256, k, v, kv_stride, k_scale, v_scale, table, table_stride, block_size, kh, vh,
               b, tk, kv_heads, d, padded)
    out.fill_(float("nan"))
    launch("attention", f"attention_prefill_hd{padded}", (ceil(tq, rows), heads, b), 2 * rows, q, q_stride, kh, vh, key_mask, out, tq, tk, heads,
           kv_heads, d, scale, int(causal))
    return kh, vh


def check_attention():
    # The last two run several unmasked tiles through the two-stage ring and end on a partial one; the last scales
    # by a negative factor (Q is pre-scaled, so the running maximum must hold for either sign).
    for d, tq, tk, heads, kv_heads, causal, masked, sign in [
        (64, 100, 100, 8, 2, True, True, 1), (64, 37, 100, 4, 4, True, False, 1), (80, 70, 70, 6, 3, False, True, 1),
        (128, 130, 130, 4, 1, True, False, 1), (32, 1, 50, 2, 2, False, False, 1), (128, 200, 330, 4, 2, False, False, 1),
        (64, 150, 270, 3, 3, False, False, -1)]:
        b = 2
        width = (heads + 2 * kv_heads) * d
        # Fused rows [B, T, (H + 2·Hkv)·D] hold k and v (and q when tq == tk: SelfAttention's layout); views pass
        # their first element's address, so k and v are column slices with the fused row stride.
        rows = randn(b, tk, width)
        k, v = rows[:, :, heads * d:(heads + kv_heads) * d], rows[:, :, (heads + kv_heads) * d:]
        q, q_stride = (rows, width) if tq == tk else (randn(b, tq, heads * d), heads * d)
        key_mask = (torch.rand(b, tk, device=DEV) > 0.3).float() if masked else None
        if masked:
            key_mask[1, :] = 0  # a fully masked sequence: zeros
        out = torch.empty(b, tq, heads * d, device=DEV)
        scale = sign * d ** -0.5
        ref = attention_ref(q[:, :, :heads * d].reshape(b, tq, heads, d), k.reshape(b, tk, kv_heads, d), v.reshape(b, tk, kv_heads, d), heads,
                            kv_heads, scale, causal, key_mask)
        for rows_per_block in [64, 128]:
            kh, vh = prefill(q, q_stride, k, v, width, out, b, tq, tk, heads, kv_heads, d, scale, causal, key_mask, rows=rows_per_block)
            padded = kh.shape[-1]
            report(f"attention_prefill_hd{padded} d={d} tq={tq} tk={tk} H={heads}/{kv_heads} causal={causal} mask={masked} scale={scale:.3f} "
                   f"rows {rows_per_block}",
                   out, ref, 3e-3)
        report(f"attention_kv_to_f16 d={d} tk={tk} H={kv_heads}", torch.cat([kh[..., :d].flatten(), vh[..., :d].flatten(), kh[..., d:].flatten()]),
               torch.cat([k.reshape(b, tk, kv_heads, d).transpose(1, 2).half().flatten(), v.reshape(b, tk, kv_heads, d).transpose(1, 2).half().flatten(),
                          torch.zeros(kh[..., d:].numel(), dtype=torch.half, device=DEV)]), 0)

    # Paged prefill (CachedAttention with T > 1) and decode over the same cache.
    d, heads, kv_heads, bs = 64, 14, 2, 16
    kvw = kv_heads * d
    lengths = [1, 77, 1000]
    blocks_per_seq = ceil(max(lengths), bs)
    pool_blocks = len(lengths) * blocks_per_seq
    k_pool, v_pool = randn(pool_blocks * bs, kvw), randn(pool_blocks * bs, kvw)
    tables = torch.randperm(pool_blocks, device=DEV).int().view(len(lengths), blocks_per_seq).contiguous()

    def gather(pool, s, n):
        pos = torch.arange(n, device=DEV)
        return pool[(tables[s, pos // bs].long() * bs + pos % bs)].view(1, n, kv_heads, d)

    tk, tq = 200, 40
    q = randn(tq, heads * d)
    out = torch.empty(tq, heads * d, device=DEV)
    prefill(q, heads * d, k_pool, v_pool, kvw, out, 1, tq, tk, heads, kv_heads, d, 0.125, True, table=tables[2].contiguous(),
            table_stride=blocks_per_seq, block_size=bs)
    ref = attention_ref(q.view(1, tq, heads, d), gather(k_pool, 2, tk), gather(v_pool, 2, tk), heads, kv_heads, 0.125, True, None)
    report("attention_prefill_hd64 paged F32 (block table, tq=40 of tk=200)", out, ref[0], 3e-3)

    q = randn(len(lengths), heads * d)
    seq_lens = torch.tensor(lengths, dtype=torch.int32, device=DEV)
    splits = 8  # each sequence's keys are split 8 ways (the kernel divides its own length)
    slices = ceil(heads // kv_heads, 16)
    partial_acc = torch.empty(len(lengths), heads, splits, d, device=DEV)
    partial_max = torch.empty(len(lengths), heads, splits, device=DEV)
    partial_sum = torch.empty(len(lengths), heads, splits, device=DEV)
    out = torch.full((len(lengths), heads * d), float("nan"), device=DEV)
    # One counter per (sequence, KV head slice): the last split to finish merges and leaves its counter at zero.
    counters = torch.zeros(len(lengths) * kv_heads * slices, dtype=torch.int32, device=DEV)
    refs = torch.cat([attention_ref(q[s].view(1, 1, heads, d), gather(k_pool, s, n), gather(v_pool, s, n), heads, kv_heads,
                                    0.125, True, None)[0] for s, n in enumerate(lengths)])
    launch("attention", "attention_decode_paged_f32", (splits, kv_heads * slices, len(lengths)), 128, q, heads * d, k_pool, v_pool,
           kvw, tables, blocks_per_seq, seq_lens, bs, partial_acc, partial_max, partial_sum, out, counters, heads, kv_heads, d, 0.125, None, None)
    report("attention_decode_paged_f32, splits merged by the last (lengths 1, 77, 1000; 8 splits)", out, refs, 1e-5)
    report("attention_decode_paged_f32 leaves its split counters at zero", counters.float(), torch.zeros_like(counters, dtype=torch.float64), 0)

    # int8 cache: one scale per (pool row, KV head), as kv_append_int8 writes it.
    def quantize_rows(pool):
        x = pool.view(-1, kv_heads, d)
        sc = (x.abs().amax(dim=2) / 127).contiguous()
        q8 = torch.round(x / sc[:, :, None]).clamp(-127, 127).to(torch.int8).view(-1, kvw).contiguous()
        return q8, sc, (q8.view(-1, kv_heads, d).float() * sc[:, :, None]).view(-1, kvw)

    k8, k_scale, k_deq = quantize_rows(k_pool)
    v8, v_scale, v_deq = quantize_rows(v_pool)
    refs = torch.cat([attention_ref(q[s].view(1, 1, heads, d), gather(k_deq, s, n), gather(v_deq, s, n), heads, kv_heads,
                                    0.125, True, None)[0] for s, n in enumerate(lengths)])
    out.fill_(float("nan"))
    launch("attention", "attention_decode_paged_int8", (splits, kv_heads * slices, len(lengths)), 128, q, heads * d, k8, v8, kvw,
           k_scale, v_scale, tables, blocks_per_seq, seq_lens, bs, partial_acc, partial_max, partial_sum, out, counters, heads, kv_heads,
           d, 0.125, None, None)
    report("attention_decode_paged_int8", out, refs, 1e-5)
    # The merge can also write the q8_1 activations of its output (fused quantization for the next GEMV).
    xq8, xds8 = torch.empty(len(lengths), heads * d, dtype=torch.int8, device=DEV), torch.empty(len(lengths), heads * d // 32, 2, device=DEV)
    launch("attention", "attention_decode_paged_int8", (splits, kv_heads * slices, len(lengths)), 128, q, heads * d, k8, v8, kvw,
           k_scale, v_scale, tables, blocks_per_seq, seq_lens, bs, partial_acc, partial_max, partial_sum, out, counters, heads, kv_heads,
           d, 0.125, xq8, xds8)
    eq8, eds8 = torch.empty_like(xq8), torch.empty_like(xds8)
    launch("quant_matmul", "quantize_activations_q8_1", ceil(out.numel(), 256), 256, out, eq8, eds8, len(lengths), heads * d)
    report("attention_decode_paged_int8 + q8_1 output", torch.cat([xq8.float().flatten(), xds8.flatten()]), torch.cat([eq8.float().flatten(), eds8.flatten()]), 0)

    qp = randn(tq, heads * d)
    outp = torch.empty(tq, heads * d, device=DEV)
    prefill(qp, heads * d, k8, v8, kvw, outp, 1, tq, tk, heads, kv_heads, d, 0.125, True, table=tables[2].contiguous(),
            table_stride=blocks_per_seq, block_size=bs, k_scale=k_scale, v_scale=v_scale, rows=128)
    ref = attention_ref(qp.view(1, tq, heads, d), gather(k_deq, 2, tk), gather(v_deq, 2, tk), heads, kv_heads, 0.125, True, None)
    report("attention_prefill_hd64 paged int8 (tq=40 of tk=200, rows 128)", outp, ref[0], 3e-3)

    # kv_append writes the slots the reference reads back
    rows, qh = 5, 4
    qkv = randn(rows, (qh + 2 * kv_heads) * d)
    slots = torch.tensor([3, 17, 18, 40, 41], dtype=torch.int32, device=DEV)
    kp, vp = torch.zeros(64, kvw, device=DEV), torch.zeros(64, kvw, device=DEV)
    launch("kv_cache", "kv_append_f32", rows, 256, qkv, qkv.shape[1], qh * d, qh * d + kvw, kvw, slots, rows, kp, vp)
    report("kv_append_f32", torch.cat([kp[slots.long()], vp[slots.long()]]), torch.cat([qkv[:, qh * d:qh * d + kvw], qkv[:, qh * d + kvw:]]), 0)
    k8p, v8p = torch.zeros(64, kvw, dtype=torch.int8, device=DEV), torch.zeros(64, kvw, dtype=torch.int8, device=DEV)
    ksp, vsp = torch.full((64, kv_heads), float("nan"), device=DEV), torch.full((64, kv_heads), float("nan"), device=DEV)
    qkv[1, qh * d:qh * d + d] = 0  # an all-zero head: scale 0, zeros
    launch("kv_cache", "kv_append_int8", rows, 256, qkv, qkv.shape[1], qh * d, qh * d + kvw, kvw, slots, rows, k8p, v8p, ksp, vsp, d)
    kx = qkv[:, qh * d:qh * d + kvw].view(rows, kv_heads, d)
    expect_scale = kx.abs().amax(dim=2) / 127
    expect = torch.round(kx / expect_scale.clamp_min(1e-30)[:, :, None]).clamp(-127, 127)
    report("kv_append_int8 values", k8p[slots.long()].float(), expect.view(rows, kvw), 0)
    report("kv_append_int8 scales", ksp[slots.long()], expect_scale, 0)
    pairs = torch.tensor([[0, 3], [2, 1]], dtype=torch.int32, device=DEV)
    kb = randn(4, bs * kvw)
    vb = randn(4, bs * kvw)
    expect_k, expect_v = kb.clone(), vb.clone()
    expect_k[3], expect_v[3], expect_k[1], expect_v[1] = kb[0], vb[0], kb[2], vb[2]
    launch("kv_cache", "kv_copy_blocks", 2, 256, kb, vb, pairs, 2, I64(bs * kvw))
    report("kv_copy_blocks", torch.cat([kb, vb]), torch.cat([expect_k, expect_v]), 0)


# ---------------- matmul ----------------

# Q8_0 / Q4_0 as CudaBackend uploads them: GGUF's blocks split into a quant plane and a d plane (fp16 per block).

def pack_q8_0(w):
    n, k = w.shape
    blocks = w.view(n, k // 32, 32)
    d = (blocks.abs().amax(-1) / 127).half()
    q = torch.round(blocks / d.float().clamp_min(1e-30)[..., None]).clamp(-127, 127).to(torch.int8)
    return q.view(torch.uint8).contiguous().view(-1), d.contiguous(), (q.float() * d.float()[..., None]).view(n, k)


def nibbles(q):
    """[..., 32] values 0..15 → [..., 16] bytes: element j low nibble of byte j, element j + 16 its high nibble."""
    return (q[..., :16] | (q[..., 16:] << 4)).to(torch.uint8)


def pack_q4_0(w):
    n, k = w.shape
    blocks = w.view(n, k // 32, 32)
    d = (blocks.abs().amax(-1) / 7).half()
    q = (torch.round(blocks / d.float().clamp_min(1e-30)[..., None]) + 8).clamp(0, 15).to(torch.int32)
    return nibbles(q).contiguous().view(-1), d.contiguous(), ((q - 8).float() * d.float()[..., None]).view(n, k)


def pack_int4_group(w, group):
    n, k = w.shape
    g = w.view(n, k // group, group)
    lo, hi = g.amin(-1), g.amax(-1)
    scale = ((hi - lo) / 15).half()
    mn = lo.half()
    q = torch.round((g - mn.float()[..., None]) / scale.float().clamp_min(1e-30)[..., None]).clamp(0, 15).to(torch.int32)
    packed = nibbles(q.view(n, k // 32, 32)).contiguous().view(-1)
    scale_min = torch.stack([scale, mn], dim=-1).contiguous()  # half2 (scale, min) per group
    return packed, scale_min, (q.float() * scale.float()[..., None] + mn.float()[..., None]).view(n, k)


# The quantized GEMVs' trailing arguments when they read quantized activations: no residual, input kind 0, and the
# fused producers' operands unused (src, norm weight, eps, out).
GEMV_PLAIN = (None, 0, None, None, 0.0, None)


def tc_grid(m, n, threads):
    """Grid of the tensor-core GEMMs for a block size: 256 threads take 128×128 tiles, 128 threads 64×64."""
    tile = 128 if threads == 256 else 64
    return (ceil(n, tile), ceil(m, tile))


def tc_threads(m, n):
    """The block size CudaBackend.TensorCoreTiles picks: large tiles when their grid has a block per SM."""
    return 256 if ceil(m, 128) * ceil(n, 128) >= torch.cuda.get_device_properties(0).multi_processor_count else 128


def check_matmul():
    n, k = 300, 640
    for m in [1, 5, 200]:
        x = randn(m, k)
        bias = randn(n)
        w = randn(n, k, scale=0.05)
        for fmt in ["f32w", "f16w"]:
            weights = w if fmt == "f32w" else w.half()
            w_ref = weights.float()
            for act_index, act in enumerate(ACTS):
                y = torch.empty(m, n, device=DEV)
                if m <= 8:
                    launch("quant_matmul", f"linear_{fmt}_gemv", ceil(n, 4), 128, x, weights, bias, y, m, n, k, act_index)
                elif fmt == "f32w":
                    launch("quant_matmul", "linear_f32w_gemm", (ceil(n, 128), ceil(m, 128)), 256, x, weights, bias, y, m, n, k, act_index)
                else:  # both tile shapes: the kernel takes 128×128 tiles when launched with 256 threads
                    threads = 256 if act_index % 2 else 128
                    launch("quant_matmul", "linear_f16w_gemm", tc_grid(m, n, threads), threads, x, weights, bias, y, m, n, k, act_index)
                tol = 1e-5 if fmt == "f32w" else (1e-5 if m <= 8 else 2e-3)
                tiles = f" tiles {128 if act_index % 2 else 64}" if fmt == "f16w" and m > 8 else ""
                report(f"linear_{fmt}_{'gemv' if m <= 8 else 'gemm'} M={m} act={act}{tiles}", y, act_ref(x.double() @ w_ref.double().T + bias.double(), act), tol)
        for name, packed in [("q8_0", pack_q8_0(w)), ("q4_0", pack_q4_0(w)), ("int4g64", pack_int4_group(w, 64)), ("int4g128", pack_int4_group(w, 128))]:
            y = torch.empty(m, n, device=DEV)
            ref = act_ref(x.double() @ packed[-1].double().T + bias.double(), "silu")
            group = int(name[5:]) if name.startswith("int4g") else 0
            kernel_name = "int4g" if group else name
            extra = (packed[0], packed[1], group) if group else (packed[0], packed[1])
            if m <= 8:
                xq = torch.empty(m, k, dtype=torch.int8, device=DEV)
                xds = torch.empty(m, k // 32, 2, device=DEV)
                launch("quant_matmul", "quantize_activations_q8_1", ceil(m * k, 256), 256, x, xq, xds, m, k)
                launch("quant_matmul", f"linear_{kernel_name}_gemv", ceil(n, 4), 128, xq, xds, *extra, bias, y, m, n, k, 4, *GEMV_PLAIN)
                tol = 2e-2  # int8 activations
            else:
                for threads in [128, 256]:
                    y.fill_(float("nan"))
                    launch("quant_matmul", f"linear_{kernel_name}_gemm", tc_grid(m, n, threads), threads, x, *extra, bias, y, m, n, k, 4)
                    report(f"linear_{name}_gemm M={m} (silu) tiles {64 if threads == 128 else 128}", y, ref, 3e-3)
                continue
            report(f"linear_{name} M={m} (silu)", y, ref, tol)
    # Quantized GEMVs over long rows (260 blocks: two and a bit of the Q4_0 loop's 128-block strides, four and a bit
    # of Q8_0's 64), all 8 activation rows, and a last block of 4 rows with one row in it
    kl, nl, ml = 8320, 65, 8
    xl, wl = randn(ml, kl), randn(nl, kl, scale=0.05)
    xq = torch.empty(ml, kl, dtype=torch.int8, device=DEV)
    xds = torch.empty(ml, kl // 32, 2, device=DEV)
    launch("quant_matmul", "quantize_activations_q8_1", ceil(ml * kl, 256), 256, xl, xq, xds, ml, kl)
    for name, packed in [("q8_0", pack_q8_0(wl)), ("q4_0", pack_q4_0(wl)), ("int4g128", pack_int4_group(wl, 128))]:
        y = torch.full((ml, nl), float("nan"), device=DEV)
        extra = (packed[0], packed[1], 128) if name == "int4g128" else (packed[0], packed[1])
        kernel_name = "int4g" if name.startswith("int4g") else name
        launch("quant_matmul", f"linear_{kernel_name}_gemv", ceil(nl, 4), 128, xq, xds, *extra, None, y, ml, nl, kl, 0, *GEMV_PLAIN)
        report(f"linear_{name}_gemv M={ml} N={nl} K={kl} (loop tails)", y, xl.double() @ packed[-1].double().T, 2e-2)

    # GEMVs that compute their own input, as a recorded decode step fuses them: rms_norm_f32 (128 threads) + q8_1, or
    # swiglu_f32 + q8_1, then the GEMV, must give the same bytes as the fused GEMV; block 0 stores the producer's float
    # rows; a residual is added into as well. N = 67: a last block with three idle warps that still take part.
    for kind, name in [(1, "rms_norm"), (2, "swiglu")]:
        for fmt in ["q8_0", "q4_0", "int4g64"]:
            mf, nf, kf = (2, 67, 576) if kind == 1 else (1, 67, 1536)
            src = randn(mf, kf if kind == 1 else 2 * kf)
            norm_w = randn(kf) + 1.0
            wf = randn(nf, kf, scale=0.05)
            packed = pack_int4_group(wf, 64) if fmt == "int4g64" else (pack_q8_0 if fmt == "q8_0" else pack_q4_0)(wf)
            extra = (packed[0], packed[1], 64) if fmt == "int4g64" else (packed[0], packed[1])
            kernel_name = "int4g" if fmt == "int4g64" else fmt
            xq, xds = torch.empty(mf, kf, dtype=torch.int8, device=DEV), torch.empty(mf, kf // 32, 2, device=DEV)
            produced = torch.empty(mf, kf, device=DEV)
            if kind == 1:
                launch("norms", "rms_norm_f32", mf, 128, src, None, None, norm_w, produced, mf, kf, 1e-6, xq, xds)
            else:
                launch("elementwise", "swiglu_f32", ceil(mf * kf, 256), 256, src, produced, I64(mf), kf, xq, xds)
            residual = randn(mf, nf)
            expect_y = torch.empty(mf, nf, device=DEV)
            launch("quant_matmul", f"linear_{kernel_name}_gemv", ceil(nf, 4), 128, xq, xds, *extra, None, expect_y, mf, nf, kf, 0, *GEMV_PLAIN)
            fused_y, fused_out, fused_residual = torch.full_like(expect_y, float("nan")), torch.full_like(produced, float("nan")), residual.clone()
            launch("quant_matmul", f"linear_{kernel_name}_gemv", ceil(nf, 4), 128, None, None, *extra, None, fused_y, mf, nf, kf, 0,
                   fused_residual, kind, src, norm_w if kind == 1 else None, 1e-6, fused_out)
            report(f"linear_{kernel_name}_gemv computing its {name} input, M={mf} K={kf}: output, stored input, residual",
                   torch.cat([fused_y.flatten(), fused_out.flatten(), fused_residual.flatten()]),
                   torch.cat([expect_y.flatten(), produced.flatten(), (residual + expect_y).flatten()]), 0)

    # F32 GEMV with K not a multiple of 4 (scalar path) and the SIMT GEMM with an odd K
    for m in [3, 40]:
        x, w = randn(m, 587), randn(90, 587)
        y = torch.empty(m, 90, device=DEV)
        if m <= 8:
            launch("quant_matmul", "linear_f32w_gemv", ceil(90, 4), 128, x, w, None, y, m, 90, 587, 0)
        else:
            launch("quant_matmul", "linear_f32w_gemm", (1, 1), 256, x, w, None, y, m, 90, 587, 0)
        report(f"linear_f32w M={m} K=587 no bias", y, x.double() @ w.double().T, 1e-5)

    # patch embedding with bias and position embeddings
    b, c, h, wd, p, dim = 2, 3, 28, 42, 14, 64
    pixels = randn(b, c, h, wd)
    for fmt in ["f32w", "f16w"]:
        conv = randn(dim, c, p, p, scale=0.05)
        weights = conv if fmt == "f32w" else conv.half()
        bias, pos = randn(dim), randn((h // p) * (wd // p), dim)
        out = torch.empty(b, (h // p) * (wd // p), dim, device=DEV)
        launch("patch_embed", f"patch_embed_{fmt}", (ceil(dim, 128), ceil(b * (h // p) * (wd // p), 128)), 256,
               pixels, weights, bias, pos, out, b, c, h, wd, p, dim)
        ref = torch.nn.functional.conv2d(pixels.double(), weights.double(), bias.double(), stride=p).flatten(2).transpose(1, 2) + pos.double()
        report(f"patch_embed_{fmt}", out, ref, 1e-5)

    if BENCH:
        bench_gemv()


def bench_gemv():
    # Weight sets rotate so that each launch reads its weights from HBM, not from the 60 MB L2.
    n, k = 14336, 4096
    x = randn(1, k)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for name, bytes_per_weight in [("q4_0", 18 / 32), ("q8_0", 34 / 32), ("f16w", 2)]:
        sets = max(2, math.ceil(400e6 / (n * k * bytes_per_weight)))
        w = randn(n, k, scale=0.05)
        if name == "f16w":
            weights = [(w.half(),)] + [(w.half(),) for _ in range(sets - 1)]
            inputs = (x,)
        else:
            qs, d, _ = (pack_q4_0 if name == "q4_0" else pack_q8_0)(w)
            weights = [(qs, d)] + [(qs.clone(), d.clone()) for _ in range(sets - 1)]
            xq, xds = torch.empty(1, k, dtype=torch.int8, device=DEV), torch.empty(1, k // 32, 2, device=DEV)
            launch("quant_matmul", "quantize_activations_q8_1", ceil(k, 256), 256, x, xq, xds, 1, k)
            inputs = (xq, xds)
        y = torch.empty(1, n, device=DEV)

        def run(i):
            launch("quant_matmul", f"linear_{name}_gemv", ceil(n, 4), 128, *inputs, *weights[i % sets], None, y, 1, n, k, 0,
                   *(() if name == "f16w" else GEMV_PLAIN), sync=False)
        # Warm-up long enough for the clocks to ramp (a few hundred ms: the GPU idles at a few hundred MHz; runs that
        # warmed up for ~0.3 ms measured 17 to 55 us for the same kernel), then the median of 7 timed trials.
        reps = 20 * sets
        warm_until = time.perf_counter() + 0.4
        while time.perf_counter() < warm_until:
            for i in range(sets):
                run(i)
            torch.cuda.synchronize()
        trials = []
        for _ in range(7):
            start.record()
            for i in range(reps):
                run(i)
            end.record()
            torch.cuda.synchronize()
            trials.append(start.elapsed_time(end) / reps)
        ms = sorted(trials)[len(trials) // 2]
        copy_src = torch.empty(int(400e6), dtype=torch.uint8, device=DEV)
        copy_dst = torch.empty_like(copy_src)
        copy_dst.copy_(copy_src)
        start.record()
        for _ in range(10):
            copy_dst.copy_(copy_src)
        end.record()
        torch.cuda.synchronize()
        copy_ms = start.elapsed_time(end) / 10
        gbs = n * k * bytes_per_weight / ms / 1e6
        copy_gbs = 2 * copy_src.numel() / copy_ms / 1e6
        print(f"bench linear_{name}_gemv {n}x{k} ({sets} weight sets): {ms * 1e3:.1f} us (median of 7; trials {min(trials) * 1e3:.1f}-{max(trials) * 1e3:.1f}), "
              f"{gbs:.0f} GB/s weights = {100 * gbs / copy_gbs:.0f}% of copy ({copy_gbs:.0f} GB/s read+write)")
        del weights, copy_src, copy_dst


# ---------------- norms, rope, elementwise ----------------

def check_small_ops():
    rows, d = 7, 1000
    x, res, w, bta = randn(rows, d), randn(rows, d), randn(d), randn(d)
    y = torch.empty(rows, d, device=DEV)
    launch("norms", "rms_norm_f32", rows, 128, x, None, None, w, y, rows, d, 1e-6, None, None)
    xd = x.double()
    report("rms_norm_f32", y, xd * torch.rsqrt(xd.pow(2).mean(-1, keepdim=True) + 1e-6) * w.double(), 1e-6)
    residual = res.clone()
    launch("norms", "rms_norm_f32", rows, 128, x, residual, residual, w, y, rows, d, 1e-6, None, None)  # residual += x in place
    h = (x + res).double()
    report("rms_norm_f32 fused residual (sum_out aliases residual)", torch.cat([y, residual]),
           torch.cat([h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6) * w.double(), h]), 1e-6)
    launch("norms", "layer_norm_f32", rows, 256, x, res, None, w, bta, y, rows, d, 1e-5)
    report("layer_norm_f32 fused residual", y, torch.nn.functional.layer_norm(h, (d,), w.double(), bta.double(), 1e-5), 1e-6)

    head_dim, count, theta, pos0 = 64, 9, 10000.0, 1000
    j = torch.arange(head_dim // 2, dtype=torch.float64)
    angle = (pos0 + torch.arange(count, dtype=torch.float64))[:, None] / theta ** (2 * j / head_dim)
    table = torch.cat([angle.cos(), angle.sin()], dim=1).float().to(DEV)  # the host builds the table (BackendArgs.RopeTable)
    qh, kvh = 4, 2
    qkv = randn(count, (qh + 2 * kvh) * head_dim)

    def rope_ref(rows_, cos, sin):
        out = rows_.double().clone()
        for hh in range(qh + kvh):
            s = slice(hh * head_dim, (hh + 1) * head_dim)
            x1, x2 = out[:, s][:, :head_dim // 2].clone(), out[:, s][:, head_dim // 2:].clone()
            out[:, s] = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=1)
        return out

    a = qkv.clone()
    launch("rope", "rope_apply_f32", count, 32, a, table, count, a.shape[1], qh + kvh, head_dim, None, 0, 0, 0, None, None)
    report("rope_apply_f32", a, rope_ref(qkv, table[:, :32].double(), table[:, 32:].double()), 1e-6)
    # Fused with kv_append_f32: the rotated k and the v land in the rows' slots.
    a2, kvw_r = qkv.clone(), kvh * head_dim
    slots_r = torch.randperm(40, device=DEV)[:count].int().contiguous()
    kp_r, vp_r = torch.zeros(40, kvw_r, device=DEV), torch.zeros(40, kvw_r, device=DEV)
    launch("rope", "rope_apply_f32", count, 32, a2, table, count, a2.shape[1], qh + kvh, head_dim, slots_r, qh * head_dim,
           (qh + kvh) * head_dim, kvw_r, kp_r, vp_r)
    report("rope_apply_f32 + kv append", torch.cat([a2, kp_r[slots_r.long()], vp_r[slots_r.long()]], dim=1),
           torch.cat([a, a[:, qh * head_dim:(qh + kvh) * head_dim], a[:, (qh + kvh) * head_dim:]], dim=1), 0)
    positions = torch.tensor([0, 5, 1, 70000, 3, 3, 9, 100, 2], dtype=torch.int32, device=DEV)
    a = qkv.clone()
    launch("rope", "rope_positions_f32", count, 32, a, positions, count, a.shape[1], qh + kvh, head_dim, F64(theta))
    angle = positions.double().cpu()[:, None] / theta ** (2 * j / head_dim)
    report("rope_positions_f32", a, rope_ref(qkv, angle.cos().to(DEV), angle.sin().to(DEV)), 1e-6)

    x = randn(3, 5000, scale=3)
    for act_index, act in enumerate(ACTS):
        a = x.clone()
        launch("elementwise", "activation_f32", ceil(a.numel(), 256), 256, a, I64(a.numel()), act_index)
        report(f"activation_f32 {act}", a, act_ref(x, act), 1e-6)
    a, y = x.clone(), randn(5000)
    launch("elementwise", "add_broadcast_f32", 60, 256, a, y, I64(a.numel()), I64(5000))
    report("add_broadcast_f32", a, x + y, 0)
    a = x.clone()
    launch("elementwise", "scale_bias_f32", 60, 256, a, I64(a.numel()), 0.5, 2.0)
    report("scale_bias_f32", a, x * 0.5 + 2.0, 1e-7)
    g = randn(4, 2 * 300)
    out = torch.empty(4, 300, device=DEV)
    launch("elementwise", "swiglu_f32", 5, 256, g, out, I64(4), 300, None, None)
    report("swiglu_f32", out, torch.nn.functional.silu(g[:, :300].double()) * g[:, 300:].double(), 1e-6)

    # Producers that also quantize their output for a decode GEMV must give quantize_activations_q8_1's bytes exactly.
    def q8_1(t, m, k):
        xq, xds = torch.empty(m, k, dtype=torch.int8, device=DEV), torch.empty(m, k // 32, 2, device=DEV)
        launch("quant_matmul", "quantize_activations_q8_1", ceil(m * k, 256), 256, t, xq, xds, m, k)
        return xq, xds

    xn, wn = randn(3, 576), randn(576)
    yn, xq, xds = torch.empty(3, 576, device=DEV), torch.empty(3, 576, dtype=torch.int8, device=DEV), torch.empty(3, 18, 2, device=DEV)
    launch("norms", "rms_norm_f32", 3, 128, xn, None, None, wn, yn, 3, 576, 1e-6, xq, xds)
    eq, eds = q8_1(yn, 3, 576)
    report("rms_norm_f32 + q8_1 output", torch.cat([xq.float().flatten(), xds.flatten()]), torch.cat([eq.float().flatten(), eds.flatten()]), 0)
    gs = randn(2, 2 * 1536)
    ys, xq, xds = torch.empty(2, 1536, device=DEV), torch.empty(2, 1536, dtype=torch.int8, device=DEV), torch.empty(2, 48, 2, device=DEV)
    launch("elementwise", "swiglu_f32", 12, 256, gs, ys, I64(2), 1536, xq, xds)
    eq, eds = q8_1(ys, 2, 1536)
    report("swiglu_f32 + q8_1 output", torch.cat([xq.float().flatten(), xds.flatten()]), torch.cat([eq.float().flatten(), eds.flatten()]), 0)
    a = x.clone()
    launch("elementwise", "softmax_rows_f32", 3, 256, a, 3, 5000)
    report("softmax_rows_f32", a, torch.softmax(x.double(), -1), 1e-6)
    a = x.clone()
    launch("elementwise", "l2_normalize_rows_f32", 3, 256, a, 3, 5000)
    report("l2_normalize_rows_f32", a, x.double() / x.double().norm(dim=-1, keepdim=True), 1e-6)
    table_ = randn(50, 70)
    idx = torch.tensor([3, 3, 49, 0], dtype=torch.int32, device=DEV)
    out = torch.empty(4, 70, device=DEV)
    launch("elementwise", "gather_rows_f32", 4, 256, table_, idx, out, 4, 70)
    report("gather_rows_f32", out, table_[idx.long()], 0)
    dst, expect = torch.zeros(50, 70, device=DEV), torch.zeros(50, 70, device=DEV)
    launch("elementwise", "scatter_rows_f32", 2, 256, dst, idx[1:3].contiguous(), table_[:2].contiguous(), 2, 70)
    expect[3], expect[49] = table_[0], table_[1]
    report("scatter_rows_f32", dst, expect, 0)


# ---------------- sampling ----------------

def sample_ref(logits, temperature, top_k, top_p, u):
    """FastMM.Runtime.Generation.Sampler without repetition penalty (sort-based, for small vocabularies)."""
    l = (logits / temperature if temperature != 1 else logits).float().cpu()
    ids = [i for i in range(len(l)) if l[i] != float("-inf")]
    if 0 < top_k < len(ids):
        kth = torch.topk(l[ids], top_k).values[-1]
        ids = [i for i in ids if l[i] >= kth]
    mx = max(l[i] for i in ids)
    w = {i: math.exp(float(l[i] - mx)) for i in ids}
    w = {i: float(torch.tensor(w[i], dtype=torch.float32)) for i in ids}
    if top_p < 1:
        total = sum(w.values())
        ranked = sorted(ids, key=lambda i: (float(l[i]), i), reverse=True)
        above, kept = 0.0, []
        for i in ranked:
            if above < top_p * total:
                kept.append(i)
            above += w[i]
        ids = sorted(kept)
    total = sum(w[i] for i in ids)
    target, cumulative = u * total, 0.0
    for i in ids[:-1]:
        cumulative += w[i]
        if target < cumulative:
            return i
    return ids[-1]


def check_sampling():
    rows, vocab = 6, 3000
    logits = randn(rows, vocab, scale=3)
    logits[1, 5] = logits[1, 9] = logits[1].max() + 1  # tie: the first maximum wins
    logits[2, :100] = float("-inf")
    out = torch.empty(rows, dtype=torch.int32, device=DEV)
    launch("sampling", "argmax_rows_f32", rows, 1024, logits, rows, vocab, out)
    report("argmax_rows_f32", out.float(), torch.argmax(logits, -1).float(), 0)
    mismatches = 0
    for temperature, top_k, top_p in [(1.0, 0, 1.0), (0.7, 50, 1.0), (1.3, 0, 0.9), (0.8, 40, 0.5), (1.0, 1, 1.0), (2.0, 3000, 0.99)]:
        u = torch.rand(rows, device=DEV)
        launch("sampling", "sample_rows_f32", rows, 1024, logits, rows, vocab, temperature, top_k, top_p, u, out)
        for r in range(rows):
            if out[r].item() != sample_ref(logits[r], temperature, top_k, top_p, u[r].item()):
                mismatches += 1
    ok = mismatches == 0
    print(f"{'ok  ' if ok else 'FAIL'} sample_rows_f32: {mismatches} of {6 * rows} draws differ from the CPU sampler's rule")
    if not ok:
        failures.append("sample_rows_f32")


def time_ms(fn, warm_s=0.3, trials=7):
    """Median milliseconds per call of fn over 7 timed trials, after warm_s seconds of calls (the clocks ramp up)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    fn()
    torch.cuda.synchronize()
    t0, calls = time.perf_counter(), 0
    while time.perf_counter() - t0 < warm_s:
        fn()
        calls += 1
        if calls % 16 == 0:
            torch.cuda.synchronize()
    torch.cuda.synchronize()
    per_call = (time.perf_counter() - t0) / max(calls, 1)
    reps = max(3, min(200, int(0.02 / max(per_call, 1e-6))))  # ~20 ms per trial
    results = []
    for _ in range(trials):
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        torch.cuda.synchronize()
        results.append(start.elapsed_time(end) / reps)
    return sorted(results)[len(results) // 2]


def bench_vision():
    """SigLIP-B/16-512's image-encode GEMMs (F16 weights, 1024 tokens; fc1 also for a batch of 8) and its attention,
    each against PyTorch's own fp16 kernel on the same shape in this process (cuBLAS, SDPA) as the yardstick."""
    for label, m, n, k in [("qkv", 1024, 2304, 768), ("o_proj", 1024, 768, 768), ("fc1", 1024, 3072, 768), ("fc2", 1024, 768, 3072),
                           ("fc1 batch 8", 8192, 3072, 768)]:
        x, w, bias = randn(m, k), randn(n, k, scale=0.05).half(), randn(n)
        y = torch.empty(m, n, device=DEV)
        threads = tc_threads(m, n)
        ms = time_ms(lambda: launch("quant_matmul", "linear_f16w_gemm", tc_grid(m, n, threads), threads, x, w, bias, y, m, n, k, 2, sync=False))
        xh = x.half()
        ref_ms = time_ms(lambda: torch.nn.functional.linear(xh, w))
        flop = 2 * m * n * k
        print(f"bench linear_f16w_gemm SigLIP {label} {m}x{n}x{k} ({128 if threads == 256 else 64}-tiles): {ms * 1e3:.1f} us, "
              f"{flop / ms / 1e9:.0f} TFLOP/s; torch fp16 linear {ref_ms * 1e3:.1f} us ({flop / ref_ms / 1e9:.0f} TFLOP/s): ours takes {ms / ref_ms:.1f}x its time")
    b, heads, d, t = 1, 12, 64, 1024
    qkv = randn(b, t, 3 * heads * d)
    out = torch.empty(b, t, heads * d, device=DEV)
    w3 = 3 * heads * d
    ms, convert_ms, rows = bench_dense_attention(qkv, w3, qkv[..., heads * d:], qkv[..., 2 * heads * d:], w3, out, b, t, heads, d)
    q, k, v = (randn(b, heads, t, d).half() for _ in range(3))
    ref_ms = time_ms(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v))
    flop = 4 * b * heads * t * t * d
    print(f"bench attention_prefill_hd64 ({rows} rows per block) SigLIP B=1 H=12 T=1024 D=64: {ms * 1e3:.1f} us + {convert_ms * 1e3:.1f} us converting K/V, "
          f"{flop / (ms + convert_ms) / 1e9:.0f} TFLOP/s; torch sdpa fp16 {ref_ms * 1e3:.1f} us: ours takes {(ms + convert_ms) / ref_ms:.1f}x its time")


def bench_dense_attention(q, q_stride, k, v, kv_stride, out, b, t, heads, d):
    """The backend's dense attention (attention_kv_to_f16, then attention_prefill_hd* with the backend's rows per
    block): median ms of the prefill kernel and of the conversion, and the rows per block."""
    padded = 64 if d <= 64 else 128
    kh = torch.empty(b, heads, t, padded, dtype=torch.half, device=DEV)
    vh = torch.empty_like(kh)
    convert = lambda: launch("attention", "attention_kv_to_f16", min(ceil(kh.numel() // 4, 256), 65535), 256, k, v, kv_stride, None, 0, 1, kh, vh,
                             b, t, heads, d, padded, sync=False)
    convert()
    rows = 128 if ceil(t, 128) * heads * b >= 2 * torch.cuda.get_device_properties(0).multi_processor_count else 64  # PrefillRowsPerBlock
    ms = time_ms(lambda: launch("attention", f"attention_prefill_hd{padded}", (ceil(t, rows), heads, b), 2 * rows, q, q_stride, kh, vh,
                                None, out, t, t, heads, heads, d, d ** -0.5, 0, sync=False))
    return ms, time_ms(convert), rows


def bench_attention():
    b, heads, d, t = 1, 32, 128, 4096
    q, k, v = randn(b, t, heads * d), randn(b, t, heads * d), randn(b, t, heads * d)
    out = torch.empty(b, t, heads * d, device=DEV)
    ms, convert_ms, rows = bench_dense_attention(q, heads * d, k, v, heads * d, out, b, t, heads, d)
    tflops = 4 * b * heads * t * t * d / ms / 1e9
    print(f"bench attention_prefill_hd128 ({rows} rows per block) non-causal B=1 H=32 T=4096 D=128: {ms:.2f} ms, {tflops:.0f} TFLOP/s "
          f"(+ {convert_ms * 1e3:.0f} us converting K/V to f16: {4 * b * heads * t * t * d / (ms + convert_ms) / 1e9:.0f} TFLOP/s for both)")
    # The same shape through PyTorch's own fused attention in bf16, timed in this process, as the yardstick.
    q, k, v = (randn(b, heads, t, d).to(torch.bfloat16) for _ in range(3))
    ref_ms = time_ms(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v))
    print(f"bench torch sdpa bf16 (same shape, yardstick): {ref_ms:.2f} ms, {4 * b * heads * t * t * d / ref_ms / 1e9:.0f} TFLOP/s; ours takes {ms / ref_ms:.1f}x its time")


if __name__ == "__main__":
    print(f"device: {torch.cuda.get_device_name()}, kernels from {OUT}")
    if GEMV_ONLY:
        bench_gemv()
        sys.exit(0)
    for check in [check_attention, check_matmul, check_small_ops, check_sampling]:
        try:
            check()
        except Exception as e:  # one family's launch error should not hide the other families' results
            print(f"FAIL {check.__name__}: {type(e).__name__}: {e}")
            failures.append(check.__name__)
    if BENCH:
        bench_attention()
        bench_vision()
    print(f"{len(failures)} failures" + (": " + ", ".join(failures) if failures else ""))
    sys.exit(1 if failures else 0)
