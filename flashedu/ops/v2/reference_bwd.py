"""FlashAttention-2 backward (Dao, 2023, Algorithm 2), written against the memory model.

The forward stored only O and the logsumexp L = m + log ℓ; P is never stored. The backward
*recomputes* each tile of P from Q_i, K_j and L_i, which costs one more QKᵀ but saves the N²
reads and writes of P that standard attention's backward needs::

    D = rowsum(dO ∘ O);  dQ = 0 in HBM                           (lines 3-4, the preprocess)
    for j in 1..Tc:                                   # one program per K/V tile, in parallel
        load K_j, V_j;  dK_j = 0, dV_j = 0 (on chip)              (lines 6-7)
        for i in 1..Tr:
            load Q_i, dO_i, L_i, D_i                              (line 9)
            S_ij = scale · Q_i K_jᵀ;  P_ij = exp(S_ij - L_i)      (lines 10-11, recomputation)
            dV_j += P_ijᵀ dO_i;  dP_ij = dO_i V_jᵀ                 (lines 12-13)
            dS_ij = P_ij ∘ (dP_ij - D_i)                          (line 14)
            load dQ_i;  dQ_i += scale · dS_ij K_j;  store dQ_i    (line 15)
            dK_j += scale · dS_ijᵀ Q_i                            (line 16)
        store dK_j, dV_j                                          (line 18)

The paper leaves out the softmax scale; with S = scale · QKᵀ it multiplies dQ and dK.
HBM traffic (non-causal, N_k = N): reads 4Nd + Tc·(3Nd + 2N), writes 3Nd + N + Tc·Nd; see
:func:`flashedu.iomodel.formula` with ``backward=True``.
"""
from __future__ import annotations

import torch

from flashedu.iomodel.blocks import MAX_SQUARE_BLOCK, acc_itemsize, fully_masked, itemsize_of, n_tiles
from flashedu.iomodel.chip import Chip
from flashedu.iomodel.tiles import finite_or_zero, scores

# Row statistics the backward reads from the forward (besides Q, K, V, O and dO).
STATS = ("L",)


def backward_footprint(*, block_r: int, block_c: int, d: int, itemsize: int, acc: int) -> int:
    """Bytes on chip: K_j, V_j; dK_j, dV_j (fp32); Q_i, dO_i; dQ_i (fp32); L_i, D_i; S_ij, dP_ij."""
    br, bc, e = block_r, block_c, itemsize
    return 2 * bc * d * (e + acc) + br * d * (2 * e + acc) + 2 * br * acc + 2 * br * bc * acc


def backward_block_sizes(*, d: int, sram_bytes: int, dtype: torch.dtype) -> tuple[int, int]:
    """The forward's rule with the backward's buffers: the largest square power of two ≤ 128
    that fits. The gradient accumulators and the second score tile make it smaller than the
    forward's (FA2's kernels also use smaller backward tiles)."""
    e, acc = itemsize_of(dtype), acc_itemsize(dtype)
    block = MAX_SQUARE_BLOCK
    while block >= 1:
        if backward_footprint(block_r=block, block_c=block, d=d, itemsize=e, acc=acc) <= sram_bytes:
            return block, block
        block //= 2
    raise ValueError(f"sram_bytes={sram_bytes} is too small for even 1×1 tiles of the v2 backward at d={d}")


