"""Chapter 6's GPU measurements, read from the recorded files (``flashedu/recorded/data/fa3``, written by
``flashedu/bench/fa3.py``, and ``flashedu/recorded/data/fp8``, written by ``flashedu/bench/fp8.py``):

* :func:`ablation_table` - per head dim D and length N, the best TFLOP/s of pointer loads
  (``v2_triton``) and of TMA loads (``v2_tma_triton``) at each pipeline depth, with and without
  warp specialisation (the faster of the tile shapes tried);
* :func:`ablation_figure` - that table as a shaded grid, the best of each row in bold;
* :func:`fp8_speed_table` - per D and N, fp16 ``v2_triton`` against the fastest ``fp8_triton``
  configuration, and the torch quantisation step that prepares its inputs;
* :func:`fp8_speed_figure` - those times as bars;
* :func:`fp8_config_table` - every timed FP8 configuration's speed-up, as a Markdown table;
* :func:`fp8_design_costs` - what a second accumulator and one 128-row program per SM cost;
* :func:`tuning_cost` - one variant against another in a ``flashedu/bench/tune_fp8.py`` run
  (``flashedu/recorded/data/fp8_tuning``).
"""
from __future__ import annotations

import re

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from flashedu.provenance import label
from flashedu.viz.palette import FONT, OKABE_ITO

STAGES = (1, 2, 3, 4)
QUANT = "fp8 quantisation (torch)"


def _timed(run: dict) -> list[dict]:
    # Timing rows that produced a number: a variant that failed to compile has "error", no "tflops".
    return [r for r in run["rows"] if r.get("kind") == "time" and "ms" in r]


def _best(rows: list[dict]) -> dict | None:
    return max(rows, key=lambda r: r["tflops"], default=None)


def ablation_table(run: dict) -> list[dict]:
    """One dict per (D, N), sorted: ``pointers`` (v2_triton's TFLOP/s), ``cells`` {(stages,
    warp_specialize): best TMA TFLOP/s over the tile shapes, None if none ran}, ``tiles`` (the
    winning tile shape of each cell), ``tma`` / ``tma_no_ws`` / ``tma_ws`` (best TMA overall /
    without / with warp specialisation; None if none ran)."""
    rows = [r for r in _timed(run) if "tflops" in r]
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


def _columns() -> list[tuple[str, tuple | None]]:
    cols = [("pointers<br>(v2_triton)", None)]
    cols += [(f"TMA<br>{s} stage{'s' * (s > 1)}", (s, False)) for s in STAGES]
    cols += [(f"TMA + WS<br>{s} stage{'s' * (s > 1)}", (s, True)) for s in STAGES]
    return cols


def ablation_figure(run: dict) -> go.Figure:
    """The ablation as a grid: one row per (D, N), one column per variant, TFLOP/s written in each
    cell, shaded by its fraction of the row's best; the row's best in bold, "—" where nothing ran."""
    table = ablation_table(run)
    cols = _columns()
    z, text, hover = [], [], []
    for row in table:
        vals = [row["pointers"] if key is None else row["cells"][key] for _, key in cols]
        best = max(v for v in vals if v is not None)
        z.append([None if v is None else v / best for v in vals])
        text.append(["—" if v is None else (f"<b>{v:.0f}</b>" if v == best else f"{v:.0f}") for v in vals])
        hover.append([f"d={row['D']}, N={row['N']}, {name.replace('<br>', ', ')}: "
                      + ("did not run" if v is None else f"{v:.1f} TFLOP/s")
                      + ("" if key is None or v is None else f", tile {row['tiles'][key]}")
                      for (name, key), v in zip(cols, vals)])
    ylabels = [f"d={r['D']}, N={r['N']}" for r in table]
    fig = go.Figure(go.Heatmap(z=z, x=[c[0] for c in cols], y=ylabels, text=text, texttemplate="%{text}",
                               customdata=hover, hovertemplate="%{customdata}<extra></extra>",
                               zmin=0.4, zmax=1, colorscale=[[0, "#FFFFFF"], [1, OKABE_ITO["sky"]]],
                               xgap=2, ygap=2, showscale=False, textfont=dict(color=OKABE_ITO["black"], size=13)))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(side="top")
    fig.update_layout(title=dict(text=f"Measured: loads, pipeline depth, warp specialisation (TFLOP/s, fp16)"
                                      f"<br><sup>{label(run['provenance'])}</sup>"
                                      f"<br><sup>shade = fraction of the row's best (in bold); "
                                      f"WS = warp-specialised</sup>"),
                      height=170 + 44 * len(table), font=FONT, plot_bgcolor="white",
                      margin=dict(t=160, l=130, r=20, b=20))
    return fig


def fp8_config(impl: str) -> str:
    """``"fp8_triton FP8Config(block_m=128, ...)"`` -> ``"block_m=128, ..."``."""
    m = re.search(r"\((.*)\)", impl)
    return m.group(1) if m else impl


