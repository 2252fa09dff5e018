"""Tile-schedule animations, driven only by a :class:`flashedu.iomodel.Report`'s event trace.

Each frame shows the N×N score matrix as Tr × Tc tiles (to do / done / skipped / working now,
and, for standard attention, an S or P tile being written to or read back from HBM),
strips for the Q, O, K and V tiles (in HBM, resident in SRAM, being written back) and the HBM
bytes read and written so far. Figures are plain plotly frames with Play/Pause and a slider, so
they work in static HTML without a kernel.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from flashedu.iomodel.trace import COMPUTE, LOAD, SKIP, STORE
from flashedu.viz.anim import player_controls
from flashedu.viz.palette import (FONT, LEGEND_BELOW, READ_COLOR, READ_NOW, STRIP_COLORS, STRIP_STATES, TILE_COLORS,
                                  TILE_STATES, WRITE_COLOR, WRITTEN_EARLIER, WRITTEN_NOW,
                                  discrete_colorscale)

MAX_TILES = 128 * 128  # beyond this the grid is unreadable and the HTML too large
MAX_EVENTS = 400_000
_ROW_TENSORS = ("Q", "O")  # strips indexed by the Q-tile index i
_SCORE_TENSORS = ("S", "P")  # N×N tensors in HBM: their tiles flash on the grid when moved
_COL_TENSORS = ("K", "V")  # strips indexed by the K/V-tile index j


@dataclass
class FrameState:
    """What one frame shows."""

    time: int
    phase: str
    grid: np.ndarray  # [Tr, Tc] tile-state codes (palette.TILE_STATES)
    q: np.ndarray  # [Tr] strip codes (palette.STRIP_STATES)
    o: np.ndarray  # [Tr]
    kv: np.ndarray  # [2, Tc]: K then V
    read_bytes: int
    write_bytes: int
    o_writes: np.ndarray | None = None  # [Tr] how many times each O_i has been stored so far


def _check(report) -> None:
    if report.Tr * report.Tc > MAX_TILES:
        raise ValueError(f"report has {report.Tr} × {report.Tc} tiles; animate at most {MAX_TILES} "
                         f"(use a smaller N or larger blocks)")
    if len(report.trace) > MAX_EVENTS:
        raise ValueError(f"report has {len(report.trace)} events; animate at most {MAX_EVENTS}")


def event_times(report, *, concurrent: bool = True) -> np.ndarray:
    """When each event happens. ``concurrent=False``: its position in the trace. ``concurrent=True``:
    its position within its own program, so programs (one per SM) run side by side; the
    passes (phases) still run one after another, as separate kernels do."""
    cols = report.trace.columns()
    if not concurrent:
        return cols["step"]
    times = np.zeros(len(cols["step"]), dtype=np.int64)
    offset = 0
    for phase in report.trace.phases():
        idx = np.flatnonzero(cols["phase"] == phase)
        seen: dict[int, int] = {}
        for e in idx:
            p = int(cols["program"][e])
            times[e] = offset + seen.get(p, 0)
            seen[p] = seen.get(p, 0) + 1
        offset = int(times[idx].max()) + 1
    return times


def frame_times(total: int, max_frames: int) -> np.ndarray:
    """At most ``max_frames`` evenly spread times in [0, total), always ending at total − 1."""
    if max_frames < 2:
        raise ValueError(f"max_frames must be at least 2, got {max_frames}")
    return np.unique(np.linspace(0, total - 1, min(max_frames, total)).round().astype(np.int64))


def schedule_states(report, times: np.ndarray, *, concurrent: bool = True) -> list[FrameState]:
    """The state of the schedule at each of ``times`` (events with time ≤ t have happened)."""
    _check(report)
    cols = report.trace.columns()
    t = event_times(report, concurrent=concurrent)
    order = np.argsort(t, kind="stable")
    Tr, Tc = report.Tr, report.Tc
    grid = np.zeros((Tr, Tc), dtype=np.int8)
    grid_phase = None
    latest: dict[tuple[int, str], int] = {}  # (program, tensor) -> tile index last loaded
    read = write = 0
    o_writes = np.zeros(Tr, dtype=np.int64)
    p, n = 0, len(order)
    states = []
    for ft in times:
        working, stored, active, moved = [], [], set(), []
        phase = cols["phase"][order[max(p - 1, 0)]] if n else ""
        while p < n and t[order[p]] <= ft:
            e = order[p]
            p += 1
            kind, i, j, prog = cols["kind"][e], int(cols["i"][e]), int(cols["j"][e]), int(cols["program"][e])
            if cols["phase"][e] != phase:  # a new kernel: nothing stays on chip across passes
                latest.clear()
            phase = cols["phase"][e]
            active.add(prog)
            if kind == COMPUTE or kind == SKIP:
                if phase != grid_phase:  # a new pass starts over the same tiles
                    grid[:] = 0
                    grid_phase = phase
                cells = (i, slice(None)) if j < 0 else (i, j)
                grid[cells] = 1 if kind == COMPUTE else 2
                if kind == COMPUTE:
                    working.append(cells)
            elif kind == LOAD:
                read += int(cols["bytes"][e])
                name = cols["tensor"][e]
                latest[(prog, name)] = j if name in _COL_TENSORS else i
                if name in _SCORE_TENSORS:
                    moved.append(((i, slice(None)) if j < 0 else (i, j), READ_NOW))
            elif kind == STORE:
                write += int(cols["bytes"][e])
                stored.append((cols["tensor"][e], i))
                if cols["tensor"][e] in _SCORE_TENSORS:
                    moved.append(((i, slice(None)) if j < 0 else (i, j), WRITTEN_NOW))
                if cols["tensor"][e] == "O" and i >= 0:
                    o_writes[i] += 1
        g = grid.copy()
        for cells in working:
            g[cells] = 3
        for cells, code in moved:  # a transfer of an S/P tile since the last frame shows on top
            g[cells] = code
        q = np.zeros(Tr, dtype=np.int8)
        o = np.zeros(Tr, dtype=np.int8)
        kv = np.zeros((2, Tc), dtype=np.int8)
        strips = {"Q": q, "O": o, "K": kv[0], "V": kv[1]}
        for (prog, name), idx in latest.items():
            if prog in active and name in strips and idx >= 0:
                strips[name][idx] = 1
        for name, idx in stored:
            if name == "O" and idx >= 0:
                o[idx] = 2
        states.append(FrameState(int(ft), str(phase), g, q, o, kv, read, write, o_writes.copy()))
    return states


def _unit(nbytes: int) -> tuple[float, str]:
    for scale, name in ((1024 ** 3, "GiB"), (1024 ** 2, "MiB"), (1024, "KiB")):
        if nbytes >= scale:
            return scale, name
    return 1, "B"


def _grid_trace(z, *, name: str, showscale=False, **kw) -> go.Heatmap:
    return go.Heatmap(z=z, zmin=-0.5, zmax=len(TILE_COLORS) - 0.5, colorscale=discrete_colorscale(TILE_COLORS),
                      showscale=showscale, xgap=1, ygap=1, name=name,
                      hovertemplate="Q tile i=%{y}, K/V tile j=%{x}<extra></extra>", **kw)


def _strip_trace(z, *, name: str, x=None, y=None) -> go.Heatmap:
    return go.Heatmap(z=z, x=x, y=y, zmin=-0.5, zmax=len(STRIP_COLORS) - 0.5,
                      colorscale=discrete_colorscale(STRIP_COLORS), showscale=False, xgap=1, ygap=1,
                      name=name, hovertemplate=f"{name} tile %{{y}}%{{x}}<extra></extra>")


def _tile_legend(report) -> list[tuple[str, str]]:
    """The grid's states this report can show: the S/P transfers only where S or P is in HBM."""
    pairs = list(zip(TILE_STATES, TILE_COLORS))
    moved = set(report.trace.columns()["tensor"])
    return pairs if moved & set(_SCORE_TENSORS) else pairs[:WRITTEN_NOW]


