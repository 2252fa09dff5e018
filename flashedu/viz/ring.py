"""Chapter 7: ring attention step by step (which shard each rank holds, which scores it computes,
how much work each rank does per step), and when the ring's transfers hide under compute."""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from flashedu.hardware import LINKS, gpu as get_gpu
from flashedu.ops.ring.layout import holder, positions, work_matrix
from flashedu.ops.ring.model import overlap_threshold, ring_step
from flashedu.recorded.ring import RING_CASES, case_label, ring_rows
from flashedu.viz.anim import add_player
from flashedu.viz.palette import FONT, OKABE_ITO, SEQUENCE, discrete_colorscale

TODO, MASKED, DONE = 0, 1, 2  # then 3 + r: computed by rank r at this step


def ring_figure(*, world: int = 4, n: int = 32, layout: str = "zigzag", causal: bool = True) -> go.Figure:
    """One frame per ring step. Left: the n × n score matrix in sequence order, each score
    coloured by the rank computing it now (earlier steps pale, masked scores grey). Top right:
    the ring, each rank labelled with the K/V shard it holds. Bottom right: scores per rank at
    this step: equal bars mean no rank waits for another."""
    pos = [positions(n, world, r, layout).numpy() for r in range(world)]
    owner = np.empty(n, dtype=int)
    for r, p in enumerate(pos):
        owner[p] = r
    work = work_matrix(n, world, layout, causal=causal).numpy()
    colors = ["#F4F4F4", "#9A9A9A", "#CFE3F1"] + [SEQUENCE[r % len(SEQUENCE)] for r in range(world)]
    scale = discrete_colorscale(colors)
    fig = make_subplots(rows=2, cols=2, column_widths=[0.55, 0.45], row_heights=[0.55, 0.45],
                        specs=[[{"rowspan": 2}, {}], [None, {}]], horizontal_spacing=0.1, vertical_spacing=0.14,
                        subplot_titles=["scores: query (row) × key (column)", "the ring", "scores computed this step"])
    angle = [math.pi / 2 - 2 * math.pi * r / world for r in range(world)]
    xs, ys = [math.cos(a) for a in angle], [math.sin(a) for a in angle]

    def matrix(step):
        z = np.full((n, n), TODO)
        rows, cols = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        for t in range(step + 1):
            for r in range(world):
                j = holder(r, t, world)
                block = np.ix_(pos[r], pos[j])
                z[block] = 3 + r if t == step else DONE
        if causal:
            z[cols > rows] = MASKED
        return go.Heatmap(z=z, zmin=-0.5, zmax=len(colors) - 0.5, colorscale=scale, showscale=False,
                          hovertemplate="query %{y}, key %{x}<extra></extra>")

    def ring(step):
        held = [holder(r, step, world) for r in range(world)]
        return go.Scatter(x=xs, y=ys, mode="markers+text", text=[f"rank {r}<br>K/V {h}" for r, h in enumerate(held)],
                          textposition="middle center", textfont=dict(size=10, color="white"),
                          marker=dict(size=52, color=[SEQUENCE[r % len(SEQUENCE)] for r in range(world)]),
                          hoverinfo="skip", showlegend=False)

    def bars(step):
        return go.Bar(x=[f"rank {r}" for r in range(world)], y=work[:, step], showlegend=False,
                      marker_color=[SEQUENCE[r % len(SEQUENCE)] for r in range(world)])

    for tr, (row, col) in zip((matrix(0), ring(0), bars(0)), ((1, 1), (1, 2), (2, 2))):
        fig.add_trace(tr, row=row, col=col)
    fig.frames = [go.Frame(data=[matrix(t), ring(t), bars(t)], traces=[0, 1, 2], name=str(t)) for t in range(world)]
    for r in range(world):  # arrows r -> r + 1: where each shard goes next
        a, b = r, (r + 1) % world
        fig.add_annotation(x=0.72 * xs[b] + 0.28 * xs[a], y=0.72 * ys[b] + 0.28 * ys[a],
                           ax=0.28 * xs[b] + 0.72 * xs[a], ay=0.28 * ys[b] + 0.72 * ys[a],
                           xref="x2", yref="y2", axref="x2", ayref="y2", showarrow=True, arrowhead=2,
                           arrowcolor=OKABE_ITO["black"])
    fig.update_xaxes(title_text="key position", row=1, col=1)
    fig.update_yaxes(title_text="query position", autorange="reversed", row=1, col=1)
    fig.update_xaxes(visible=False, range=[-1.6, 1.6], row=1, col=2)
    fig.update_yaxes(visible=False, range=[-1.5, 1.5], row=1, col=2)
    fig.update_yaxes(title_text="(query, key) pairs", range=[0, 1.05 * work.max()], row=2, col=2)
    eff = work.sum() / (world * work.max(axis=0).sum())
    fig.update_layout(title=f"Ring attention, {world} ranks, {layout} layout{', causal' if causal else ''}"
                            f"<br><sup>{n} tokens; busiest-rank efficiency {eff:.0%}</sup>",
                      height=520, font=FONT, plot_bgcolor="white", margin=dict(t=90, b=130, l=10, r=10))
    return add_player(fig, [str(t) for t in range(world)], duration=900, prefix="step ", y=-0.16)


