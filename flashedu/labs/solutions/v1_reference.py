"""Lab 2, a solution: Algorithm 1 of Dao et al. (2022) against the simulated chip."""
from __future__ import annotations

import math

import torch


def _shift(m: torch.Tensor) -> torch.Tensor:
    """m where finite, 0 where -inf: what to subtract before exp (a row with no key yet)."""
    return torch.where(m > -math.inf, m, torch.zeros_like(m))


# [v1_reference-solution-start]
def v1_forward(chip, *, N, d, scale, causal, block_r, block_c):
    br, bc = block_r, block_c
    Tr, Tc = -(-N // br), -(-N // bc)  # ⌈N/Br⌉, ⌈N/Bc⌉: the last tiles may be short
    for name, rows in (("K_j", bc), ("V_j", bc), ("Q_i", br), ("O_i", br)):
        chip.buffer(name, rows, d)
    for name in ("l_i", "m_i"):
        chip.buffer(name, br, 1, acc=True)
    B, H = chip.batch, chip.heads
    for i in range(Tr):  # line 2: O = 0, ℓ = 0, m = -inf in HBM
        r0, r1 = i * br, min(N, (i + 1) * br)
        zeros = torch.zeros(B, H, r1 - r0, 1, dtype=chip.work_dtype)
        chip.store("O", zeros.expand(B, H, r1 - r0, d), r0, r1, from_="O_i", i=i)
        chip.store("l", zeros, r0, r1, from_="l_i", i=i)
        chip.store("m", zeros - math.inf, r0, r1, from_="m_i", i=i)
    for j in range(Tc):  # K/V tiles outer
        c0, c1 = j * bc, min(N, (j + 1) * bc)
        Kj = chip.load("K", c0, c1, into="K_j", j=j)  # [B, H, Bc, d], once per j
        Vj = chip.load("V", c0, c1, into="V_j", j=j)
        for i in range(Tr):  # Q tiles inner
            r0, r1 = i * br, min(N, (i + 1) * br)
            if causal and c0 > r1 - 1:  # every key of tile j is after every query of tile i
                continue
            Qi = chip.load("Q", r0, r1, into="Q_i", i=i, j=j)  # [B, H, Br, d]
            Oi = chip.load("O", r0, r1, into="O_i", i=i, j=j)  # [B, H, Br, d]
            li = chip.load("l", r0, r1, into="l_i", i=i, j=j)  # [B, H, Br, 1]
            mi = chip.load("m", r0, r1, into="m_i", i=i, j=j)  # [B, H, Br, 1]
            S = scale * Qi @ Kj.transpose(-1, -2)  # [B, H, Br, Bc]
            if causal:
                rows = torch.arange(r0, r1)[:, None]
                S = S.masked_fill(torch.arange(c0, c1)[None, :] > rows, -math.inf)
            m_t = S.amax(dim=-1, keepdim=True)  # m̃_ij
            P = torch.exp(S - _shift(m_t))  # P̃_ij
            m_new = torch.maximum(mi, m_t)
            a = torch.where(mi > -math.inf, torch.exp(mi - _shift(m_new)), 0.0)
            b = torch.where(m_t > -math.inf, torch.exp(m_t - _shift(m_new)), 0.0)
            l_new = a * li + b * P.sum(dim=-1, keepdim=True)
            # line 12: un-normalise the old average, add the tile, re-normalise
            Oi = (li * a * Oi + b * (P @ Vj)) / torch.where(l_new > 0, l_new, 1.0)
            chip.store("O", Oi, r0, r1, from_="O_i", i=i, j=j)  # line 13
            chip.store("l", l_new, r0, r1, from_="l_i", i=i, j=j)
            chip.store("m", m_new, r0, r1, from_="m_i", i=i, j=j)
# [v1_reference-solution-end]