def probabilities(S: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """P = exp(S - L) (line 11). A row whose forward saw no key has L = -inf and no
    probabilities: its P is 0, where exp(-inf - (-inf)) would be NaN. [B, H, Br, Bc]"""
    return torch.exp(S - finite_or_zero(L)).masked_fill(L == float("-inf"), 0.0)


def preprocess(chip: Chip, *, N: int, d: int, block_r: int, zero_dq: bool = True) -> None:
    """Lines 3-4: D = rowsum(dO ∘ O) and dQ = 0 in HBM. Line 4 needs whole rows of O and dO,
    which no K/V program owns: a pass of its own, one program per Q tile. ``zero_dq=False``: D
    only (a backward whose dQ pass writes each dQ_i once needs no zeroed accumulator)."""
    br, numeric = block_r, chip.numeric
    chip.phase("preprocess")
    for i in range(n_tiles(N, br)):
        chip.program(i)
        r0, r1 = i * br, min(N, (i + 1) * br)
        chip.buffer("O_i", br, d)
        chip.buffer("dO_i", br, d)
        chip.buffer("D_i", br, 1, acc=True)
        chip.buffer("dQ_i", br, d, acc=True)
        Oi = chip.load("O", r0, r1, into="O_i", i=i)  # [B, H, Br, d]
        dOi = chip.load("dO", r0, r1, into="dO_i", i=i)  # [B, H, Br, d]
        Di = (dOi * Oi).sum(dim=-1, keepdim=True) if numeric else None  # [B, H, Br, 1]
        chip.store("D", Di, r0, r1, from_="D_i", i=i)
        if zero_dq:
            chip.store("dQ", torch.zeros_like(Oi) if numeric else None, r0, r1, from_="dQ_i", i=i)
        chip.free("O_i", "dO_i", "D_i", "dQ_i")


def v2_backward(chip: Chip, *, N: int, N_k: int, d: int, scale: float, causal: bool,
                block_r: int, block_c: int) -> None:
    """Run FA2's Algorithm 2 on ``chip``: reads Q, K, V, O, dO [N, d] and L [N] from its HBM,
    writes D [N], dQ [N, d] (an fp32 accumulator, as in FA2's kernels), dK, dV [N_k, d]."""
    chip.tensor("D", N, 1, stat=True)
    # Row-statistic sized (fp32): dQ is summed over Tc tiles in HBM; fp16 would round every add.
    chip.tensor("dQ", N, d, stat=True)
    chip.tensor("dK", N_k, d)
    chip.tensor("dV", N_k, d)
    br, bc = block_r, block_c
    Tr, Tc = n_tiles(N, br), n_tiles(N_k, bc)
    numeric = chip.numeric

    preprocess(chip, N=N, d=d, block_r=br)

    chip.phase("backward")
    dKj = dVj = None  # a shape-only run (numeric False) moves tiles but computes no values
    # [v2-backward-reference-start]
    for j in range(Tc):
        chip.program(j)
        c0, c1 = j * bc, min(N_k, (j + 1) * bc)
        for name, r, c in (("K_j", bc, d), ("V_j", bc, d), ("Q_i", br, d), ("dO_i", br, d)):
            chip.buffer(name, r, c)
        for name, r, c in (("dK_j", bc, d), ("dV_j", bc, d), ("dQ_i", br, d), ("L_i", br, 1),
                           ("D_i", br, 1), ("S_ij", br, bc), ("dP_ij", br, bc)):
            chip.buffer(name, r, c, acc=True)
        Kj = chip.load("K", c0, c1, into="K_j", j=j)  # [B, H, Bc, d]
        Vj = chip.load("V", c0, c1, into="V_j", j=j)  # [B, H, Bc, d]
        if numeric:
            dKj, dVj = torch.zeros_like(Kj), torch.zeros_like(Vj)  # line 7
        for i in range(Tr):
            r0, r1 = i * br, min(N, (i + 1) * br)
            if causal and fully_masked(r0, r1, c0):  # P_ij = 0: adds nothing to any gradient
                chip.skip(i, j)
                continue
            # Line 9 also lists O_i, but after line 4 nothing uses it (v1 reloads it).
            Qi = chip.load("Q", r0, r1, into="Q_i", i=i, j=j)  # [B, H, Br, d]
            dOi = chip.load("dO", r0, r1, into="dO_i", i=i, j=j)  # [B, H, Br, d]
            Li = chip.load("L", r0, r1, into="L_i", i=i, j=j)  # [B, H, Br, 1]
            Di = chip.load("D", r0, r1, into="D_i", i=i, j=j)  # [B, H, Br, 1]
            # Five products per score: S, dV, dP, dQ, dK (the forward has two: 2.5x the FLOPs)
            chip.compute(i, j, (r1 - r0) * (c1 - c0), matmuls=5, softmax=True)
            if numeric:
                # line 10: S_ij [B, H, Br, Bc], recomputed (-inf where causal hides a score)
                S = scores(Qi, Kj, scale, causal=causal, r0=r0, r1=r1, c0=c0, c1=c1)
                P = probabilities(S, Li)  # line 11: exp(S - L), recomputed
                dVj = dVj + P.transpose(-1, -2) @ dOi  # line 12  [B, H, Bc, d]
                dP = dOi @ Vj.transpose(-1, -2)  # line 13  [B, H, Br, Bc]
                dS = P * (dP - Di)  # line 14
            # Line 15: a read-modify-write, because programs j run in parallel and all add
            # to dQ_i. Kernels use atomic adds to an fp32 dQ, or a second pass, Q tiles outer.
            dQi = chip.load("dQ", r0, r1, into="dQ_i", i=i, j=j)  # [B, H, Br, d]
            if numeric:
                dQi = dQi + scale * (dS @ Kj)
                dKj = dKj + scale * (dS.transpose(-1, -2) @ Qi)  # line 16 [B, H, Bc, d]
            chip.store("dQ", dQi, r0, r1, from_="dQ_i", i=i, j=j)
        chip.store("dK", dKj, c0, c1, from_="dK_j", j=j)  # line 18
        chip.store("dV", dVj, c0, c1, from_="dV_j", j=j)
        # [v2-backward-reference-end]
        chip.free("K_j", "V_j", "dK_j", "dV_j", "Q_i", "dO_i", "dQ_i", "L_i", "D_i", "S_ij", "dP_ij")
