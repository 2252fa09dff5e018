"""Reader of ``flashedu.bench.ring``'s runs (kind ``"ring"``): ring attention over several GPUs
per layout, beside one GPU alone, as the numbers chapter 7 quotes. The figure is
:func:`flashedu.viz.ring.measured_ring_figure`."""
from __future__ import annotations

import numpy as np

from flashedu.ops.ring.layout import step_efficiency, work_matrix


RING_CASES = [("contiguous", True), ("zigzag", True), ("striped", True), ("contiguous", False)]


def case_label(layout, causal):
    return f"{layout}, {'causal' if causal else 'non-causal'}"


def ring_rows(rows, N, layout, causal):
    return [r for r in rows if r["test"] == "ring" and r["N"] == N and r["layout"] == layout and r["causal"] == causal]


def summary(result: dict) -> dict:
    """The numbers chapter 7 quotes from ``flashedu/bench/ring.py``'s recorded file. ``ring_s`` and
    ``speedup`` map (layout, causal) to {N: ...}: the slowest rank's forward seconds, and one GPU's
    seconds over it. At the largest N: each rank's compute seconds summed over its steps
    (``busy``), the step efficiency of the measured compute (useful compute over the time the
    ring takes if every step lasts as long as its slowest rank) beside the layout model's
    (``eff_measured``, ``eff_model``). ``wait_share``: the largest share of a rank's ring time
    spent waiting for a transfer after its compute, over every run; ``send_GBps``, ``send_ms``:
    one K/V shard sent alone, at the largest N (the slower rank); ``step_ms``: the shortest step
    compute that a transfer overlapped, at the largest N."""
    rows, info = result["rows"], result["provenance"]
    world = int(info["world"])
    Ns = sorted({r["N"] for r in rows if r["test"] == "ring"})
    N = Ns[-1]
    single = {(r["N"], r["causal"]): r["seconds"] for r in rows if r["test"] == "single_gpu"}
    out = dict(gpu=info.get("gpu"), date=str(info.get("date", ""))[:10], world=world, Ns=Ns, N=N, N_small=Ns[0],
               max_err=max(r["max_err"] for r in rows if r["test"] == "check"),
               check_N=max(r["N"] for r in rows if r["test"] == "check"),
               single_s={k: v for k, v in single.items()}, ring_s={}, speedup={}, busy={},
               eff_measured={}, eff_model={})
    for layout, causal in RING_CASES:
        key = (layout, causal)
        out["ring_s"][key] = {n: max(r["seconds"] for r in ring_rows(rows, n, layout, causal)) for n in Ns}
        out["speedup"][key] = {n: single[(n, causal)] / out["ring_s"][key][n] for n in Ns}
        big = sorted(ring_rows(rows, N, layout, causal), key=lambda r: r["rank"])
        comp = np.array([r["compute_s"] for r in big])  # [rank, step]
        out["busy"][key] = comp.sum(axis=1).tolist()
        out["eff_measured"][key] = float(comp.sum() / (world * comp.max(axis=0).sum()))
        out["eff_model"][key] = step_efficiency(work_matrix(N, world, layout, causal=causal))
    ring = [r for r in rows if r["test"] == "ring"]
    out["wait_share"] = max(sum(r["wait_s"]) / r["seconds"] for r in ring)
    out["wait_max_s"] = max(max(r["wait_s"]) for r in ring)
    sends = [r for r in rows if r["test"] == "send_kv" and r["N"] == N]
    slow = min(sends, key=lambda r: r["GBps"]) if sends else None
    out["send_GBps"] = slow["GBps"] if slow else None
    out["send_ms"] = slow["seconds"] * 1e3 if slow else None
    out["step_ms"] = min(r["compute_s"][0] for r in ring if r["N"] == N) * 1e3  # step 0 overlaps a transfer
    return out

