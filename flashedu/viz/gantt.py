"""Chapter 6's simulator drawn as Gantt charts: who does what on one Hopper SM, over time.

:func:`gantt_figure` animates the schedules of :mod:`flashedu.fa3sim` on one time axis (Play
runs a time cursor; buttons pick the schedule); :func:`schedule_bars` compares their predicted
throughput with the FlashAttention-3 paper's ablation. Both are plain plotly: they play in the
static book with no kernel.
"""
from __future__ import annotations

import plotly.graph_objects as go

from flashedu.fa3sim.paper import PAPER_ABLATION
from flashedu.fa3sim import KINDS, SimResult, compare
from flashedu.viz.anim import add_player
from flashedu.viz.palette import FONT, OKABE_ITO

KIND_COLORS = {"load": OKABE_ITO["sky"], "gemm0": OKABE_ITO["blue"], "softmax": OKABE_ITO["vermillion"],
               "gemm1": OKABE_ITO["green"]}
KIND_NAMES = {"load": "load Kⱼ, Vⱼ (TMA)", "gemm0": "GEMM0: S = Q Kⱼᵀ", "softmax": "softmax (exp)",
              "gemm1": "GEMM1: O += P Vⱼ"}
LANES = ["loads", "WG1 GEMM0", "WG1 softmax", "WG1 GEMM1", "WG2 GEMM0", "WG2 softmax", "WG2 GEMM1"]


def _lane(task) -> str:
    return "loads" if task.kind == "load" else f"{task.lane} {task.kind.replace('gemm', 'GEMM')}"


def _bars(result: SimResult, kind: str, t: float) -> dict:
    """Bars of one kind cut at time ``t``: what has happened by then."""
    rows = [(tk, min(tk.work_end, t) - tk.start) for tk in result.tasks
            if tk.kind == kind and tk.start < t and tk.work_end > tk.start]
    return dict(base=[tk.start for tk, _ in rows], x=[w for _, w in rows], y=[_lane(tk) for tk, _ in rows],
                text=[(tk.name.split()[1] if kind == "load" else "") + str(tk.iteration) for tk, _ in rows])


def _trace(result: SimResult, kind: str, t: float, **kw) -> go.Bar:
    # Frames carry whole traces (colour, orientation and all): plotly.js merges partial frame
    # traces badly into bar charts whose visibility a button has changed.
    return go.Bar(orientation="h", name=KIND_NAMES[kind], marker_color=KIND_COLORS[kind], width=0.8,
                  textposition="inside", insidetextanchor="middle", legendgroup=kind,
                  hovertemplate="%{y}, tile %{text}: from %{base:.0f} for %{x:.0f} cycles<extra></extra>",
                  **_bars(result, kind, t), **kw)


def _title(r: SimResult) -> str:
    return (f"{r.label}<br><sup>tensor cores busy {100 * r.tensor_utilization:.0f}% → "
            f"{r.tflops:.0f} TFLOP/s predicted on an {r.rates.gpu}</sup>")


def gantt_figure(results: dict[str, SimResult] | None = None, *, frames: int = 24, **sim_kwargs) -> go.Figure:
    """Lanes (loads; GEMM0 / softmax / GEMM1 of each consumer warpgroup) over clock cycles, one
    set of bars per schedule; Play advances a time cursor, buttons switch schedules. Without
    ``results`` it simulates every schedule with ``sim_kwargs`` (default: D = 128, 6 tiles)."""
    if results is None:
        sim_kwargs.setdefault("n_blocks", 6)
        results = compare(**sim_kwargs)
    if not results:
        raise ValueError("results must hold at least one simulated schedule")
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 2:
        raise ValueError(f"frames must be an int >= 2, got {frames!r}")
    names = list(results)
    end = max(r.makespan for r in results.values())
    fig = go.Figure()
    for s, name in enumerate(names):
        for kind in KINDS:
            fig.add_trace(_trace(results[name], kind, end, visible=s == 0, meta=name))
    times = [end * k / (frames - 1) for k in range(frames)]
    fig.frames = [go.Frame(name=f"t{k}", data=[_trace(results[name], kind, t)
                                                for name in names for kind in KINDS])
                  for k, t in enumerate(times)]
    add_player(fig, [f"{t / 1000:.1f}k" for t in times], prefix="cycle ", duration=250, y=-0.17)
    # The page opens on the whole schedule, so the slider starts at its end and Play always
    # replays the clock from 0 (from the last frame, "from the current frame" would play nothing).
    player = fig.layout.updatemenus[0].to_plotly_json()
    player["buttons"][0]["args"][1]["fromcurrent"] = False
    slider = fig.layout.sliders[0].to_plotly_json()
    slider["active"] = frames - 1
    fig.update_layout(updatemenus=[player], sliders=[slider])
    buttons = [dict(label=results[n].label.split(" ", 1)[0] if n != "fa3" else "FA3", method="update",
                    args=[{"visible": [tr.meta == n for tr in fig.data]}, {"title.text": _title(results[n])}])
               for n in names]
    fig.update_layout(updatemenus=list(fig.layout.updatemenus) + [
        dict(type="buttons", direction="right", buttons=buttons, x=0, y=1.13, xanchor="left", yanchor="bottom",
             showactive=True, pad=dict(t=0, r=4))])
    fig.update_xaxes(title_text="time (clock cycles of one SM)", range=[0, end * 1.01])
    fig.update_yaxes(categoryorder="array", categoryarray=LANES[::-1], title_text="")
    fig.update_layout(title=dict(text=_title(results[names[0]]), y=0.98), barmode="overlay", height=580,
                      font=FONT, plot_bgcolor="white", margin=dict(t=120, l=90, r=20, b=180),
                      legend=dict(orientation="h", y=-0.42, traceorder="normal"))
    return fig


def schedule_bars(results: dict[str, SimResult], *, paper: dict | None = None) -> go.Figure:
    """Predicted TFLOP/s per schedule, with the paper's measured ablation beside the rows it matches."""
    paper = PAPER_ABLATION if paper is None else paper
    names = list(results)
    labels = [results[n].label for n in names]
    fig = go.Figure(go.Bar(x=[results[n].tflops for n in names], y=labels, orientation="h",
                           name="this model", marker_color=OKABE_ITO["blue"],
                           hovertemplate="%{y}: %{x:.0f} TFLOP/s<extra>model</extra>"))
    measured = [(results[n].label, paper[n][1], paper[n][0]) for n in names if n in paper]
    if measured:
        fig.add_trace(go.Scatter(x=[m[1] for m in measured], y=[m[0] for m in measured], mode="markers",
                                 name="FA3 paper, Table 2 (measured)", text=[m[2] for m in measured],
                                 marker=dict(color=OKABE_ITO["vermillion"], size=12, symbol="diamond"),
                                 hovertemplate="paper, %{text}: %{x} TFLOP/s<extra></extra>"))
    r0 = results[names[0]]
    fig.update_xaxes(title_text=f"TFLOP/s on an {r0.rates.gpu} ({r0.dtype})", rangemode="tozero")
    fig.update_yaxes(categoryorder="array", categoryarray=labels[::-1])
    fig.update_layout(title=dict(text="Schedules, modelled and measured<br><sup>model: one SM's main loop, "
                                      "scaled to the whole GPU</sup>"),
                      height=360, font=FONT, plot_bgcolor="white", margin=dict(t=80, l=220, r=20, b=60),
                      legend=dict(orientation="h", y=-0.3))
    return fig
