"""Recorded kernel timings (``flashedu/recorded/data/bench``) as TFLOP/s against N, one line per kernel,
with buttons for the pass, head dim and mask: all cases precomputed for the static page.

Reads both the harness's files (``python -m flashedu.bench``) and the older chapter-4 tuning file,
through :mod:`flashedu.recorded.bench`."""
from __future__ import annotations

import plotly.graph_objects as go

from flashedu.bench.ceilings import for_dtype
from flashedu.bench.schema import normalize
from flashedu.provenance import label
from flashedu.recorded.bench import timing_rows
from flashedu.viz.palette import FONT, OKABE_ITO, SEQUENCE

NAMES = {"v2_triton": "flashedu v2 (Triton)", "v1_triton": "flashedu v1 (Triton)",
         "sdpa_flash": "SDPA flash (FlashAttention-2)", "sdpa_cudnn": "SDPA cuDNN",
         "sdpa_efficient": "SDPA efficient (xFormers)", "standard_triton": "flashedu standard (Triton)",
         "sdpa_math": "SDPA math", "standard_torch": "naive torch (3 ops)",
         "v2_tma_triton": "flashedu v2 + TMA (Triton, ch. 6)", "split_kv_triton": "flashedu split-KV (Triton, ch. 7)",
         "fp8_triton": "flashedu FP8 (Triton, ch. 6)"}
CHAPTER4 = ("v2_triton", "v1_triton", "sdpa_flash", "sdpa_cudnn", "sdpa_efficient")
PASSES = {"fwd": "forward", "bwd": "backward", "fwdbwd": "forward + backward"}
SHORT = {"float16": "fp16", "bfloat16": "bf16", "fp8": "fp8", "float32": "fp32"}


def _points(rows, name, p, D, causal):
    return sorted((r["N"], r[f"{p}_tflops"]) for r in rows if r["impl"] == name and r["D"] == D
                  and r["causal"] == causal and r.get(f"{p}_status", "ok") == "ok" and f"{p}_tflops" in r)


def tflops_figure(recorded: dict, *, impls=CHAPTER4, dtype: str = "float16", live: dict | None = None,
                  live_label: str = "", start: tuple = ("fwd", 128, False)) -> go.Figure:
    """TFLOP/s vs N; ``impls`` None shows every provider recorded. ``live``, a result of
    :func:`flashedu.bench.run` on the reader's GPU, is drawn beside the recorded lines as crosses.
    The menu opens on ``start`` (pass, head dim, causal) where the file has it."""
    rows = timing_rows(recorded, dtype=dtype)
    live_rows = timing_rows(live, dtype=dtype) if live else []
    seen = list(dict.fromkeys(r["impl"] for r in rows + live_rows))
    order = [n for n in NAMES if n in seen] + [n for n in seen if n not in NAMES]
    impls = [n for n in order if impls is None or n in impls]
    colors = {n: SEQUENCE[i % len(SEQUENCE)] for i, n in enumerate(impls)}
    # Past eight lines the colours repeat: the repeats are dashed so no two lines look alike.
    dashes = {n: None if i < len(SEQUENCE) else "dash" for i, n in enumerate(impls)}
    Ds = sorted({r["D"] for r in rows + live_rows})
    cases = [(p, D, c) for p in PASSES for D in Ds for c in (False, True)]
    ceiling = for_dtype(normalize(recorded).get("ceilings", {}), dtype)
    Ns = sorted({r["N"] for r in rows + live_rows})
    first = cases.index(start) if start in cases else 0
    fig = go.Figure()
    for k, (p, D, causal) in enumerate(cases):
        if ceiling:
            fig.add_trace(go.Scatter(x=[Ns[0], Ns[-1]], y=[ceiling, ceiling], mode="lines", meta=k,
                                     visible=k == first, name="matmul ceiling, same run",
                                     line=dict(color=OKABE_ITO["black"], dash="dot"),
                                     hovertemplate="matmul ceiling %{y:.0f} TFLOP/s<extra></extra>"))
        for source, dash, symbol in ((rows, None, "circle"), (live_rows, "dash", "x")):
            for name in impls:
                pts = _points(source, name, p, D, causal)
                if not pts:
                    continue
                suffix = f" — {live_label}" if source is live_rows else ""
                fig.add_trace(go.Scatter(
                    x=[n for n, _ in pts], y=[t for _, t in pts], name=NAMES.get(name, name) + suffix,
                    mode="lines+markers", line=dict(color=colors[name], dash=dash or dashes[name]),
                    marker=dict(symbol=symbol, size=9 if symbol == "x" else 6), visible=k == first, meta=k,
                    hovertemplate="N=%{x}: %{y:.0f} TFLOP/s<extra>" + name + suffix + "</extra>"))
    buttons = [dict(label=f"{PASSES[p]}, d = {D}{', causal' if c else ''}", method="update",
                    args=[{"visible": [t.meta == k for t in fig.data]}])
               for k, (p, D, c) in enumerate(cases)]
    fig.update_xaxes(type="log", title_text="sequence length N (B·N = 16k, hidden 2048)", tickvals=Ns,
                     ticktext=[str(n) for n in Ns])
    fig.update_yaxes(title_text=f"TFLOP/s ({SHORT.get(dtype, dtype)})", rangemode="tozero")
    fig.update_layout(title=dict(text=f"Measured speed<br><sup>{label(recorded['info'])}</sup>"),
                      # The menu sits between the subtitle and the plot, covering neither.
                      updatemenus=[dict(buttons=buttons, direction="down", x=0, xanchor="left", y=1.02,
                                        yanchor="bottom", showactive=True, active=first)],
                      height=500, font=FONT, plot_bgcolor="white", legend=dict(orientation="h", y=-0.25),
                      margin=dict(t=125, l=60, r=20, b=110))
    return fig
