"""Closed-form HBM traffic of the three forward algorithms and the v1/v2 backward passes, to
check the recordings against.

``formula(...).seed`` is the count as seed 001 writes it (FA2 blog: v1 reads 2Nd + 2TcNd, writes
TcNd + 2TcN; v2 reads Nd + 2TrNd, writes Nd + N), and for standard attention the count of
seed 002's three steps with every input read once. ``.exact`` is what the reference in
:mod:`flashedu.ops` moves, element for element, and ``.note`` says where the two differ.
Tr = ⌈N/Br⌉ and Tc = ⌈N/Bc⌉, so the exact counts hold for N not a multiple of the blocks too.
The seeds give no backward count: with ``backward=True``, ``.seed`` is None and ``.note`` gives
the closed form instead.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flashedu.iomodel.blocks import check_blocks, n_tiles


@dataclass(frozen=True)
class Counts:
    """HBM elements read and written (summed over batch and heads), with a per-tensor split."""

    reads: int
    writes: int
    per_tensor: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (reads, writes)
    # Tensors stored at the accumulator's size (fp32) in HBM.
    acc: tuple[str, ...] = ("l", "m", "L", "D", "dQ")

    @property
    def total(self) -> int:
        return self.reads + self.writes

    def bytes(self, itemsize: int = 2, stat_itemsize: int = 4) -> tuple[int, int]:
        """(read bytes, write bytes): row statistics ℓ, m, L at ``stat_itemsize``, the rest at
        ``itemsize``. Needs the per-tensor split (``exact`` has it, ``seed`` does not)."""
        if not self.per_tensor:
            raise ValueError("these counts have no per-tensor split; use .exact for bytes")
        size = {n: _ONE_BYTE.get(n) or (stat_itemsize if n in self.acc else itemsize) for n in self.per_tensor}
        return (sum(r * size[n] for n, (r, _) in self.per_tensor.items()),
                sum(w * size[n] for n, (_, w) in self.per_tensor.items()))


@dataclass(frozen=True)
class IOFormula:
    """Closed-form counts for one algorithm and shape; ``seed`` is None where the seed has no
    formula (causal)."""

    algorithm: str
    N: int
    d: int
    block_r: int
    block_c: int
    Tr: int
    Tc: int
    seed: Counts | None
    exact: Counts
    note: str
    order: str  # the asymptotic HBM traffic, M = SRAM size in elements


# Backward passes whose dQ is written once, in the inputs' dtype: only the row statistics are fp32.
_STATS_ONLY_ACC = ("L", "D")
# Block-sparse attention's token mask: one byte per score, read only for partial tiles.
_ONE_BYTE = {"M": 1}

_NOTES = {
    "v2": "Exact equals the seed: Q is read once, K and V once per Q tile (Tr times), O and "
          "L = m + log ℓ written once; ℓ and m never leave the chip.",
    "v1": "The seed drops two lower-order terms that Algorithm 1 also moves: line 8 reads ℓ_i and "
          "m_i with Q_i and O_i every inner step (+2·Tc·N reads), and line 2 initialises O, ℓ, m "
          "in HBM (+Nd + 2N writes). Both are smaller than the Tc·Nd terms by a factor d (or Tc), "
          "so the order, Θ(Tc·Nd) = Θ(N²d²/M), is unchanged.",
    "standard": "The seed's count reads every input of a step once (3Nd + 2N²). Tiled, step 1 "
                "keeps Q_i on chip but reads K once per Q tile and step 3 reads V once per Q tile: "
                "+2·(Tr − 1)·Nd reads. Both counts are Θ(Nd + N²) when d ≤ Br: the N² reads and "
                "writes of S and P dominate.",
}
_NOTES["block_sparse"] = (
    "v2's traffic with the K/V stream cut to the listed tiles: reads Nd + 2d·Σ_i Σ_(j listed in row i) "
    "|K_j| (= Nd + 2s·Tr·N_k·d when Bc divides N_k, s = the fraction of tiles listed), writes "
    "Nd + N, plus one byte per score of every partial tile's token mask (M). Q is read and O, L "
    "written for every row, even one with no tile. Seed 002 states only the factor (IO smaller "
    "by a factor proportional to the sparsity), so seed is None. At s = 1 this is v2's count.")
_ORDER_BLOCK_SPARSE = "Θ(Nd + N²d²s/M)"
_BACKWARD_NOTES = {
    "v2": "The seeds give no backward count (seed 001 shows Algorithm 2 only as a figure), so seed "
          "is None. Exact, from FA2's Algorithm 2: the preprocess reads O and dO once and writes "
          "D = rowsum(dO ∘ O) and the zeroed dQ; K_j, V_j are read once and dK_j, dV_j written once; "
          "every computed tile (i, j) reads Q_i, dO_i, dQ_i, L_i, D_i and writes dQ_i back. With "
          "N_k = N: reads 4Nd + Tc·(3Nd + 2N), writes 3Nd + N + Tc·Nd. The forward streams K and V "
          "past every Q tile (2·Tr·Nd); the backward streams Q, dO and dQ (read and written) past "
          "every K/V tile: about twice the forward's traffic for Br = Bc, the same order. Line 9's "
          "O_i is not loaded: after D nothing uses it. dQ is an fp32 accumulator in HBM.",
    "v1": "The seeds give no backward count, so seed is None. Exact, from FA1's Algorithm 4 (no "
          "dropout): line 5 writes zeros to dQ, dK, dV; K_j, V_j are read once and dK_j, dV_j "
          "written once (line 24); every computed tile (i, j) reads Q_i, O_i, dO_i, dQ_i, ℓ_i, m_i "
          "and writes dQ_i back. With N_k = N: reads 2Nd + Tc·(4Nd + 2N), writes 5Nd + Tc·Nd. "
          "Against v2's backward: O_i is reloaded every step to recompute D_i (+Tc·Nd reads) and "
          "dK, dV are initialised in HBM (+2Nd writes); v2 instead reads O once and stores D. "
          "dQ is an fp32 accumulator in HBM.",
}
_BACKWARD_NOTES["standard"] = (
    "Unfused, as autograd runs standard attention's backward: five kernels, each reading its "
    "inputs from HBM and writing its output there. dV = Pᵀ dO (reads the stored P, dO), "
    "dP = dO Vᵀ (writes dP), dS = P ∘ (dP − rowsum(P ∘ dP)) (reads P and dP, writes dS), "
    "dQ = dS K and dK = dSᵀ Q (each reads dS): seven N × N transfers per head, 5N·N_k reads "
    "and 2N·N_k writes, beside 3Nd + 2N_k·d reads and 2N_k·d + Nd writes. The scale is folded "
    "into a product; no kernel re-reads a tile. Causal: the same (nothing is skipped).")
_BACKWARD_NOTES["v2_split_bwd"] = (
    "v2_triton's backward: Algorithm 2's arithmetic in three passes. D = rowsum(dO ∘ O) (reads "
    "O, dO; writes D); per K/V tile, dK_j, dV_j on chip while Q_i, dO_i, L_i, D_i stream past "
    "(written once); per Q tile, dQ_i on chip while K_j, V_j stream past (written once, in the "
    "inputs' dtype). With N_k = N: reads 2Nd + 2Nd + Tc·(2Nd + 2N) + 2Nd + 2N + Tr·2Nd, "
    "writes N + 3Nd. Against Algorithm 2: no fp32 dQ round trip per tile (−Tc·Nd reads and "
    "writes of fp32), but K and V stream past every Q tile a second time (+2·Tr·Nd).")
_ORDER = {"v2": "Θ(N²d²/M)", "v1": "Θ(N²d²/M)", "standard": "Θ(Nd + N²)",
          "block_sparse": _ORDER_BLOCK_SPARSE, "v2_split_bwd": "Θ(N²d²/M)"}
_BACKWARD_NOTES["block_sparse"] = (
    "The seeds give no backward count, so seed is None. v2's backward (Algorithm 2) over the "
    "listed tiles: K_j, V_j read and dK_j, dV_j written once per K/V tile (listed or not), and "
    "every listed tile (i, j) reads Q_i, dO_i, dQ_i, L_i, D_i and writes dQ_i back; plus the "
    "token-mask bytes of partial tiles (M).")


def _block_sparse_per_tensor(mask, N: int, N_k: int, d: int, br: int, bc: int, causal: bool,
                             backward: bool) -> dict:
    """(reads, writes) per tensor of block-sparse attention, summed over the mask's heads."""
    mask = mask.refine(br, bc)
    rows = np.minimum(np.arange(1, mask.Tr + 1) * br, N) - np.arange(mask.Tr) * br  # [Tr]
    cols = np.minimum(np.arange(1, mask.Tc + 1) * bc, N_k) - np.arange(mask.Tc) * bc  # [Tc]
    total: dict[str, tuple[int, int]] = {}
    for listed, partial in zip(mask.effective_blocks(causal).numpy(), mask.partial().numpy()):
        partial = partial & listed
        if backward:
            per = _backward_per_tensor("v2", N, N_k, d, int((rows[:, None] * listed).sum()))
        else:
            kv = int((cols[None, :] * listed).sum()) * d  # [Tr, Tc] K rows of every listed tile
            per = {"Q": (N * d, 0), "K": (kv, 0), "V": (kv, 0), "O": (0, N * d), "L": (0, N)}
        if partial.any():
            per["M"] = (int((rows[:, None] * cols[None, :] * partial).sum()), 0)
        for n, (r, w) in per.items():
            total[n] = (total.get(n, (0, 0))[0] + r, total.get(n, (0, 0))[1] + w)
    return total



