"""Chapter 6's measured tables and figures (flashedu.recorded.fa3, .fp8 and flashedu.viz.fa3_measured): the best values they show
are the recorded JSON's, computed here independently from the raw rows."""
from __future__ import annotations

import json

import pytest

from flashedu import recorded
from flashedu.recorded.fa3 import ablation_summary, ablation_table
from flashedu.recorded.fp8 import (fp8_config, fp8_config_table, fp8_design_costs, fp8_speed_table, fp8_summary,
                                   tuning_cost)
from flashedu.viz.fa3_measured import ablation_figure, fp8_speed_figure

PROV = {"gpu": "Test GPU", "torch": "2.x", "triton": "3.x", "date": "2026-01-02T00:00:00+00:00"}


def _runs(kind):
    if not (recorded.DATA / kind).is_dir() or not any((recorded.DATA / kind).glob("*.json")):
        pytest.skip(f"nothing recorded under flashedu/recorded/data/{kind}/")
    return recorded.load(kind)


def _tma(D, N, bn, s, ws, tflops=None, error=None):
    r = dict(kind="time", impl="v2_tma_triton", D=D, N=N, block_m=128, block_n=bn, warps=8, stages=s,
             warp_specialize=ws)
    if error:
        r["error"] = error
    else:
        r.update(ms=1.0, tflops=tflops)
    return r


SYNTH_FA3 = {"provenance": PROV, "rows": [
    dict(kind="ws_probe", D=128, config=[128, 128, 8, 1], result="OK 1e-4"),
    dict(kind="time", impl="v2_triton", D=128, N=1024, ms=1.0, tflops=300.0),
    _tma(128, 1024, 128, 1, False, 200.0), _tma(128, 1024, 64, 1, False, 250.0),
    _tma(128, 1024, 128, 3, False, 320.0), _tma(128, 1024, 128, 4, False, error="OutOfResources"),
    _tma(128, 1024, 128, 3, True, 310.0),
]}


def test_synthetic_ablation_table_picks_the_best_tile_and_leaves_gaps():
    (row,) = ablation_table(SYNTH_FA3)
    assert (row["D"], row["N"], row["pointers"]) == (128, 1024, 300.0)
    assert row["cells"][(1, False)] == 250.0 and row["tiles"][(1, False)] == "128×64"
    assert row["cells"][(4, False)] is None and row["cells"][(2, True)] is None  # failed / not run
    assert (row["tma"], row["tma_no_ws"], row["tma_ws"]) == (320.0, 320.0, 310.0)
    fig = ablation_figure(SYNTH_FA3)
    text = fig.data[0].text[0]
    assert text[0] == "300" and text[3] == "<b>320</b>" and text[4] == "—"
    assert fig.data[0].z[0][3] == 1 and fig.data[0].z[0][0] == pytest.approx(300 / 320)
    assert "Test GPU" in fig.layout.title.text and "2026-01-02" in fig.layout.title.text


def test_recorded_ablation_matches_the_json():
    for run in _runs("fa3"):
        timed = [r for r in run["rows"] if r.get("kind") == "time" and "tflops" in r]
        table = ablation_table(run)
        assert {(t["D"], t["N"]) for t in table} == {(r["D"], r["N"]) for r in timed}
        for t in table:
            here = [r for r in timed if (r["D"], r["N"]) == (t["D"], t["N"])]
            tma = [r for r in here if r["impl"] == "v2_tma_triton"]
            assert t["pointers"] == max(r["tflops"] for r in here if r["impl"] == "v2_triton")
            assert t["tma"] == max(r["tflops"] for r in tma)
            assert t["tma_no_ws"] == max(r["tflops"] for r in tma if not r["warp_specialize"])
            assert t["tma_ws"] == max((r["tflops"] for r in tma if r["warp_specialize"]), default=None)
            for (s, ws), v in t["cells"].items():
                vals = [r["tflops"] for r in tma if r["stages"] == s and r["warp_specialize"] == ws]
                assert v == max(vals, default=None)
        fig = ablation_figure(run)
        assert len(fig.data[0].y) == len(table) and fig.layout.width is None
        for t, texts in zip(table, fig.data[0].text):
            best = max(t["pointers"], t["tma"])
            assert [s for s in texts if s.startswith("<b>")] == [f"<b>{best:.0f}</b>"]
        json.loads(fig.to_json())


def test_fp8_config_string():
    assert fp8_config("fp8_triton FP8Config(block_m=128, block_n=64)") == "block_m=128, block_n=64"


def test_recorded_fp8_speed_matches_the_json():
    for run in _runs("fp8"):
        timed = [r for r in run["rows"] if r.get("kind") == "time"]
        table = fp8_speed_table(run)
        assert {(t["D"], t["N"]) for t in table} == {(r["D"], r["N"]) for r in timed}
        for t in table:
            here = [r for r in timed if (r["D"], r["N"]) == (t["D"], t["N"])]
            fp16 = [r["ms"] for r in here if r["impl"] == "v2_triton fp16"]
            fp8 = [r["ms"] for r in here if r["impl"].startswith("fp8_triton")]
            assert len(fp16) == 1 and t["fp16_ms"] == fp16[0]
            assert t["fp8_ms"] == min(fp8)
            assert t["speedup"] == pytest.approx(fp16[0] / min(fp8))
            assert t["quant_ms"] == next(r["ms"] for r in here if r["impl"] == "fp8 quantisation (torch)")
        fig = fp8_speed_figure(run)
        fp8_bars = [tr for tr in fig.data if tr.offsetgroup == "fp8" and tr.base is None]
        quant_bars = [tr for tr in fig.data if tr.base is not None]
        assert sum(len(tr.y) for tr in fp8_bars) == len(table) == sum(len(tr.y) for tr in quant_bars)
        for tr, q in zip(fp8_bars, quant_bars):
            assert list(q.base) == list(tr.y)  # the quantisation is stacked on the FP8 bar
        shown = [float(s.rstrip("x")) for tr in fp8_bars for s in tr.text]
        assert shown == [round(t["speedup"], 2) for t in table]
        json.loads(fig.to_json())


