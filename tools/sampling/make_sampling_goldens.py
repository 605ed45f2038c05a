#!/usr/bin/env python3
"""Golden next-token distributions for FastMM's Sampler, computed the way HF transformers' generate() does.

The processors below transcribe the __call__ bodies of transformers/generation/logits_process.py
(RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper,
MinPLogitsWarper) in torch, applied in the order and under the conditions of
GenerationMixin._get_logits_processor. transformers itself is not needed.

Run with an interpreter that has torch + numpy (on the dev box: /usr/bin/python3):
    /usr/bin/python3 tools/sampling/make_sampling_goldens.py
Writes tests/data/sampling/hf_distributions.npz. All cases are concatenated into flat arrays:
    vocab[n], logit_offsets[n+1]      case i owns logits_q[logit_offsets[i]:logit_offsets[i+1]]
    logits_q (int16)                  logit = q / 1024 exactly in float32; -32768 means -inf
    temperature, top_p, min_p, repetition_penalty (float32), top_k (int32)   temperature 0 = greedy
    history_offsets[n+1], history (int32)   previous token ids fed to the repetition penalty
    probs (float32), kept (uint8)     final softmax and the mask of tokens still finite after processing
"""
import math
import os

import numpy as np
import torch

NEG_INF_Q = -32768
SCALE = 1024.0


# ---- HF processors, transcribed (batch of one row) ---------------------------------------------

def repetition_penalty(input_ids, scores, penalty):
    score = torch.gather(scores, 1, input_ids)
    score = torch.where(score < 0, score * penalty, score / penalty)
    return scores.scatter(1, input_ids, score)


def temperature_warp(scores, temperature):
    return scores / temperature


def top_k_warp(scores, top_k, min_tokens_to_keep=1):
    top_k = min(max(top_k, min_tokens_to_keep), scores.size(-1))
    indices_to_remove = scores < torch.topk(scores, top_k)[0][..., -1, None]
    return scores.masked_fill(indices_to_remove, -float("inf"))


def top_p_warp(scores, top_p, min_tokens_to_keep=1):
    sorted_logits, sorted_indices = torch.sort(scores, descending=False)
    cumulative_probs = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    sorted_indices_to_remove = cumulative_probs <= (1 - top_p)
    sorted_indices_to_remove[..., -min_tokens_to_keep:] = 0
    indices_to_remove = sorted_indices_to_remove.scatter(1, sorted_indices, sorted_indices_to_remove)
    return scores.masked_fill(indices_to_remove, -float("inf"))


def min_p_warp(scores, min_p, min_tokens_to_keep=1):
    probs = torch.softmax(scores, dim=-1)
    top_probs = probs.amax(dim=-1, keepdim=True)
    scaled_min_p = min_p * top_probs
    tokens_to_remove = probs < scaled_min_p
    k = min(min_tokens_to_keep, probs.shape[-1])
    sorted_indices = torch.topk(probs, k, dim=-1).indices
    tokens_to_remove.scatter_(-1, sorted_indices, False)
    return scores.masked_fill(tokens_to_remove, -float("inf"))


def hf_process(logits, history, temperature, top_k, top_p, min_p, rep):
    """Processed scores as generate() builds them; greedy (temperature 0) only runs the processors."""
    scores = torch.from_numpy(logits.copy()).unsqueeze(0)
    if rep != 1.0 and len(history) > 0:
        scores = repetition_penalty(torch.from_numpy(history.astype(np.int64)).unsqueeze(0), scores, rep)
    if temperature > 0:
        if temperature != 1.0:
            scores = temperature_warp(scores, temperature)
        if top_k != 0:
            scores = top_k_warp(scores, top_k)
        if top_p < 1.0:
            scores = top_p_warp(scores, top_p)
        if min_p > 0:
            scores = min_p_warp(scores, min_p)
    return scores


