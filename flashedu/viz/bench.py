"""Recorded kernel timings (``flashedu/data/bench``) as TFLOP/s against N, one line per kernel,
with buttons for the pass, head dim and mask: all cases precomputed for the static page."""
from __future__ import annotations

import plotly.graph_objects as go

from ..provenance import label
from .palette import FONT, SEQUENCE

NAMES = {"v2_triton": "flashedu v2 (Triton)", "v1_triton": "flashedu v1 (Triton)",
         "sdpa_flash": "SDPA flash (FlashAttention-2)", "sdpa_cudnn": "SDPA cuDNN",
         "sdpa_efficient": "SDPA efficient (xFormers)"}
PASSES = {"fwd": "forward", "bwd": "backward", "fwdbwd": "forward + backward"}


def timing_rows(recorded: dict) -> list[dict]:
    """The timing rows (one per kernel, D, mask, N), without bookkeeping rows."""
    return [r for r in recorded["times"] if r.get("impl") in NAMES]


def ratio(recorded: dict, *, impl: str, peer: str, pass_: str, D: int, causal: bool, N: int) -> float:
    """Speed of ``impl`` over ``peer`` (time ratio) in one recorded case."""
    rows = {(r["impl"], r["D"], r["causal"], r["N"]): r for r in timing_rows(recorded)}
    a, b = rows[(impl, D, causal, N)], rows[(peer, D, causal, N)]
    return b[f"{pass_}_ms"] / a[f"{pass_}_ms"]


def tflops_figure(recorded: dict) -> go.Figure:
    rows = timing_rows(recorded)
    impls = [n for n in NAMES if any(r["impl"] == n for r in rows)]
    cases = [(p, D, c) for p in PASSES for D in sorted({r["D"] for r in rows}) for c in (False, True)]
    fig = go.Figure()
    for k, (p, D, causal) in enumerate(cases):
        for name, color in zip(impls, SEQUENCE):
            pts = sorted((r["N"], r[f"{p}_tflops"]) for r in rows
                         if r["impl"] == name and r["D"] == D and r["causal"] == causal and f"{p}_tflops" in r)
            if not pts:
                continue
            fig.add_trace(go.Scatter(x=[n for n, _ in pts], y=[t for _, t in pts], name=NAMES[name],
                                     mode="lines+markers", line=dict(color=color), visible=k == 0,
                                     meta=k, hovertemplate="N=%{x}: %{y:.0f} TFLOP/s<extra>" + name + "</extra>"))
    buttons = [dict(label=f"{PASSES[p]}, D{D}{', causal' if c else ''}", method="update",
                    args=[{"visible": [t.meta == k for t in fig.data]}])
               for k, (p, D, c) in enumerate(cases)]
    fig.update_xaxes(type="log", title_text="sequence length N (B·N = 16k, hidden 2048)",
                     tickvals=sorted({r["N"] for r in rows}))
    fig.update_yaxes(title_text="TFLOP/s (fp16)", rangemode="tozero")
    fig.update_layout(title=dict(text=f"Measured speed<br><sup>{label(recorded['info'])}</sup>"),
                      updatemenus=[dict(buttons=buttons, direction="down", x=1, xanchor="right", y=1.18,
                                        yanchor="top", showactive=True)],
                      height=470, font=FONT, plot_bgcolor="white", legend=dict(orientation="h", y=-0.25),
                      margin=dict(t=90, l=60, r=20, b=110))
    return fig
