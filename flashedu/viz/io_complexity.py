"""Chapter 3: FlashAttention's HBM traffic against the SRAM size M, recorded by the memory model,
beside the seed's closed form, the Θ(N²d²/M) trend, and standard attention (which M cannot help)."""
from __future__ import annotations

import plotly.graph_objects as go
import torch

from flashedu.iomodel import formula, simulate
from flashedu.iomodel.blocks import itemsize_of
from flashedu.viz.palette import ALGORITHM_COLORS, FONT, OKABE_ITO

KIB = 1024


def traffic_vs_sram(*, N: int = 4096, d: int = 64, sram_kib=(24, 32, 48, 64, 96, 128, 192, 228, 384, 512),
                    dtype=torch.float16) -> list[dict]:
    """Per SRAM size: v1's recorded HBM elements, the seed formula at the same blocks, and
    standard attention's recorded elements."""
    rows = []
    for kib in sram_kib:
        v1 = simulate("v1", N=N, d=d, sram_bytes=kib * KIB, dtype=dtype)
        std = simulate("standard", N=N, d=d, sram_bytes=kib * KIB, dtype=dtype)
        seed = formula("v1", N=N, d=d, block_r=v1.block_r, block_c=v1.block_c).seed
        rows.append(dict(sram_kib=kib, M=kib * KIB // itemsize_of(dtype), block_r=v1.block_r,
                         block_c=v1.block_c, v1=v1.total_elements, v1_seed=seed.reads + seed.writes,
                         standard=std.total_elements))
    return rows


def traffic_vs_sram_figure(**kwargs) -> go.Figure:
    rows = traffic_vs_sram(**kwargs)
    N, d = kwargs.get("N", 4096), kwargs.get("d", 64)
    x = [r["sram_kib"] for r in rows]
    # Θ(N²d²/M), anchored at the first point, to compare slopes.
    anchor = rows[0]["v1"] * rows[0]["M"]
    fig = go.Figure([
        go.Scatter(x=x, y=[r["standard"] / 1e6 for r in rows], name="standard (recorded)",
                   mode="lines+markers", line=dict(color=ALGORITHM_COLORS["standard"])),
        go.Scatter(x=x, y=[r["v1"] / 1e6 for r in rows], name="FlashAttention v1 (recorded)",
                   mode="lines+markers", line=dict(color=ALGORITHM_COLORS["v1"]),
                   customdata=[(r["block_r"], r["block_c"]) for r in rows],
                   hovertemplate="%{x} KiB: %{y:.4g} M elements, Br=%{customdata[0]}, "
                                 "Bc=%{customdata[1]}<extra></extra>"),
        go.Scatter(x=x, y=[r["v1_seed"] / 1e6 for r in rows], name="v1, the closed-form count",
                   mode="markers", marker=dict(symbol="x", size=9, color=OKABE_ITO["black"])),
        go.Scatter(x=x, y=[anchor / r["M"] / 1e6 for r in rows], name="∝ 1/M", mode="lines",
                   line=dict(color=OKABE_ITO["grey"], dash="dot")),
    ])
    fig.update_xaxes(type="log", title_text="SRAM per SM (KiB)", tickvals=x)
    fig.update_yaxes(type="log", title_text="HBM traffic (millions of elements)")
    fig.update_layout(title=f"HBM traffic vs SRAM size<br><sup>N={N}, d={d}, one head, fp16</sup>", height=430, font=FONT,
                      plot_bgcolor="white", legend=dict(x=0.01, y=0.01, yanchor="bottom"),
                      margin=dict(t=50, l=60, r=20, b=50))
    return fig
