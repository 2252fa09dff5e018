"""Chapter 2's animations: the running mean two ways, and online softmax rescaling its sum."""
from __future__ import annotations

import math

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from flashedu.softmax import online_softmax_trace, running_mean_average, running_mean_sum
from flashedu.viz.anim import add_player
from flashedu.viz.palette import OKABE_ITO


def running_mean_animation(xs) -> go.Figure:
    """Left: v1's running average, renormalised at every step. Right: v2's running sum, divided
    once at the end. Both end at the same mean."""
    xs = [float(x) for x in xs]
    means = running_mean_average(xs)
    sums, mean = running_mean_sum(xs)
    n = len(xs)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.14,
                        subplot_titles=("v1: keep the average (rescale every step)",
                                        "v2: keep the sum (divide once at the end)"))

    def traces(k):
        seen = list(range(1, k + 2))
        return [
            go.Bar(x=seen, y=xs[:k + 1], marker_color=OKABE_ITO["grey"], name="numbers seen", showlegend=False),
            go.Scatter(x=seen, y=means[:k + 1], mode="lines+markers", line_color=OKABE_ITO["blue"],
                       name="running average", showlegend=False),
            go.Bar(x=seen, y=xs[:k + 1], marker_color=OKABE_ITO["grey"], showlegend=False),
            go.Scatter(x=seen, y=sums[:k + 1], mode="lines+markers", line_color=OKABE_ITO["orange"],
                       name="running sum", showlegend=False),
            go.Scatter(x=[n] if k == n - 1 else [], y=[mean] if k == n - 1 else [], mode="markers+text",
                       marker=dict(color=OKABE_ITO["vermillion"], size=12, symbol="diamond"),
                       text=[f"sum / {n} = {mean:.3g}"] if k == n - 1 else [], textposition="top left",
                       showlegend=False),
        ]

    for tr, col in zip(traces(0), (1, 1, 2, 2, 2)):
        fig.add_trace(tr, row=1, col=col)
    fig.frames = [go.Frame(data=traces(k), traces=list(range(5)), name=str(k)) for k in range(n)]
    top = max(max(xs), max(sums)) * 1.15
    fig.update_xaxes(range=[0.4, n + 0.6], title_text="numbers seen", dtick=1)
    fig.update_yaxes(range=[0, max(xs) * 1.15], row=1, col=1)
    fig.update_yaxes(range=[0, top], row=1, col=2)
    fig.update_layout(height=400, margin=dict(t=60, b=100, l=40, r=20))
    return add_player(fig, [str(k + 1) for k in range(n)], duration=600, prefix="numbers seen: ", y=-0.2)


def online_softmax_animation(x) -> go.Figure:
    """One row of logits streamed left to right. Each frame shows the weights exp(x_j - m) of the
    elements seen so far under the *current* running max m; when a larger logit arrives, every
    earlier weight shrinks by exp(m_old - m_new) and so does the running sum ℓ."""
    x = torch.as_tensor(x, dtype=torch.float64).flatten()
    trace = online_softmax_trace(x)
    xs = x.tolist()
    n = len(xs)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1, row_heights=[0.45, 0.55],
                        subplot_titles=("logits x_j and the running max m", "weights exp(x_j − m) under the current m"))

    def traces(k):
        _, m, d = trace[k]
        grown = k > 0 and m > trace[k - 1][1]
        seen = list(range(k + 1))
        colors = [OKABE_ITO["vermillion"] if (grown and j < k) else OKABE_ITO["blue"] for j in seen]
        # Positions are 1-based, as the chapter writes the row: x_1, ..., x_N.
        return [
            go.Bar(x=list(range(1, n + 1)), y=xs, marker_color=[OKABE_ITO["blue"] if j <= k else OKABE_ITO["grey"]
                                                                for j in range(n)], showlegend=False),
            go.Scatter(x=[0.5, n + 0.5], y=[m, m], mode="lines", line=dict(color=OKABE_ITO["orange"], dash="dash"),
                       name="running max m", showlegend=False),
            go.Bar(x=[j + 1 for j in seen], y=[math.exp(xs[j] - m) for j in seen], marker_color=colors, showlegend=False,
                   text=[f"{math.exp(xs[j] - m):.2f}" for j in seen], textposition="outside"),
        ]

    for tr, row in zip(traces(0), (1, 1, 2)):
        fig.add_trace(tr, row=row, col=1)

    def title(k):
        _, m, d = trace[k]
        note = "  — new max: earlier weights rescaled" if k > 0 and m > trace[k - 1][1] else ""
        return f"after x_{k + 1}: m = {m:.2f}, ℓ = Σ exp(x_j − m) = {d:.3f}{note}"

    fig.frames = [go.Frame(data=traces(k), traces=[0, 1, 2], name=str(k), layout=go.Layout(title_text=title(k)))
                  for k in range(n)]
    lo, hi = min(xs), max(xs)
    fig.update_yaxes(range=[min(0, lo) - 0.5, hi + 1], title_text="x_j", row=1, col=1)
    fig.update_yaxes(range=[0, 1.25], title_text="weight", row=2, col=1)
    fig.update_xaxes(range=[0.4, n + 0.6], dtick=1, title_text="position j", row=2, col=1)
    fig.update_layout(title_text=title(0), height=520, margin=dict(t=80, b=100, l=50, r=20))
    return add_player(fig, [str(k + 1) for k in range(n)], duration=700, prefix="elements seen: ", y=-0.14)
