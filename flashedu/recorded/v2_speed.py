"""Reader of ``flashedu.bench.v2_speed``'s runs (kind ``"v2_speed"``): chapter 4's v2 forward
beside a public Triton kernel (the file the run names in ``peer``), the FA3 kernel written in
Gluon (chapter 6) and SDPA's cuDNN backend, timed in one process (chapter 8).

* :func:`peer_table` - per case, each one's forward TFLOP/s and v2's speed over the others.
* :func:`peer_markdown` - that table as Markdown.
* :func:`ratio_range` - the lowest and highest of one column of that table.
"""
from __future__ import annotations

V2, PEER, GLUON, CUDNN = "v2_triton", "peer", "fa3_gluon", "sdpa_cudnn"


def peer_table(run: dict) -> list[dict]:
    """``D``, ``causal``, ``N``, TFLOP/s of ``v2`` / ``peer`` / ``cudnn`` (and ``gluon`` where
    timed), ``v2_peer`` = v2 / peer and ``v2_cudnn`` = v2 / cuDNN, for every case where v2, the
    peer and cuDNN all have a time (rows whose output check failed have none)."""
    times = {(r["impl"], r["D"], r["causal"], r["N"]): r["tflops"] for r in run["rows"]
             if "tflops" in r and "error" not in r}
    out = []
    for D, causal, N in sorted({k[1:] for k in times}):
        got = {impl: times.get((impl, D, causal, N)) for impl in (V2, PEER, GLUON, CUDNN)}
        if None in (got[V2], got[PEER], got[CUDNN]):
            continue
        row = dict(D=D, causal=causal, N=N, v2=got[V2], peer=got[PEER], cudnn=got[CUDNN],
                   v2_peer=got[V2] / got[PEER], v2_cudnn=got[V2] / got[CUDNN])
        if got[GLUON] is not None:
            row["gluon"] = got[GLUON]
        out.append(row)
    return out


def ratio_range(rows: list[dict], key: str, *, D: int | None = None) -> tuple[float, float]:
    """(lowest, highest) of column ``key`` of :func:`peer_table`'s rows, at head dim ``D`` only
    if given; rows without that column are skipped (``gluon`` where it was not timed)."""
    vals = [r[key] for r in rows if key in r and (D is None or r["D"] == D)]
    if not vals:
        raise ValueError(f"ratio_range: no row has {key!r}" + (f" at D={D}" if D else ""))
    return min(vals), max(vals)


def peer_markdown(rows: list[dict]) -> str:
    """:func:`peer_table` as a Markdown table (TFLOP/s, and v2's speed over the peer's and
    cuDNN's)."""
    gluon = any("gluon" in r for r in rows)
    head = (["d", "mask", "N", "v2 (ch. 4)", "Triton tutorial"]
            + (["FA3 in Gluon (ch. 6)"] if gluon else [])
            + ["cuDNN", "v2 / tutorial", "v2 / cuDNN"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for r in rows:
        cells = [str(r["D"]), "causal" if r["causal"] else "none", f"{r['N'] // 1024}k",
                 f"{r['v2']:.0f}", f"{r['peer']:.0f}"]
        if gluon:
            cells.append(f"{r['gluon']:.0f}" if "gluon" in r else "-")
        cells += [f"{r['cudnn']:.0f}", f"{r['v2_peer']:.2f}", f"{r['v2_cudnn']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = ["peer_markdown", "peer_table", "ratio_range"]
