"""FlashAttention backward (Dao et al., 2022, Algorithm 4 without dropout), against the memory model.

The forward stored O and the row statistics ℓ and m; P is never stored. The backward *recomputes*
each tile of P from Q_i, K_j, ℓ_i and m_i (one more QKᵀ instead of N² reads and writes of P)::

    dQ = 0, dK = 0, dV = 0 in HBM                                (line 5)
    for j in 1..Tc:                                   # one program walks everything, as in the forward
        load K_j, V_j;  dK̃_j = 0, dṼ_j = 0 (on chip)              (lines 7-8)
        for i in 1..Tr:
            load Q_i, O_i, dO_i, dQ_i, ℓ_i, m_i                   (line 10)
            S_ij = scale · Q_i K_jᵀ (masked)                      (lines 11-12)
            P_ij = diag(ℓ_i)⁻¹ exp(S_ij - m_i)                    (line 13, recomputation)
            dṼ_j += P_ijᵀ dO_i;  dP_ij = dO_i V_jᵀ                 (lines 16-17)
            D_i = rowsum(dO_i ∘ O_i);  dS_ij = P_ij ∘ (dP_ij - D_i)   (lines 19-20)
            dQ_i += scale · dS_ij K_j;  store dQ_i                (line 21)
            dK̃_j += scale · dS_ijᵀ Q_i                            (line 22)
        store dK_j = dK̃_j, dV_j = dṼ_j                             (line 24)

Without dropout, lines 1, 14, 15 and 18 (the random mask Z_ij) are the identity. FA2's backward
keeps this loop order; it stores L instead of ℓ and m and computes D once, up front, instead of
reloading O_i every step. HBM traffic (non-causal, N_k = N): reads 2Nd + Tc·(4Nd + 2N), writes
5Nd + Tc·Nd; see :func:`flashedu.iomodel.formula` with ``backward=True``.
"""
from __future__ import annotations

import torch

from flashedu.iomodel.blocks import acc_itemsize, fa1_block_sizes, fully_masked, itemsize_of, n_tiles
from flashedu.iomodel.chip import Chip
from flashedu.iomodel.tiles import finite_or_zero, nonzero_or_one, scores

# Row statistics the backward reads from the forward (besides Q, K, V, O and dO).
STATS = ("l", "m")


def backward_footprint(*, block_r: int, block_c: int, d: int, itemsize: int, acc: int) -> int:
    """Bytes on chip: K_j, V_j; dK_j, dV_j (fp32); Q_i, O_i, dO_i; dQ_i (fp32); ℓ_i, m_i, D_i; S_ij, dP_ij."""
    br, bc, e = block_r, block_c, itemsize
    return 2 * bc * d * (e + acc) + br * d * (3 * e + acc) + 3 * br * acc + 2 * br * bc * acc


