"""HBM traffic and roofline time versus N for standard attention, v1 and v2.

Curves come from :func:`flashedu.iomodel.formula`'s exact counts (which the tests check against
the recorded simulations), so a sweep to N = 64k costs nothing. The model has no L2 cache: every K_j/V_j re-read
is counted as HBM traffic, while on a real GPU programs running at once share them through L2. Two sliders, both precomputed:
d picks which curves are visible, SRAM size swaps every curve's data; they combine freely.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from flashedu import hardware
from flashedu.bench.flops import attention_flops
from flashedu.iomodel.blocks import acc_itemsize, default_block_sizes, itemsize_of
from flashedu.iomodel.formulas import formula
from flashedu.viz.palette import ALGORITHM_COLORS, FONT

DEFAULT_NS = tuple(2 ** p for p in range(8, 17))  # 256 .. 65,536
_DASH = {"standard": "dot", "v1": "dash", "v2": "solid"}


def traffic_curves(algorithm: str, *, Ns, d: int, sram_bytes: int, dtype=torch.float16,
                   causal: bool = False, heads: int = 1, gpu="H100",
                   blocks_of: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(HBM bytes, roofline seconds) per N for ``algorithm`` with the default block sizes of
    ``blocks_of`` (default: its own).

    NaN where the algorithm cannot run: no block fits the SRAM, or (standard) one row of S does not.
    """
    e = itemsize_of(dtype)
    g = hardware.gpu(gpu)
    nbytes, secs = [], []
    try:
        br, bc = default_block_sizes(blocks_of or algorithm, d=d, sram_bytes=sram_bytes, dtype=dtype)
    except ValueError:
        return np.full(len(Ns), np.nan), np.full(len(Ns), np.nan)
    for N in Ns:
        if algorithm == "standard" and N * e > sram_bytes:
            nbytes.append(np.nan)
            secs.append(np.nan)
            continue
        f = formula(algorithm, N=N, d=d, block_r=br, block_c=bc, causal=causal, heads=heads)
        b = sum(f.exact.bytes(itemsize=e, stat_itemsize=acc_itemsize(dtype)))
        nbytes.append(b)
        flops = attention_flops("fwd", B=1, H=heads, N=N, D=d, causal=causal)
        secs.append(hardware.predicted_time(flops, b, g))
    return np.array(nbytes, dtype=float), np.array(secs, dtype=float)


def traffic_explorer(*, Ns=DEFAULT_NS, ds=(64, 128, 256), sram_kib=(64, 100, 192, 228),
                     gpu: str = "H100", dtype: torch.dtype = torch.float16, causal: bool = False,
                     heads: int = 16, algorithms=("standard", "v1", "v2"),
                     same_tiles: bool = True) -> go.Figure:
    """HBM bytes (top) and predicted forward time on ``gpu`` (bottom) against N, for ``heads``
    (batch × heads) attention heads, with sliders for the head dim d and the SRAM per SM.

    ``same_tiles``: v1 uses v2's tiles (the largest square that fits), so the curves compare the
    loop orders alone; False gives v1 FA1's own rule (B_c = M / 4d, wider K/V tiles)."""
    Ns = [int(n) for n in Ns]
    if not Ns or not ds or not sram_kib:
        raise ValueError("Ns, ds and sram_kib must each hold at least one value")
    g = hardware.gpu(gpu)
    # data[s][(d, algorithm)] = (GB, ms) for SRAM option s
    data = []
    for kib in sram_kib:
        per = {}
        for d in ds:
            for alg in algorithms:
                b, t = traffic_curves(alg, Ns=Ns, d=d, sram_bytes=int(kib * 1024), dtype=dtype,
                                      causal=causal, heads=heads, gpu=g,
                                      blocks_of="v2" if same_tiles and alg == "v1" else None)
                per[(d, alg)] = (b / 1e9, t * 1e3)
        data.append(per)
    s0 = min(range(len(sram_kib)), key=lambda s: abs(sram_kib[s] * 1024 - g.sram_per_sm_bytes))
    d0 = 0

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08)
    keys = []  # (d, algorithm, which) per trace, in trace order
    for d in ds:
        for alg in algorithms:
            gb, ms = data[s0][(d, alg)]
            for row, y, which in ((1, gb, "bytes"), (2, ms, "time")):
                fig.add_trace(go.Scatter(
                    x=Ns, y=y, mode="lines+markers", name=alg, legendgroup=alg,
                    showlegend=(row == 1), visible=(d == ds[d0]),
                    line=dict(color=ALGORITHM_COLORS.get(alg), dash=_DASH.get(alg, "solid"), width=2),
                    hovertemplate=f"{alg}, d={d}<br>N=%{{x}}<br>%{{y:.3g}} "
                                  f"{'GB' if which == 'bytes' else 'ms'}<extra></extra>"), row=row, col=1)
                keys.append((d, alg, which))

    d_steps = [dict(method="restyle", label=str(d), args=[{"visible": [k[0] == d for k in keys]}])
               for d in ds]
    s_steps = [dict(method="restyle", label=f"{kib:g} KiB",
                    args=[{"y": [list(data[s][(k[0], k[1])][0 if k[2] == "bytes" else 1]) for k in keys]}])
               for s, kib in enumerate(sram_kib)]
    sliders = [dict(active=d0, steps=d_steps, x=0.0, len=0.45, y=-0.1, yanchor="top",
                    currentvalue=dict(prefix="head dim d = "), pad=dict(t=20)),
               dict(active=s0, steps=s_steps, x=0.55, len=0.45, y=-0.1, yanchor="top",
                    currentvalue=dict(prefix="SRAM per SM = "), pad=dict(t=20))]
    dt = str(dtype).removeprefix("torch.")
    fig.update_layout(
        title=dict(text=f"Forward pass, {heads} heads, {dt}{', causal' if causal else ''}: "
                        f"traffic and roofline time on {g.name}"
                        + ("<br><sup>v1 and v2 at the same tiles (v2's: the largest square that "
                           "fits)</sup>" if same_tiles else "<br><sup>each at its own default tiles</sup>"),
                   font=dict(size=13)),
        height=620, font=FONT, sliders=sliders, plot_bgcolor="white",
        margin=dict(l=70, r=20, t=75, b=130), legend=dict(x=0.01, y=0.99, xanchor="left", yanchor="top", bgcolor="rgba(255,255,255,0.8)"))
    fig.update_xaxes(type="log", title_text="sequence length N (tokens)", row=2, col=1,
                     gridcolor="#E5E5E5", tickvals=Ns, ticktext=[f"{n // 1024}k" if n >= 1024 else str(n) for n in Ns])
    fig.update_xaxes(type="log", gridcolor="#E5E5E5", row=1, col=1)
    fig.update_yaxes(type="log", title_text="HBM traffic (GB)", gridcolor="#E5E5E5", row=1, col=1)
    fig.update_yaxes(type="log", title_text=f"roofline time on {g.name} (ms)", gridcolor="#E5E5E5", row=2, col=1)
    return fig
