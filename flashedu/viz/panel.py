"""Live controls for a running kernel (Jupyter, Colab): change the algorithm, N, d, the SRAM
size or the mask and the tile schedule is simulated and drawn again. The static book cannot run
Python callbacks, so its pages use the precomputed plotly sliders instead; this is the extra
for readers with a kernel."""
from __future__ import annotations

import torch

from flashedu.iomodel import simulate
from flashedu.iomodel.hbm_sram import SRAMOverflowError
from flashedu.viz.schedule import tile_schedule


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


def block_mask_panel(N: int = 1024, *, block: int = 128, d: int = 64, heads: int = 16,
                     start: str = "local", causal: bool = False, gpu: str = "H100"):
    """Draw a block mask tile by tile (chapter 5): one toggle per tile, a menu of patterns to
    start from; each change re-simulates the forward and draws its schedule, HBM bytes and
    roofline time against dense v2. ``panel.mask()`` is the drawn mask, ready for
    ``block_sparse_flash_attention(q, k, v, block_mask=panel.mask())``."""
    import ipywidgets as w  # optional: only needed with a live kernel

    from flashedu.ops.block_sparse import masks as bs
    from flashedu.viz.block_sparse import pattern_explorer

    T = N // block
    if N % block or not 1 <= T <= 16:
        raise ValueError(f"N must be 1 to 16 blocks of {block} (one toggle per tile), got N={N}")
    starts = {
        "dense": lambda: bs.dense_mask(N, block_r=block),
        "local": lambda: bs.local(N, block=block, width=1),
        "butterfly": lambda: bs.butterfly(N, block=block),
        "global + local": lambda: bs.global_local(N, block=block, width=1, n_global=1),
        "random 25%": lambda: bs.random_blocks(N, block=block, density=0.25, seed=0),
        "empty": lambda: bs.from_blocks(torch.zeros(T, T, dtype=torch.bool), block_r=block, N=N),
    }
    if start not in starts:
        raise ValueError(f"start must be one of {', '.join(starts)}, got {start!r}")
    pick = w.Dropdown(options=list(starts), value=start, description="start from")
    causal_box = w.Checkbox(value=causal, description="causal")
    size = f"{max(18, 320 // T)}px"
    tiles = [w.ToggleButton(layout=w.Layout(width=size, height=size, padding="0"), tooltip=f"Q tile {i}, K/V tile {j}")
             for i in range(T) for j in range(T)]
    grid = w.GridBox(tiles, layout=w.Layout(grid_template_columns=f"repeat({T}, {size})", grid_gap="1px"))
    summary = w.HTML()
    out = w.Output()
    busy = [False]  # loading a pattern sets every toggle: redraw once, not T² times

    def mask():
        blocks = torch.tensor([t.value for t in tiles], dtype=torch.bool).reshape(T, T)
        return bs.from_blocks(blocks, block_r=block, N=N)

    def redraw(*_):
        if busy[0]:
            return
        for t in tiles:
            t.button_style = "info" if t.value else ""
        m = mask()
        with out:
            out.clear_output(wait=True)
            if m.nnz(causal_box.value) == 0:
                summary.value = "<b>No tile is computed:</b> every output row is 0."
                return
            fig = pattern_explorer({"your mask": m}, d=d, heads=heads, causal=causal_box.value, gpu=gpu)
            summary.value = fig.layout.title.text  # tiles, HBM bytes and roofline time against dense v2
            fig.show()

    def load(*_):
        busy[0] = True
        blocks = starts[pick.value]().blocks[0]
        for t, on in zip(tiles, blocks.reshape(-1).tolist()):
            t.value = bool(on)
        busy[0] = False
        redraw()

    pick.observe(load, names="value")
    causal_box.observe(redraw, names="value")
    for t in tiles:
        t.observe(redraw, names="value")
    panel = w.VBox([w.HBox([pick, causal_box]), grid, summary, out])
    panel.redraw, panel.mask, panel.tiles = redraw, mask, tiles  # for tests and for the reader
    load()
    return panel