def distribution(scores, greedy):
    if greedy:
        probs = torch.zeros_like(scores)
        probs[0, torch.argmax(scores, dim=-1)] = 1.0
        return probs[0].numpy(), np.isfinite(scores[0].numpy())
    return torch.softmax(scores, dim=-1)[0].numpy(), np.isfinite(scores[0].numpy())


# ---- robustness: skip cases whose kept set hinges on rounding ----------------------------------

def fragile(scores_before_top_p, top_p, scores_before_min_p, min_p):
    """True when a token sits within rounding of the top-p or min-p cut (or top-p cuts through a tie),
    where float32 summation order, not semantics, would decide its fate."""
    if top_p < 1.0:
        s = scores_before_top_p[0].double().numpy()
        finite = s[np.isfinite(s)]
        order = np.sort(finite)
        p = np.exp(order - order.max())
        p /= p.sum()
        cum = np.cumsum(p)
        if np.any(np.abs(cum - (1 - top_p)) < 2e-6):  # torch's cumsum accumulates in double; float32 softmax ~1e-7
            return True
        removed = cum <= 1 - top_p
        removed[-1] = False
        cut = np.argmax(~removed)  # first kept position
        if cut > 0 and order[cut - 1] == order[cut]:
            return True
    if min_p > 0:
        s = scores_before_min_p[0].double().numpy()
        finite = s[np.isfinite(s)]
        ratio = np.exp(finite - finite.max())
        if np.any(np.abs(ratio - min_p) < 1e-5 * min_p):
            return True
    return False


def stages(logits, history, temperature, top_k, top_p, rep):
    """Scores entering top-p and entering min-p (for the fragility check)."""
    scores = torch.from_numpy(logits.copy()).unsqueeze(0)
    if rep != 1.0 and len(history) > 0:
        scores = repetition_penalty(torch.from_numpy(history.astype(np.int64)).unsqueeze(0), scores, rep)
    if temperature != 1.0:
        scores = temperature_warp(scores, temperature)
    if top_k != 0:
        scores = top_k_warp(scores, top_k)
    before_p = scores
    if top_p < 1.0:
        scores = top_p_warp(scores, top_p)
    return before_p, scores


# ---- case generation -----------------------------------------------------------------------------

