"""Live controls for a running kernel (Jupyter, Colab): change the algorithm, N, d, the SRAM
size or the mask and the tile schedule is simulated and drawn again. The static book cannot run
Python callbacks, so its pages use the precomputed plotly sliders instead; this is the extra
for readers with a kernel."""
from __future__ import annotations

import torch

from ..iomodel import simulate
from ..iomodel.memory import SRAMOverflowError
from .schedule import tile_schedule


def schedule_panel(algorithm: str = "v2", *, N: int = 512, d: int = 64, sram_kib: int = 64,
                   causal: bool = False):
    """An ipywidgets panel around :func:`tile_schedule`; returns the widget (display it)."""
    import ipywidgets as w  # optional: only needed with a live kernel

    controls = dict(
        algorithm=w.Dropdown(options=["standard", "v1", "v2"], value=algorithm, description="algorithm"),
        N=w.IntSlider(value=N, min=64, max=4096, step=64, description="N", continuous_update=False),
        d=w.Dropdown(options=[16, 32, 64, 128], value=d, description="d"),
        sram_kib=w.IntSlider(value=sram_kib, min=16, max=256, step=16, description="SRAM KiB",
                             continuous_update=False),
        causal=w.Checkbox(value=causal, description="causal"),
    )
    out = w.Output()
    summary = w.HTML()

    def redraw(*_):
        v = {k: c.value for k, c in controls.items()}
        with out:
            out.clear_output(wait=True)
            try:
                report = simulate(v["algorithm"], N=v["N"], d=v["d"], sram_bytes=v["sram_kib"] * 1024,
                                  causal=v["causal"], dtype=torch.float16)
            except (SRAMOverflowError, ValueError) as err:
                summary.value = f"<b>Does not fit:</b> {err}"
                return
            summary.value = report.summary()
            tile_schedule(report).show()

    for c in controls.values():
        c.observe(redraw, names="value")
    panel = w.VBox([w.HBox(list(controls.values())[:3]), w.HBox(list(controls.values())[3:]), summary, out])
    panel.redraw = redraw  # for tests and for callers who change values programmatically
    redraw()
    return panel
