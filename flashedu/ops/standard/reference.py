"""Standard attention as seed 002 writes it: three steps, each result a tensor in HBM.

1. S = Q Kᵀ · scale            -> write S   [B, H, N, N]     (tiles: load Q_i once, stream K_j)
2. P = softmax(S)  (row-wise)   -> write P   [B, H, N, N]     (whole rows of S on chip)
3. O = P V                      -> write O   [B, H, N, D]     (tiles: O_i accumulates over j)

Each step is written against :mod:`flashedu.iomodel`, so the HBM traffic the chapter quotes is
recorded, not estimated: reads Nd + 2·Tr·Nd + 2N², writes 2N² + Nd (Tr = ⌈N/Br⌉). With
``causal=True`` the masked scores are still computed and written as -inf, as an unfused
framework does; skipping masked tiles is what the fused algorithms (v1, v2) can do.
"""
from __future__ import annotations

import torch

from flashedu.softmax import safe_softmax
from flashedu.iomodel.blocks import n_tiles
from flashedu.iomodel.chip import Chip
from flashedu.iomodel.hbm_sram import SRAMOverflowError
from flashedu.iomodel.run import run_reference
from flashedu.iomodel.tiles import scores


def causal_mask(n_q: int, n_k: int, device) -> torch.Tensor:
    """True where query i may attend key j (j <= i)."""
    return torch.ones(n_q, n_k, dtype=torch.bool, device=device).tril()


def _softmax_rows(chip: Chip, N_k: int, block_r: int) -> int:
    """Rows of S per softmax band: the most that fit on chip, dividing Br so bands align with
    tile rows."""
    fit = chip.sram.capacity_bytes // (N_k * chip.itemsize)
    if fit < 1:
        raise SRAMOverflowError(
            f"SRAM overflow: standard attention's softmax keeps a whole row of S on chip, and one "
            f"row of N={N_k} scores needs {N_k * chip.itemsize:,} B, more than the capacity "
            f"{chip.sram.capacity_bytes:,} B (an unfused kernel would have to read S twice).")
    return max(r for r in range(1, min(fit, block_r) + 1) if block_r % r == 0)


def standard_forward(chip: Chip, *, N: int, N_k: int, d: int, scale: float, causal: bool,
                     block_r: int, block_c: int) -> None:
    """Run the three steps on ``chip``: reads Q, K, V; writes S, P [N, N_k] and O [N, d]."""
    chip.tensor("S", N, N_k)
    chip.tensor("P", N, N_k)
    chip.tensor("O", N, d)
    br, bc = block_r, block_c
    Tr, Tc = n_tiles(N, br), n_tiles(N_k, bc)
    numeric = chip.numeric
    rows = _softmax_rows(chip, N_k, br)  # checked first: fail before moving anything
    # A shape-only run (numeric False) moves the tiles but computes no values: these stay None.
    S = P_rows = None

    # [standard-reference-start]
    chip.phase("S = QKᵀ")
    for i in range(Tr):
        chip.program(i)
        r0, r1 = i * br, min(N, (i + 1) * br)
        chip.buffer("Q_i", br, d)
        chip.buffer("K_j", bc, d)
        chip.buffer("S_ij", br, bc, acc=True)
        Qi = chip.load("Q", r0, r1, into="Q_i", i=i)  # [B, H, Br, d]
        for j in range(Tc):
            c0, c1 = j * bc, min(N_k, (j + 1) * bc)
            Kj = chip.load("K", c0, c1, into="K_j", i=i, j=j)  # [B, H, Bc, d]
            chip.compute(i, j, (r1 - r0) * (c1 - c0), matmuls=1, softmax=False)
            if numeric:
                S = scores(Qi, Kj, scale, causal=causal, r0=r0, r1=r1, c0=c0, c1=c1)
            chip.store("S", S, r0, r1, c0, c1, from_="S_ij", i=i, j=j)
        chip.free("Q_i", "K_j", "S_ij")

    chip.phase("P = softmax(S)")
    chip.buffer("S_rows", rows, N_k)  # P overwrites S in place
    for band, r0 in enumerate(range(0, N, rows)):
        chip.program(band)
        r1 = min(N, r0 + rows)
        S_rows = chip.load("S", r0, r1, into="S_rows", i=r0 // br)  # [B, H, rows, N_k]
        chip.compute(r0 // br, -1, (r1 - r0) * N_k, matmuls=0, softmax=True)
        if numeric:
            P_rows = safe_softmax(S_rows)
        chip.store("P", P_rows, r0, r1, from_="S_rows", i=r0 // br)
    chip.free("S_rows")

    chip.phase("O = PV")
    for i in range(Tr):
        chip.program(i)
        r0, r1 = i * br, min(N, (i + 1) * br)
        chip.buffer("P_ij", br, bc)
        chip.buffer("V_j", bc, d)
        chip.buffer("O_i", br, d, acc=True)
        Oi = 0
        for j in range(Tc):
            c0, c1 = j * bc, min(N_k, (j + 1) * bc)
            Pij = chip.load("P", r0, r1, c0, c1, into="P_ij", i=i, j=j)  # [B, H, Br, Bc]
            Vj = chip.load("V", c0, c1, into="V_j", i=i, j=j)  # [B, H, Bc, d]
            chip.compute(i, j, (r1 - r0) * (c1 - c0), matmuls=1, softmax=False)
            if numeric:
                Oi = Oi + Pij @ Vj  # [B, H, Br, d]
        chip.store("O", Oi, r0, r1, from_="O_i", i=i)  # stores a value only when numeric
        chip.free("P_ij", "V_j", "O_i")
    # [standard-reference-end]


def standard_attention(q, k, v, *, causal: bool = False, scale: float | None = None,
                       block_r: int | None = None, block_c: int | None = None,
                       sram_bytes: int | None = None, return_report: bool = False):
    """Standard attention on ``[B, H, N, D]`` inputs: S and P materialised in HBM.

    Works in fp32 (fp64 stays fp64); fully masked rows give 0. Block sizes default to the
    largest square power of two ≤ 128 that fits ``sram_bytes`` (default 228 KiB). Returns o
    ``[B, H, N, D]`` in q's dtype, or ``(o, report)`` with ``return_report=True``.
    """
    o, report, _ = run_reference("standard", standard_forward, q, k, v, causal=causal, scale=scale,
                                 block_r=block_r, block_c=block_c, sram_bytes=sram_bytes)
    return (o, report) if return_report else o