def overlap_figure(*, gpu="H100", heads: int = 32, kv_heads: int = 8, d: int = 128, causal: bool = True,
                   links=("NVLink 4", "PCIe 5.0 x16", "InfiniBand NDR")) -> go.Figure:
    """Time of one ring step vs tokens per rank: the compute (∝ n²) against the transfer of one
    K/V shard over each link (∝ n). Right of a crossing the transfer hides under the compute."""
    n = np.logspace(8, 17, 60, base=2)
    g = get_gpu(gpu)
    fig = go.Figure()
    comp = [ring_step(int(x), d=d, heads=heads, kv_heads=kv_heads, causal=causal, gpu=g).compute_s * 1e3 for x in n]
    fig.add_trace(go.Scatter(x=n, y=comp, name=f"compute ({g.name}, half of peak)",
                             line=dict(color=OKABE_ITO["black"], width=3)))
    for i, name in enumerate(links):
        comm = [ring_step(int(x), d=d, heads=heads, kv_heads=kv_heads, causal=causal, link=name).comm_s * 1e3 for x in n]
        color = SEQUENCE[i % len(SEQUENCE)]
        fig.add_trace(go.Scatter(x=n, y=comm, name=f"send K/V over {name} ({LINKS[name].bandwidth / 1e9:.0f} GB/s)",
                                 line=dict(color=color, dash="dash")))
        star = overlap_threshold(heads=heads, kv_heads=kv_heads, causal=causal, gpu=g, link=name)
        fig.add_vline(x=star, line=dict(color=color, width=1, dash="dot"))
    fig.update_xaxes(type="log", title_text="tokens per rank (N / n_p)", dtick=1)
    fig.update_yaxes(type="log", title_text="time per ring step (ms)", dtick=1)
    fig.update_layout(title=f"When the ring hides its transfers<br><sup>{heads} query heads, {kv_heads} K/V heads, "
                            f"d = {d}, fp16{', causal' if causal else ''}; dotted: where the two meet</sup>",
                      height=420, font=FONT, plot_bgcolor="white", legend=dict(x=0.01, y=0.99))
    return fig


def measured_ring_figure(result: dict) -> go.Figure:
    """From ``flashedu/bench/ring.py``'s recorded file. Left: seconds of one forward pass, the ring per
    layout (slowest rank) beside one GPU alone, per sequence length. Right (where the file has
    per-step times), at the largest length: each rank's compute summed over its steps, and on top
    the time it waited for transfers that had not arrived when its compute was done."""
    rows, info = result["rows"], result["provenance"]
    Ns = sorted({r["N"] for r in rows if r["test"] == "ring"})
    steps = all("compute_s" in r for r in rows if r["test"] == "ring")
    fig = make_subplots(rows=1, cols=2 if steps else 1, column_widths=[0.55, 0.45] if steps else None,
                        horizontal_spacing=0.14,
                        subplot_titles=["forward time (ring: its slowest rank)",
                                        f"each rank at N = {Ns[-1] // 1024}k: compute, then wait"] if steps else None)
    labels = [f"{N // 1024}k" for N in Ns]
    for i, (layout, causal) in enumerate(RING_CASES):
        ys = [max(r["seconds"] for r in ring_rows(rows, N, layout, causal)) * 1e3 for N in Ns]
        fig.add_trace(go.Bar(x=labels, y=ys, name=f"ring, {case_label(layout, causal)}",
                             legendgroup=case_label(layout, causal), marker_color=SEQUENCE[i]), row=1, col=1)
    for causal, color in ((True, OKABE_ITO["black"]), (False, OKABE_ITO["grey"])):
        ys = [next(r["seconds"] for r in rows if r["test"] == "single_gpu" and r["N"] == N and r["causal"] == causal) * 1e3
              for N in Ns]
        fig.add_trace(go.Bar(x=labels, y=ys, name=f"one GPU, {'causal' if causal else 'non-causal'}",
                             marker_color=color, marker_pattern_shape="/"), row=1, col=1)
    fig.update_xaxes(title_text="sequence length N (tokens)", row=1, col=1)
    fig.update_yaxes(type="log", title_text="forward time (ms)", dtick=1, row=1, col=1)
    if steps:
        world = int(info.get("world", 0)) or 1 + max(r["rank"] for r in rows if r["test"] == "ring")
        for i, (layout, causal) in enumerate(RING_CASES):
            big = sorted(ring_rows(rows, Ns[-1], layout, causal), key=lambda r: r["rank"])
            # Two short lines per group: four groups side by side share about 300 pixels.
            short = f"{layout[:6] + '.' if len(layout) > 7 else layout}<br>{'causal' if causal else 'full'}"
            x = [[short] * len(big), [f"r{r['rank']}" for r in big]]
            comp = [sum(r["compute_s"]) * 1e3 for r in big]
            wait = [sum(r["wait_s"]) * 1e3 for r in big]
            fig.add_trace(go.Bar(x=x, y=comp, marker_color=SEQUENCE[i], offsetgroup="ranks",
                                 legendgroup=case_label(layout, causal), showlegend=False,
                                 hovertemplate="compute %{y:.1f} ms<extra></extra>"), row=1, col=2)
            fig.add_trace(go.Bar(x=x, y=wait, base=comp, marker_color=OKABE_ITO["black"], offsetgroup="ranks",
                                 name="waiting for a transfer (ms, written on top)", showlegend=i == 0,
                                 text=[f"{w:.2f}" for w in wait], textposition="outside", textangle=0,
                                 textfont=dict(size=10), cliponaxis=False,
                                 hovertemplate="wait %{y:.3f} ms<extra></extra>"), row=1, col=2)
        fig.update_yaxes(title_text="ms, summed over the ring's steps", row=1, col=2)
        fig.update_xaxes(tickangle=0, row=1, col=2)
    else:
        world = info.get("world")
    fig.update_layout(title=f"Ring attention on {world} GPUs, measured<br><sup>{info.get('gpu')}, NCCL, fp16, "
                            f"B = 1, 16 heads, d = 128; {str(info.get('date', ''))[:10]}</sup>",
                      barmode="group", height=460, font=FONT, plot_bgcolor="white", margin=dict(t=90, b=140),
                      legend=dict(orientation="h", x=0, y=-0.3))
    return fig