def _o_strip(st: FrameState, name: str) -> go.Heatmap:
    """O's tiles: being written now, written before (with how many times so far), in SRAM, or not
    yet in HBM. v1 writes each O_i once per K/V tile; v2 once, at the end of its row."""
    written = st.o_writes if st.o_writes is not None else np.zeros(len(st.o), dtype=np.int64)
    z = np.where(st.o == 2, 2, np.where(written > 0, WRITTEN_EARLIER, st.o))
    return go.Heatmap(z=z[:, None], x=["O"], zmin=-0.5, zmax=len(STRIP_COLORS) - 0.5,
                      colorscale=discrete_colorscale(STRIP_COLORS), showscale=False, xgap=1, ygap=1,
                      name=name, text=written[:, None], texttemplate="%{text}", textfont=dict(size=10),
                      hovertemplate=f"{name}: O tile %{{y}} written %{{text}} times<extra></extra>")


def _legend_traces(row: int, col: int, fig: go.Figure, report) -> None:
    """Legend entries for the heatmaps' discrete states (heatmaps have no legend of their own)."""
    for label, color in _tile_legend(report) + list(zip(STRIP_STATES[1:], STRIP_COLORS[1:])):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=label, showlegend=True,
                                 marker=dict(symbol="square", size=12, color=color,
                                             line=dict(color="#555555", width=1))), row=row, col=col)


