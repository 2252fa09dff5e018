"""Lab 1, a solution: online softmax by blocks of columns (Milakov & Gimelshein, 2018)."""
from __future__ import annotations

import math

import torch


# [online_softmax-solution-start]
def online_softmax(x: torch.Tensor, block: int) -> torch.Tensor:
    R, N = x.shape
    m = torch.full((R, 1), -math.inf, dtype=x.dtype)  # running max
    l = torch.zeros((R, 1), dtype=x.dtype)  # running sum of e^(x - m)
    for c0 in range(0, N, block):  # pass 1: one block of columns at a time
        xb = x[:, c0:c0 + block]  # [R, ≤ block]; the last block may be short
        m_new = torch.maximum(m, xb.amax(dim=1, keepdim=True))
        # A row with every logit so far masked keeps m = -inf: shift by 0 there.
        shift = torch.where(m_new > -math.inf, m_new, torch.zeros_like(m_new))
        l = l * torch.exp(m - shift) + torch.exp(xb - shift).sum(dim=1, keepdim=True)
        m = m_new
    shift = torch.where(m > -math.inf, m, torch.zeros_like(m))
    # pass 2: normalise; a fully masked row has l = 0 and gives 0
    return torch.exp(x - shift) / torch.where(l > 0, l, torch.ones_like(l))
# [online_softmax-solution-end]
