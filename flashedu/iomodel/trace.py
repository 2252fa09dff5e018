"""The ordered event trace of one run: every load, store, tile computed and tile skipped.

A sweep to N = 64k records about a million events, so the hot path appends one plain tuple per
event and :class:`Event` objects are built only when someone iterates the trace.
"""
from __future__ import annotations

from typing import Iterator, NamedTuple

import numpy as np

LOAD, STORE, COMPUTE, SKIP = "load", "store", "compute", "skip"


class Event(NamedTuple):
    """One step of a run.

    ``kind`` is load / store (HBM ↔ SRAM, ``bytes`` moved), compute (tile ``(i, j)`` worked on,
    ``elements`` = scores computed) or skip (tile fully masked, nothing moved). ``i`` is the Q-row
    tile index and ``j`` the K/V tile index; -1 where the event has none (a Q_i load has no j).
    ``program`` is the thread block (one per SM at a time) that issued it.
    """

    step: int
    program: int
    phase: str
    kind: str
    tensor: str | None
    buffer: str | None
    i: int
    j: int
    elements: int
    bytes: int


class Trace:
    """Events in issue order; raw tuples ``(program, kind, tensor, i, j, elements, phase, extra)``."""

    def __init__(self, itemsizes: dict[str, int]):
        self._raw: list[tuple] = []
        self._itemsizes = itemsizes  # tensor name -> bytes per element (shared with HBM)

    def __len__(self) -> int:
        return len(self._raw)

    def _event(self, step: int, raw: tuple) -> Event:
        program, kind, tensor, i, j, n, phase, extra = raw
        moved = kind == LOAD or kind == STORE
        return Event(step, program, phase, kind, tensor, extra if moved else None, i, j, n,
                     n * self._itemsizes[tensor] if moved else 0)

    def __getitem__(self, step: int) -> Event:
        return self._event(step % len(self._raw), self._raw[step])

    def __iter__(self) -> Iterator[Event]:
        for step, raw in enumerate(self._raw):
            yield self._event(step, raw)

    @property
    def events(self) -> list[Event]:
        """All events as :class:`Event` objects (built now; fine for small runs)."""
        return list(self)

    def phases(self) -> list[str]:
        """Phase names in the order they first appear."""
        seen: dict[str, None] = {}
        for raw in self._raw:
            seen.setdefault(raw[6], None)
        return list(seen)

    def columns(self) -> dict[str, np.ndarray]:
        """The trace as numpy columns (step, program, i, j, elements, bytes) plus kind, tensor,
        buffer and phase as object arrays: the form the widgets animate from."""
        raw = self._raw
        n = len(raw)
        program = np.fromiter((r[0] for r in raw), dtype=np.int64, count=n)
        i = np.fromiter((r[3] for r in raw), dtype=np.int64, count=n)
        j = np.fromiter((r[4] for r in raw), dtype=np.int64, count=n)
        elements = np.fromiter((r[5] for r in raw), dtype=np.int64, count=n)
        kind = np.array([r[1] for r in raw], dtype=object)
        tensor = np.array([r[2] for r in raw], dtype=object)
        phase = np.array([r[6] for r in raw], dtype=object)
        moved = (kind == LOAD) | (kind == STORE)
        buffer = np.array([r[7] if m else None for r, m in zip(raw, moved)], dtype=object)
        itemsize = np.array([self._itemsizes[t] if m else 0 for t, m in zip(tensor, moved)], dtype=np.int64)
        return {"step": np.arange(n), "program": program, "phase": phase, "kind": kind,
                "tensor": tensor, "buffer": buffer, "i": i, "j": j, "elements": elements,
                "bytes": elements * itemsize}
