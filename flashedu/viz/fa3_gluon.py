"""Chapter 6's Gluon FA3 kernel, measured: its schedules beside FA3's Table 2, and one program's
timeline beside the simulator's prediction for the same tiles.

* :func:`ablation_figure` - TFLOP/s of each schedule (one of FA3's ideas switched off at a time)
  at one case, with cuDNN and v2_triton as reference lines and the paper's rows as markers;
* :func:`timeline_figure` - per consumer warpgroup, what it was doing between the clock stamps
  of the stamps build (measured), over the model's GEMM and softmax bars; buttons pick the
  schedule.
"""
from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from flashedu.fa3sim.paper import PAPER_ABLATION
from flashedu.provenance import label
from flashedu.recorded.fa3_gluon import SIM_OF, ablation, phases, simulate_schedule, speed_table
from flashedu.viz.gantt import KIND_COLORS
from flashedu.viz.palette import FONT, LEGEND_BELOW, OKABE_ITO

# The paper's Table 2 rows (H100) that our schedules switch the same idea off for.
PAPER_OF = {"FA3 (all three ideas)": "fa3", "no intra-warpgroup pipelining": "pingpong",
            "no warp specialisation": "no_ws"}
PHASE_STYLE = {  # phase: (legend, colour)
    "turn": ("issuing GEMM0(j+1), GEMM1(j)", "#8C8C8C"),
    "wait_s": ("waiting for S(j+1)", OKABE_ITO["sky"]),
    "softmax": ("softmax(j+1)", OKABE_ITO["vermillion"]),
    "wait_o": ("waiting for GEMM1(j)", OKABE_ITO["green"]),
    "rest": ("rescaling O, waiting for K, V", "#DDDDDD"),
}
MODEL_NAMES = {"gemm0": "GEMM0 (S = Q Kⱼᵀ)", "gemm1": "GEMM1 (O += P Vⱼ)", "softmax": "softmax"}
SHORT = {"FA3 (all three ideas)": "FA3", "no ping-pong": "no ping-pong",
         "no intra-warpgroup pipelining": "no intra-WG", "no warp specialisation": "no WS"}


def ablation_figure(run: dict, *, D: int = 128, N: int = 16384, causal: bool = False) -> go.Figure:
    """One bar per schedule (TFLOP/s), the references as vertical lines, the paper's rows as
    diamonds (an H100, N = 8448, batch 4: the same tensor cores, another shape)."""
    abl = ablation(run, D=D, N=N, causal=causal)
    if not abl:
        raise ValueError(f"run has no Gluon rows at D={D}, N={N}, causal={causal}")
    row = next(r for r in speed_table(run) if (r["D"], r["N"], r["causal"]) == (D, N, causal))
    names = [n for n in SIM_OF if n in abl]
    fig = go.Figure(go.Bar(y=[SHORT[n] for n in names], x=[abl[n] for n in names], orientation="h",
                           marker_color=OKABE_ITO["blue"], name="fa3_gluon (measured)",
                           text=[f"{abl[n]:.0f}" for n in names], textposition="inside",
                           insidetextanchor="start",
                           hovertemplate="%{y}: %{x:.0f} TFLOP/s<extra></extra>"))
    paper = [(SHORT[n], PAPER_ABLATION[PAPER_OF[n]][1]) for n in names if n in PAPER_OF]
    fig.add_trace(go.Scatter(y=[p[0] for p in paper], x=[p[1] for p in paper], mode="markers",
                             name="FA3 paper, Table 2 (H100, N = 8448)", marker=dict(
                                 symbol="diamond", size=12, color=OKABE_ITO["vermillion"]),
                             hovertemplate="paper: %{x} TFLOP/s<extra></extra>"))
    for impl, dash, text in (("sdpa_cudnn", "solid", "cuDNN"), ("v2_triton", "dot", "v2_triton")):
        if impl in row["tflops"]:
            fig.add_vline(x=row["tflops"][impl], line=dict(color="black", dash=dash, width=1),
                          annotation_text=text, annotation_position="top")
    fig.update_yaxes(categoryorder="array", categoryarray=[SHORT[n] for n in names][::-1])
    fig.update_xaxes(title_text="TFLOP/s (fp16)", rangemode="tozero")
    fig.update_layout(
        title=dict(text=f"Each idea switched off, d = {D}, N = {N}{', causal' if causal else ''}"
                        f"<br><sup>{label(run['provenance'])}</sup>"),
        height=340, font=FONT, plot_bgcolor="white", margin=dict(t=90, l=110, r=20, b=40),
        legend=LEGEND_BELOW | dict(y=-0.25, entrywidth=0.48))
    return fig