def _tiles_per_row(N: int, N_k: int, br: int, bc: int, causal: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per Q tile i: its rows, how many K/V tiles it computes, and how many K rows those hold."""
    Tr, Tc = n_tiles(N, br), n_tiles(N_k, bc)
    r0 = np.arange(Tr, dtype=np.int64) * br
    r1 = np.minimum(r0 + br, N)
    rows = r1 - r0
    # Causal: tile j is computed when its first key j·Bc is ≤ the last query r1 - 1.
    count = np.minimum(Tc, (r1 - 1) // bc + 1) if causal else np.full(Tr, Tc, dtype=np.int64)
    k_rows = np.minimum(N_k, count * bc)
    return rows, count, k_rows


def _backward_per_tensor(algorithm: str, N: int, N_k: int, d: int, steps: int) -> dict:
    """(reads, writes) per tensor of the backward; ``steps`` = Σ over computed tiles of Q_i's rows."""
    Nd, Nkd, sd = N * d, N_k * d, steps * d
    # Both: K_j, V_j in once, dK_j, dV_j out once; Q_i, dO_i, dQ_i in and dQ_i out per computed tile.
    per = {"Q": (sd, 0), "K": (Nkd, 0), "V": (Nkd, 0), "dQ": (sd, Nd + sd), "dK": (0, Nkd), "dV": (0, Nkd)}
    if algorithm == "v2":  # the preprocess reads O, dO once and writes D; L_i, D_i per tile
        per.update({"O": (Nd, 0), "dO": (Nd + sd, 0), "L": (steps, 0), "D": (steps, N)})
    else:  # O_i, ℓ_i, m_i per tile; line 5 zeroes dK, dV in HBM as well as dQ
        per.update({"O": (sd, 0), "dO": (sd, 0), "l": (steps, 0), "m": (steps, 0),
                    "dK": (0, 2 * Nkd), "dV": (0, 2 * Nkd)})
    return per


def formula(algorithm: str, *, N: int, d: int, block_r: int, block_c: int, causal: bool = False,
            N_k: int | None = None, batch: int = 1, heads: int = 1, backward: bool = False,
            block_mask=None) -> IOFormula:
    """Closed-form HBM traffic (elements) of ``algorithm``'s forward pass, or with
    ``backward=True`` of its backward pass alone ("v1", "v2", "block_sparse"; seed None).
    "block_sparse" counts the tiles ``block_mask`` lists (None: every tile) at block_r × block_c,
    refining the mask when its blocks are multiples of those (as the backward's tiles may be).

    >>> f = formula("v1", N=1024, d=64, block_r=64, block_c=128)
    >>> f.seed.reads == 2 * 1024 * 64 + 2 * f.Tc * 1024 * 64
    True
    >>> f.exact.reads - f.seed.reads == 2 * f.Tc * 1024
    True
    """
    if algorithm not in _NOTES and not (backward and algorithm in _BACKWARD_NOTES):
        raise ValueError(f"algorithm must be one of {tuple(_NOTES)} (or, backward=True, "
                         f"{tuple(_BACKWARD_NOTES)}), got {algorithm!r}")
    for name, x in (("N", N), ("d", d), ("batch", batch), ("heads", heads)):
        if isinstance(x, bool) or not isinstance(x, int) or x < 1:
            raise ValueError(f"{name} must be a positive int, got {x!r}")
    check_blocks(block_r, block_c)
    N_k = N if N_k is None else N_k
    if causal and N_k != N:
        raise ValueError(f"causal=True needs N_k == N, got N={N}, N_k={N_k}")
    Tr, Tc = n_tiles(N, block_r), n_tiles(N_k, block_c)
    rows, count, k_rows = _tiles_per_row(N, N_k, block_r, block_c, causal)
    bh = batch * heads
    Nd, Nkd = N * d, N_k * d

    if block_mask is not None and algorithm != "block_sparse":
        raise ValueError(f"block_mask needs algorithm='block_sparse', got {algorithm!r}")
    if algorithm == "block_sparse" and block_mask is not None:
        # block_r, block_c are the tiles: a mask at larger blocks is refined to them.
        mask = block_mask
        if (mask.N, mask.N_k) != (N, N_k):
            raise ValueError(f"block_mask is for N={mask.N}, N_k={mask.N_k}, not N={N}, N_k={N_k}")
        if mask.heads > 1 and heads != mask.heads:
            raise ValueError(f"block_mask has {mask.heads} heads; heads={heads} must match it")
        per, seed = _block_sparse_per_tensor(mask, N, N_k, d, block_r, block_c, causal, backward), None
        bh = batch * (heads if mask.heads == 1 else 1)
    elif algorithm == "block_sparse":  # no mask: every tile is listed, so v2's counts (no seed)
        steps = int((rows * count).sum())
        kv = int(k_rows.sum()) * d
        per = (_backward_per_tensor("v2", N, N_k, d, steps) if backward else
               {"Q": (Nd, 0), "K": (kv, 0), "V": (kv, 0), "O": (0, Nd), "L": (0, N)})
        seed = None
    elif backward and algorithm == "standard":
        NN = N * N_k
        per = {"Q": (Nd, 0), "K": (Nkd, 0), "V": (Nkd, 0), "dO": (2 * Nd, 0), "P": (2 * NN, 0),
               "dP": (NN, NN), "dS": (2 * NN, NN), "dQ": (0, Nd), "dK": (0, Nkd), "dV": (0, Nkd)}
        seed = None
    elif backward and algorithm == "v2_split_bwd":
        steps = int((rows * count).sum())  # Σ over computed (i, j) of the rows of Q_i
        kv = int(k_rows.sum()) * d  # Σ over Q tiles of the K (and V) rows each one streams
        per = {"O": (Nd, 0), "dO": (Nd + steps * d + Nd, 0), "Q": (steps * d + Nd, 0),
               "L": (steps + N, 0), "D": (steps + N, N), "K": (Nkd + kv, 0), "V": (Nkd + kv, 0),
               "dK": (0, Nkd), "dV": (0, Nkd), "dQ": (0, Nd)}
        seed = None
    elif backward:
        if algorithm not in _BACKWARD_NOTES:
            raise ValueError(f"backward=True needs one of {tuple(_BACKWARD_NOTES)}, got {algorithm!r}")
        per, seed = _backward_per_tensor(algorithm, N, N_k, d, int((rows * count).sum())), None
    elif algorithm == "v2":
        kv = int(k_rows.sum()) * d  # each Q tile streams the K (and V) rows it needs
        per = {"Q": (Nd, 0), "K": (kv, 0), "V": (kv, 0), "O": (0, Nd), "L": (0, N)}
        seed = (Nd + 2 * Tr * Nkd, Nd + N)
    elif algorithm == "v1":
        steps = int((rows * count).sum())  # Σ over computed (i, j) of the rows of Q_i
        per = {"K": (Nkd, 0), "V": (Nkd, 0), "Q": (steps * d, 0), "O": (steps * d, Nd + steps * d),
               "l": (steps, N + steps), "m": (steps, N + steps)}
        seed = (2 * Nd + 2 * Tc * Nd, Tc * Nd + 2 * Tc * N) if N_k == N else None
    else:
        NN = N * N_k
        per = {"Q": (Nd, 0), "K": (Tr * Nkd, 0), "S": (NN, NN), "P": (NN, NN), "V": (Tr * Nkd, 0),
               "O": (0, Nd)}
        seed = (Nd + 2 * Nkd + 2 * NN, 2 * NN + Nd)

    per = {n: (r * bh, w * bh) for n, (r, w) in per.items()}
    acc = _STATS_ONLY_ACC if backward and algorithm in ("standard", "v2_split_bwd") else Counts.acc
    exact = Counts(sum(r for r, _ in per.values()), sum(w for _, w in per.values()), per, acc)
    seed_counts = None if causal or seed is None else Counts(seed[0] * bh, seed[1] * bh)
    note = (_BACKWARD_NOTES if backward else _NOTES)[algorithm]
    if algorithm == "block_sparse":
        if causal:
            note += " Causal: the mask's tiles above the diagonal are not listed, so not counted."
    elif causal and backward:
        note += " Causal: tiles above the diagonal are skipped; the per-tile terms count computed tiles only."
    elif causal:
        note += " Causal: tiles above the diagonal are skipped (standard attention skips none); the seed has no causal count."
    return IOFormula(algorithm, N, d, block_r, block_c, Tr, Tc, seed_counts, exact, note, _ORDER[algorithm])
