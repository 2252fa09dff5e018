"""Chapter 1: how standard attention's HBM traffic grows with N, split into the N×N
intermediates (S, P) and everything else, recorded by shape-only simulations."""
from __future__ import annotations

import plotly.graph_objects as go
import torch

from flashedu.iomodel import simulate
from flashedu.viz.palette import FONT, OKABE_ITO

INTERMEDIATES = ("S", "P")


def standard_traffic_by_tensor(Ns, *, d: int = 64, heads: int = 1, dtype=torch.float16) -> list[dict]:
    """Per N: HBM bytes moved for S and P, and for Q, K, V, O (reads + writes)."""
    rows = []
    for N in Ns:
        r = simulate("standard", N=int(N), d=d, heads=heads, dtype=dtype)
        inter = sum(t.read_bytes + t.write_bytes for n, t in r.per_tensor.items() if n in INTERMEDIATES)
        rows.append(dict(N=int(N), intermediates=inter, others=r.total_bytes - inter, total=r.total_bytes))
    return rows


def standard_growth_figure(Ns=(256, 512, 1024, 2048, 4096, 8192, 16384), *, d: int = 64,
                           heads: int = 1, dtype=torch.float16) -> go.Figure:
    rows = standard_traffic_by_tensor(Ns, d=d, heads=heads, dtype=dtype)
    mib = 2 ** 20
    fig = go.Figure()
    for key, name, color in (("intermediates", "S and P (written, then read back)", OKABE_ITO["vermillion"]),
                             ("others", "Q, K, V, O", OKABE_ITO["blue"])):
        fig.add_trace(go.Scatter(x=[r["N"] for r in rows], y=[r[key] / mib for r in rows], name=name,
                                 mode="lines+markers", line=dict(color=color),
                                 hovertemplate="N=%{x}: %{y:.4g} MiB<extra></extra>"))
    fig.update_xaxes(type="log", title_text="sequence length N", tickvals=[r["N"] for r in rows],
                     ticktext=[str(r["N"]) for r in rows])
    # One label per decade: plotly's default also labels 2 and 5 in tiny type, which reads as noise.
    fig.update_yaxes(type="log", title_text="HBM traffic (MiB)", dtick=1)
    fig.update_layout(title=f"Standard attention: HBM traffic vs N<br><sup>one head, d={d}, "
                            f"{str(dtype).removeprefix('torch.')}, recorded by the memory model</sup>",
                      height=420, font=FONT, plot_bgcolor="white",
                      legend=dict(x=0.01, y=0.99), margin=dict(t=60, l=60, r=20, b=50))
    return fig
