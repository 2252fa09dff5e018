"""Reader of ``flashedu.bench.ncu``'s runs (kind ``"ncu"``): DRAM bytes Nsight Compute measured for
one kernel launch beside the memory model's count. The figure is
:func:`flashedu.viz.measured_traffic.model_vs_measured_figure`."""
from __future__ import annotations


def by_case(run: dict) -> dict[tuple[str, int, bool], dict]:
    """``{(kernel, N, causal): row}`` for every launch that was measured (has ``read_bytes``)."""
    return {(r["kernel"], r["N"], r["causal"]): r for r in run["rows"] if "read_bytes" in r}
