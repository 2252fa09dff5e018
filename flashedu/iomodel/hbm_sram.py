"""The two memories of the FlashAttention papers: a large, slow HBM and a small on-chip SRAM.

``HBM`` holds named tensors and counts every element (and byte) read from or written to each.
``SRAM`` is a budget of bytes for one program (one SM): tiles are allocated into named buffers,
and allocating more than fits raises :class:`SRAMOverflowError` naming the tile at fault.

Every HBM tensor is stored as ``[B, H, rows, cols]`` (ℓ, m and L have ``cols = 1``), so a tile is
always ``data[:, :, r0:r1, c0:c1]``. In a shape-only run ``data`` is None and only counts move.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


class SRAMOverflowError(RuntimeError):
    """The tiles a program needs on chip at one time do not fit in its SRAM."""


def _fmt_bytes(n: int) -> str:
    return f"{n:,} B ({n / 1024:.1f} KiB)"


class SRAM:
    """On-chip memory of one program: named buffers within ``capacity_bytes``.

    Buffers are sized once, as a kernel sizes its shared memory, and reused for every tile that
    passes through them; ``peak_bytes`` is the most that was resident at any time.
    """

    def __init__(self, capacity_bytes: int):
        if isinstance(capacity_bytes, bool) or not isinstance(capacity_bytes, int) or capacity_bytes < 1:
            raise ValueError(f"sram_bytes must be a positive int, got {capacity_bytes!r}")
        self.capacity_bytes = capacity_bytes
        self.resident: dict[str, int] = {}  # buffer name -> bytes
        self.elements: dict[str, int] = {}  # buffer name -> elements it holds
        self.used_bytes = 0
        self.peak_bytes = 0

    def alloc(self, name: str, rows: int, cols: int, itemsize: int) -> None:
        """Reserve a ``rows × cols`` buffer of ``itemsize``-byte elements, or raise if it does not fit."""
        if name in self.resident:
            raise ValueError(f"SRAM buffer {name!r} is already allocated")
        nbytes = rows * cols * itemsize
        if self.used_bytes + nbytes > self.capacity_bytes:
            others = ", ".join(f"{k} {v:,} B" for k, v in self.resident.items()) or "nothing"
            raise SRAMOverflowError(
                f"SRAM overflow: tile {name} [{rows} × {cols}] needs {_fmt_bytes(nbytes)}, but "
                f"{_fmt_bytes(self.used_bytes)} is already resident ({others}) and the capacity is "
                f"{_fmt_bytes(self.capacity_bytes)}. Use smaller blocks or a larger sram_bytes.")
        self.resident[name] = nbytes
        self.elements[name] = rows * cols
        self.used_bytes += nbytes
        self.peak_bytes = max(self.peak_bytes, self.used_bytes)

    def free(self, *names: str) -> None:
        for name in names:
            self.used_bytes -= self.resident.pop(name)
            del self.elements[name]

    def free_all(self) -> None:
        self.free(*list(self.resident))


class Bytes:
    """read_bytes and write_bytes of anything that counts elements of one itemsize."""

    read_elements: int
    write_elements: int
    itemsize: int

    @property
    def read_bytes(self) -> int:
        return self.read_elements * self.itemsize

    @property
    def write_bytes(self) -> int:
        return self.write_elements * self.itemsize


@dataclass
class HBMTensor(Bytes):
    """One tensor in HBM and the traffic it has seen (elements summed over batch and heads)."""

    name: str
    rows: int
    cols: int
    itemsize: int
    data: torch.Tensor | None = None  # [B, H, rows, cols]; None in a shape-only run
    read_elements: int = 0
    write_elements: int = 0


class HBM:
    """Off-chip memory: named tensors with read and write counters."""

    def __init__(self):
        self.tensors: dict[str, HBMTensor] = {}

    def add(self, name: str, rows: int, cols: int, itemsize: int, data: torch.Tensor | None = None) -> HBMTensor:
        if name in self.tensors:
            raise ValueError(f"HBM already holds a tensor named {name!r}")
        if data is not None and tuple(data.shape[-2:]) != (rows, cols):
            raise ValueError(f"HBM tensor {name}: data has shape {tuple(data.shape)}, expected [..., {rows}, {cols}]")
        t = HBMTensor(name, rows, cols, itemsize, data)
        self.tensors[name] = t
        return t

    def __getitem__(self, name: str) -> HBMTensor:
        return self.tensors[name]

    @property
    def read_elements(self) -> int:
        return sum(t.read_elements for t in self.tensors.values())

    @property
    def write_elements(self) -> int:
        return sum(t.write_elements for t in self.tensors.values())

    @property
    def read_bytes(self) -> int:
        return sum(t.read_bytes for t in self.tensors.values())

    @property
    def write_bytes(self) -> int:
        return sum(t.write_bytes for t in self.tensors.values())