def random_logits_q(rng, vocab, kind=None):
    kind = rng.integers(0, 4) if kind is None else kind
    if kind == 0:    # wide spread
        x = rng.normal(0, 4, vocab)
    elif kind == 1:  # peaked: a few large logits over a flat floor, like a confident LM
        x = rng.normal(-2, 1.5, vocab)
        x[rng.integers(0, vocab, max(1, vocab // 50))] += rng.uniform(4, 12)
    elif kind == 2:  # coarse values: many exact ties
        x = rng.integers(-6, 6, vocab).astype(np.float64)
    else:            # narrow: near-uniform distribution
        x = rng.normal(0, 0.3, vocab)
    q = np.clip(np.round(x * SCALE), -32767, 32767).astype(np.int16)
    if rng.random() < 0.4:  # masked tokens
        q[rng.random(vocab) < rng.uniform(0.05, 0.5)] = NEG_INF_Q
        q[rng.integers(0, vocab)] = np.int16(rng.integers(-100, 300))  # at least one finite entry
    return q


def dequantize(q):
    x = q.astype(np.float32) / np.float32(SCALE)
    x[q == NEG_INF_Q] = -np.inf
    return x


def random_options(rng, vocab):
    greedy = rng.random() < 0.08
    temperature = 0.0 if greedy else float(np.float32(rng.choice([1.0, 1.0, 0.7, 0.5, 1.3, 2.0, rng.uniform(0.2, 3.0)])))
    top_k = int(rng.choice([0, 0, 1, 2, 5, 40, vocab, vocab + 10, int(rng.integers(1, vocab + 1))]))
    top_p = float(np.float32(rng.choice([1.0, 1.0, 0.9, 0.95, 0.5, 0.1, rng.uniform(0.05, 1.0)])))
    min_p = float(np.float32(rng.choice([0.0, 0.0, 0.05, 0.1, 0.3, rng.uniform(0.0, 0.9)])))
    rep = float(np.float32(rng.choice([1.0, 1.0, 1.2, 1.5, 0.8, rng.uniform(0.5, 2.0)])))
    return temperature, top_k, top_p, min_p, rep


BIG_CASES_VOCAB = (32000,)
BIG_CASES = [  # (logit kind, (temperature, top_k, top_p, min_p, repetition_penalty))
    (0, (1.0, 0, 0.9, 0.0, 1.0)),    # wide spread: top-p keeps hundreds
    (0, (0.7, 0, 1.0, 0.0, 1.0)),    # no filter at all
    (2, (1.0, 40, 1.0, 0.05, 1.3)),  # ties at the top-k threshold, then min-p
    (1, (0.0, 0, 1.0, 0.0, 1.2)),    # greedy with a penalty
    (1, (1.0, 0, 1.0, 0.1, 1.0)),    # min-p alone
    (0, (1.3, 0, 0.5, 0.0, 1.0)),    # top-p alone on a wide spread
]


def main():
    rng = np.random.default_rng(20240611)
    plan = [(7, 80), (50, 80), (1000, 40), (32000, 6)]
    cols = {k: [] for k in ["vocab", "temperature", "top_k", "top_p", "min_p", "repetition_penalty"]}
    logits_parts, hist_parts, prob_parts, kept_parts = [], [], [], []
    for vocab, count in plan:
        made = attempts = 0
        while made < count:
            attempts += 1
            if attempts > 50 * count:
                raise RuntimeError(f"vocab {vocab}, case {made}: too many fragile draws")
            if vocab in BIG_CASES_VOCAB:
                # Chosen, not drawn: the big vocabulary should show each path at scale, while staying small on disk.
                kind, (temperature, top_k, top_p, min_p, rep) = BIG_CASES[made]
                q = random_logits_q(rng, vocab, kind)
            else:
                q = random_logits_q(rng, vocab)
                temperature, top_k, top_p, min_p, rep = random_options(rng, vocab)
            logits = dequantize(q)
            hist = rng.integers(0, vocab, int(rng.integers(0, 2 * vocab if vocab < 100 else 60))).astype(np.int32)
            if temperature > 0:
                before_p, before_min = stages(logits, hist, temperature, top_k, top_p, rep)
                if fragile(before_p, top_p, before_min, min_p):
                    continue
            scores = hf_process(logits, hist, temperature, top_k, top_p, min_p, rep)
            probs, kept = distribution(scores, temperature <= 0)
            if not np.isfinite(probs).all():
                continue
            cols["vocab"].append(vocab)
            cols["temperature"].append(temperature)
            cols["top_k"].append(top_k)
            cols["top_p"].append(top_p)
            cols["min_p"].append(min_p)
            cols["repetition_penalty"].append(rep)
            logits_parts.append(q)
            hist_parts.append(hist)
            prob_parts.append(probs.astype(np.float32))
            kept_parts.append(kept.astype(np.uint8))
            made += 1

    def offsets(parts):
        return np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)

    out = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data", "sampling", "hf_distributions.npz")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    np.savez_compressed(
        out,
        vocab=np.array(cols["vocab"], np.int32),
        temperature=np.array(cols["temperature"], np.float32),
        top_k=np.array(cols["top_k"], np.int32),
        top_p=np.array(cols["top_p"], np.float32),
        min_p=np.array(cols["min_p"], np.float32),
        repetition_penalty=np.array(cols["repetition_penalty"], np.float32),
        logit_offsets=offsets(logits_parts),
        logits_q=np.concatenate(logits_parts),
        history_offsets=offsets(hist_parts),
        history=np.concatenate(hist_parts).astype(np.int32),
        probs=np.concatenate(prob_parts),
        kept=np.concatenate(kept_parts),
    )
    n = len(cols["vocab"])
    print(f"{n} cases -> {os.path.normpath(out)} ({os.path.getsize(out)} bytes)")


if __name__ == "__main__":
    main()
