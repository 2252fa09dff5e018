"""Chapter 1's animation: the three kernels of unfused attention, launch by launch.

Each frame is one group of programs of one kernel; the left panel shows the N×N tiles of S and P
as they are written to HBM, the right panel the running totals of HBM bytes read and written.
The traffic is counted from the launch grids of ``flashedu.ops.standard.triton_impl``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .anim import add_player
from .palette import OKABE_ITO, discrete_colorscale

# Tile states, in the order they appear.
UNTOUCHED, S_WRITTEN, P_WRITTEN, O_DONE = range(4)
STATE_NAMES = ("not yet in HBM", "S written", "P written (S read)", "P and V read for O")


@dataclass(frozen=True)
class Launch:
    """One program of one kernel: which tiles it touches and its HBM bytes."""
    kernel: int  # 1, 2 or 3
    rows: slice  # tile rows of the N×N grid it covers
    cols: slice
    read: int
    written: int


def three_kernel_launches(N: int, D: int, *, block: int = 64, elem_bytes: int = 2) -> list[Launch]:
    """Programs of the three kernels in launch order, with the bytes each moves."""
    t = -(-N // block)  # tiles per side
    rows_in = lambda i: min(block, N - i * block)  # noqa: E731  (last tile may be partial)
    out = []
    for i in range(t):  # kernel 1: one program per tile of S; reads a Q and a K tile
        for j in range(t):
            r, c = rows_in(i), rows_in(j)
            out.append(Launch(1, slice(i, i + 1), slice(j, j + 1),
                              (r * D + c * D) * elem_bytes, r * c * elem_bytes))
    for i in range(t):  # kernel 2: one program per row; grouped by tile row for the picture
        r = rows_in(i)
        out.append(Launch(2, slice(i, i + 1), slice(0, t), r * N * elem_bytes, r * N * elem_bytes))
    for i in range(t):  # kernel 3: one program per row tile of O; reads a row of P and all of V
        r = rows_in(i)
        out.append(Launch(3, slice(i, i + 1), slice(0, t),
                          (r * N + N * D) * elem_bytes, r * D * elem_bytes))
    return out


def three_kernel_animation(N: int = 512, D: int = 64, *, block: int = 64, elem_bytes: int = 2,
                           max_frames: int = 48) -> go.Figure:
    launches = three_kernel_launches(N, D, block=block, elem_bytes=elem_bytes)
    t = -(-N // block)
    # Sub-sample so the animation has a readable number of frames; always keep the last launch.
    cuts = np.unique(np.linspace(1, len(launches), min(max_frames, len(launches))).astype(int))
    grid = np.zeros((t, t), dtype=int)
    done = 0
    read = written = 0
    frames = []
    for n in cuts:
        for L in launches[done:n]:
            state = {1: S_WRITTEN, 2: P_WRITTEN, 3: O_DONE}[L.kernel]
            grid[L.rows, L.cols] = state
            read += L.read
            written += L.written
        done = n
        kernel = launches[n - 1].kernel
        frames.append((grid.copy(), read, written, kernel, n))

    colors = [OKABE_ITO["grey"], OKABE_ITO["orange"], OKABE_ITO["blue"], OKABE_ITO["green"]]
    scale = discrete_colorscale(colors)

    mib = 2**20
    total_r = sum(L.read for L in launches) / mib
    total_w = sum(L.written for L in launches) / mib
    kernel_names = {1: "kernel 1: S = QKᵀ", 2: "kernel 2: P = softmax(S)", 3: "kernel 3: O = PV"}

    def traces(g, r, w):
        return [
            go.Heatmap(z=g, zmin=-0.5, zmax=3.5, colorscale=scale, showscale=False, xgap=1, ygap=1,
                       hovertemplate="Q tile %{y}, K tile %{x}<extra></extra>"),
            go.Bar(x=["read", "written"], y=[r / mib, w / mib],
                   marker_color=[OKABE_ITO["blue"], OKABE_ITO["vermillion"]],
                   text=[f"{r / mib:.2f}", f"{w / mib:.2f}"], textposition="outside"),
        ]

    fig = make_subplots(rows=1, cols=2, column_widths=[0.62, 0.38], horizontal_spacing=0.12,
                        subplot_titles=("N×N scores, by tile", "HBM traffic so far (MiB)"))
    for tr, col in zip(traces(*frames[0][:3]), (1, 2)):
        fig.add_trace(tr, row=1, col=col)
    fig.frames = [go.Frame(data=traces(g, r, w), traces=[0, 1], name=str(k),
                           layout=go.Layout(title_text=f"{kernel_names[kern]} — {n}/{len(launches)} programs"))
                  for k, (g, r, w, kern, n) in enumerate(frames)]
    # Legend entries for the tile states (empty scatter traces carry the names).
    for name, c in zip(STATE_NAMES, colors):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=name,
                                 marker=dict(size=12, symbol="square", color=c)), row=1, col=1)
    fig.update_layout(
        title_text=f"{kernel_names[frames[0][3]]} — {frames[0][4]}/{len(launches)} programs",
        height=470, margin=dict(t=80, b=90, l=50, r=20),
        legend=dict(orientation="h", y=-0.32, x=0),
    )
    add_player(fig, [str(n) for *_, n in frames], duration=250, prefix="programs done: ")
    fig.update_yaxes(autorange="reversed", title_text="Q tile i", row=1, col=1, scaleanchor="x")
    fig.update_xaxes(title_text="K tile j", row=1, col=1)
    fig.update_yaxes(range=[0, max(total_r, total_w) * 1.2], title_text="MiB", row=1, col=2)
    return fig
