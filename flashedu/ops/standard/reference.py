"""Standard attention as seed 002 writes it: three steps, each result a tensor in HBM.

1. S = Q Kᵀ · scale            -> write S   [B, H, N, N]
2. P = softmax(S)  (row-wise)   -> write P   [B, H, N, N]
3. O = P V                      -> write O   [B, H, N, D]
"""
from __future__ import annotations

import torch

from ...validate import check_qkv


def masked_softmax(s: torch.Tensor) -> torch.Tensor:
    """Row softmax that maps a row of only -inf (fully masked) to zeros instead of NaN."""
    m = s.amax(dim=-1, keepdim=True)
    # A fully masked row has m = -inf; subtracting it would give NaN, so subtract 0 there.
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(s - m)
    l = e.sum(dim=-1, keepdim=True)
    return e / torch.where(l > 0, l, torch.ones_like(l))


def causal_mask(n_q: int, n_k: int, device) -> torch.Tensor:
    """True where query i may attend key j (j <= i)."""
    return torch.ones(n_q, n_k, dtype=torch.bool, device=device).tril()


def standard_attention(q, k, v, *, causal: bool = False, scale: float | None = None) -> torch.Tensor:
    scale = check_qkv(q, k, v, causal=causal, scale=scale, name="standard_reference")
    # Work in fp32 (fp64 stays fp64) so the reference is the accurate side of every comparison.
    work = torch.float64 if q.dtype == torch.float64 else torch.float32
    Q, K, V = (t.to(work) for t in (q, k, v))

    S = (Q @ K.transpose(-1, -2)) * scale  # [B, H, N, N]
    if causal:
        S = S.masked_fill(~causal_mask(S.shape[-2], S.shape[-1], S.device), float("-inf"))
    P = masked_softmax(S)  # [B, H, N, N]
    O = P @ V  # [B, H, N, D]
    return O.to(q.dtype)
