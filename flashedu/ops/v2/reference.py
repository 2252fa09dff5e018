"""FlashAttention-2 forward (Dao, 2023, Algorithm 1), written against the memory model.

The loops of v1 swapped: each Q tile is one program, and O_i, ℓ_i, m_i never leave the chip::

    for i in 1..Tr:                               # one program per Q tile, all in parallel
        load Q_i;  O_i = 0, ℓ_i = 0, m_i = -inf   (on chip)
        for j in 1..Tc:
            load K_j, V_j
            S_ij = scale · Q_i K_jᵀ
            m_new = max(m_i, rowmax(S_ij));  P_ij = exp(S_ij - m_new)
            ℓ_i = e^(m_i - m_new) ℓ_i + rowsum(P_ij)
            O_i = e^(m_i - m_new) O_i + P_ij V_j;  m_i = m_new      (O_i stays unnormalised)
        O_i = O_i / ℓ_i;  L_i = m_i + log ℓ_i                       (one division, at the end)
        store O_i, L_i

HBM traffic (seed 001): reads Nd + 2·Tr·Nd, writes Nd + N, with Tr = ⌈N/Br⌉ for any N.
Causal: tiles entirely above the diagonal are skipped (and recorded as skipped).
"""
from __future__ import annotations

import torch

from flashedu.iomodel.blocks import fully_masked, n_tiles
from flashedu.iomodel.chip import Chip
from flashedu.iomodel.tiles import exp_diff, finite_or_zero, nonzero_or_one, scores


def v2_forward(chip: Chip, *, N: int, N_k: int, d: int, scale: float, causal: bool,
               block_r: int, block_c: int) -> None:
    """Run FA2's forward on ``chip``: reads Q, K, V from its HBM, writes O [N, d] and L [N]."""
    chip.tensor("O", N, d)
    chip.tensor("L", N, 1, stat=True)
    chip.phase("forward")
    br, bc = block_r, block_c
    numeric = chip.numeric
    Oi = Li = None  # a shape-only run (numeric False) moves tiles but computes no values
    # [v2-reference-start]
    for i in range(n_tiles(N, br)):
        chip.program(i)
        r0, r1 = i * br, min(N, (i + 1) * br)
        chip.buffer("Q_i", br, d)
        chip.buffer("K_j", bc, d)
        chip.buffer("V_j", bc, d)
        chip.buffer("O_i", br, d, acc=True)
        chip.buffer("S_ij", br, bc, acc=True)
        chip.buffer("m_i", br, 1, acc=True)
        chip.buffer("l_i", br, 1, acc=True)
        Qi = chip.load("Q", r0, r1, into="Q_i", i=i)  # [B, H, Br, d]
        if numeric:
            B, H = Qi.shape[:2]
            Oi = torch.zeros(B, H, r1 - r0, d, dtype=Qi.dtype, device=Qi.device)
            mi = torch.full((B, H, r1 - r0, 1), -torch.inf, dtype=Qi.dtype, device=Qi.device)
            li = torch.zeros_like(mi)
        for j in range(n_tiles(N_k, bc)):
            c0, c1 = j * bc, min(N_k, (j + 1) * bc)
            if causal and fully_masked(r0, r1, c0):
                chip.skip(i, j)
                continue
            Kj = chip.load("K", c0, c1, into="K_j", i=i, j=j)  # [B, H, Bc, d]
            Vj = chip.load("V", c0, c1, into="V_j", i=i, j=j)  # [B, H, Bc, d]
            chip.compute(i, j, (r1 - r0) * (c1 - c0), matmuls=2, softmax=True)
            if numeric:
                # S_ij [B, H, Br, Bc], -inf where the causal mask hides a score
                S = scores(Qi, Kj, scale, causal=causal, r0=r0, r1=r1, c0=c0, c1=c1)
                m_new = torch.maximum(mi, S.amax(dim=-1, keepdim=True))
                P = torch.exp(S - finite_or_zero(m_new))
                alpha = exp_diff(mi, m_new)  # rescales what was summed under the old max
                li = alpha * li + P.sum(dim=-1, keepdim=True)
                Oi = alpha * Oi + P @ Vj
                mi = m_new
        if numeric:
            Oi = Oi / nonzero_or_one(li)
            # log 0 = -inf: a fully masked row gets L = -inf, as in FA2's kernels.
            Li = mi + torch.log(li)
        chip.store("O", Oi, r0, r1, from_="O_i", i=i)
        chip.store("L", Li, r0, r1, from_="m_i", i=i)
        # [v2-reference-end]
        chip.free("Q_i", "K_j", "V_j", "O_i", "S_ij", "m_i", "l_i")
