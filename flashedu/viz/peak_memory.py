"""Peak GPU memory of forward + backward versus N, from results recorded by
``python -m flashedu.bench.peak_memory`` (and optionally rows measured live on the reader's GPU)."""
from __future__ import annotations

import plotly.graph_objects as go

from flashedu.provenance import label
from flashedu.viz.palette import FONT, SEQUENCE

NAMES = {"standard_torch": "standard (torch ops)", "sdpa": "torch SDPA (default backend)",
         "sdpa_flash": "SDPA flash backend (FlashAttention-2)", "v1_triton": "flashedu v1 (Triton)",
         "v2_triton": "flashedu v2 (Triton)"}


def memory_figure(recorded: dict, *, live: list[dict] | None = None, live_label: str = "",
                  providers=None) -> go.Figure:
    """Log-log peak MiB vs N, one line per provider (all recorded ones, or those named in
    ``providers``); OOM rows are left out."""
    fig = go.Figure()
    recorded_names = list(dict.fromkeys(r["provider"] for r in recorded["rows"]))
    if providers is not None:
        missing = [p for p in providers if p not in recorded_names]
        if missing:
            raise ValueError(f"providers {missing} are not in the recording; it has {recorded_names}")
    providers = list(providers) if providers is not None else recorded_names
    for name, color in zip(providers, SEQUENCE):
        rows = [r for r in recorded["rows"] if r["provider"] == name and isinstance(r["peak_bytes"], int)]
        fig.add_trace(go.Scatter(x=[r["N"] for r in rows], y=[r["peak_bytes"] / 2**20 for r in rows],
                                 mode="lines+markers", name=NAMES.get(name, name), line=dict(color=color),
                                 hovertemplate="N=%{x}: %{y:.4g} MiB<extra>" + name + "</extra>"))
    for name, color in zip(dict.fromkeys(r["provider"] for r in live or []), SEQUENCE):
        rows = [r for r in live if r["provider"] == name and isinstance(r["peak_bytes"], int)]
        fig.add_trace(go.Scatter(x=[r["N"] for r in rows], y=[r["peak_bytes"] / 2**20 for r in rows],
                                 mode="markers", name=f"{NAMES.get(name, name)} — {live_label}",
                                 marker=dict(color=color, symbol="x", size=10)))
    s = recorded["rows"][0]
    ns = sorted({r["N"] for r in recorded["rows"]})
    fig.update_xaxes(type="log", title_text="sequence length N", tickvals=ns, ticktext=[str(n) for n in ns])
    fig.update_yaxes(type="log", title_text="peak memory above inputs (MiB)", dtick=1)
    fig.update_layout(
        title=dict(text=f"Forward + backward, B={s['B']}, H={s['H']}, d={s['D']}, {s['dtype']}"
                        f"<br><sup>recorded on {label(recorded['provenance'])}</sup>"),
        height=440, font=FONT, plot_bgcolor="white",
        legend=dict(x=0.01, y=0.99, bgcolor="rgba(255,255,255,0.8)"), margin=dict(t=70, l=60, r=20, b=50))
    return fig
