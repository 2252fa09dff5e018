"""Widgets: static plotly figures with frames that change, driven by the event trace."""
from __future__ import annotations

import json

import numpy as np
import pytest

from flashedu import viz
from flashedu.iomodel import simulate


def _z(frame, k=0):
    return np.asarray(frame.data[k].z, dtype=float)


@pytest.mark.parametrize("alg", ["standard", "v1", "v2"])
@pytest.mark.parametrize("causal", [False, True])
def test_tile_schedule_frames_change_and_end_with_the_totals(alg, causal):
    r = simulate(alg, N=300, d=32, block_r=32, block_c=64, causal=causal)
    fig = viz.tile_schedule(r, max_frames=40)
    assert 2 <= len(fig.frames) <= 40
    assert not np.array_equal(_z(fig.frames[0]), _z(fig.frames[-1]))
    assert len({_z(f).tobytes() for f in fig.frames}) > len(fig.frames) // 3
    bar = fig.frames[-1].data[4]
    scale = r.read_bytes / bar.y[0]
    assert bar.y[1] * scale == pytest.approx(r.write_bytes)
    assert fig.layout.updatemenus[0].buttons[0].method == "animate"
    assert len(fig.layout.sliders[0].steps) == len(fig.frames)
    assert fig.layout.width is None  # no fixed width: it fills the book column
    json.loads(fig.to_json())  # serialisable: works as static HTML


def test_tile_schedule_final_grid_marks_done_and_skipped():
    r = simulate("v2", N=256, d=32, block_r=64, block_c=64, causal=True)
    end = int(viz.event_times(r).max())
    # The last window holds only the final stores of O and L, so no tile is "working now".
    last = viz.schedule_states(r, np.array([end - 2, end]))[-1]
    expected = np.where(np.triu(np.ones((4, 4)), k=1) > 0, 2, 1)
    assert np.array_equal(last.grid, expected)
    assert (last.read_bytes, last.write_bytes) == (r.read_bytes, r.write_bytes)
    assert last.o[-1] == 2  # O_3 is being written back


def test_concurrent_timeline_runs_programs_side_by_side():
    r = simulate("v2", N=256, d=32, block_r=64, block_c=64)
    seq, par = viz.event_times(r, concurrent=False), viz.event_times(r, concurrent=True)
    assert par.max() < seq.max() and seq.max() == len(r.trace) - 1
    assert viz.event_times(simulate("v1", N=256, d=32, block_r=64, block_c=64)).max() == \
        len(simulate("v1", N=256, d=32, block_r=64, block_c=64).trace) - 1  # one program


def test_side_by_side_shares_one_timeline():
    a = simulate("v1", N=256, d=32, block_r=32, block_c=64)
    b = simulate("v2", N=256, d=32, block_r=32, block_c=64)
    fig = viz.side_by_side(a, b, max_frames=30)
    assert 2 <= len(fig.frames) <= 30
    assert not np.array_equal(_z(fig.frames[0], 0), _z(fig.frames[-1], 0))  # v1's grid
    assert not np.array_equal(_z(fig.frames[0], 2), _z(fig.frames[-1], 2))  # v2's grid
    # The O strips count the stores: v1 writes every O_i once at line 2 (zeros) and once per K/V
    # tile, v2 once, at the end.
    last = fig.frames[-1]
    assert np.asarray(last.data[1].text).ravel().tolist() == [a.Tc + 1] * a.Tr
    assert np.asarray(last.data[3].text).ravel().tolist() == [1] * b.Tr
    assert np.asarray(fig.frames[0].data[3].text).ravel().tolist() == [0] * b.Tr
    assert "|" not in last.layout.title.text  # one phase, said once


def test_too_large_a_grid_is_refused():
    with pytest.raises(ValueError, match="tiles"):
        viz.tile_schedule(simulate("v2", N=129 * 16, d=16, block_r=16, block_c=16))


