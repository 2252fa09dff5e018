"""Chapter 6's FP8 widget: what the Hadamard rotation does to an outlier-heavy row of Q, and the
error FP8 puts into the scores of each tile under per-tensor and per-tile scales.

Everything is computed up front; buttons switch between precomputed rows, so the figure works
in the static book.
"""
from __future__ import annotations

import torch
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from flashedu.ops.fp8 import E4M3_MAX, quantize, random_signs, rotate
from flashedu.viz.palette import FONT, OKABE_ITO


def _head(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.dim() == 4:
        x = x[0, 0]
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape [N, D] or [B, H, N, D], got {tuple(x.shape)}")
    return x.double()


def block_errors(q: torch.Tensor, k: torch.Tensor, *, block: int = 128,
                 signs: torch.Tensor | None = None) -> dict[str, list[float]]:
    """Largest |error| of the scores S = QKᵀ/√d in each tile of ``block`` query rows, with Q and
    K [N, D] (or [B, H, N, D], first head) quantised to e4m3 three ways: one scale per tensor,
    one per tile, and rotation by D·H then one per tile.

    The largest, not the RMS: e4m3 is a floating-point format, so most entries carry the same
    relative error whatever the scale, and the RMS barely moves. What moves is the error of the
    few large scores where an outlier of Q meets one of K, and those dominate the softmax."""
    q, k = _head(q, "q"), _head(k, "k")
    d = q.shape[-1]
    exact = q @ k.T / d ** 0.5
    signs = random_signs(d) if signs is None else signs
    out = {}
    for name, rot, per_tensor in (("per-tensor scale", False, True), ("per-tile scales", False, False),
                                  ("rotation + per-tile", True, False)):
        qq, kk = (rotate(t.float(), signs) if rot else t.float() for t in (q, k))
        qd, kd = (quantize(t[None, None], block=block, per_tensor=per_tensor).dequantize()[0, 0].double()
                  for t in (qq, kk))
        err = qd @ kd.T / d ** 0.5 - exact  # rotation is orthogonal: same S, so compare directly
        n = -(-err.shape[0] // block)
        out[name] = [err[i * block:(i + 1) * block].abs().max().item() for i in range(n)]
    return out


def _peaky_rows(q: torch.Tensor, n: int) -> list[int]:
    # The rows whose largest entry stands furthest above their RMS: the ones rotation helps most.
    ratio = q.abs().amax(-1) / q.pow(2).mean(-1).sqrt()
    return ratio.argsort(descending=True)[:n].tolist()


def fp8_widget(q: torch.Tensor, k: torch.Tensor, *, block: int = 128, n_rows: int = 4,
               seed: int = 0) -> go.Figure:
    """Top: one row of ``q`` [N, D] (or [B, H, N, D], first head) before and after x ↦ x·D·H,
    buttons for the ``n_rows`` most outlier-heavy rows. Bottom: largest error of the scores QKᵀ/√d
    per tile of ``block`` query rows, with Q and K in e4m3 under per-tensor scales, per-tile
    scales, and rotation + per-tile scales (:func:`block_errors`)."""
    for name, val in (("block", block), ("n_rows", n_rows)):
        if isinstance(val, bool) or not isinstance(val, int) or val < 1:
            raise ValueError(f"{name} must be a positive int, got {val!r}")
    q = _head(q, "q").float()
    signs = random_signs(q.shape[-1], generator=torch.Generator().manual_seed(seed))
    rows = _peaky_rows(q, n_rows)
    rotated = rotate(q, signs)
    errs = block_errors(q, k, block=block, signs=signs)
    fig = make_subplots(rows=2, cols=1, vertical_spacing=0.2,
                        subplot_titles=("one row of Q, before and after the rotation",
                                        f"largest error in the scores QKᵀ/√d (Q, K in e4m3), per tile of {block} query rows"))
    d = list(range(q.shape[-1]))
    r0 = rows[0]
    fig.add_trace(go.Bar(x=d, y=q[r0].tolist(), name="row of Q", marker_color=OKABE_ITO["black"]), 1, 1)
    fig.add_trace(go.Bar(x=d, y=rotated[r0].tolist(), name="the same row, rotated (× R)",
                         marker_color=OKABE_ITO["sky"]), 1, 1)
    colors = (OKABE_ITO["vermillion"], OKABE_ITO["orange"], OKABE_ITO["blue"])
    for (name, e), color in zip(errs.items(), colors):
        fig.add_trace(go.Bar(x=[f"tile {i}" for i in range(len(e))], y=e, name=name, marker_color=color,
                             hovertemplate="%{x}: largest score error %{y:.2f}<extra>" + name + "</extra>"), 2, 1)

    def label(r):
        return (f"row {r}: max |x| {q[r].abs().max():.1f} → {rotated[r].abs().max():.1f} after rotation "
                f"(e4m3 holds up to {E4M3_MAX:.0f} after scaling)")

    buttons = [dict(label=f"row {r}", method="update",
                    args=[{"y": [q[r].tolist(), rotated[r].tolist()]}, {"title.text": _title(label(r))}, [0, 1]])
               for r in rows]
    fig.update_layout(updatemenus=[dict(type="buttons", direction="right", buttons=buttons, x=1, y=1.1,
                                        xanchor="right", yanchor="bottom", pad=dict(t=0, r=0))],
                      title=dict(text=_title(label(r0))), barmode="group", height=640, font=FONT,
                      plot_bgcolor="white", margin=dict(t=150, l=70, r=20, b=60),
                      legend=dict(orientation="h", y=-0.12))
    fig.update_xaxes(title_text="coordinate of the head dimension", row=1, col=1)
    fig.update_yaxes(title_text="value", row=1, col=1)
    fig.update_yaxes(title_text="max |error| in S", rangemode="tozero", row=2, col=1)
    return fig


def _title(sub: str) -> str:
    return f"FP8 and outliers<br><sup>{sub}</sup>"
