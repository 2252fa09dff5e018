"""Chapter 7: decoding one token. FA2's programs on the SMs beside split-KV's, tile by tile
(splits → SMs → merge), and how much each split's partial state weighs in the merged row."""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from flashedu.hardware import gpu as get_gpu
from flashedu.ops.split_kv.plan import num_splits_heuristic, split_ranges
from flashedu.recorded.decode import gpu_GBps, hbm_GBps
from flashedu.softmax.state import empty_state, merge_all, state_of_block
from flashedu.viz.anim import add_player
from flashedu.viz.palette import FONT, OKABE_ITO, SEQUENCE, discrete_colorscale

IDLE, READING, MERGING, FINISHED = 0, 1, 2, 3
SM_COLORS = [OKABE_ITO["grey"], OKABE_ITO["blue"], OKABE_ITO["orange"], "#E8E8E8"]
TILE_COLORS = ["#EEEEEE", OKABE_ITO["vermillion"], OKABE_ITO["sky"]]  # not read, reading, read


def _grid(sms):
    cols = math.ceil(math.sqrt(sms * 2))
    return math.ceil(sms / cols), cols


def _timeline(programs, sms, tiles_each, merge=0, merge_programs=0):
    """(time units until done, fn(t) -> SM states) for ``programs`` equal programs in waves,
    then ``merge`` time units of ``merge_programs`` merge programs."""
    waves = math.ceil(programs / sms)
    busy_until = waves * tiles_each

    def states(t):
        z = np.full(sms, FINISHED if t >= busy_until + merge else IDLE)
        if t < busy_until:
            w = int(t // tiles_each)
            z[:min(sms, programs - w * sms)] = READING
        elif t < busy_until + merge:
            z[:min(sms, merge_programs)] = MERGING
        return z

    return busy_until + merge, states


def decode_figure(*, batch: int = 1, heads: int = 32, kv_heads: int = 8, N_k: int = 32768,
                  block_n: int = 128, gpu="H100", num_splits: int | None = None, frames: int = 24) -> go.Figure:
    """Decode of one query token, animated. Top: the SMs, each frame a moment in time (one unit
    = one K/V tile read by one program). FA2 runs one program per (batch, query head), each
    reading the whole cache; split-KV one per (batch, K/V head, split), each reading 1/S of it,
    then a short merge. Bottom: the K/V cache of one head, tiles read so far."""
    g = get_gpu(gpu)
    tiles = -(-N_k // block_n)
    group = heads // kv_heads
    S = num_splits or num_splits_heuristic(batch * kv_heads, tiles, g.sms)
    per_split = -(-tiles // S)
    t_v2, sm_v2 = _timeline(batch * heads, g.sms, tiles)
    # The merge reads S partial rows per query: about one tile's bytes, one short wave.
    t_sp, sm_sp = _timeline(batch * kv_heads * S, g.sms, per_split, 1, batch * heads)
    rows, cols = _grid(g.sms)
    ranges = split_ranges(tiles, S, 1)
    fig = make_subplots(rows=2, cols=2, row_heights=[0.75, 0.25], vertical_spacing=0.1, horizontal_spacing=0.05,
                        subplot_titles=[f"FA2: {batch * heads} programs, each reads {tiles} tiles",
                                        f"split-KV: {batch * kv_heads * S} programs ({S} splits), {per_split} tiles each",
                                        "K/V cache of one head", f"the same cache in {S} splits"])

    def sm_trace(states):
        z = np.full(rows * cols, np.nan)
        z[:g.sms] = states
        return go.Heatmap(z=z.reshape(rows, cols), zmin=-0.5, zmax=3.5, colorscale=discrete_colorscale(SM_COLORS),
                          showscale=False, xgap=2, ygap=2, hoverinfo="skip")

    def strip(read_until, starts):
        z = np.zeros(tiles)
        for lo, hi in starts:
            done = int(min(hi - lo, read_until))
            z[lo:lo + done] = 2
            if done < hi - lo and read_until < hi - lo:
                z[lo + done] = 1
        return go.Heatmap(z=z[None, :], zmin=-0.5, zmax=2.5, colorscale=discrete_colorscale(TILE_COLORS),
                          showscale=False, xgap=0.5, hovertemplate="tile %{x}<extra></extra>")

    def traces(t):
        return [sm_trace(sm_v2(t)), sm_trace(sm_sp(t)), strip(t, [(0, tiles)]), strip(t, ranges)]

    # Split-KV is over early: give its few time units frames of their own.
    ts = np.unique(np.round(np.concatenate((np.linspace(0, t_sp, 7), np.linspace(0, t_v2, frames + 1))), 1))
    for i, tr in enumerate(traces(0)):
        fig.add_trace(tr, row=1 + i // 2, col=1 + i % 2)
    fig.frames = [go.Frame(data=traces(t), traces=[0, 1, 2, 3], name=f"f{k}") for k, t in enumerate(ts)]
    for lo, _ in ranges[1:]:
        fig.add_vline(x=lo - 0.5, line=dict(color=OKABE_ITO["black"], width=1), row=2, col=2)
    for name, color in (("reading K/V", SM_COLORS[1]), ("merging", SM_COLORS[2]), ("idle", SM_COLORS[0]),
                        ("finished", SM_COLORS[3]), ("tile read", TILE_COLORS[2])):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=name,
                                 marker=dict(symbol="square", size=12, color=color)), row=1, col=1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed")
    fig.update_layout(
        title=f"Decoding one token, {N_k:,} cached keys, {heads} query heads, {kv_heads} K/V heads (GQA {group}:1)"
              f"<br><sup>{g.name}, {g.sms} SMs; time in K/V tiles read per program; split-KV is done after "
              f"{t_sp / t_v2:.0%} of FA2's time</sup>",
        height=480, font=FONT, plot_bgcolor="white", margin=dict(t=90, b=120, l=10, r=10),
        legend=dict(orientation="h", x=0, y=-0.3))
    return add_player(fig, [f"{t:.0f}" for t in ts], duration=300, prefix="tiles read per program: ", y=-0.08)


def split_weights_figure(*, N_k: int = 4096, num_splits: int = 8, d: int = 64, seed: int = 0) -> go.Figure:
    """One query row, its keys in ``num_splits`` splits: each split's running max m_s and its
    share e^(m_s − m) ℓ_s / ℓ of the final softmax (the weight ⊕ gives its partial output)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, d, generator=g, dtype=torch.float64)
    k = torch.randn(N_k, d, generator=g, dtype=torch.float64)
    k[int(0.7 * N_k)] = q[0]  # one key that matches the query well: its split dominates
    v = torch.randn(N_k, d, generator=g, dtype=torch.float64)
    states = []
    for lo, hi in split_ranges(N_k, num_splits, 1):
        s = (q @ k[lo:hi].T) / math.sqrt(d)  # [1, n]
        states.append(state_of_block(s, v[lo:hi]) if hi > lo else empty_state((1,), d, dtype=torch.float64))
    total = merge_all(states)
    share = [float(torch.exp(st.m - total.m) * st.l / total.l) for st in states]
    fig = make_subplots(rows=1, cols=2, subplot_titles=["running max m<sub>s</sub> of each split",
                                                        "share of the merged softmax"])
    labels = [f"split {s}" for s in range(num_splits)]
    fig.add_trace(go.Bar(x=labels, y=[float(st.m) for st in states], marker_color=SEQUENCE[0], showlegend=False), 1, 1)
    fig.add_trace(go.Bar(x=labels, y=share, marker_color=SEQUENCE[1], showlegend=False), 1, 2)
    fig.add_hline(y=float(total.m), line=dict(dash="dash", color=OKABE_ITO["black"]), row=1, col=1,
                  annotation_text="m of the merge")
    fig.update_yaxes(title_text="logit (scaled)", row=1, col=1)
    fig.update_yaxes(title_text="e^(m<sub>s</sub> − m) ℓ<sub>s</sub> / ℓ", range=[0, 1], row=1, col=2)
    fig.update_layout(title=f"Merging {num_splits} partial states of one query row<br><sup>{N_k:,} keys, "
                            "one of them close to the query</sup>", height=360, font=FONT, plot_bgcolor="white")
    return fig


IMPL_LABELS = {
    "split_kv_triton": "split-KV (Triton), heuristic splits",
    "split_kv_triton_1split": "split-KV (Triton), 1 split",
    "sdpa_gqa": "torch SDPA, enable_gqa",
    "sdpa_flash": "torch SDPA flash, K/V expanded",
    "v2_triton": "v2 (Triton, ch. 4), K/V expanded",
}


def measured_decode_figure(result: dict) -> go.Figure:
    """GB/s of K/V cache read per implementation vs cache length, from ``flashedu/bench/decode.py``'s
    recorded file: one panel per batch size, the GPU's datasheet HBM bandwidth dashed. GPU time
    from CUDA-graph replays where recorded: an eager call of a short decode step times the host."""
    rows = [dict(r, cache_GBps=gpu_GBps(r)) for r in result["rows"] if "ms" in r]
    graphs = all("graph_ms" in r for r in result["rows"] if "ms" in r)
    info = result["provenance"]
    # the labelled implementations only: ablations (two launches, split counts) are tables' job
    names = [n for n in IMPL_LABELS if any(r["impl"] == n for r in rows)]
    Bs = sorted({r["B"] for r in rows})
    Nks = sorted({r["N_k"] for r in rows})
    fig = make_subplots(rows=1, cols=len(Bs), shared_yaxes=True, horizontal_spacing=0.03,
                        subplot_titles=[f"batch {B}" for B in Bs])
    for j, B in enumerate(Bs):
        for i, name in enumerate(names):
            pts = sorted((r["N_k"], r["cache_GBps"]) for r in rows if r["impl"] == name and r["B"] == B)
            if pts:
                fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], name=IMPL_LABELS.get(name, name),
                                         legendgroup=name, showlegend=j == 0, mode="lines+markers",
                                         line=dict(color=SEQUENCE[i % len(SEQUENCE)],
                                                   dash="dash" if name == "split_kv_triton_1split" else "solid")),
                              row=1, col=j + 1)
    hbm = hbm_GBps(info.get("gpu"))
    top = max([r["cache_GBps"] for r in rows] + [hbm or 0])
    for j in range(len(Bs)):
        if hbm:
            label = dict(annotation_text=f"HBM {hbm / 1e3:.1f} TB/s (datasheet)",
                         annotation_position="bottom right") if j == 0 else {}
            fig.add_hline(y=hbm, line=dict(color=OKABE_ITO["black"], dash="dot", width=1), row=1, col=j + 1,
                          **label)
        fig.update_xaxes(type="log", tickvals=Nks, ticktext=[f"{n // 1024}k" for n in Nks],
                         title_text="cached keys N_k", row=1, col=j + 1)
    timer = "GPU time" if graphs else "eager calls"  # GPU time: CUDA-graph replays
    fig.update_yaxes(title_text=f"K/V cache read (GB/s, {timer})", range=[0, 1.08 * top], row=1, col=1)
    shape = {**rows[0], **result.get("shapes", {})} if rows else {}
    heads = f"{shape.get('H', '?')} query heads, {shape.get('H_kv', '?')} K/V heads, d = {shape.get('D', '?')}"
    fig.update_layout(title=f"Decoding one token, measured<br><sup>{info.get('gpu')}, fp16, {heads}; "
                            f"torch {info.get('torch')}, {str(info.get('date', ''))[:10]}</sup>",
                      height=460, font=FONT, plot_bgcolor="white", margin=dict(t=90, b=120),
                      legend=dict(orientation="h", x=0, y=-0.25))
    return fig