def test_summaries_quote_the_raw_rows():
    """The numbers chapter 6 glues, recomputed from the rows without the tables."""
    for run in _runs("fa3"):
        facts = ablation_summary(run, paper_tflops=661.0)
        timed = [r for r in run["rows"] if r.get("kind") == "time" and "tflops" in r]
        best = lambda **kw: max(r["tflops"] for r in timed if all(r.get(k) == v for k, v in kw.items()))  # noqa: E731
        assert facts["fa3_ptr_8448"] == best(impl="v2_triton", D=128, N=8448)
        assert facts["fa3_tma_8448"] == best(impl="v2_tma_triton", D=128, N=8448)
        assert facts["fa3_stages_2"] == best(impl="v2_tma_triton", D=128, N=8448, stages=2, warp_specialize=False)
        assert facts["fa3_of_paper"] == pytest.approx(100 * facts["fa3_best_8448"] / 661.0)
        assert facts["fa3_ws_probed"] == sum(r.get("kind") == "ws_probe" for r in run["rows"])
    for run in _runs("fp8"):
        facts = fp8_summary(run)
        ms = {(r["impl"], r["D"], r["N"]): r["ms"] for r in run["rows"] if r.get("kind") == "time" and "ms" in r}
        fp8 = min(t for (impl, D, N), t in ms.items() if impl.startswith("fp8_triton") and (D, N) == (128, 4096))
        assert facts["fp8_x_4096"] == pytest.approx(ms[("v2_triton fp16", 128, 4096)] / fp8)
        fa3 = next(r for r in run["rows"] if r.get("recipe") == "fp8_fa3")
        assert (facts["fp8_rmse_gpu"], facts["fp8_rmse_paper"]) == (fa3["rmse"], fa3["paper"])


def _fp8_row(D, N, ms, bm=128, bn=128, warps=8, fold_v=True, max_regs=None):
    cfg = (f"block_m={bm}, block_n={bn}, num_warps={warps}, num_stages=3, use_tma=True, fold_v={fold_v}, "
           f"exp_fma=False, max_regs={max_regs}")
    return dict(kind="time", impl=f"fp8_triton FP8Config({cfg})", D=D, N=N, ms=ms, tflops=1.0)


def test_fp8_design_costs_on_synthetic_rows():
    run = {"provenance": PROV, "rows": [
        _fp8_row(128, 4096, 1.0), _fp8_row(128, 4096, 1.1, fold_v=False), _fp8_row(128, 4096, 0.8, bm=64, warps=4),
        _fp8_row(128, 8192, 2.0), _fp8_row(128, 8192, 2.0, bm=64, warps=4, max_regs=168),
        _fp8_row(64, 4096, 9.0, fold_v=False)]}
    costs = fp8_design_costs(run)
    assert costs["two_acc"] == pytest.approx([10.0])  # only N = 4096 has both accumulator variants
    assert costs["rows128"] == pytest.approx([25.0, 0.0])


def test_tuning_cost_pairs_variant_and_base_per_shape():
    tuning = {"rows": [dict(impl="a", D=128, N=4096, causal=False, ms=2.0), dict(impl="b", D=128, N=4096, causal=False, ms=1.0),
                       dict(impl="a", D=128, N=8192, causal=True, ms=3.0), dict(impl="b", D=128, N=8192, causal=True, ms=4.0),
                       dict(impl="a", D=64, N=4096, causal=False, ms=9.0), dict(impl="b", D=128, N=1024, causal=False, ms=1.0),
                       dict(impl="a", D=128, N=1024, causal=False, error="OutOfResources")]}
    assert tuning_cost(tuning, "a", "b") == pytest.approx([100.0, -25.0])


def test_recorded_fp8_design_costs_match_the_rows():
    for run in _runs("fp8"):
        costs = fp8_design_costs(run)
        summary = fp8_summary(run)
        for name, values in costs.items():
            if values:
                assert summary[f"fp8_{name}_lo"] == min(values) and summary[f"fp8_{name}_hi"] == max(values)
        fastest = {(r["D"], r["N"]): r["fp8_ms"] for r in fp8_speed_table(run)}
        assert all(v >= 0 for v in costs["rows128"])  # measured against the fastest configuration
        assert len(costs["rows128"]) == len([k for k in fastest if k[0] == 128])


def test_fp8_config_table_marks_the_fastest_per_length():
    run = {"provenance": PROV, "rows": [
        dict(kind="time", impl="v2_triton fp16", D=128, N=4096, ms=2.0, tflops=1.0),
        dict(kind="time", impl="v2_triton fp16", D=128, N=8192, ms=4.0, tflops=1.0),
        _fp8_row(128, 4096, 1.0), _fp8_row(128, 8192, 4.0), _fp8_row(128, 4096, 1.6, fold_v=False),
        _fp8_row(128, 8192, 2.0, bm=64, warps=4, max_regs=168)]}
    lines = fp8_config_table(run).splitlines()
    assert lines[0].endswith("| N=4k | N=8k |") and len(lines) == 2 + 3
    assert lines[2] == "| 128×128 | 8 | 3 | – | one | **2.00×** | 1.00× |"
    assert lines[3] == "| 128×128 | 8 | 3 | – | two | 1.25× | – |"
    assert lines[4] == "| 64×128 | 4 | 3 | 168 | one | – | **2.00×** |"
