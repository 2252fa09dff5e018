"""Chapter 4: programs filling a GPU's SMs over time, for v1 (one program per head) and v2 (one
per head and Q block), side by side on one clock."""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from flashedu.hardware import gpu as get_gpu
from flashedu.iomodel.parallel import occupancy
from flashedu.viz.anim import add_player
from flashedu.viz.palette import FONT, OKABE_ITO, discrete_colorscale

IDLE, BUSY, DONE = 0, 1, 2


def _sm_grid(sms: int) -> tuple[int, int]:
    cols = math.ceil(math.sqrt(sms * 1.5))
    return math.ceil(sms / cols), cols


def sm_waves_figure(*, batch: int, heads: int, N: int, gpu="A100", block_r: int = 128,
                    frames: int = 32) -> go.Figure:
    """v1's and v2's programs on the SMs over time, on one clock: each frame is a moment, in
    units of one v2 program's time (a v1 program does all T_r Q tiles of its head, so it lasts
    T_r units); an SM is busy, idle, or finished with its share."""
    g = get_gpu(gpu)
    occ = {a: occupancy(a, batch=batch, heads=heads, N=N, gpu=g, block_r=block_r) for a in ("v1", "v2")}
    rows, cols = _sm_grid(g.sms)
    end = max(o.finish_time for o in occ.values())
    times = sorted({round(end * f / (frames - 1)) for f in range(frames)})  # whole units
    fig = make_subplots(rows=2, cols=2, horizontal_spacing=0.06, vertical_spacing=0.1,
                        row_heights=[0.82, 0.18], specs=[[{}, {}], [{"colspan": 2}, None]],
                        subplot_titles=[
        f"{a}: {o.programs} programs × {o.program_time} unit{'s' * (o.program_time > 1)}, "
        f"done at t = {o.finish_time}<br>{100 * o.utilization:.0f}% of SM time busy"
        for a, o in occ.items()])

    def grid(o, t):
        z = np.full(rows * cols, np.nan)
        busy = o.busy_at(t)
        z[:g.sms] = DONE if t >= o.finish_time else IDLE
        z[:busy] = BUSY
        return z.reshape(rows, cols)

    scale = discrete_colorscale([OKABE_ITO["grey"], OKABE_ITO["blue"], "#DDDDDD"])

    def traces(t):
        done = [100 * o.done_at(t) for o in occ.values()]
        return [go.Heatmap(z=grid(o, t), zmin=-0.5, zmax=2.5, colorscale=scale, showscale=False,
                           xgap=2, ygap=2, hoverinfo="skip") for o in occ.values()] + [
            go.Bar(x=done, y=list(occ), orientation="h", marker_color=OKABE_ITO["blue"],
                   text=[f"{d:.0f}% of the work done" for d in done], textposition="auto",
                   showlegend=False, hoverinfo="skip")]

    for tr, (r, c) in zip(traces(0), [(1, 1), (1, 2), (2, 1)]):
        fig.add_trace(tr, row=r, col=c)
    fig.frames = [go.Frame(data=traces(t), traces=[0, 1, 2], name=str(t)) for t in times]
    for name, color in (("busy", OKABE_ITO["blue"]), ("idle", OKABE_ITO["grey"]), ("finished", "#DDDDDD")):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=name,
                                 marker=dict(symbol="square", size=12, color=color)), row=1, col=1)
    fig.update_xaxes(visible=False, row=1)
    fig.update_yaxes(visible=False, autorange="reversed", row=1)
    fig.update_xaxes(range=[0, 100], ticksuffix="%", row=2, col=1)
    fig.update_yaxes(autorange="reversed", row=2, col=1)
    fig.update_layout(title=f"{g.name}: {g.sms} SMs, batch {batch} × {heads} heads, N = {N}, "
                            f"Br = {block_r}<br><sup>time t in units of one v2 program "
                            f"(one Q tile against every K/V tile)</sup>",
                      height=520, font=FONT, plot_bgcolor="white", margin=dict(t=120, b=120, l=30, r=10),
                      legend=dict(orientation="h", x=0, y=-0.42))
    return add_player(fig, [str(t) for t in times], duration=300, prefix="t = ", y=-0.08)


def warp_partition_figure(*, block_r: int = 64, block_c: int = 64, d: int = 64, warps: int = 4) -> go.Figure:
    """Which warp computes each score of one Br×Bc tile under split-K (v1) and split-Q (v2)."""
    from flashedu.iomodel.parallel import warp_partition

    parts = [warp_partition(s, block_r=block_r, block_c=block_c, d=d, warps=warps) for s in ("split_k", "split_q")]
    colors = [OKABE_ITO[k] for k in ("blue", "orange", "green", "vermillion", "purple", "sky", "yellow", "black")]
    scale = discrete_colorscale(colors[:warps])
    titles = [f"split-K (v1): warps share rows,<br>exchange {p['smem_exchange_bytes'] / 1024:.0f} KiB"
              if p["scheme"] == "split_k" else "split-Q (v2): each warp owns its rows,<br>exchanges 0 B"
              for p in parts]
    fig = make_subplots(rows=1, cols=2, subplot_titles=titles, horizontal_spacing=0.08)
    for c, p in enumerate(parts, start=1):
        fig.add_trace(go.Heatmap(z=p["owner"], zmin=-0.5, zmax=warps - 0.5, colorscale=scale, showscale=False,
                                 hovertemplate="row %{y}, column %{x}: warp %{z}<extra></extra>"), row=1, col=c)
    for w in range(warps):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"warp {w}",
                                 marker=dict(symbol="square", size=12, color=colors[w])), row=1, col=1)
    fig.update_yaxes(autorange="reversed", title_text="query row in Qᵢ", row=1, col=1)
    fig.update_yaxes(autorange="reversed", row=1, col=2)
    fig.update_xaxes(title_text="key column in Kⱼ")
    fig.update_layout(title=f"One {block_r}×{block_c} tile of S, {warps} warps, d = {d}", height=420, font=FONT,
                      plot_bgcolor="white", legend=dict(orientation="h", x=0, y=-0.2),
                      margin=dict(t=110, b=70, l=60, r=10))
    return fig
