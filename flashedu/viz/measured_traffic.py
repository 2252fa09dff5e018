"""The memory model's HBM bytes beside what Nsight Compute measured on a GPU for the same kernel
launch (``flashedu/bench/ncu.py`` → ``flashedu/recorded/data/ncu``)."""
from __future__ import annotations

import plotly.graph_objects as go

from flashedu.provenance import label
from flashedu.viz.palette import FONT, OKABE_ITO


def case_label(r: dict) -> str:
    return f"{r['kernel'].removesuffix('_triton')} N={r['N']}{' causal' if r['causal'] else ''}"


def model_vs_measured_figure(recorded: dict) -> go.Figure:
    rows = [r for r in recorded["rows"] if "read_bytes" in r]
    x = [case_label(r) for r in rows]
    mib = 2 ** 20
    # Zero measured writes (outputs still in L2 when the kernel ends) cannot sit on a log axis:
    # they are drawn at the axis floor and labelled.
    floor = 0.01
    series = (("model reads", "model_read_bytes", OKABE_ITO["sky"], None),
              ("measured reads", "read_bytes", OKABE_ITO["blue"], None),
              ("model writes", "model_write_bytes", OKABE_ITO["orange"], None),
              ("measured writes", "write_bytes", OKABE_ITO["vermillion"], None))
    fig = go.Figure()
    for name, key, color, _ in series:
        vals = [max(r[key] / mib, floor) for r in rows]
        text = ["0" if r[key] == 0 else "" for r in rows]
        fig.add_trace(go.Bar(x=x, y=vals, name=name, marker_color=color, text=text, textposition="outside",
                             hovertemplate="%{x}: %{y:.4g} MiB<extra>" + name + "</extra>"))
    s = recorded["setting"].split(";")[0]
    fig.update_yaxes(type="log", title_text="bytes (MiB)")
    fig.update_xaxes(tickangle=-30)
    fig.update_layout(barmode="group", height=470, font=FONT, plot_bgcolor="white",
                      title=dict(text=f"Memory model vs Nsight Compute (DRAM bytes), {s}"
                                      f"<br><sup>measured on {label(recorded['provenance'])}</sup>"),
                      legend=dict(orientation="h", y=-0.35), margin=dict(t=80, l=60, r=20, b=130))
    return fig
