"""Figures of the benchmark chapter from a recorded run: each chapter's kernel against the previous
chapter's, measured kernels placed on a GPU's roofline, and the recorded ablations."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from flashedu.bench.ceilings import for_dtype
from flashedu.bench.flops import attention_flops
from flashedu.bench.schema import normalize
from flashedu.hardware import GPUS, gpu as get_gpu
from flashedu.iomodel import formula
from flashedu.provenance import label
from flashedu.recorded.bench import causal_skip, stage_ladder, timing_rows
from flashedu.viz.tflops import NAMES, PASSES as PASS_NAMES, SHORT
from flashedu.viz.palette import FONT, OKABE_ITO, SEQUENCE

CHAIN = ("standard_triton", "v1_triton", "v2_triton", "v2_tma_triton")  # chapter 1 → 3 → 4 → 6
# The algorithm each provider's HBM traffic follows (SDPA's fused backends tile like FA2).
ALGORITHM = {"standard_triton": "standard", "standard_torch": "standard", "sdpa_math": "standard",
             "v1_triton": "v1"}
SYMBOLS = ("circle", "diamond", "square", "triangle-up")
MODEL_BLOCKS = (128, 64)  # (Br, Bc) at which the memory model counts a tiled kernel's bytes


def speedups(recorded: dict, *, chain=CHAIN, pass_: str = "fwd", dtype: str = "float16") -> dict:
    """``{(slower, faster, D, causal): [(N, time_slower / time_faster), ...]}`` for each
    consecutive pair of ``chain`` that the file recorded at the same shapes."""
    rows = {(r["impl"], r["D"], r["causal"], r["N"]): r for r in timing_rows(recorded, dtype=dtype)
            if r.get(f"{pass_}_status", "ok") == "ok" and f"{pass_}_ms" in r}
    out: dict = {}
    for a, b in zip(chain, chain[1:]):
        for (impl, D, causal, N), r in sorted(rows.items(), key=lambda kv: kv[0][1:]):
            other = rows.get((b, D, causal, N))
            if impl == a and other is not None:
                out.setdefault((a, b, D, causal), []).append((N, r[f"{pass_}_ms"] / other[f"{pass_}_ms"]))
    return out


def speedup_figure(recorded: dict, *, chain=CHAIN, pass_: str = "fwd", dtype: str = "float16") -> go.Figure:
    """Speed-up of each chapter's kernel over the previous one vs N; buttons for the mask."""
    sp = speedups(recorded, chain=chain, pass_=pass_, dtype=dtype)
    pairs = list(dict.fromkeys((a, b) for a, b, _, _ in sp))
    Ds = sorted({D for _, _, D, _ in sp})
    fig = go.Figure()
    for (a, b, D, causal), pts in sp.items():
        color = SEQUENCE[pairs.index((a, b)) % len(SEQUENCE)]
        name = f"{b.removesuffix('_triton')} over {a.removesuffix('_triton')}, D{D}"
        fig.add_trace(go.Scatter(x=[n for n, _ in pts], y=[s for _, s in pts], mode="lines+markers",
                                 name=name, meta=int(causal), visible=not causal,
                                 line=dict(color=color, dash="solid" if D == Ds[-1] else "dash"),
                                 hovertemplate="N=%{x}: %{y:.2f}×<extra>" + name + "</extra>"))
    fig.add_hline(y=1, line=dict(color=OKABE_ITO["grey"], dash="dot"))
    buttons = [dict(label=text, method="update", args=[{"visible": [t.meta == c for t in fig.data]}])
               for c, text in ((0, "no mask"), (1, "causal"))]
    fig.update_xaxes(type="log", title_text="sequence length N (B·N = 16k)",
                     tickvals=sorted({n for pts in sp.values() for n, _ in pts}))
    fig.update_yaxes(type="log", title_text="speed-up (time of the older kernel / time of the newer)", dtick=1)
    fig.update_layout(title=dict(text=f"Each chapter's kernel over the previous one, {pass_}, "
                                      f"{SHORT.get(dtype, dtype)}<br><sup>{label(recorded['info'])}</sup>"),
                      updatemenus=[dict(buttons=buttons, direction="right", x=1, xanchor="right", y=1.16,
                                        yanchor="top", showactive=True)],
                      height=440, font=FONT, plot_bgcolor="white", legend=dict(orientation="h", y=-0.25),
                      margin=dict(t=90, l=60, r=20, b=100))
    return fig


def preset_for(gpu_name: str | None) -> str | None:
    """The hardware preset whose name appears in a GPU's name ("NVIDIA H200" -> "H200")."""
    for key in GPUS:
        if gpu_name and key.lower() in gpu_name.lower():
            return key
    return None