def _title(report, s: FrameState, total: int, scale: float, unit: str) -> str:
    return (f"{report.algorithm}{' causal' if report.causal else ''}, N={report.N}, d={report.d}, "
            f"Br={report.block_r}, Bc={report.block_c} · {s.phase} · step {s.time + 1}/{total}")


def tile_schedule(report, *, max_frames: int = 60, concurrent: bool = True,
                  frame_ms: int = 250) -> go.Figure:
    """Animate ``report``'s tile schedule: which tiles each program works on, which are done or
    skipped, which Q/O/K/V tiles sit in SRAM, and the HBM bytes moved so far.

    ``concurrent=True`` runs the programs side by side (one per SM); ``max_frames`` sub-samples
    long traces. Returns a plotly Figure with frames, Play/Pause and a slider.
    """
    _check(report)
    total = int(event_times(report, concurrent=concurrent).max()) + 1
    times = frame_times(total, max_frames)
    states = schedule_states(report, times, concurrent=concurrent)
    scale, unit = _unit(max(report.read_bytes, report.write_bytes, 1))
    fig = make_subplots(rows=2, cols=4, column_widths=[0.05, 0.60, 0.05, 0.30], row_heights=[0.12, 0.88],
                        specs=[[None, {}, None, {"rowspan": 2}], [{}, {}, {}, None]],
                        horizontal_spacing=0.02, vertical_spacing=0.02)

    def frame_data(s: FrameState) -> list:
        return [
            _grid_trace(s.grid, name="S tiles"),
            _strip_trace(s.q[:, None], name="Q", x=["Q"]),
            _o_strip(s, "O"),
            _strip_trace(s.kv, name="K/V", y=["K", "V"]),
            go.Bar(x=["read", "written"], y=[s.read_bytes / scale, s.write_bytes / scale],
                   marker_color=[READ_COLOR, WRITE_COLOR], showlegend=False,
                   text=[f"{s.read_bytes / scale:.3g}", f"{s.write_bytes / scale:.3g}"], textposition="outside",
                   hovertemplate="%{x}: %{y:.4g} " + unit + "<extra></extra>"),
        ]

    for trace, (r, c) in zip(frame_data(states[0]), [(2, 2), (2, 1), (2, 3), (1, 2), (1, 4)]):
        fig.add_trace(trace, row=r, col=c)
    _legend_traces(2, 2, fig, report)
    names = [str(k) for k in range(len(states))]
    fig.frames = [go.Frame(name=nm, data=frame_data(s), traces=[0, 1, 2, 3, 4],
                           layout=dict(title_text=_title(report, s, total, scale, unit)))
                  for nm, s in zip(names, states)]
    menus, sliders = player_controls(names, [str(s.time + 1) for s in states], duration=frame_ms,
                                     prefix="time step ", y=-0.2, slider_x=0.32)
    top = max(report.read_bytes, report.write_bytes) / scale * 1.2 or 1
    fig.update_layout(title=dict(text=_title(report, states[0], total, scale, unit), font=dict(size=13)),
                      height=600, font=FONT, margin=dict(l=50, r=40, t=60, b=190),
                      plot_bgcolor="white", updatemenus=menus, sliders=sliders, legend=LEGEND_BELOW)
    fig.update_yaxes(autorange="reversed", dtick=1, row=2, col=1, title_text=f"Q tile i ({report.block_r} rows each)")
    fig.update_yaxes(autorange="reversed", matches="y3", row=2, col=2, showticklabels=False)
    fig.update_yaxes(autorange="reversed", matches="y3", row=2, col=3, showticklabels=False)
    fig.update_xaxes(dtick=1, title_text=f"K/V tile j ({report.block_c} keys each)", row=2, col=2)
    fig.update_xaxes(matches="x4", row=1, col=2, showticklabels=False)
    fig.update_yaxes(range=[0, top], title_text=f"HBM traffic so far ({unit})", row=1, col=4, side="right")
    return fig


