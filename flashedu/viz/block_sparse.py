"""Block-sparse widgets, precomputed so they work in the static book:

* :func:`pattern_gallery` - the tile grids of several masks side by side;
* :func:`pattern_explorer` - buttons pick a pattern; the tile grid animates its schedule
  (computed, skipped, working now), HBM bytes so far grow beside it, and the subtitle gives the
  pattern's total traffic and roofline time on a GPU preset against dense v2;
* :func:`density_figure` - traffic and time relative to dense v2 against the fraction of tiles
  computed: the memory model, the roofline, and GPU measurements when some are recorded;
* :func:`ratio_heatmap` - every recorded ratio to dense v2, pattern by shape (the appendix).
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from flashedu import hardware
from flashedu.iomodel import simulate
from flashedu.iomodel.trace import SKIP
from flashedu.viz.anim import player_controls
from flashedu.viz.palette import (FONT, LEGEND_BELOW, OKABE_ITO, READ_COLOR, TILE_COLORS, TILE_STATES,
                                  WRITE_COLOR, WRITTEN_NOW, discrete_colorscale)
from flashedu.viz.schedule import event_times, frame_times, schedule_states


def _grid(z, name: str, **kw) -> go.Heatmap:
    return go.Heatmap(z=z, zmin=-0.5, zmax=len(TILE_COLORS) - 0.5, colorscale=discrete_colorscale(TILE_COLORS),
                      showscale=False, xgap=1, ygap=1, name=name,
                      hovertemplate="Q tile i=%{y}, K/V tile j=%{x}<extra></extra>", **kw)


def pattern_gallery(masks: dict, *, causal: bool = False, cols: int = 3) -> go.Figure:
    """Small multiples of each mask's tile grid (head 0): computed tiles coloured, skipped grey,
    partial tiles (carrying a token mask) in a third colour."""
    names = list(masks)
    rows = -(-len(names) // cols)
    titles = [f"{n}: {masks[n].density(causal):.0%} of tiles" for n in names]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.05,
                        vertical_spacing=0.12)
    colors = ["#EEEEEE", OKABE_ITO["sky"], OKABE_ITO["orange"]]
    for k, n in enumerate(names):
        m = masks[n]
        listed = m.effective_blocks(causal)[0].int()
        z = (listed + (m.partial()[0] & listed.bool()).int()).numpy()
        fig.add_trace(go.Heatmap(z=z, zmin=-0.5, zmax=2.5, colorscale=discrete_colorscale(colors), showscale=False,
                                 xgap=1, ygap=1, hovertemplate=f"{n}<br>i=%{{y}}, j=%{{x}}<extra></extra>"),
                      row=k // cols + 1, col=k % cols + 1)
    for label, color in zip(("skipped", "full tile", "partial tile (token mask)"), colors):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=label,
                                 marker=dict(symbol="square", size=12, color=color, line=dict(color="#555555", width=1))))
    fig.update_yaxes(autorange="reversed", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(title_text="Q tile i", row=1, col=1)
    fig.update_xaxes(title_text="K/V tile j", row=rows, col=1)
    fig.update_layout(title=dict(text="Block-sparse patterns<br><sup>one square per tile of the score matrix</sup>",
                                 font=dict(size=13)), height=260 * rows + 110, font=FONT, plot_bgcolor="white",
                      legend=dict(orientation="h", x=0, y=-0.08, yanchor="top"), margin=dict(t=80, b=60))
    return fig


def _summary(name, r, dense, g, causal) -> str:
    rt, dt = hardware.roofline(r, g), hardware.roofline(dense, g)
    mib = 2 ** 20
    return (f"{name}: {r.tiles_computed} of {r.Tr * r.Tc} tiles{' (causal)' if causal else ''}<br><sup>"
            f"HBM {r.total_bytes / mib:.1f} MiB vs dense {dense.total_bytes / mib:.1f} MiB · roofline "
            f"{rt.time_s * 1e6:.0f} µs vs {dt.time_s * 1e6:.0f} µs on {g.name} ({r.heads} heads)</sup>")


def pattern_explorer(masks: dict, *, d: int = 64, heads: int = 16, causal: bool = False, gpu: str = "H100",
                     max_frames: int = 40, frame_ms: int = 200) -> go.Figure:
    """Pick a pattern with the buttons; Play animates its forward schedule (programs side by side)
    with HBM bytes read and written so far; the subtitle compares the whole pass with dense v2
    (same tiles, every one listed) on ``gpu``'s roofline. ``masks``: name -> BlockSparseMask,
    all of one N and block size (small grids: at most 64 × 64 tiles)."""
    names = list(masks)
    if not names:
        raise ValueError("masks must hold at least one pattern")
    g = hardware.gpu(gpu)
    m0 = masks[names[0]]
    for n in names:
        if (masks[n].N, masks[n].block_r, masks[n].block_c) != (m0.N, m0.block_r, m0.block_c):
            raise ValueError(f"masks must share N and block sizes; {n!r} differs from {names[0]!r}")
        if masks[n].Tr * masks[n].Tc > 64 * 64:
            raise ValueError(f"mask {n!r} has {masks[n].Tr} × {masks[n].Tc} tiles; animate at most 64 × 64")
    reps = {n: simulate("block_sparse", N=m.N, N_k=m.N_k, d=d, block_mask=m, causal=causal,
                        heads=heads if m.heads == 1 else m.heads) for n, m in masks.items()}
    dense = simulate("block_sparse", N=m0.N, N_k=m0.N_k, d=d, causal=causal, heads=heads,
                     block_r=m0.block_r, block_c=m0.block_c)
    # A program's trace ends with notes of the tiles it skips: they are not time, so a pattern's
    # schedule ends at its last real event, and skipped tiles are greyed from the first frame.
    ends = {}
    for n, r in reps.items():
        t, kind = event_times(r), r.trace.columns()["kind"]
        ends[n] = int(t[kind != SKIP].max()) + 1
    times = frame_times(max(ends.values()), max_frames)
    states = {n: schedule_states(r, np.minimum(times, ends[n] - 1)) for n, r in reps.items()}
    for n, m in masks.items():
        unlisted = ~m.effective_blocks(causal)[0].numpy()
        for s in states[n]:
            s.grid[unlisted] = 2
    mib = 2 ** 20
    top = max(max(r.read_bytes, r.write_bytes) for r in reps.values()) / mib * 1.2

    fig = make_subplots(rows=1, cols=2, column_widths=[0.62, 0.38], horizontal_spacing=0.12)

    def data(k: int) -> list:
        # No `visible` here: frames would reset the pattern the buttons chose.
        out = [_grid(states[n][k].grid, n) for n in names]
        for n in names:
            s = states[n][k]
            ys = [s.read_bytes / mib, s.write_bytes / mib]
            out.append(go.Bar(x=["read", "written"], y=ys, marker_color=[READ_COLOR, WRITE_COLOR],
                              text=[f"{y:.3g}" for y in ys], textposition="outside", showlegend=False,
                              hovertemplate="%{x}: %{y:.4g} MiB<extra></extra>"))
        return out

    for p, trace in enumerate(data(0)):
        trace.visible = p % len(names) == 0
        fig.add_trace(trace, row=1, col=1 if p < len(names) else 2)
    # S and P never reach HBM here: the grid shows the first four states only.
    shown_states = list(zip(TILE_STATES, TILE_COLORS))[:WRITTEN_NOW]
    for label, color in shown_states:
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=label,
                                 marker=dict(symbol="square", size=12, color=color, line=dict(color="#555555", width=1))),
                      row=1, col=1)
    P = len(names)
    fig.frames = [go.Frame(name=str(k), data=data(k), traces=list(range(2 * P))) for k in range(len(times))]
    menus, sliders = player_controls([str(k) for k in range(len(times))], [str(int(t) + 1) for t in times],
                                     duration=frame_ms, prefix="time step ", y=-0.2, slider_x=0.32)
    legend_vis = [True] * len(shown_states)
    buttons = [dict(label=n, method="update",
                    args=[{"visible": [q == p for q in range(P)] * 2 + legend_vis},
                          {"title.text": _summary(n, reps[n], dense, g, causal)}]) for p, n in enumerate(names)]
    menus.append(dict(type="buttons", direction="right", buttons=buttons, x=0, y=1.2, xanchor="left",
                      yanchor="top", showactive=True, pad=dict(r=5)))
    fig.update_layout(title=dict(text=_summary(names[0], reps[names[0]], dense, g, causal), font=dict(size=13), y=0.97),
                      height=600, font=FONT, plot_bgcolor="white", updatemenus=menus, sliders=sliders,
                      margin=dict(t=130, l=60, r=40, b=190), legend={**LEGEND_BELOW, "y": -0.44})
    fig.update_yaxes(autorange="reversed", dtick=max(1, m0.Tr // 8), title_text=f"Q tile i ({m0.block_r} rows)", row=1, col=1)
    fig.update_xaxes(dtick=max(1, m0.Tc // 8), title_text=f"K/V tile j ({m0.block_c} keys)", row=1, col=1)
    fig.update_yaxes(range=[0, top], title_text=f"HBM traffic so far (MiB, {heads} heads)", row=1, col=2)
    return fig


def density_figure(curves: dict, *, measured: list[dict] | None = None, title: str | None = None) -> go.Figure:
    """Cost relative to dense v2 against the fraction of tiles computed. ``curves``: label ->
    (densities, ratios) from the model; ``measured``: dicts with ``density``, ``ratio``, ``label``
    (a GPU's recorded times), drawn as markers."""
    fig = go.Figure(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="ratio = fraction of tiles",
                               line=dict(color="#999999", dash="dot")))
    dashes = ("solid", "dash", "dashdot", "longdash")
    colors = (OKABE_ITO["blue"], OKABE_ITO["orange"], OKABE_ITO["green"], OKABE_ITO["purple"])
    for (label, (x, y)), dash, color in zip(curves.items(), dashes, colors):
        fig.add_trace(go.Scatter(x=list(x), y=list(y), mode="lines+markers", name=label,
                                 line=dict(dash=dash, color=color, width=2),
                                 hovertemplate="%{x:.0%} of tiles → %{y:.2f}× dense<extra></extra>"))
    symbols = ("circle", "diamond", "square", "x", "triangle-up", "star")
    for k, label in enumerate(dict.fromkeys(p["label"] for p in measured or [])):
        pts = [p for p in measured if p["label"] == label]
        fig.add_trace(go.Scatter(x=[p["density"] for p in pts], y=[p["ratio"] for p in pts], mode="markers",
                                 name=label, marker=dict(size=10, symbol=symbols[k % len(symbols)],
                                                         color=(OKABE_ITO["vermillion"], OKABE_ITO["black"],
                                                                OKABE_ITO["sky"])[k % 3]),
                                 hovertemplate="%{x:.0%} of tiles → %{y:.2f}× dense<extra></extra>"))
    fig.update_xaxes(title_text="fraction of tiles computed", tickformat=".0%", range=[0, 1.02], gridcolor="#E5E5E5")
    fig.update_yaxes(title_text="relative to dense v2 (×)", rangemode="tozero", gridcolor="#E5E5E5")
    fig.update_layout(title=dict(text=title or "Block-sparse cost against density", font=dict(size=13)),
                      height=440, font=FONT, plot_bgcolor="white",
                      legend=dict(x=0.01, y=0.99, xanchor="left", yanchor="top", bgcolor="rgba(255,255,255,0.8)"),
                      margin=dict(t=70, l=60, r=20, b=60))
    return fig


