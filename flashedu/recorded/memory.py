"""Reader of ``flashedu.bench.peak_memory``'s runs (kind ``"memory"``): peak GPU memory of one
forward + backward per provider and N. The figure is :func:`flashedu.viz.peak_memory.memory_figure`."""
from __future__ import annotations


def peaks(run: dict) -> dict[tuple[str, int], int]:
    """``{(provider, N): peak bytes above the inputs}``; rows that ran out of memory are left out."""
    return {(r["provider"], r["N"]): r["peak_bytes"] for r in run["rows"] if isinstance(r["peak_bytes"], int)}
