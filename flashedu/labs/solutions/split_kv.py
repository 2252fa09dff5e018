"""Lab 6, a solution: merge split-KV partial states (flash-decoding, Dao et al., 2023)."""
from __future__ import annotations

import math

import torch


# [split_kv-solution-start]
def merge_splits(o: torch.Tensor, m: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    # o [S, R, D] unnormalised, m and l [S, R]
    m_all = m.amax(dim=0)  # [R] the common max of each row
    shift = torch.where(m_all > -math.inf, m_all, torch.zeros_like(m_all))
    # Weight of split s: e^(m_s - m); an empty split (m_s = -inf) weighs 0.
    w = torch.where(m > -math.inf, torch.exp(m - shift), torch.zeros_like(m))  # [S, R]
    l_all = (w * l).sum(dim=0)  # [R]
    o_all = (w[..., None] * o).sum(dim=0)  # [R, D]
    # One divide at the end; a row no split saw has l = 0 and gives 0.
    return o_all / torch.where(l_all > 0, l_all, torch.ones_like(l_all))[:, None]
# [split_kv-solution-end]