def fp8_speed_table(run: dict) -> list[dict]:
    """One dict per (D, N), sorted: ``fp16_ms``/``fp16_tflops`` (v2_triton in fp16), ``fp8_ms``/
    ``fp8_tflops``/``fp8_config`` (the fastest fp8_triton configuration, on inputs already
    quantised), ``quant_ms`` (the torch quantisation step, None if not timed) and ``speedup``
    (fp16 time / fp8 time)."""
    rows = _timed(run)
    out = []
    for D, N in sorted({(r["D"], r["N"]) for r in rows}):
        here = [r for r in rows if (r["D"], r["N"]) == (D, N)]
        fp16 = next(r for r in here if r["impl"].startswith("v2_triton"))
        fp8 = min((r for r in here if r["impl"].startswith("fp8_triton")), key=lambda r: r["ms"])
        quant = next((r for r in here if r["impl"] == QUANT), None)
        out.append(dict(D=D, N=N, fp16_ms=fp16["ms"], fp16_tflops=fp16["tflops"], fp8_ms=fp8["ms"],
                        fp8_tflops=fp8["tflops"], fp8_config=fp8_config(fp8["impl"]),
                        quant_ms=quant and quant["ms"], speedup=fp16["ms"] / fp8["ms"]))
    return out


def fp8_speed_figure(run: dict) -> go.Figure:
    """Per head dim, one group of bars per N: fp16 v2_triton's time, and fp8_triton's (fastest
    configuration, speed-up over fp16 written on it) with the torch quantisation step stacked on top."""
    table = fp8_speed_table(run)
    Ds = sorted({r["D"] for r in table})
    fig = make_subplots(rows=1, cols=len(Ds), subplot_titles=[f"d = {D}" for D in Ds], horizontal_spacing=0.08)
    for c, D in enumerate(Ds, start=1):
        rows = [r for r in table if r["D"] == D]
        x = [str(r["N"]) for r in rows]
        first = c == 1
        fig.add_trace(go.Bar(x=x, y=[r["fp16_ms"] for r in rows], name="v2_triton, fp16", offsetgroup="fp16",
                             marker_color=OKABE_ITO["blue"], legendgroup="fp16", showlegend=first,
                             customdata=[r["fp16_tflops"] for r in rows],
                             hovertemplate="fp16: %{y:.2f} ms, %{customdata:.0f} TFLOP/s<extra></extra>"), 1, c)
        fig.add_trace(go.Bar(x=x, y=[r["fp8_ms"] for r in rows], name="fp8_triton (fastest configuration)",
                             offsetgroup="fp8", marker_color=OKABE_ITO["orange"], legendgroup="fp8",
                             showlegend=first, text=[f"{r['speedup']:.2f}x" for r in rows],
                             textposition="inside", insidetextanchor="middle",
                             customdata=[[r["fp8_tflops"], r["fp8_config"]] for r in rows],
                             hovertemplate="fp8: %{y:.2f} ms, %{customdata[0]:.0f} TFLOP/s<br>%{customdata[1]}"
                                           "<extra></extra>"), 1, c)
        q = [r for r in rows if r["quant_ms"] is not None]
        if q:
            fig.add_trace(go.Bar(x=[str(r["N"]) for r in q], y=[r["quant_ms"] for r in q],
                                 base=[r["fp8_ms"] for r in q], offsetgroup="fp8", name="+ quantisation (torch)",
                                 marker=dict(color="#FFFFFF", line=dict(color=OKABE_ITO["orange"], width=2),
                                             pattern=dict(shape="/", fgcolor=OKABE_ITO["orange"])),
                                 legendgroup="quant", showlegend=first,
                                 hovertemplate="quantisation in torch: %{y:.2f} ms<extra></extra>"), 1, c)
        fig.update_xaxes(title_text="N (B·N = 16k, hidden 2048)", type="category", row=1, col=c)
    fig.update_yaxes(title_text="forward time (ms)", rangemode="tozero", row=1, col=1)
    fig.update_layout(title=dict(text=f"Measured: FP8 against fp16 (speed-up on the FP8 bar)"
                                      f"<br><sup>{label(run['provenance'])}</sup>"),
                      barmode="group", height=420, font=FONT, plot_bgcolor="white",
                      margin=dict(t=100, l=70, r=20, b=60), legend=dict(orientation="h", y=-0.22))
    return fig


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


def _fp8_fields(impl: str) -> dict:
    """``"fp8_triton FP8Config(block_m=64, ..., max_regs=168)"`` -> {"block_m": 64, ..., "max_regs": 168}."""
    out = {}
    for part in fp8_config(impl).split(", "):
        k, _, v = part.partition("=")
        out[k] = {"True": True, "False": False, "None": None}.get(v, int(v) if v.isdigit() else v)
    return out


