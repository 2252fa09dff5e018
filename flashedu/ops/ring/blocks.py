"""One ring step on one rank: the softmax state of its queries against the K/V shard it holds.

Two ways to compute it, same result:

* :func:`block_state` - dense, from token positions (any layout, any device, differentiable);
  memory O(n_q · n_k), for the CPU runs and the tests;
* :func:`block_state_flash` - with the chapter-4 Triton kernel (``flash_attention_v2_lse``) on
  each pair of position runs: a pair is fully visible, invisible, or causal with a shift; the
  kernel's (o, L) is the state (m = L, ℓ = 1, o) since Σ e^(s−L) = 1. For long shards on a GPU.

And :func:`block_grads`, the dense backward of one step (FlashAttention-2's Algorithm 2 on one
block, with the logsumexp L of the whole ring forward).
"""
from __future__ import annotations

import torch

from flashedu.softmax.state import State, empty_state, merge_all, state_of_block
from flashedu.ops.ring.layout import Segment


def _masked_scores(q, k, q_pos, k_pos, *, causal: bool, scale: float) -> torch.Tensor:
    s = (q @ k.transpose(-1, -2)) * scale  # [B, H, n_q, n_k]
    if causal:
        s = s.masked_fill(k_pos[None, :].to(s.device) > q_pos[:, None].to(s.device), float("-inf"))
    return s


def block_state(q, k, v, q_pos, k_pos, *, causal: bool, scale: float) -> State:
    """State of ``q`` [B, H, n_q, D] against ``k``, ``v`` [B, H, n_k, D] (fp32/fp64 math);
    with ``causal``, key j is visible to query i when ``k_pos[j] <= q_pos[i]``."""
    if k.shape[2] == 0:
        return empty_state(q.shape[:3], v.shape[-1], dtype=q.dtype, device=q.device)
    return state_of_block(_masked_scores(q, k, q_pos, k_pos, causal=causal, scale=scale), v)


def block_grads(q, k, v, do, lse, delta, q_pos, k_pos, *, causal: bool, scale: float):
    """(dq, dk, dv) contributions of one block. ``lse`` and ``delta`` = rowsum(dO ∘ O) are
    [B, H, n_q, 1] over the *whole* sequence, so P = exp(S − L) is the final softmax's block."""
    s = _masked_scores(q, k, q_pos, k_pos, causal=causal, scale=scale)
    p = torch.exp(s - lse)  # masked entries: exp(-inf) = 0
    dv = p.transpose(-1, -2) @ do
    ds = p * (do @ v.transpose(-1, -2) - delta)
    return (ds @ k) * scale, (ds.transpose(-1, -2) @ q) * scale, dv


def _shift(qs: Segment, ks: Segment) -> int | None:
    """Query index a sees key index b iff b <= a − shift, for two runs with one step; None when
    the steps differ (no such rule)."""
    if qs.step != ks.step:
        return None
    return -((qs.start - ks.start) // qs.step)


def _lse_state(q, k, v, *, causal: bool, scale: float) -> State:
    from flashedu.ops.v2.kernel import flash_attention_v2_lse

    o, lse = flash_attention_v2_lse(q, k, v, causal=causal, scale=scale)
    return State(lse[..., None], torch.ones_like(lse[..., None]), o.float())


def _pair_state(q, k, v, qs: Segment, ks: Segment, *, scale: float) -> State:
    nq, nk = q.shape[2], k.shape[2]
    shift = _shift(qs, ks)
    empty = empty_state(q.shape[:3], v.shape[-1], device=q.device)
    if nk == 0 or nq == 0:
        return empty
    if shift is not None and nk - 1 <= -shift:  # the first query already sees every key
        return _lse_state(q, k, v, causal=False, scale=scale)
    if shift is not None and nq - 1 - shift < 0:  # the last query sees none
        return empty
    if shift is not None and shift >= 0 and nk >= nq - shift:
        # Rows a >= shift see keys b <= a - shift: the kernel's causal mask on q[shift:], k[:nq-shift].
        st = _lse_state(q[:, :, shift:], k[:, :, :nq - shift], v[:, :, :nq - shift], causal=True, scale=scale)
        return _cat_rows([empty_state(q.shape[:2] + (shift,), v.shape[-1], device=q.device), st])
    return block_state(q.float(), k.float(), v.float(), qs.positions(), ks.positions(), causal=True, scale=scale)


def _cat_rows(states) -> State:
    return State(*(torch.cat(ts, dim=2) for ts in zip(*((s.m, s.l, s.o) for s in states))))


def block_state_flash(q, k, v, q_segs, k_segs, *, causal: bool, scale: float) -> State:
    """Like :func:`block_state` with the FA2 Triton kernel; shards given as their position runs
    (:func:`flashedu.ops.ring.layout.shard_segments`), rows of ``q`` in the order of ``q_segs``."""
    if not causal:
        return _lse_state(q, k, v, causal=False, scale=scale)
    rows, q0 = [], 0
    for qs in q_segs:
        qq = q[:, :, q0:q0 + len(qs)]
        parts, k0 = [], 0
        for ks in k_segs:
            parts.append(_pair_state(qq, k[:, :, k0:k0 + len(ks)], v[:, :, k0:k0 + len(ks)], qs, ks, scale=scale))
            k0 += len(ks)
        rows.append(merge_all(parts))
        q0 += len(qs)
    return _cat_rows(rows)


__all__ = ["block_grads", "block_state", "block_state_flash"]
