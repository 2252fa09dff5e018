"""Reader of ``flashedu.bench.fa3``'s runs (kind ``"fa3"``): chapter 6's TMA / pipeline-depth /
warp-specialisation ablation, as tables and the numbers the chapter quotes.

* :func:`ablation_table` - per head dim D and length N, the best TFLOP/s of pointer loads
  (``v2_triton``) and of TMA loads (``v2_tma_triton``) at each pipeline depth, with and without
  warp specialisation (the faster of the tile shapes tried);
* :func:`ablation_summary` - what chapter 6 says of it, by glue name.

The figure is :func:`flashedu.viz.fa3_measured.ablation_figure`.
"""
from __future__ import annotations


STAGES = (1, 2, 3, 4)


def timed(run: dict) -> list[dict]:
    # Timing rows that produced a number: a variant that failed to compile has "error", no "tflops".
    return [r for r in run["rows"] if r.get("kind") == "time" and "ms" in r]


def _best(rows: list[dict]) -> dict | None:
    return max(rows, key=lambda r: r["tflops"], default=None)


def ablation_table(run: dict) -> list[dict]:
    """One dict per (D, N), sorted: ``pointers`` (v2_triton's TFLOP/s), ``cells`` {(stages,
    warp_specialize): best TMA TFLOP/s over the tile shapes, None if none ran}, ``tiles`` (the
    winning tile shape of each cell), ``tma`` / ``tma_no_ws`` / ``tma_ws`` (best TMA overall /
    without / with warp specialisation; None if none ran)."""
    rows = [r for r in timed(run) if "tflops" in r]
    out = []
    for D, N in sorted({(r["D"], r["N"]) for r in rows}):
        here = [r for r in rows if (r["D"], r["N"]) == (D, N)]
        ptr = _best([r for r in here if r["impl"] == "v2_triton"])
        cells, tiles = {}, {}
        for ws in (False, True):
            for s in STAGES:
                b = _best([r for r in here if r["impl"] == "v2_tma_triton" and r["stages"] == s
                           and bool(r["warp_specialize"]) == ws])
                cells[(s, ws)] = b and b["tflops"]
                tiles[(s, ws)] = b and f"{b['block_m']}×{b['block_n']}"

        def top(keep):
            vals = [v for (s, ws), v in cells.items() if v is not None and keep(ws)]
            return max(vals, default=None)

        out.append(dict(D=D, N=N, pointers=ptr and ptr["tflops"], cells=cells, tiles=tiles,
                        tma=top(lambda ws: True), tma_no_ws=top(lambda ws: not ws), tma_ws=top(lambda ws: ws)))
    return out


def ablation_summary(run: dict, *, paper_tflops: float) -> dict:
    """What chapter 6 says of the ablation, by glue name: pointers and best TMA at d = 128 per N,
    TMA over pointers at best for d = 64, the stage ladder at the paper's shape (N = 8448), the
    range of what warp specialisation changed (%), how many of its probes compiled, and the best
    at the paper's shape against the paper's ``paper_tflops``."""
    abl = {(r["D"], r["N"]): r for r in ablation_table(run)}
    out = dict(fa3_gpu=run["provenance"]["gpu"], fa3_date=run["provenance"]["date"][:10])
    for N in sorted(N for D, N in abl if D == 128):
        out[f"fa3_ptr_{N}"] = abl[(128, N)]["pointers"]
        out[f"fa3_tma_{N}"] = abl[(128, N)]["tma"]
    out["fa3_tma_64"] = max(r["tma"] / r["pointers"] for (D, _), r in abl.items() if D == 64)
    paper_shape = abl[(128, 8448)]
    for s in (1, 2, 3):
        out[f"fa3_stages_{s}"] = paper_shape["cells"][(s, False)]
    ws_gain = [r["tma_ws"] / r["tma_no_ws"] for r in abl.values() if r["tma_ws"]]
    out["fa3_ws_lo"], out["fa3_ws_hi"] = 100 * (min(ws_gain) - 1), 100 * (max(ws_gain) - 1)
    probes = [r for r in run["rows"] if r.get("kind") == "ws_probe"]
    out["fa3_ws_ok"] = sum(r["result"].startswith("OK") for r in probes)
    out["fa3_ws_probed"] = len(probes)
    out["fa3_best_8448"] = max(paper_shape["pointers"], paper_shape["tma"])
    out["fa3_of_paper"] = 100 * out["fa3_best_8448"] / paper_tflops
    return out

