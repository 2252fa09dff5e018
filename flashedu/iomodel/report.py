"""What a run recorded: HBM traffic in total and per tensor, SRAM peak, work done, the trace."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from flashedu.iomodel.chip import Chip
from flashedu.iomodel.hbm_sram import Bytes
from flashedu.iomodel.trace import Trace


@dataclass(frozen=True)
class TensorTraffic(Bytes):
    """HBM traffic of one tensor (elements and bytes, summed over batch and heads)."""

    name: str
    itemsize: int
    read_elements: int
    write_elements: int


@dataclass(frozen=True)
class Report:
    """The recording of one run of a reference algorithm against the memory model.

    ``Tr``/``Tc`` are the numbers of Q-row and K/V tiles; ``tiles_computed + tiles_skipped`` is
    the number of (i, j) tiles per pass. ``flops`` counts the two matmuls per score
    (2·d each), ``exps`` one exponential per score of every softmax.
    """

    algorithm: str
    N: int
    N_k: int
    d: int
    causal: bool
    dtype: torch.dtype
    batch: int
    heads: int
    block_r: int
    block_c: int
    Tr: int
    Tc: int
    sram_bytes: int
    sram_peak_bytes: int
    read_elements: int
    write_elements: int
    read_bytes: int
    write_bytes: int
    per_tensor: dict[str, TensorTraffic]
    flops: int
    exps: int
    tiles_computed: int
    tiles_skipped: int
    numeric: bool
    backward: bool  # the backward pass's recording (the forward's is a separate report)
    trace: Trace = field(repr=False, compare=False)

    @property
    def total_bytes(self) -> int:
        return self.read_bytes + self.write_bytes

    @property
    def total_elements(self) -> int:
        return self.read_elements + self.write_elements

    @property
    def events(self):
        """The trace as a list of :class:`~flashedu.iomodel.trace.Event` (built on demand)."""
        return self.trace.events

    def counts(self) -> dict:
        """Everything that must match between a numeric and a shape-only run."""
        return {"read_elements": self.read_elements, "write_elements": self.write_elements,
                "read_bytes": self.read_bytes, "write_bytes": self.write_bytes,
                "per_tensor": {k: (v.read_elements, v.write_elements) for k, v in self.per_tensor.items()},
                "sram_peak_bytes": self.sram_peak_bytes, "flops": self.flops, "exps": self.exps,
                "tiles_computed": self.tiles_computed, "tiles_skipped": self.tiles_skipped,
                "events": len(self.trace)}

    def summary(self) -> str:
        mib = 1024 ** 2
        parts = ", ".join(f"{t.name} {t.read_bytes / mib:.2f}/{t.write_bytes / mib:.2f}"
                          for t in self.per_tensor.values())
        return (f"{self.algorithm}{' backward' if self.backward else ''} N={self.N} d={self.d}{' causal' if self.causal else ''}: "
                f"Br={self.block_r} Bc={self.block_c}, reads {self.read_bytes / mib:.2f} MiB, "
                f"writes {self.write_bytes / mib:.2f} MiB (read/write MiB per tensor: {parts}); "
                f"SRAM peak {self.sram_peak_bytes / 1024:.1f} of {self.sram_bytes / 1024:.1f} KiB")


def build_report(chip: Chip, *, algorithm: str, N: int, N_k: int, d: int, causal: bool,
                 block_r: int, block_c: int, backward: bool = False) -> Report:
    """Freeze what ``chip`` recorded into a :class:`Report`."""
    hbm = chip.hbm
    per = {n: TensorTraffic(n, t.itemsize, t.read_elements, t.write_elements) for n, t in hbm.tensors.items()}
    # Tiles of the first pass: standard attention's later passes revisit the same tiles.
    first = next(iter(chip.tiles or chip.skipped), None)
    computed = chip.tiles.get(first, 0)
    skipped = chip.skipped.get(first, 0)
    return Report(
        algorithm=algorithm, N=N, N_k=N_k, d=d, causal=causal, dtype=chip.dtype, batch=chip.batch,
        heads=chip.heads, block_r=block_r, block_c=block_c, Tr=-(-N // block_r), Tc=-(-N_k // block_c),
        sram_bytes=chip.sram.capacity_bytes, sram_peak_bytes=chip.sram.peak_bytes,
        read_elements=hbm.read_elements, write_elements=hbm.write_elements,
        read_bytes=hbm.read_bytes, write_bytes=hbm.write_bytes, per_tensor=per,
        flops=2 * d * chip.matmul_scores, exps=chip.exps, tiles_computed=computed,
        tiles_skipped=skipped, numeric=chip.numeric, backward=backward, trace=chip.trace)
