"""FlashAttention forward (Dao et al., 2022, Algorithm 1), literally, against the memory model.

K/V tiles in the outer loop, Q tiles in the inner one; O, ℓ and m live in HBM and make a round
trip every inner step::

    initialise O = 0, ℓ = 0, m = -inf in HBM                       (line 2)
    for j in 1..Tc:
        load K_j, V_j                                              (line 6)
        for i in 1..Tr:
            load Q_i, O_i, ℓ_i, m_i                                (line 8)
            S_ij = scale · Q_i K_jᵀ
            m̃_ij = rowmax(S_ij);  P̃_ij = exp(S_ij - m̃_ij);  ℓ̃_ij = rowsum(P̃_ij)
            m_new = max(m_i, m̃_ij)
            ℓ_new = e^(m_i - m_new) ℓ_i + e^(m̃_ij - m_new) ℓ̃_ij
            O_i = diag(ℓ_new)⁻¹ (diag(ℓ_i) e^(m_i - m_new) O_i + e^(m̃_ij - m_new) P̃_ij V_j)
            store O_i, ℓ_i = ℓ_new, m_i = m_new                    (lines 12-13)

O_i is a running *average* (normalised every step), which takes the two rescalings of line 12;
v2 keeps an unnormalised sum and divides once. HBM traffic (seed 001): reads 2Nd + 2·Tc·Nd,
writes Tc·Nd + 2·Tc·N; exactly, also the ℓ_i, m_i reads (+2·Tc·N) and the initialisation
(+Nd + 2N writes): see :func:`flashedu.iomodel.formula`.
"""
from __future__ import annotations

import torch

from flashedu.iomodel.blocks import fully_masked, n_tiles
from flashedu.iomodel.chip import Chip
from flashedu.iomodel.tiles import exp_diff, finite_or_zero, nonzero_or_one, scores


def v1_forward(chip: Chip, *, N: int, N_k: int, d: int, scale: float, causal: bool,
               block_r: int, block_c: int) -> None:
    """Run FA1's Algorithm 1 on ``chip``: reads Q, K, V; O [N, d], ℓ [N], m [N] live in HBM."""
    chip.tensor("O", N, d)
    chip.tensor("l", N, 1, stat=True)
    chip.tensor("m", N, 1, stat=True)
    br, bc = block_r, block_c
    Tr, Tc = n_tiles(N, br), n_tiles(N_k, bc)
    numeric = chip.numeric
    # One program walks every tile: Algorithm 1 is sequential within a (batch, head).
    chip.program(0)
    chip.buffer("K_j", bc, d)
    chip.buffer("V_j", bc, d)
    chip.buffer("Q_i", br, d)
    chip.buffer("O_i", br, d)
    chip.buffer("l_i", br, 1, acc=True)
    chip.buffer("m_i", br, 1, acc=True)
    chip.buffer("S_ij", br, bc, acc=True)

    chip.phase("init")
    for i in range(Tr):
        r0, r1 = i * br, min(N, (i + 1) * br)
        if numeric:
            B, H = chip.batch, chip.heads
            zeros = torch.zeros(B, H, r1 - r0, 1, dtype=chip.work_dtype, device=chip.device)
        chip.store("O", zeros.expand(B, H, r1 - r0, d) if numeric else None, r0, r1, from_="O_i", i=i)
        chip.store("l", zeros if numeric else None, r0, r1, from_="l_i", i=i)
        chip.store("m", zeros - float("inf") if numeric else None, r0, r1, from_="m_i", i=i)

    chip.phase("forward")
    # [v1-reference-start]
    for j in range(Tc):
        c0, c1 = j * bc, min(N_k, (j + 1) * bc)
        if causal and fully_masked(0, N, c0):  # no query at all sees this K/V tile
            for i in range(Tr):
                chip.skip(i, j)
            continue
        Kj = chip.load("K", c0, c1, into="K_j", j=j)  # [B, H, Bc, d]
        Vj = chip.load("V", c0, c1, into="V_j", j=j)  # [B, H, Bc, d]
        for i in range(Tr):
            r0, r1 = i * br, min(N, (i + 1) * br)
            if causal and fully_masked(r0, r1, c0):
                chip.skip(i, j)
                continue
            Qi = chip.load("Q", r0, r1, into="Q_i", i=i, j=j)  # [B, H, Br, d]
            Oi = chip.load("O", r0, r1, into="O_i", i=i, j=j)  # [B, H, Br, d]
            li = chip.load("l", r0, r1, into="l_i", i=i, j=j)  # [B, H, Br, 1]
            mi = chip.load("m", r0, r1, into="m_i", i=i, j=j)  # [B, H, Br, 1]
            chip.compute(i, j, (r1 - r0) * (c1 - c0), matmuls=2, softmax=True)
            if numeric:
                # S_ij [B, H, Br, Bc], -inf where the causal mask hides a score
                S = scores(Qi, Kj, scale, causal=causal, r0=r0, r1=r1, c0=c0, c1=c1)
                m_t = S.amax(dim=-1, keepdim=True)  # m̃_ij
                P = torch.exp(S - finite_or_zero(m_t))  # P̃_ij
                l_t = P.sum(dim=-1, keepdim=True)  # ℓ̃_ij
                m_new = torch.maximum(mi, m_t)
                a, b = exp_diff(mi, m_new), exp_diff(m_t, m_new)
                l_new = a * li + b * l_t
                # Un-normalise the old average (× ℓ_i), add the tile, re-normalise (÷ ℓ_new).
                Oi = (li * a * Oi + b * (P @ Vj)) / nonzero_or_one(l_new)
                li, mi = l_new, m_new
            chip.store("O", Oi, r0, r1, from_="O_i", i=i, j=j)
            chip.store("l", li, r0, r1, from_="l_i", i=i, j=j)
            chip.store("m", mi, r0, r1, from_="m_i", i=i, j=j)
    # [v1-reference-end]
    chip.free("K_j", "V_j", "Q_i", "O_i", "l_i", "m_i", "S_ij")