def side_by_side(report_a, report_b, *, max_frames: int = 60, concurrent: bool = True,
                 frame_ms: int = 250) -> go.Figure:
    """Two tile schedules on one timeline (e.g. v1 and v2 at the same N): each tile grid with its
    O strip beside it (green while O_i is being written to HBM; the number is how many times it
    has been written so far), and the HBM bytes of both."""
    _check(report_a)
    _check(report_b)
    ends = [int(event_times(r, concurrent=concurrent).max()) + 1 for r in (report_a, report_b)]
    times = frame_times(max(ends), max_frames)
    sa = schedule_states(report_a, np.minimum(times, ends[0] - 1), concurrent=concurrent)
    sb = schedule_states(report_b, np.minimum(times, ends[1] - 1), concurrent=concurrent)
    scale, unit = _unit(max(report_a.read_bytes, report_a.write_bytes, report_b.read_bytes,
                            report_b.write_bytes, 1))
    labels = [f"{r.algorithm}{' causal' if r.causal else ''} (Br={r.block_r}, Bc={r.block_c})"
              for r in (report_a, report_b)]
    fig = make_subplots(rows=1, cols=5, column_widths=[0.31, 0.04, 0.31, 0.04, 0.30],
                        horizontal_spacing=0.025,
                        subplot_titles=[labels[0], "O", labels[1], "O", f"HBM traffic so far ({unit})"])

    def frame_data(a: FrameState, b: FrameState) -> list:
        ys = [a.read_bytes / scale, a.write_bytes / scale, b.read_bytes / scale, b.write_bytes / scale]
        return [
            _grid_trace(a.grid, name=report_a.algorithm),
            _o_strip(a, report_a.algorithm),
            _grid_trace(b.grid, name=report_b.algorithm),
            _o_strip(b, report_b.algorithm),
            go.Bar(x=[f"{report_a.algorithm} read", f"{report_a.algorithm} written",
                      f"{report_b.algorithm} read", f"{report_b.algorithm} written"], y=ys,
                   marker_color=[READ_COLOR, WRITE_COLOR] * 2, showlegend=False,
                   text=[f"{y:.3g}" for y in ys], textposition="outside",
                   hovertemplate="%{x}: %{y:.4g} " + unit + "<extra></extra>"),
        ]

    for trace, c in zip(frame_data(sa[0], sb[0]), (1, 2, 3, 4, 5)):
        fig.add_trace(trace, row=1, col=c)
    legend = dict(_tile_legend(report_a) + _tile_legend(report_b))
    for label, color in list(legend.items()) + list(zip(STRIP_STATES[2:], STRIP_COLORS[2:])):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=label,
                                 marker=dict(symbol="square", size=12, color=color,
                                             line=dict(color="#555555", width=1))), row=1, col=1)

    def caption(t, a: FrameState, b: FrameState) -> str:
        phase = a.phase if a.phase == b.phase else f"{a.phase} | {b.phase}"
        return f"step {int(t) + 1}/{max(ends)} · {phase}"

    names = [str(k) for k in range(len(times))]
    fig.frames = [go.Frame(name=nm, data=frame_data(a, b), traces=[0, 1, 2, 3, 4],
                           layout=dict(title_text=caption(t, a, b)))
                  for nm, t, a, b in zip(names, times, sa, sb)]
    menus, sliders = player_controls(names, [str(int(t) + 1) for t in times], duration=frame_ms,
                                     prefix="time step ", y=-0.3, slider_x=0.32)
    top = max(report_a.read_bytes, report_a.write_bytes, report_b.read_bytes, report_b.write_bytes) / scale * 1.2
    fig.update_layout(title=dict(text=caption(times[0], sa[0], sb[0]), font=dict(size=13)),
                      height=580, font=FONT, margin=dict(l=50, r=40, t=70, b=250), plot_bgcolor="white",
                      updatemenus=menus, sliders=sliders, legend={**LEGEND_BELOW, "y": -0.7})
    for c in (1, 3):
        fig.update_yaxes(autorange="reversed", nticks=8, title_text="Q tile i" if c == 1 else None,
                         row=1, col=c)
        fig.update_xaxes(nticks=8, title_text="K/V tile j", row=1, col=c)
    for c in (2, 4):  # the O strips share their grid's rows
        fig.update_yaxes(autorange="reversed", showticklabels=False, matches="y" if c == 2 else "y3",
                         row=1, col=c)
        fig.update_xaxes(showticklabels=False, row=1, col=c)
    fig.update_yaxes(range=[0, top or 1], row=1, col=5)
    fig.update_xaxes(tickangle=-30, row=1, col=5)
    return fig
