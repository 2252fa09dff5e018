"""Play/Pause buttons and a frame slider for plotly animations, the same on every figure.

These play in the static HTML book with no kernel: plotly.js runs the frames in the browser.
"""
from __future__ import annotations

import plotly.graph_objects as go


def add_player(fig: go.Figure, labels: list[str] | None = None, *, duration: int = 300,
               prefix: str = "", y: float = -0.12) -> go.Figure:
    """Attach Play/Pause and a slider to ``fig``, whose frames must be named "0", "1", ….

    ``labels`` label the slider steps (default: the frame numbers); ``y`` places the controls
    below the plot, in paper coordinates.
    """
    n = len(fig.frames)
    if n == 0:
        raise ValueError("fig has no frames to play")
    labels = labels or [str(k) for k in range(n)]
    if len(labels) != n:
        raise ValueError(f"labels has {len(labels)} entries for {n} frames")
    play = dict(label="▶ Play", method="animate",
                args=[None, dict(frame=dict(duration=duration, redraw=True), fromcurrent=True,
                                 transition=dict(duration=0))])
    pause = dict(label="❚❚ Pause", method="animate",
                 args=[[None], dict(frame=dict(duration=0, redraw=False), mode="immediate")])
    steps = [dict(method="animate", label=lab,
                  args=[[fig.frames[k].name], dict(frame=dict(duration=0, redraw=True), mode="immediate")])
             for k, lab in enumerate(labels)]
    fig.update_layout(
        updatemenus=[dict(type="buttons", buttons=[play, pause], direction="left", x=0, y=y,
                          xanchor="left", yanchor="top", showactive=False, pad=dict(t=0, r=10))],
        sliders=[dict(steps=steps, x=0.2, y=y + 0.02, len=0.8, xanchor="left", yanchor="top",
                      pad=dict(t=0), currentvalue=dict(prefix=prefix))],
    )
    return fig
