"""Attention as a framework wrote it before FlashAttention: three torch ops in the input dtype,
S and P kept for the backward pass. What 'naive' means in every benchmark."""
from __future__ import annotations

import torch

from flashedu.validate import check_qkv


def naive_attention(q, k, v, *, causal: bool = False, scale: float | None = None) -> torch.Tensor:
    scale = check_qkv(q, k, v, causal=causal, scale=scale, name="standard_torch")
    s = (q @ k.transpose(-1, -2)) * scale  # [B, H, N, N] in HBM
    if causal:
        n, n_k = s.shape[-2:]
        s = s.masked_fill(~torch.ones(n, n_k, dtype=torch.bool, device=s.device).tril(), float("-inf"))
    p = torch.softmax(s.float(), dim=-1).to(q.dtype)  # [B, H, N, N] in HBM
    return p @ v