def backward_block_sizes(*, d: int, sram_bytes: int, dtype: torch.dtype) -> tuple[int, int]:
    """Algorithm 4, line 2: the forward's Bc = ⌈M/4d⌉, Br = min(Bc, d). Its budget of four tiles
    leaves out the gradient tiles, so starting from the forward's M, M is halved until the
    backward's buffers fit."""
    e, acc = itemsize_of(dtype), acc_itemsize(dtype)
    M = max(1, sram_bytes // (2 * e))
    while M >= 1:
        br, bc = fa1_block_sizes(M, d)
        if backward_footprint(block_r=br, block_c=bc, d=d, itemsize=e, acc=acc) <= sram_bytes:
            return br, bc
        M //= 2
    raise ValueError(f"sram_bytes={sram_bytes} is too small for even 1×1 tiles of the v1 backward at d={d}")


def probabilities(S: torch.Tensor, l: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """P = diag(ℓ)⁻¹ exp(S - m) (line 13). A row whose forward saw no key has m = -inf, ℓ = 0 and
    no probabilities: its P is 0, not NaN. [B, H, Br, Bc]"""
    P = torch.exp(S - finite_or_zero(m)).masked_fill(m == float("-inf"), 0.0)
    return P / nonzero_or_one(l)


def v1_backward(chip: Chip, *, N: int, N_k: int, d: int, scale: float, causal: bool,
                block_r: int, block_c: int) -> None:
    """Run FA1's Algorithm 4 on ``chip``: reads Q, K, V, O, dO [N, d], ℓ and m [N] from its HBM,
    writes dQ [N, d] (an fp32 accumulator, as in the kernels), dK, dV [N_k, d]."""
    # Row-statistic sized (fp32): dQ is summed over Tc tiles in HBM; fp16 would round every add.
    chip.tensor("dQ", N, d, stat=True)
    chip.tensor("dK", N_k, d)
    chip.tensor("dV", N_k, d)
    br, bc = block_r, block_c
    Tr, Tc = n_tiles(N, br), n_tiles(N_k, bc)
    numeric = chip.numeric
    chip.program(0)
    for name, rows, cols, acc in (("K_j", bc, d, False), ("V_j", bc, d, False), ("dK_j", bc, d, True),
                                  ("dV_j", bc, d, True), ("Q_i", br, d, False), ("O_i", br, d, False),
                                  ("dO_i", br, d, False), ("dQ_i", br, d, True), ("l_i", br, 1, True),
                                  ("m_i", br, 1, True), ("D_i", br, 1, True), ("S_ij", br, bc, True),
                                  ("dP_ij", br, bc, True)):
        chip.buffer(name, rows, cols, acc=acc)

    def zeros(rows):  # a tile of line 5's zeros (None in a shape-only run)
        return torch.zeros(chip.batch, chip.heads, rows, d, dtype=chip.work_dtype,
                           device=chip.device) if numeric else None

    chip.phase("init")  # line 5
    for i in range(Tr):
        r0, r1 = i * br, min(N, (i + 1) * br)
        chip.store("dQ", zeros(r1 - r0), r0, r1, from_="dQ_i", i=i)
    for j in range(Tc):
        c0, c1 = j * bc, min(N_k, (j + 1) * bc)
        chip.store("dK", zeros(c1 - c0), c0, c1, from_="dK_j", j=j)
        chip.store("dV", zeros(c1 - c0), c0, c1, from_="dV_j", j=j)

    chip.phase("backward")
    for j in range(Tc):
        c0, c1 = j * bc, min(N_k, (j + 1) * bc)
        Kj = chip.load("K", c0, c1, into="K_j", j=j)  # [B, H, Bc, d]
        Vj = chip.load("V", c0, c1, into="V_j", j=j)  # [B, H, Bc, d]
        if numeric:
            dKj, dVj = torch.zeros_like(Kj), torch.zeros_like(Vj)  # line 8
        for i in range(Tr):
            r0, r1 = i * br, min(N, (i + 1) * br)
            if causal and fully_masked(r0, r1, c0):  # P_ij = 0: the tile adds nothing to any gradient
                chip.skip(i, j)
                continue
            Qi = chip.load("Q", r0, r1, into="Q_i", i=i, j=j)  # [B, H, Br, d]
            Oi = chip.load("O", r0, r1, into="O_i", i=i, j=j)  # [B, H, Br, d]
            dOi = chip.load("dO", r0, r1, into="dO_i", i=i, j=j)  # [B, H, Br, d]
            dQi = chip.load("dQ", r0, r1, into="dQ_i", i=i, j=j)  # [B, H, Br, d]
            li = chip.load("l", r0, r1, into="l_i", i=i, j=j)  # [B, H, Br, 1]
            mi = chip.load("m", r0, r1, into="m_i", i=i, j=j)  # [B, H, Br, 1]
            # Five products per score: S, dV, dP, dQ, dK (the forward has two: 2.5x the FLOPs).
            chip.compute(i, j, (r1 - r0) * (c1 - c0), matmuls=5, softmax=True)
            if numeric:
                S = scores(Qi, Kj, scale, causal=causal, r0=r0, r1=r1, c0=c0, c1=c1)  # [B, H, Br, Bc]
                P = probabilities(S, li, mi)  # line 13
                dVj = dVj + P.transpose(-1, -2) @ dOi  # line 16  [B, H, Bc, d]
                dP = dOi @ Vj.transpose(-1, -2)  # line 17  [B, H, Br, Bc]
                Di = (dOi * Oi).sum(dim=-1, keepdim=True)  # line 19, again for every j
                dS = P * (dP - Di)  # line 20
                dQi = dQi + scale * (dS @ Kj)  # line 21
                dKj = dKj + scale * (dS.transpose(-1, -2) @ Qi)  # line 22  [B, H, Bc, d]
            chip.store("dQ", dQi, r0, r1, from_="dQ_i", i=i, j=j)
        chip.store("dK", dKj if numeric else None, c0, c1, from_="dK_j", j=j)  # line 24
        chip.store("dV", dVj if numeric else None, c0, c1, from_="dV_j", j=j)
    chip.free("K_j", "V_j", "dK_j", "dV_j", "Q_i", "O_i", "dO_i", "dQ_i", "l_i", "m_i", "D_i",
              "S_ij", "dP_ij")
