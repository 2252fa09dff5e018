"""Closed-form HBM traffic of the three forward algorithms, to check the recordings against.

``formula(...).seed`` is the count as seed 001 writes it (FA2 blog: v1 reads 2Nd + 2TcNd, writes
TcNd + 2TcN; v2 reads Nd + 2TrNd, writes Nd + N), and for standard attention the count of
seed 002's three steps with every input read once. ``.exact`` is what the reference in
:mod:`flashedu.ops` moves, element for element, and ``.note`` says where the two differ.
Tr = ⌈N/Br⌉ and Tc = ⌈N/Bc⌉, so the exact counts hold for N not a multiple of the blocks too.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .blocks import check_blocks, n_tiles


@dataclass(frozen=True)
class Counts:
    """HBM elements read and written (summed over batch and heads), with a per-tensor split."""

    reads: int
    writes: int
    per_tensor: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (reads, writes)

    @property
    def total(self) -> int:
        return self.reads + self.writes

    def bytes(self, itemsize: int = 2, stat_itemsize: int = 4) -> tuple[int, int]:
        """(read bytes, write bytes): row statistics ℓ, m, L at ``stat_itemsize``, the rest at
        ``itemsize``. Needs the per-tensor split (``exact`` has it, ``seed`` does not)."""
        if not self.per_tensor:
            raise ValueError("these counts have no per-tensor split; use .exact for bytes")
        size = {n: stat_itemsize if n in ("l", "m", "L") else itemsize for n in self.per_tensor}
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
_ORDER = {"v2": "Θ(N²d²/M)", "v1": "Θ(N²d²/M)", "standard": "Θ(Nd + N²)"}


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


def formula(algorithm: str, *, N: int, d: int, block_r: int, block_c: int, causal: bool = False,
            N_k: int | None = None, batch: int = 1, heads: int = 1) -> IOFormula:
    """Closed-form HBM traffic (elements) of ``algorithm``'s forward pass.

    >>> f = formula("v1", N=1024, d=64, block_r=64, block_c=128)
    >>> f.seed.reads == 2 * 1024 * 64 + 2 * f.Tc * 1024 * 64
    True
    >>> f.exact.reads - f.seed.reads == 2 * f.Tc * 1024
    True
    """
    if algorithm not in _NOTES:
        raise ValueError(f"algorithm must be one of {tuple(_NOTES)}, got {algorithm!r}")
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

    if algorithm == "v2":
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
    exact = Counts(sum(r for r, _ in per.values()), sum(w for _, w in per.values()), per)
    seed_counts = None if causal or seed is None else Counts(seed[0] * bh, seed[1] * bh)
    note = _NOTES[algorithm]
    if causal:
        note += " Causal: tiles above the diagonal are skipped (standard attention skips none); the seed has no causal count."
    return IOFormula(algorithm, N, d, block_r, block_c, Tr, Tc, seed_counts, exact, note, _ORDER[algorithm])
