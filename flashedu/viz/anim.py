"""Play/Pause buttons and a frame slider for plotly animations, the same on every figure.

These play in the static HTML book with no kernel: plotly.js runs the frames in the browser.
"""
from __future__ import annotations

import plotly.graph_objects as go


def player_controls(names: list[str], labels: list[str], *, duration: int = 300, prefix: str = "",
                    y: float = -0.12, slider_x: float = 0.32) -> tuple[list, list]:
    """``(updatemenus, sliders)`` for frames called ``names``; ``labels`` label the slider steps.
    ``y`` places the controls below the plot, in paper coordinates."""
    if len(labels) != len(names):
        raise ValueError(f"labels has {len(labels)} entries for {len(names)} frames")
    play = dict(label="▶ Play", method="animate",
                args=[None, dict(frame=dict(duration=duration, redraw=True), fromcurrent=True,
                                 transition=dict(duration=0))])
    pause = dict(label="❚❚ Pause", method="animate",
                 args=[[None], dict(frame=dict(duration=0, redraw=False), mode="immediate",
                                    transition=dict(duration=0))])
    steps = [dict(method="animate", label=lab,
                  args=[[name], dict(frame=dict(duration=0, redraw=True), mode="immediate",
                                     transition=dict(duration=0))])
             for name, lab in zip(names, labels)]
    menus = [dict(type="buttons", buttons=[play, pause], direction="left", x=0, y=y,
                  xanchor="left", yanchor="top", showactive=False, pad=dict(t=0, r=10))]
    sliders = [dict(active=0, steps=steps, x=slider_x, y=y + 0.02, len=1 - slider_x, xanchor="left",
                    yanchor="top", pad=dict(t=0), currentvalue=dict(prefix=prefix, font=dict(size=11)))]
    return menus, sliders


def add_player(fig: go.Figure, labels: list[str] | None = None, **kwargs) -> go.Figure:
    """Attach Play/Pause and a slider to ``fig`` (which must have frames); keyword arguments as
    :func:`player_controls`."""
    names = [f.name for f in fig.frames]
    if not names:
        raise ValueError("fig has no frames to play")
    menus, sliders = player_controls(names, labels or [str(k) for k in range(len(names))], **kwargs)
    fig.update_layout(updatemenus=menus, sliders=sliders)
    return fig