def test_traffic_explorer_precomputes_both_sliders():
    ds, srams = (64, 128), (100, 228)
    fig = viz.traffic_explorer(Ns=(256, 1024, 4096), ds=ds, sram_kib=srams, gpu="A100")
    n = len(fig.data)
    assert n == len(ds) * 3 * 2  # d × algorithm × (bytes, time)
    d_slider, s_slider = fig.layout.sliders
    assert [len(s.args[0]["visible"]) for s in d_slider.steps] == [n, n]
    assert sum(d_slider.steps[1].args[0]["visible"]) == 6
    ys = [s.args[0]["y"] for s in s_slider.steps]
    assert all(len(y) == n for y in ys)
    assert ys[0] != ys[1]  # SRAM size changes the block sizes, hence the traffic
    # standard attention moves the most bytes at the largest N
    first = {tr.name: tr.y[-1] for tr in fig.data[:6] if tr.yaxis == "y"}
    assert first["standard"] > first["v2"]
    assert "A100" in fig.layout.title.text
    assert fig.layout.xaxis2.title.text.startswith("sequence length N")


def test_traffic_curves_agree_with_simulation():
    from flashedu.iomodel.blocks import default_block_sizes
    nbytes, _ = viz.traffic_curves("v1", Ns=[512], d=64, sram_bytes=100 * 1024)
    br, bc = default_block_sizes("v1", d=64, sram_bytes=100 * 1024, dtype=__import__("torch").float16)
    r = simulate("v1", N=512, d=64, sram_bytes=100 * 1024)
    assert (r.block_r, r.block_c) == (br, bc)
    assert nbytes[0] == r.read_bytes + r.write_bytes


def test_live_panel_redraws_when_a_control_changes():
    pytest.importorskip("ipywidgets")  # optional: the live panels need it, the package does not
    from flashedu.viz.panel import schedule_panel

    panel = schedule_panel("v1", N=256, d=32, sram_kib=64)
    summary = panel.children[2]
    assert summary.value.startswith("v1 N=256 d=32")
    sram = panel.children[1].children[0]
    sram.value = 16  # the observer re-simulates with the smaller SRAM
    assert summary.value.startswith("v1 N=256") and "of 16.0 KiB" in summary.value
    panel.children[0].children[0].value = "v2"
    assert summary.value.startswith("v2 ")


def test_block_mask_panel_draws_what_the_toggles_say():
    pytest.importorskip("ipywidgets")  # optional: the live panels need it, the package does not
    from flashedu.ops.block_sparse import masks as bs
    from flashedu.viz.panel import block_mask_panel

    panel = block_mask_panel(512, block=64, start="local")
    want = bs.local(512, block=64, width=1)
    assert (panel.mask().blocks == want.blocks).all()
    summary = panel.children[2]
    assert summary.value.startswith(f"your mask: {want.nnz()} of 64 tiles") and "MiB vs dense" in summary.value
    panel.tiles[7].value = not panel.tiles[7].value  # toggle tile (0, 7): one more computed
    assert summary.value.startswith(f"your mask: {want.nnz() + 1} of 64 tiles") and panel.mask().blocks[0, 0, 7]
    panel.children[0].children[0].value = "empty"
    assert "every output row is 0" in summary.value and panel.mask().nnz() == 0
    panel.children[0].children[0].value = "dense"
    panel.children[0].children[1].value = True  # causal: the upper triangle is not computed
    assert summary.value.startswith(f"your mask: {8 * 9 // 2} of 64 tiles (causal)")
    with pytest.raises(ValueError, match="1 to 16 blocks"):
        block_mask_panel(4096, block=128)


