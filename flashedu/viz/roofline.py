"""The roofline of one GPU preset, with kernels placed on it by their arithmetic intensity."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from flashedu.hardware import gpu as get_gpu
from flashedu.hardware import predict
from flashedu.viz.palette import FONT, SEQUENCE


def roofline_figure(points, device="H100", *, dtype: str = "fp16", title: str | None = None) -> go.Figure:
    """``points``: iterable of ``(label, flops, bytes)``. Each is drawn at its intensity
    (FLOPs per HBM byte) and at the rate the roofline allows it, with its predicted time."""
    g = get_gpu(device)
    peak = g.matmul_flops(dtype)
    points = list(points)
    if not points:
        raise ValueError("points must hold at least one (label, flops, bytes)")
    ais = [f / b for _, f, b in points]
    lo, hi = min(min(ais), g.ridge_point(dtype)) / 4, max(max(ais), g.ridge_point(dtype)) * 4
    x = np.logspace(np.log10(lo), np.log10(hi), 200)
    fig = go.Figure(go.Scatter(x=x, y=np.minimum(peak, x * g.hbm_bandwidth) / 1e12, mode="lines",
                               line=dict(color="black", width=2), name=f"{g.name} roofline",
                               hovertemplate="%{x:.3g} FLOP/B → %{y:.3g} TFLOP/s<extra></extra>"))
    # A line trace, not add_vline: shapes on a log axis take log10 coordinates.
    ridge = g.ridge_point(dtype)
    fig.add_trace(go.Scatter(x=[ridge, ridge], y=[peak / 1e12 / 1e3, peak / 1e12], mode="lines+text",
                             line=dict(color="grey", dash="dot"), text=["", f"ridge {ridge:.0f} FLOP/B "],
                             textposition="bottom left", hoverinfo="skip"))
    # Points with the same FLOPs and bytes (S = QKᵀ and O = PV, say) share one marker and label.
    merged: dict[tuple, list[str]] = {}
    for label, flops, nbytes in points:
        merged.setdefault((flops, nbytes), []).append(label)
    for ((flops, nbytes), labels), color in zip(merged.items(), SEQUENCE):
        label = " and ".join(labels)
        r = predict(flops, nbytes, g, dtype=dtype)
        fig.add_trace(go.Scatter(
            x=[r.intensity], y=[r.achieved_flops / 1e12], mode="markers+text", name=label,
            marker=dict(size=13, color=color, line=dict(color="white", width=1)),
            text=[label], textposition="middle right", textfont=dict(size=11),
            hovertemplate=(f"{label}<br>%{{x:.3g}} FLOP/B, {r.bound}-bound<br>"
                           f"predicted {r.time_s * 1e6:.3g} µs<extra></extra>")))
    # One label per decade: plotly's default also labels 2 and 5 in tiny type, which reads as noise.
    fig.update_xaxes(type="log", title_text="arithmetic intensity (FLOPs per HBM byte)", dtick=1)
    fig.update_yaxes(type="log", title_text=f"attainable {dtype} TFLOP/s", dtick=1)
    fig.update_layout(title=title or f"Roofline of the {g.name}<br><sup>datasheet: "
                      f"{g.hbm_bandwidth / 1e12:.2f} TB/s HBM, {peak / 1e12:.0f} TFLOP/s {dtype}</sup>", height=460, font=FONT,
                      plot_bgcolor="white", showlegend=False, margin=dict(t=60, l=60, r=30, b=60))
    return fig
