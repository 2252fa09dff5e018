"""Attention in one pass over the keys: the fused softmax·V of chapter 2.

Each query row keeps the state (m, ℓ, o) of the keys seen so far; a block of keys makes its own
state, which is merged in with ⊕. No N×N matrix is ever formed: only one [N, block] slice of logits
at a time. This is FlashAttention-2's inner loop with the whole of Q as one block.
"""
from __future__ import annotations

import torch

from flashedu.softmax.state import empty_state, finalize, merge, state_of_block
from flashedu.validate import check_qkv


def online_attention(q, k, v, *, causal: bool = False, scale: float | None = None,
                     block: int = 16) -> torch.Tensor:
    scale = check_qkv(q, k, v, causal=causal, scale=scale, name="online_reference")
    if not isinstance(block, int) or block < 1:
        raise ValueError(f"online_reference: block must be a positive int, got {block!r}")
    # [online-reference-start]
    work = torch.float64 if q.dtype == torch.float64 else torch.float32
    Q, K, V = (t.to(work) for t in (q, k, v))
    N, N_K = Q.shape[2], K.shape[2]
    rows = torch.arange(N, device=q.device)[:, None]
    state = empty_state(Q.shape[:3], V.shape[-1], dtype=work, device=q.device)
    for start in range(0, N_K, block):
        s = (Q @ K[:, :, start:start + block].transpose(-1, -2)) * scale  # [B, H, N, block]
        if causal:
            cols = torch.arange(start, min(start + block, N_K), device=q.device)[None, :]
            s = s.masked_fill(cols > rows, float("-inf"))
        state = merge(state, state_of_block(s, V[:, :, start:start + block]))
    return finalize(state).to(q.dtype)
    # [online-reference-end]