def _model_bars(schedule: str, iters: int, ns_per_cycle: float) -> dict[str, dict]:
    r = simulate_schedule(schedule, n_blocks=iters)
    bars = {}
    for kind in ("gemm0", "softmax", "gemm1"):
        tasks = [t for t in r.tasks if t.kind == kind and t.work_end > t.start]
        lane = "GEMMs" if kind != "softmax" else "softmax"
        bars[kind] = dict(base=[t.start * ns_per_cycle / 1000 for t in tasks],
                          x=[(t.work_end - t.start) * ns_per_cycle / 1000 for t in tasks],
                          y=[f"{t.lane} {lane}" for t in tasks])
    return bars


def timeline_figure(run: dict, *, iters: int = 6) -> go.Figure:
    """Measured (top): per consumer warpgroup (or the one 8-warp block without warp
    specialisation), its phases between clock stamps, ``iters`` loop iterations
    of one program. Model (bottom): the simulator's GEMM and softmax bars for as many tiles, its
    cycles at the program's measured clock. Buttons switch the schedule."""
    entries = [e for e in run["rows"] if "warpgroups" in e and e["schedule"] in SIM_OF]
    if not entries:
        raise ValueError("run holds no recorded timeline")
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.14, row_heights=[0.4, 0.6],
                        subplot_titles=("measured: one program's consumer warpgroups",
                                        "model (fa3sim): the same tiles, at the measured clock"))
    def lanes_of(entry):  # without warp specialisation one 8-warp block runs both halves
        n = len(entry["warpgroups"])
        return [f"WG{w + 1}" for w in range(n)] if n > 1 else ["block (8 warps)"]

    owners = []
    for s, entry in enumerate(entries):
        ph = phases(entry)
        t0 = min(rows[0]["turn"][0] for rows in ph if rows)
        ns_per_cycle = sum(w["ns_per_cycle"] for w in entry["warpgroups"]) / len(entry["warpgroups"])
        for p, (legend, colour) in PHASE_STYLE.items():
            base, width, lanes = [], [], []
            for w, rows in enumerate(ph):
                for r in rows[:iters]:
                    if p in r:
                        base.append((r[p][0] - t0) / 1000)
                        width.append((r[p][1] - r[p][0]) / 1000)
                        lanes.append(lanes_of(entry)[w])
            fig.add_trace(go.Bar(base=base, x=width, y=lanes, orientation="h", name=legend,
                                 marker_color=colour, width=0.7, visible=s == 0, legendgroup=p,
                                 hovertemplate="%{y}: from %{base:.2f} µs for %{x:.3f} µs"
                                               f"<extra>{legend}</extra>"), row=1, col=1)
            owners.append(entry["schedule"])
        for kind, bars in _model_bars(entry["schedule"], iters, ns_per_cycle).items():
            fig.add_trace(go.Bar(orientation="h", name=f"model: {MODEL_NAMES[kind]}",
                                 marker_color=KIND_COLORS[kind], width=0.7, visible=s == 0,
                                 hovertemplate="%{y}: from %{base:.2f} µs for %{x:.3f} µs<extra></extra>",
                                 **bars), row=2, col=1)
            owners.append(entry["schedule"])
    buttons = [dict(label=SHORT[e["schedule"]], method="update",
                    args=[{"visible": [o == e["schedule"] for o in owners]},
                          {"yaxis.categoryarray": lanes_of(e)[::-1]}]) for e in entries]
    fig.update_layout(
        updatemenus=[dict(type="buttons", direction="right", buttons=buttons, x=0, y=1.09,
                          xanchor="left", yanchor="bottom", showactive=True, pad=dict(t=0, r=4))],
        title=dict(text=f"One program, d = 128, N = 4096, under each schedule"
                        f"<br><sup>{label(run['provenance'])}</sup>", y=0.97, yanchor="top"),
        barmode="overlay", height=600, font=FONT, plot_bgcolor="white",
        margin=dict(t=140, l=100, r=20, b=40),
        legend=LEGEND_BELOW | dict(y=-0.12, entrywidth=0.45))
    fig.update_yaxes(categoryorder="array", categoryarray=lanes_of(entries[0])[::-1], row=1, col=1)
    fig.update_yaxes(categoryorder="array",
                     categoryarray=["WG2 softmax", "WG2 GEMMs", "WG1 softmax", "WG1 GEMMs"], row=2, col=1)
    fig.update_xaxes(title_text="time (µs)", row=2, col=1)
    return fig


__all__ = ["PHASE_STYLE", "ablation_figure", "timeline_figure"]