def fp8_design_costs(run: dict, D: int = 128) -> dict:
    """At head dim ``D``, per N, how much slower (%) than the fastest configuration two design
    choices made the kernel, from the timed configurations: ``two_acc`` (P·V into a second
    accumulator, added to acc after; 128-row tiles, 8 warps) against the same tiles with one
    accumulator, and ``rows128`` (one program of 128 rows and 8 warps per SM) against the
    fastest configuration, which was 64-row tiles and 4 warps, two or three programs per SM."""
    out = {"two_acc": [], "rows128": []}
    for N in sorted({r["N"] for r in _timed(run) if r["D"] == D}):
        fp8 = {r["impl"]: r["ms"] for r in _timed(run) if (r["D"], r["N"]) == (D, N) and r["impl"].startswith("fp8_triton")}
        conf = {impl: _fp8_fields(impl) for impl in fp8}
        big = {c["fold_v"]: fp8[i] for i, c in conf.items()
               if (c["block_m"], c["block_n"], c["num_warps"], c.get("max_regs")) == (128, 128, 8, None)}
        if True in big and False in big:
            out["two_acc"].append(100 * (big[False] / big[True] - 1))
        if True in big:
            out["rows128"].append(100 * (big[True] / min(fp8.values()) - 1))
    return out


def fp8_config_table(run: dict, D: int = 128) -> str:
    """A Markdown table of every timed ``fp8_triton`` configuration at head dim ``D``: its tile
    (rows×keys), warps, stages, register cap and P·V accumulators (one or two), and its speed-up
    over fp16 ``v2_triton`` per N (the fastest per N in bold)."""
    rows = [r for r in _timed(run) if r["D"] == D]
    Ns = sorted({r["N"] for r in rows})
    fp16 = {r["N"]: r["ms"] for r in rows if r["impl"].startswith("v2_triton")}
    ms = {(r["impl"], r["N"]): r["ms"] for r in rows if r["impl"].startswith("fp8_triton")}
    best = {N: min(t for (i, n), t in ms.items() if n == N) for N in Ns}
    lines = ["| tile | warps | stages | reg. cap | P·V acc. | " + " | ".join(f"N={N // 1024}k" for N in Ns) + " |",
             "|---|---:|---:|---:|---|" + "---:|" * len(Ns)]
    for impl in dict.fromkeys(i for i, _ in ms):
        c = _fp8_fields(impl)
        cells = []
        for N in Ns:
            t = ms.get((impl, N))
            text = f"{fp16[N] / t:.2f}×" if t else "–"
            cells.append(f"**{text}**" if t == best[N] else text)
        lines.append(f"| {c['block_m']}×{c['block_n']} | {c['num_warps']} | {c['num_stages']} | "
                     f"{c.get('max_regs') or '–'} | {'one' if c.get('fold_v', True) else 'two'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tuning_cost(tuning: dict, variant: str, base: str, D: int = 128) -> list[float]:
    """From a ``flashedu/bench/tune_fp8.py`` run: how much slower (%) ``variant`` was than ``base`` at head
    dim ``D``, one value per (N, causal) where both were timed (negative: faster)."""
    ms = {(r["impl"], r["N"], r["causal"]): r["ms"] for r in tuning["rows"] if r["D"] == D and "ms" in r}
    return [100 * (ms[(variant, N, c)] / ms[(base, N, c)] - 1) for (impl, N, c) in sorted(ms)
            if impl == base and (variant, N, c) in ms]


def fp8_summary(run: dict) -> dict:
    """What chapter 6 says of FP8 on the GPU, by glue name: the speed-up over fp16 at d = 128 per
    N and its range at d = 64, the torch quantisation step's time range (ms) and its ratio to the
    d = 128 kernel's time, what two design choices cost (:func:`fp8_design_costs`, % ranges),
    the FA3 recipe's RMSE beside the paper's, and the largest gap (%) between a kernel RMSE and
    its simulation."""
    sp = fp8_speed_table(run)
    rm = {r["recipe"]: r for r in run["rows"] if r.get("kind") == "rmse"}
    x64 = [r["speedup"] for r in sp if r["D"] == 64]
    out = dict(fp8_gpu=run["provenance"]["gpu"], fp8_date=run["provenance"]["date"][:10])
    out.update({f"fp8_x_{r['N']}": r["speedup"] for r in sp if r["D"] == 128})
    out["fp8_x_64_lo"], out["fp8_x_64_hi"] = min(x64), max(x64)
    out["fp8_quant_lo"] = min(r["quant_ms"] for r in sp)
    out["fp8_quant_hi"] = max(r["quant_ms"] for r in sp)
    ratio = [r["quant_ms"] / r["fp8_ms"] for r in sp if r["D"] == 128]
    out["fp8_quant_x_lo"], out["fp8_quant_x_hi"] = min(ratio), max(ratio)
    for name, values in fp8_design_costs(run).items():
        if values:
            out[f"fp8_{name}_lo"], out[f"fp8_{name}_hi"] = min(values), max(values)
    out["fp8_rmse_gpu"], out["fp8_rmse_paper"] = rm["fp8_fa3"]["rmse"], rm["fp8_fa3"]["paper"]
    out["fp8_rmse_agree"] = 100 * max(abs(r["rmse"] / r["simulated"] - 1) for r in rm.values())
    return out