def test_standard_schedule_shows_s_and_p_going_to_hbm_and_back():
    """Standard attention writes S and P tiles to HBM and reads them back (kernel 2 reads S,
    kernel 3 reads P); the grid shows both transfers. v2 moves no score tile, so never shows them."""
    from flashedu.viz.palette import READ_NOW, WRITTEN_NOW

    def codes(report):
        fig = viz.tile_schedule(report, max_frames=60)
        return set().union(*(np.unique(_z(f, 0)[~np.isnan(_z(f, 0))]).tolist() for f in fig.frames)), fig

    std, fig = codes(simulate("standard", N=256, d=32, block_r=32, block_c=32))
    assert {WRITTEN_NOW, READ_NOW} <= std
    assert "S/P tile read from HBM now" in [t.name for t in fig.data]
    v2, fig = codes(simulate("v2", N=256, d=32, block_r=32, block_c=32))
    assert not {WRITTEN_NOW, READ_NOW} & v2
    assert "S/P tile read from HBM now" not in [t.name for t in fig.data]


def test_measured_roofline_gives_every_kernel_its_own_marker():
    from flashedu.recorded.bench import latest
    from flashedu.viz.speedups import measured_roofline_figure

    fig = measured_roofline_figure(latest(), N=4096, D=128)
    marks = [(t.marker.color, t.marker.symbol) for t in fig.data if t.mode == "markers"]
    assert len(marks) > 8 and len(set(marks)) == len(marks)  # more kernels than colours


def test_tflops_menu_does_not_cover_the_subtitle():
    from flashedu.recorded.bench import latest
    from flashedu.viz.tflops import tflops_figure

    menu = tflops_figure(latest()).layout.updatemenus[0]
    assert menu.yanchor == "bottom" and 1 <= menu.y < 1.1  # just above the plot, below the titles


def test_ablations_figure_draws_each_recorded_ablation():
    from flashedu.recorded.bench import latest
    from flashedu.viz.speedups import ablations_figure

    run = latest()
    fig = ablations_figure(run)
    axes = {t.xaxis for t in fig.data}
    assert axes == {"x", "x2", "x3", "x4"}  # one panel per ablation, none empty
    bars = next(t for t in fig.data if t.type == "bar")
    want = sorted(r["fwd_tflops"] for r in run["ablations"]["block-sizes"]["rows"]
                  if (r["D"], r["N"], r["causal"]) == (128, 16384, False) and r.get("fwd_status") == "ok")
    assert sorted(bars.y) == want
    with pytest.raises(ValueError, match="no ablations"):
        ablations_figure(dict(run, ablations={}))


def test_tile_schedule_keeps_each_o_tile_marked_once_written():
    """v2 writes each O_i once: after its row ends the strip keeps it marked "written" with a 1,
    instead of falling back to the colour of a tile never written."""
    from flashedu.viz.palette import WRITTEN_EARLIER

    r = simulate("v2", N=512, d=64, sram_bytes=32 * 1024, causal=True)
    fig = viz.tile_schedule(r)
    first, last = fig.frames[0].data[2], fig.frames[-1].data[2]  # the O strip
    assert np.asarray(first.text).ravel().tolist() == [0] * r.Tr
    assert np.asarray(last.text).ravel().tolist() == [1] * r.Tr
    assert set(np.asarray(last.z).ravel().tolist()) <= {2, WRITTEN_EARLIER}


def test_ratio_heatmap_draws_every_recorded_ratio():
    from flashedu import recorded
    from flashedu.recorded import block_sparse as bsm
    from flashedu.viz.block_sparse import ratio_heatmap
    rows = bsm.ratios(recorded.latest("block_sparse"))
    fig = ratio_heatmap(rows, pass_="fwd")
    ours, flex = fig.data
    fwd = [r for r in rows if r.pass_ == "fwd"]
    got = sorted(v for row in ours.z for v in row if v is not None)
    assert got == sorted(r.ours for r in fwd)
    assert sorted(v for row in flex.z for v in row if v is not None) == sorted(r.flex for r in fwd if r.flex)
    with pytest.raises(ValueError, match="pass_"):
        ratio_heatmap(rows, pass_="bwd")
