"""The v2 backward as ``v2_triton`` runs it, written against the memory model: Algorithm 2's
arithmetic, with dQ taken out of the K/V loop into a pass of its own.

Algorithm 2 (``reference_bwd.py``) keeps K/V tiles outside and sends dQ_i through HBM on every
inner step: a read-modify-write of an fp32 tile, because the K/V programs that run in parallel
all add to it. ``v2_triton``'s backward (``kernel_bwd.py``) swaps that for a second pass with the
loops the other way round, so every program owns what it writes::

    D = rowsum(dO ∘ O)                                    pass 1, one program per Q tile
    for j in 1..Tc:                                       pass 2, one program per K/V tile
        load K_j, V_j;  dK_j = dV_j = 0 on chip
        for i in 1..Tr:
            load Q_i, dO_i, L_i, D_i
            S, P, dV_j += Pᵀ dO_i, dP, dS, dK_j += scale · dSᵀ Q_i
        store dK_j, dV_j
    for i in 1..Tr:                                       pass 3, one program per Q tile
        load Q_i, dO_i, L_i, D_i;  dQ_i = 0 on chip
        for j in 1..Tc:
            load K_j, V_j
            S, P, dP, dS recomputed;  dQ_i += scale · dS K_j
        store dQ_i

Seven products per score instead of five (S and dP are computed twice), in exchange for no
dQ round trips and no atomics. HBM traffic (non-causal, N_k = N, elements): reads
2Nd (pass 1) + 2Nd + Tc·(2Nd + 2N) (pass 2) + 2Nd + 2N + Tr·2Nd (pass 3); writes N + 2Nd + Nd.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from flashedu.iomodel.blocks import fully_masked, n_tiles
from flashedu.iomodel.chip import Chip
from flashedu.iomodel.tiles import scores
from flashedu.ops.v2.reference_bwd import preprocess, probabilities


def _load_rows(chip: Chip, r0: int, r1: int, **where):
    """Q_i, dO_i [B, H, Br, d] and L_i, D_i [B, H, Br, 1]: what both passes read of a Q tile."""
    return tuple(chip.load(name, r0, r1, into=f"{name}_i", **where) for name in ("Q", "dO", "L", "D"))


def _dkdv_pass(chip: Chip, *, N: int, N_k: int, d: int, scale: float, causal: bool,
               block_r: int, block_c: int) -> None:
    """Pass 2: one program per K/V tile; dK_j and dV_j stay on chip, written once."""
    br, bc, numeric = block_r, block_c, chip.numeric
    dKj = dVj = None
    chip.phase("dk/dv")
    for j in range(n_tiles(N_k, bc)):
        chip.program(j)
        c0, c1 = j * bc, min(N_k, (j + 1) * bc)
        for name, r, c in (("K_j", bc, d), ("V_j", bc, d), ("Q_i", br, d), ("dO_i", br, d)):
            chip.buffer(name, r, c)
        for name, r, c in (("dK_j", bc, d), ("dV_j", bc, d), ("L_i", br, 1), ("D_i", br, 1),
                           ("S_ij", br, bc), ("dP_ij", br, bc)):
            chip.buffer(name, r, c, acc=True)
        Kj = chip.load("K", c0, c1, into="K_j", j=j)  # [B, H, Bc, d]
        Vj = chip.load("V", c0, c1, into="V_j", j=j)  # [B, H, Bc, d]
        if numeric:
            dKj, dVj = torch.zeros_like(Kj), torch.zeros_like(Vj)
        for i in range(n_tiles(N, br)):
            r0, r1 = i * br, min(N, (i + 1) * br)
            if causal and fully_masked(r0, r1, c0):
                chip.skip(i, j)
                continue
            Qi, dOi, Li, Di = _load_rows(chip, r0, r1, i=i, j=j)
            chip.compute(i, j, (r1 - r0) * (c1 - c0), matmuls=4, softmax=True)  # S, dV, dP, dK
            if numeric:
                P = probabilities(scores(Qi, Kj, scale, causal=causal, r0=r0, r1=r1, c0=c0, c1=c1), Li)
                dVj = dVj + P.transpose(-1, -2) @ dOi
                dS = P * (dOi @ Vj.transpose(-1, -2) - Di)  # [B, H, Br, Bc]
                dKj = dKj + scale * (dS.transpose(-1, -2) @ Qi)
        chip.store("dK", dKj, c0, c1, from_="dK_j", j=j)
        chip.store("dV", dVj, c0, c1, from_="dV_j", j=j)
        chip.free("K_j", "V_j", "Q_i", "dO_i", "dK_j", "dV_j", "L_i", "D_i", "S_ij", "dP_ij")


def _dq_pass(chip: Chip, *, N: int, N_k: int, d: int, scale: float, causal: bool,
             block_r: int, block_c: int) -> None:
    """Pass 3: one program per Q tile; dQ_i stays on chip, written once."""
    br, bc, numeric = block_r, block_c, chip.numeric
    dQi = None
    chip.phase("dq")
    for i in range(n_tiles(N, br)):
        chip.program(i)
        r0, r1 = i * br, min(N, (i + 1) * br)
        for name, r, c in (("Q_i", br, d), ("dO_i", br, d), ("K_j", bc, d), ("V_j", bc, d)):
            chip.buffer(name, r, c)
        for name, r, c in (("dQ_i", br, d), ("L_i", br, 1), ("D_i", br, 1), ("S_ij", br, bc),
                           ("dP_ij", br, bc)):
            chip.buffer(name, r, c, acc=True)
        Qi, dOi, Li, Di = _load_rows(chip, r0, r1, i=i)
        if numeric:
            dQi = torch.zeros_like(Qi)
        for j in range(n_tiles(N_k, bc)):
            c0, c1 = j * bc, min(N_k, (j + 1) * bc)
            if causal and fully_masked(r0, r1, c0):
                chip.skip(i, j)
                continue
            Kj = chip.load("K", c0, c1, into="K_j", i=i, j=j)  # [B, H, Bc, d]
            Vj = chip.load("V", c0, c1, into="V_j", i=i, j=j)  # [B, H, Bc, d]
            chip.compute(i, j, (r1 - r0) * (c1 - c0), matmuls=3, softmax=True)  # S, dP, dQ
            if numeric:
                P = probabilities(scores(Qi, Kj, scale, causal=causal, r0=r0, r1=r1, c0=c0, c1=c1), Li)
                dS = P * (dOi @ Vj.transpose(-1, -2) - Di)  # [B, H, Br, Bc]
                dQi = dQi + scale * (dS @ Kj)
        chip.store("dQ", dQi, r0, r1, from_="dQ_i", i=i)
        chip.free("Q_i", "dO_i", "K_j", "V_j", "dQ_i", "L_i", "D_i", "S_ij", "dP_ij")


def v2_backward_split(chip: Chip, *, N: int, N_k: int, d: int, scale: float, causal: bool,
                      block_r: int, block_c: int) -> None:
    """The three passes on ``chip``: reads Q, K, V, O, dO [N, d] and L [N]; writes D [N] (fp32),
    dK, dV [N_k, d] and dQ [N, d], each output tile once (dQ in the inputs' dtype: no fp32
    accumulator in HBM)."""
    chip.tensor("D", N, 1, stat=True)
    chip.tensor("dQ", N, d)
    chip.tensor("dK", N_k, d)
    chip.tensor("dV", N_k, d)
    preprocess(chip, N=N, d=d, block_r=block_r, zero_dq=False)
    kw = dict(N=N, N_k=N_k, d=d, scale=scale, causal=causal, block_r=block_r, block_c=block_c)
    _dkdv_pass(chip, **kw)
    _dq_pass(chip, **kw)


@dataclass(frozen=True)
class BackwardTraffic:
    """HBM bytes of one backward pass (one head), three ways, at the same tiles (the model's
    default for the v2 backward): Algorithm 2, these three passes, and the unfused backward."""

    N: int
    d: int
    tile: int
    algorithm2: int
    three_passes: int
    unfused: int


def backward_traffic(N: int, d: int) -> BackwardTraffic:
    """Chapter 4's comparison: what each way of computing the backward moves through HBM."""
    from flashedu.iomodel import formula, simulate

    alg2 = simulate("v2", N=N, d=d, backward=True)
    split = simulate("v2_split_bwd", N=N, d=d, backward=True)
    unfused = formula("standard", N=N, d=d, block_r=alg2.block_r, block_c=alg2.block_c,
                      backward=True).exact
    return BackwardTraffic(N, d, alg2.block_r, alg2.read_bytes + alg2.write_bytes,
                           split.read_bytes + split.write_bytes, sum(unfused.bytes()))