def model_bytes(impl: str, *, B: int, H: int, N: int, D: int, causal: bool, itemsize: int = 2) -> int:
    """HBM bytes of one forward as the memory model counts the provider's algorithm."""
    alg = ALGORITHM.get(impl, "v2")
    f = formula(alg, N=N, d=D, block_r=MODEL_BLOCKS[0], block_c=MODEL_BLOCKS[1], causal=causal,
                batch=B, heads=H)
    return sum(f.exact.bytes(itemsize))


def measured_points(recorded: dict, *, N: int, D: int, causal: bool = False, dtype: str = "float16"):
    """``(impl, intensity FLOP/B, measured TFLOP/s)`` of every forward recorded at one shape."""
    out = []
    for r in timing_rows(recorded, dtype=dtype):
        if (r["N"], r["D"], r["causal"]) != (N, D, causal) or r.get("fwd_status", "ok") != "ok" \
                or "fwd_tflops" not in r:
            continue
        flops = attention_flops("fwd", B=r["B"], H=r["H"], N=N, D=D, causal=causal)
        out.append((r["impl"], flops / model_bytes(r["impl"], B=r["B"], H=r["H"], N=N, D=D, causal=causal),
                    r["fwd_tflops"]))
    return out


def measured_roofline_figure(recorded: dict, *, N: int = 4096, D: int = 128, causal: bool = False,
                             dtype: str = "float16", device: str | None = None) -> go.Figure:
    """The preset's datasheet roofline, the ceilings measured in the same run (when recorded),
    and each kernel at its modelled intensity and measured forward TFLOP/s."""
    recorded = normalize(recorded)
    g = get_gpu(device or preset_for(recorded["info"].get("gpu")) or "H100")
    pts = measured_points(recorded, N=N, D=D, causal=causal, dtype=dtype)
    if not pts:
        raise ValueError(f"no forward recorded at N={N}, D={D}, causal={causal}, dtype={dtype}")
    xs = [x for _, x, _ in pts] + [g.ridge_point()]
    x = np.logspace(np.log10(min(xs) / 3), np.log10(max(xs) * 3), 200)
    fig = go.Figure(go.Scatter(x=x, y=np.minimum(g.fp16_flops, x * g.hbm_bandwidth) / 1e12, mode="lines",
                               name=f"{g.name} datasheet", line=dict(color="black", width=2),
                               hovertemplate="%{x:.3g} FLOP/B → %{y:.0f} TFLOP/s<extra></extra>"))
    ceil = recorded.get("ceilings", {})
    mm = for_dtype(ceil, dtype)
    if mm and ceil.get("copy_tbs"):
        y = np.minimum(mm * 1e12, x * ceil["copy_tbs"] * 1e12) / 1e12
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name="measured in the same run",
                                 line=dict(color=OKABE_ITO["grey"], width=2, dash="dash"),
                                 hovertemplate="%{x:.3g} FLOP/B → %{y:.0f} TFLOP/s<extra>measured</extra>"))
    for k, (impl, ai, tf) in enumerate(pts):
        # Past the palette's length the colours come round again, with another marker shape.
        color, symbol = SEQUENCE[k % len(SEQUENCE)], SYMBOLS[k // len(SEQUENCE) % len(SYMBOLS)]
        fig.add_trace(go.Scatter(x=[ai], y=[tf], mode="markers", name=NAMES.get(impl, impl),
                                 marker=dict(size=12, color=color, symbol=symbol,
                                             line=dict(color="white", width=1)),
                                 hovertemplate=f"{impl}<br>%{{x:.3g}} FLOP/B, %{{y:.0f}} TFLOP/s<extra></extra>"))
    fig.update_xaxes(type="log", title_text="arithmetic intensity (FLOPs per HBM byte, memory model)", dtick=1)
    fig.update_yaxes(type="log", title_text=f"{SHORT.get(dtype, dtype)} TFLOP/s", dtick=1)
    mask = "causal" if causal else "no mask"
    fig.update_layout(title=dict(text=f"Forward, N={N}, D={D}, {mask}, on the {g.name} roofline"
                                      f"<br><sup>{label(recorded['info'])}</sup>"),
                      height=460, font=FONT, plot_bgcolor="white", legend=dict(orientation="h", y=-0.25),
                      margin=dict(t=80, l=60, r=20, b=100))
    return fig


def ablations_figure(recorded: dict, *, D: int = 128) -> go.Figure:
    """The harness's four recorded ablations at head dim ``D``, one panel each, each answering
    one question: how much faster v2 is than v1 (per N, forward and backward); how close each
    kernel comes to halving its time under a causal mask (2 = every masked tile skipped); what
    pipelining buys (forward TFLOP/s against num_stages, N = 16k); which tile shape wins
    (forward TFLOP/s per BLOCK_M × BLOCK_N × warps, N = 16k, no mask)."""
    ab = normalize(recorded).get("ablations", {})
    if not ab:
        raise ValueError("this recorded run has no ablations")
    titles = ("v2 over v1 (time ratio)", "causal skipping: full time / causal time",
              "pipelining: forward TFLOP/s, N = 16k", "tile shape: forward TFLOP/s, N = 16k")
    fig = make_subplots(rows=2, cols=2, subplot_titles=titles, vertical_spacing=0.2,
                        horizontal_spacing=0.1)
    ok = lambda r, p: r.get(f"{p}_status", "ok") == "ok" and f"{p}_ms" in r  # noqa: E731

    rows = [r for r in ab.get("v1-vs-v2", {}).get("rows", []) if r["D"] == D and not r["causal"]]
    for k, p in enumerate(("fwd", "bwd")):
        t = {(r["impl"], r["N"]): r[f"{p}_ms"] for r in rows if ok(r, p)}
        Ns = sorted(N for impl, N in t if impl == "v2_triton" and ("v1_triton", N) in t)
        fig.add_trace(go.Scatter(x=Ns, y=[t[("v1_triton", N)] / t[("v2_triton", N)] for N in Ns],
                                 mode="lines+markers", name=f"v2 over v1, {PASS_NAMES[p]}",
                                 line=dict(color=SEQUENCE[k])), row=1, col=1)

    for k, (impl, by_n) in enumerate(causal_skip(recorded, D=D).items()):
        pts = sorted(by_n.items())
        fig.add_trace(go.Scatter(x=[n for n, _ in pts], y=[v for _, v in pts], mode="lines+markers",
                                 name=f"{NAMES.get(impl, impl)}, causal", line=dict(color=SEQUENCE[2 + k])),
                      row=1, col=2)
    fig.add_hline(y=2, line=dict(color=OKABE_ITO["grey"], dash="dot"), row=1, col=2,
                  annotation_text="every masked tile skipped", annotation_position="top left")

    for k, causal in enumerate((False, True)):
        pts = sorted(stage_ladder(recorded, D=D, N=16384, causal=causal).items())
        fig.add_trace(go.Scatter(x=[s for s, _ in pts], y=[v for _, v in pts], mode="lines+markers",
                                 name="num_stages, " + ("causal" if causal else "no mask"),
                                 line=dict(color=(OKABE_ITO["sky"], OKABE_ITO["black"])[k],
                                           dash=(None, "dash")[k])), row=2, col=1)

    rows = [r for r in ab.get("block-sizes", {}).get("rows", [])
            if r["D"] == D and r["N"] == 16384 and not r["causal"] and ok(r, "fwd")]
    rows.sort(key=lambda r: (r["block_m"], r["block_n"], r["num_warps"]))
    fig.add_trace(go.Bar(x=[f"{r['block_m']}×{r['block_n']}, {r['num_warps']}w" for r in rows],
                         y=[r["fwd_tflops"] for r in rows], marker_color=OKABE_ITO["blue"],
                         name="tile shape", showlegend=False), row=2, col=2)

    Ns = sorted({x for t in fig.data if t.xaxis in ("x", "x2") for x in t.x})
    ticks = dict(type="log", title_text="N", tickvals=Ns,
                 ticktext=[f"{n // 1024}k" if n >= 1024 else str(n) for n in Ns])
    fig.update_xaxes(**ticks, row=1, col=1)
    fig.update_xaxes(**ticks, row=1, col=2)
    fig.update_yaxes(type="log", title_text="times faster", tickvals=[1, 2, 5, 10, 20, 50, 100],
                     row=1, col=1)
    fig.update_xaxes(title_text="num_stages (K/V tiles in flight)", dtick=1, row=2, col=1)
    fig.update_xaxes(tickangle=-40, row=2, col=2)
    fig.update_yaxes(rangemode="tozero", row=1, col=2)
    fig.update_layout(title=dict(text=f"Recorded ablations, d = {D}, fp16<br><sup>{label(recorded['info'])}</sup>"),
                      height=720, font=FONT, plot_bgcolor="white", legend=dict(orientation="h", y=-0.18),
                      margin=dict(t=110, l=60, r=20, b=120))
    return fig