def ratio_heatmap(rows: list, *, pass_: str = "fwd", title: str | None = None) -> go.Figure:
    """Time over dense v2's for every recorded (pattern, density) × (N, d): the appendix's view of
    chapter 5's measurements. ``rows``: :class:`flashedu.recorded.block_sparse.Ratio` objects.
    One panel for flashedu's kernel and, where recorded, one for FlexAttention, on one colour
    scale (1 = dense v2's time), each cell labelled with its ratio."""
    sel = [r for r in rows if r.pass_ == pass_]
    if not sel:
        raise ValueError(f"no rows with pass_={pass_!r}")
    cols = sorted({(r.D, r.N) for r in sel})
    keys = list(dict.fromkeys((r.pattern, r.target) for r in sel))
    by = {(r.pattern, r.target, r.D, r.N): r for r in sel}
    panels = [("flashedu", lambda r: r.ours)]
    if any(r.flex is not None for r in sel):
        panels.append(("FlexAttention", lambda r: r.flex))
    fig = make_subplots(rows=1, cols=len(panels), shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=[p for p, _ in panels])
    x = [f"d{D} N{N // 1024}k" for D, N in cols]
    y = [f"{p} {s:.0%}" for p, s in keys]
    for c, (_, value) in enumerate(panels, start=1):
        z = [[(value(by[(p, s, D, N)]) if (p, s, D, N) in by else None) for D, N in cols] for p, s in keys]
        text = [["" if v is None else f"{v:.2f}" for v in row] for row in z]
        fig.add_trace(go.Heatmap(z=z, x=x, y=y, text=text, texttemplate="%{text}", zmin=0, zmax=1.6,
                                 colorscale="Blues_r", showscale=c == len(panels), xgap=2, ygap=2,
                                 colorbar=dict(title=dict(text="× dense v2"), len=0.9),
                                 hovertemplate="%{y}, %{x}: %{z:.2f}× dense v2<extra></extra>"),
                      row=1, col=c)
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title=dict(text=title or f"Time over dense v2's ({pass_})", font=dict(size=13)),
                      height=120 + 34 * len(keys), font=FONT, plot_bgcolor="white",
                      margin=dict(t=70, l=110, r=20, b=50))
    return fig
