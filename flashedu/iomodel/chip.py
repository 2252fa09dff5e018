"""The machine the reference algorithms are written against: HBM + one program's SRAM + a trace.

A reference moves every tile explicitly::

    chip.buffer("K_j", Bc, d)                       # reserve SRAM once, as a kernel does
    Kj = chip.load("K", c0, c1, into="K_j", j=j)    # HBM -> SRAM, counted and traced
    ...arithmetic on tiles...
    chip.store("O", Oi, r0, r1, from_="O_i", i=i)   # SRAM -> HBM, counted and traced

With ``numeric=False`` (shape-only) ``load`` returns None, ``store`` ignores its value and the
reference skips its arithmetic (``if chip.numeric:``), so the same loops move the same tiles and
the counts are identical; only the numbers are missing. That is what makes N = 64k cheap.
"""
from __future__ import annotations

import math

import torch

from flashedu.iomodel.blocks import acc_itemsize, itemsize_of
from flashedu.iomodel.hbm_sram import HBM, SRAM, SRAMOverflowError
from flashedu.iomodel.trace import COMPUTE, LOAD, SKIP, STORE, Trace


class Chip:
    """HBM, the SRAM of the running program, and the event trace of one run.

    ``batch × heads`` (b, h) pairs run side by side: counts are summed over them, the SRAM and
    the trace describe one (b, h) program (they are the same for every pair).
    """

    def __init__(self, *, sram_bytes: int, dtype: torch.dtype, numeric: bool, batch: int = 1,
                 heads: int = 1, device="cpu"):
        self.hbm = HBM()
        self.sram = SRAM(sram_bytes)
        self.numeric = bool(numeric)
        self.dtype = dtype
        # Arithmetic runs in fp32 (fp64 stays fp64) whatever the storage dtype, as in the kernels.
        self.work_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        self.itemsize = itemsize_of(dtype)
        self.acc_itemsize = acc_itemsize(dtype)
        self.batch, self.heads, self.device = batch, heads, device
        self.bh = batch * heads
        self._itemsizes: dict[str, int] = {}
        self.trace = Trace(self._itemsizes)
        self._append = self.trace._raw.append  # the hot path: one tuple per event
        self._program = 0
        self._phase = ""
        self.matmul_scores = 0  # Σ scores × matmuls: FLOPs = 2 · d · this
        self.exps = 0
        self.tiles: dict[str, int] = {}  # phase -> compute events (tiles, or row bands)
        self.skipped: dict[str, int] = {}  # phase -> tiles skipped

    @classmethod
    def from_qkv(cls, q, k, v, *, sram_bytes: int) -> "Chip":
        """A numeric chip whose HBM holds q, k, v (upcast to the working dtype) as Q, K, V."""
        B, H, N, D = q.shape
        chip = cls(sram_bytes=sram_bytes, dtype=q.dtype, numeric=True, batch=B, heads=H, device=q.device)
        for name, t in (("Q", q), ("K", k), ("V", v)):
            chip.tensor(name, t.shape[2], D, data=t.to(chip.work_dtype))
        return chip

    def tensor(self, name: str, rows: int, cols: int, *, data: torch.Tensor | None = None,
               stat: bool = False):
        """Put a ``[B, H, rows, cols]`` tensor in HBM. Outputs (``data=None``) start as NaN in a
        numeric run, so an element the algorithm forgets to write shows up. ``stat=True`` marks
        a row statistic (ℓ, m, L), stored in fp32 like the accumulators."""
        itemsize = self.acc_itemsize if stat else self.itemsize
        if self.numeric and data is None:
            data = torch.full((self.batch, self.heads, rows, cols), math.nan,
                              dtype=self.work_dtype, device=self.device)
        self.hbm.add(name, rows, cols, itemsize, data if self.numeric else None)
        self._itemsizes[name] = itemsize

    def data(self, name: str) -> torch.Tensor | None:
        return self.hbm[name].data

    def buffer(self, name: str, rows: int, cols: int, *, acc: bool = False) -> None:
        """Reserve an on-chip buffer; ``acc=True`` for accumulators and statistics (fp32)."""
        self.sram.alloc(name, rows, cols, self.acc_itemsize if acc else self.itemsize)

    def free(self, *names: str) -> None:
        self.sram.free(*names)

    def program(self, program: int) -> None:
        """Events from here on are issued by thread block ``program``."""
        self._program = program

    def phase(self, name: str) -> None:
        """Name the pass that follows (standard attention has three: its three kernels)."""
        self._phase = name

    def _move(self, kind, name, r0, r1, c0, c1, buf, i, j):
        t = self.hbm.tensors[name]
        if c1 is None:
            c1 = t.cols
        per_head = (r1 - r0) * (c1 - c0)
        if per_head > self.sram.elements[buf]:
            raise SRAMOverflowError(f"tile {name}[{r0}:{r1}, {c0}:{c1}] ({per_head} elements) does not "
                                    f"fit its SRAM buffer {buf} ({self.sram.elements[buf]} elements)")
        n = per_head * self.bh
        self._append((self._program, kind, name, i, j, n, self._phase, buf))
        return t, n, c1

    def load(self, name: str, r0: int, r1: int, c0: int = 0, c1: int | None = None, *,
             into: str, i: int = -1, j: int = -1):
        """Copy rows [r0, r1) and columns [c0, c1) of HBM tensor ``name`` into SRAM buffer ``into``.
        Returns the tile ``[B, H, r1-r0, c1-c0]`` (None in a shape-only run)."""
        t, n, c1 = self._move(LOAD, name, r0, r1, c0, c1, into, i, j)
        t.read_elements += n
        if self.numeric:
            # A copy, as SRAM holds one: a later store to the same HBM rows must not change it.
            return t.data[:, :, r0:r1, c0:c1].clone()
        return None

    def store(self, name: str, value, r0: int, r1: int, c0: int = 0, c1: int | None = None, *,
              from_: str, i: int = -1, j: int = -1) -> None:
        """Copy a tile from SRAM buffer ``from_`` to rows [r0, r1), columns [c0, c1) of ``name``."""
        t, n, c1 = self._move(STORE, name, r0, r1, c0, c1, from_, i, j)
        t.write_elements += n
        if self.numeric:
            t.data[:, :, r0:r1, c0:c1] = value

    def compute(self, i: int, j: int, scores: int, *, matmuls: int, softmax: bool) -> None:
        """Tile (i, j) is worked on: ``scores`` entries of S per (b, h), each taking part in
        ``matmuls`` products with d-long vectors (2 for S = QKᵀ then PV, 0 for a softmax pass)
        and, with ``softmax``, one exponential."""
        n = scores * self.bh
        self.matmul_scores += n * matmuls
        if softmax:
            self.exps += n
        self.tiles[self._phase] = self.tiles.get(self._phase, 0) + 1
        self._append((self._program, COMPUTE, None, i, j, n, self._phase, matmuls))

    def skip(self, i: int, j: int) -> None:
        """Tile (i, j) is fully masked: nothing is loaded or computed for it."""
        self.skipped[self._phase] = self.skipped.get(self._phase, 0) + 1
        self._append((self._program, SKIP, None, i, j, 0, self._phase, 0))
