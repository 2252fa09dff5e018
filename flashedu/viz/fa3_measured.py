"""Chapter 6's measured figures, drawn from the readers in :mod:`flashedu.recorded.fa3` and
:mod:`flashedu.recorded.fp8`:

* :func:`ablation_figure` - the TMA / pipeline / warp-specialisation table as a shaded grid, the
  best of each row in bold;
* :func:`fp8_speed_figure` - fp16 against FP8 times as bars, the quantisation step stacked on top.
"""
from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from flashedu.provenance import label
from flashedu.recorded.fa3 import STAGES, ablation_table
from flashedu.recorded.fp8 import fp8_speed_table
from flashedu.viz.palette import FONT, OKABE_ITO


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


