"""Recorded GPU data (flashedu/recorded): load, first, latest and date, one reader per kind (bench,
block_sparse, fa3, fp8, decode, ring, memory, ncu), and the tables, figures and glued numbers the
chapters draw from the recorded files.

Synthetic runs check what a reader computes; on the real files, the values the chapters show are
the recorded JSON's, recomputed here independently from the raw rows. CPU only: chapter 7's two
measured cells are run with ``glue`` replaced by a recorder.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import plotly.graph_objects as go
import pytest

from flashedu import recorded
from flashedu.iomodel import simulate
from flashedu.recorded import block_sparse as bsm
from flashedu.recorded.fa3 import ablation_summary, ablation_table
from flashedu.recorded.fp8 import (fp8_config, fp8_config_table, fp8_design_costs, fp8_speed_table, fp8_summary,
                                   tuning_cost)
from flashedu.viz.fa3_measured import ablation_figure, fp8_speed_figure
from flashedu.viz.peak_memory import memory_figure


# ---- the package: load, first, latest, date, one reader per kind ----------------------------

def test_recorded_first_is_none_where_nothing_is_recorded(tmp_path, monkeypatch):
    assert recorded.first("memory") == recorded.load("memory")[0]
    monkeypatch.setattr(recorded, "DATA", tmp_path)
    assert recorded.first("memory") is None
    (tmp_path / "memory").mkdir()
    assert recorded.first("memory") is None  # a folder with no file is nothing recorded either


def test_recorded_latest_is_the_newest_by_provenance_date(tmp_path, monkeypatch):
    import json

    monkeypatch.setattr(recorded, "DATA", tmp_path)
    assert recorded.latest("bench") is None
    (tmp_path / "bench").mkdir()
    # The file names sort the other way round from the dates: latest must read the dates.
    for name, when in (("a-new.json", "2026-11-22T04:00:00+00:00"), ("b-old.json", "2026-11-01T00:00:00+00:00")):
        (tmp_path / "bench" / name).write_text(json.dumps({"info": {"date": when}, "name": name}))
    assert recorded.latest("bench")["name"] == "a-new.json"
    assert recorded.first("bench")["name"] == "a-new.json"
    (tmp_path / "bench" / "c.json").write_text(json.dumps({"provenance": {"date": "2026-12-01"}, "name": "c"}))
    assert recorded.latest("bench")["name"] == "c"
    (tmp_path / "bench" / "d.json").write_text(json.dumps({"rows": []}))
    with pytest.raises(ValueError, match="provenance date"):
        recorded.latest("bench")


def test_every_recorded_kind_has_a_reader_and_a_date():
    import importlib

    readers = {"bench": "bench", "v2_tuning": "bench", "block_sparse": "block_sparse", "fa3": "fa3",
               "fp8": "fp8", "fp8_tuning": "fp8", "decode": "decode", "ring": "ring", "memory": "memory",
               "ncu": "ncu", "fa3_gluon": "fa3_gluon", "fa3_timeline": "fa3_gluon",
               "fa3_gluon_tuning": "fa3_gluon", "host": "host", "v2_bwd_ablation": "v2_bwd",
               "v2_speed": "v2_speed",
               "block_sparse_bwd_ablation": "block_sparse"}
    kinds = sorted(p.name for p in recorded.DATA.iterdir() if any(p.glob("*.json")))
    assert kinds == sorted(readers), "a new kind of recorded data needs a reader in flashedu/recorded/"
    for kind, reader in readers.items():
        assert recorded.date(recorded.latest(kind))
        assert importlib.import_module(f"flashedu.recorded.{reader}").__doc__.count(f'"{kind}"')


# ---- host time (chapter 7) -------------------------------------------------------------------

def _host_run(extra_rows=(), loop=True):
    """A host-time run shaped like flashedu.bench.host's: the rows summary() reads."""
    rows = []
    for case, impls in (("forward, N=1k", ("v2_triton", "v2_triton_lse")),
                        ("forward, q/k/v need grad", ("v2_triton",)),
                        ("decode, N_k=8k", ("split_kv_triton",)),
                        ("decode, N_k=32k", ("split_kv_triton",))):
        for impl in impls:
            for launch, host in (("bound", 20.0), ("triton", 50.0)):
                rows.append(dict(case=case, impl=impl, launch=launch, host_us=host,
                                 eager_ms=0.03, gpu_ms=0.02))
        rows.append(dict(case=case, impl="sdpa", launch=None, host_us=18.0, eager_ms=0.025,
                         gpu_ms=0.02))
    for r in rows:
        if loop:
            r["loop_us"] = 1e3 * max(r["host_us"] / 1e3, r["gpu_ms"])
    return dict(provenance=dict(gpu="NVIDIA H200", date="2026-12-04T00:00:00", commit="x"),
                rows=rows + list(extra_rows))


def test_host_summary_reads_old_runs_and_the_one_launch_ablation():
    from flashedu.recorded import host

    old = host.summary(_host_run(loop=False))
    assert old["host_dec8_1l_us"] is None and old["loop_dec8_us"] is None and old["lx_dec8"] is None
    forced = [dict(case="decode, N_k=8k", impl=f"split_kv_triton_{n}launch", launch="bound",
                   host_us=h, eager_ms=0.03, gpu_ms=g, loop_us=lp)
              for n, h, g, lp in ((1, 17.0, 0.015, 19.0), (2, 35.0, 0.010, 37.0))]
    new = host.summary(_host_run(forced))
    assert (new["host_dec8_1l_us"], new["host_dec8_2l_us"]) == (17.0, 35.0)
    assert new["gpu_dec8_1l_us"] == pytest.approx(15.0) and new["loop_dec8_2l_us"] == 37.0
    assert new["lx_dec8"] == pytest.approx(20.0 / 20.0) and new["host_dec32_1l_us"] is None
    lines = host.table_text(_host_run(forced)).splitlines()
    assert any("split_kv_2launch: bound" in line for line in lines)
    assert max(map(len, lines)) <= 84, "the table is printed in chapter 7: one page wide"


# ---- memory, bench, ncu: provenance and the figures drawn from them -------------------------

def test_recorded_memory_has_provenance_and_draws():
    mem = recorded.load("memory")
    assert mem, "no recorded memory measurements in flashedu/recorded/data/memory"
    for rec in mem:
        assert {"gpu", "driver", "torch", "triton", "date"} <= rec["provenance"].keys()
        fig = memory_figure(rec)
        assert len(fig.data) >= 2
        assert rec["provenance"]["gpu"] in fig.layout.title.text
    with pytest.raises(FileNotFoundError):
        recorded.load("no_such_kind")


def test_memory_figure_filters_providers_and_names_missing_ones():
    rec = recorded.load("memory")[0]
    fig = memory_figure(rec, providers=("standard_torch", "sdpa_flash"))
    assert len(fig.data) == 2
    with pytest.raises(ValueError, match="not in the recording"):
        memory_figure(rec, providers=("no_such_kernel",))


def test_recorded_bench_has_provenance_and_every_case_draws():
    from flashedu.recorded.bench import ratio, timing_rows
    from flashedu.viz.tflops import PASSES, tflops_figure

    for rec in recorded.load("bench") + recorded.load("v2_tuning"):
        assert {"gpu", "driver", "torch", "triton", "date", "commit"} <= rec["info"].keys()
        rows = timing_rows(rec)
        assert rows and all(r["fwd_ms"] > 0 for r in rows)
        fig = tflops_figure(rec)
        n_cases = len(fig.layout.updatemenus[0].buttons)
        assert n_cases == len(PASSES) * len({r["D"] for r in rows}) * 2
        # Each button shows exactly its own case's traces.
        for k, b in enumerate(fig.layout.updatemenus[0].buttons):
            vis = b.args[0]["visible"]
            assert any(vis) and all(v == (t.meta == k) for v, t in zip(vis, fig.data))
        # It opens on the forward pass at d = 128, unmasked, where the file has it.
        start = fig.layout.updatemenus[0].active
        assert fig.layout.updatemenus[0].buttons[start].label == (
            "forward, d = 128" if any(r["D"] == 128 for r in rows) else "forward, d = " + str(min(r["D"] for r in rows)))
        assert all(t.visible == (t.meta == start) for t in fig.data)
        r = rows[0]
        assert ratio(rec, impl=r["impl"], peer=r["impl"], pass_="fwd", D=r["D"], causal=r["causal"], N=r["N"]) == 1


def test_recorded_ncu_traffic_draws_model_and_measured():
    from flashedu.viz.measured_traffic import model_vs_measured_figure

    for rec in recorded.load("ncu"):
        assert {"gpu", "driver", "commit"} <= rec["provenance"].keys()
        rows = [r for r in rec["rows"] if "read_bytes" in r]
        assert rows, "every ncu case failed"
        for r in rows:  # the model's count comes from a simulation at the kernel's blocks
            m = simulate(r["algorithm"], N=r["N"], d=r["D"], heads=r["H"], batch=r["B"], causal=r["causal"],
                         block_r=r["block_r"], block_c=r["block_c"], sram_bytes=1 << 30)
            assert (m.read_bytes, m.write_bytes) == (r["model_read_bytes"], r["model_write_bytes"])
        fig = model_vs_measured_figure(rec)
        assert len(fig.data) == 4 and len(fig.data[0].x) == len(rows)


# ---- block_sparse: chapter 5's density-vs-time table, ratios to dense v2 --------------------

def toy_run():
    row = lambda impl, pat, s, ms, p="fwd", D=64: dict(impl=impl, pattern=pat, target_density=s,  # noqa: E731
                                                        density=s, pass_=p, ms=ms, N=4096, D=D)
    return dict(rows=[row("v2_triton", "dense", 1.0, 2.0), row("block_sparse_triton", "dense", 1.0, 2.2),
                      row("block_sparse_triton", "random", 0.25, 0.6), row("flex_attention", "random", 0.25, 0.9),
                      row("block_sparse_triton", "random", 0.1, 0.3, D=128)])  # no dense v2 at D=128


def test_ratios_divide_by_dense_v2_of_the_same_shape_and_pass():
    rows = bsm.ratios(toy_run())
    assert [(r.pattern, r.target) for r in rows] == [("dense", 1.0), ("random", 0.25)]
    assert rows[0].ours == pytest.approx(1.1) and rows[0].flex is None
    assert rows[1].ours == pytest.approx(0.3) and rows[1].flex == pytest.approx(0.45)
    assert bsm.worst(rows, target=0.25) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="target=0.5"):
        bsm.worst(rows, target=0.5)


def test_markdown_table_has_a_row_per_pattern_and_a_column_pair_per_head_dim():
    text = bsm.markdown_table(bsm.ratios(toy_run()), N=4096)
    lines = text.splitlines()
    assert lines[0] == "| tiles | ours, d=64 | Flex, d=64 |"
    assert lines[2] == "| dense 100% | 1.10x | – |" and lines[3] == "| random 25% | 0.30x | 0.45x |"
    with pytest.raises(ValueError, match="N=8192"):
        bsm.markdown_table(bsm.ratios(toy_run()), N=8192)


def test_flex_speeds_split_the_backward_off_the_forward():
    row = lambda impl, p, ms, D=64, pat="random", s=0.25: dict(  # noqa: E731
        impl=impl, pattern=pat, target_density=s, density=s, pass_=p, ms=ms, N=4096, D=D)
    run = dict(rows=[row("block_sparse_triton", "fwd", 1.0), row("block_sparse_triton", "fwd+bwd", 3.0),
                     row("flex_attention", "fwd", 1.5), row("flex_attention", "fwd+bwd", 3.9),
                     row("block_sparse_triton", "fwd", 1.0, D=128), row("flex_attention", "fwd", 1.2, D=128)])
    (speed,) = bsm.flex_speeds(run)  # d=128 has no fwd+bwd rows: left out
    assert (speed.D, speed.fwd, speed.bwd) == (64, pytest.approx(1.5), pytest.approx(1.2))
    lines = bsm.flex_markdown([speed], N=4096).splitlines()
    assert lines[0] == "| tiles | forward, d=64 | backward, d=64 |"
    assert lines[2] == "| random 25% | 1.50x | 1.20x |"
    with pytest.raises(ValueError, match="N=8192"):
        bsm.flex_markdown([speed], N=8192)
    # The summary's ranges, on the recorded run (chapters 5 and 8 quote them).
    run = recorded.latest("block_sparse")
    speeds, facts = bsm.flex_speeds(run), bsm.summary(run)
    assert {(r.N, r.D) for r in speeds} == {(N, D) for N in (4096, 8192, 16384) for D in (64, 128)}
    for D in (64, 128):
        bwd = [r.bwd for r in speeds if r.D == D]
        assert (facts[f"flex_bwd_lo_d{D}"], facts[f"flex_bwd_hi_d{D}"]) == (min(bwd), max(bwd))
    assert facts["flex_fwd_lo"] == min(r.fwd for r in speeds)


def test_backward_ablation_table_and_gains():
    run = dict(rows=[dict(D=128, N=4096, target_density=0.5, bwd_ms={"flex_attention": 2.0, "a": 2.5, "b": 2.0},
                          flex_over={"a": 0.8, "b": 1.0})])
    lines = bsm.bwd_ablation_markdown(run).splitlines()
    assert lines[0] == "| d | N | tiles | a | b |" and lines[2] == "| 128 | 4k | 50% | 0.800x | 1.000x |"
    assert bsm.bwd_gain(run, "a", "b") == [pytest.approx(1.25)]
    assert bsm.bwd_gain(run, "a", "missing") == []


def test_the_recorded_backward_ablation_beside_flex():
    run = recorded.latest("block_sparse_bwd_ablation")
    assert not run.get("partial") and run["rows"]
    for r in run["rows"]:
        assert set(r["bwd_ms"]) >= {"flex_attention", "prefetch"}
        for name, ratio in r["flex_over"].items():
            assert ratio == pytest.approx(r["bwd_ms"]["flex_attention"] / r["bwd_ms"][name])


def test_the_recorded_run_is_complete_and_time_follows_density():
    # Whether the targets (bsm.TARGETS) are met is reported in chapter 5 from these
    # numbers, not asserted here: a benchmark measures speed, and the worst case sits at the
    # edge of run-to-run noise. What must hold is that the run is whole and correct, and that
    # fewer tiles always took less time.
    run = recorded.load("block_sparse")[0]
    assert not run.get("partial") and all(c["ok"] for c in run["checks"])
    rows = bsm.ratios(run)
    assert {(r.N, r.D) for r in rows} == {(N, D) for N in (4096, 8192, 16384) for D in (64, 128)}
    for N, D, pass_ in {(r.N, r.D, r.pass_) for r in rows}:
        by = {r.target: r.ours for r in rows if (r.N, r.D, r.pass_) == (N, D, pass_) and r.pattern in ("random", "dense")}
        assert by[0.1] < by[0.25] < by[0.5] < by[1.0], (N, D, pass_, by)
    walk = bsm.index_walk_cost(run)
    assert set(walk) == {64, 128} and all(len(v) == 3 for v in walk.values())
    late = bsm.prefetch_gain(run)  # three densities at three N
    assert set(late) == {64, 128} and all(len(v) == 9 for v in late.values())
    assert set(bsm.picked_tiles(run)) == {64, 128}
    assert all(r["timer"] == "graph" for r in run["rows"]), "a row was timed eagerly: see its timer"


def test_summary_quotes_the_worst_ratio_and_flex_over_ours():
    run = dict(toy_run(), provenance=dict(gpu="G", date="2026-01-02T00:00"))
    run["rows"] += [dict(r, pass_="fwd+bwd") for r in run["rows"]]
    run["rows"] += [dict(impl="block_sparse_triton", pattern=p, target_density=s, density=s, pass_=ps, ms=1.0,
                         N=4096, D=64) for p, s in (("random", 0.5), ("random", 0.1)) for ps in ("fwd", "fwd+bwd")]
    facts = bsm.summary(run)
    assert facts["meas_gpu"] == "G" and facts["meas_date"] == "2026-01-02"
    assert facts["meas_25"] == pytest.approx(0.3) and facts["speedup_25"] == pytest.approx(1 / 0.3)
    assert facts["dense_d64"] == pytest.approx(1.1) and "dense_d128" not in facts
    assert facts["flex_over_ours_25"] == pytest.approx(1.5) and facts["meas_big_k"] == 4
    assert [p["density"] for p in bsm.figure_points(run)] == [0.5, 0.25, 0.1]
    assert "prefetch_lo_d64" not in facts and "host_lo_us" not in facts  # not in this run
    assert "row_tiles_small" not in facts  # the run names no block size
    run["config"] = dict(block=128)
    facts = bsm.summary(run)
    assert (facts["meas_small_k"], facts["row_tiles_small"], facts["row_tiles_10"]) == (4, 32, pytest.approx(3.2))
    # The ablations, the picked tiles and the host time, where a run has them.
    run["rows"] += [dict(impl=bsm.NO_PREFETCH, pattern="random", target_density=0.25, density=0.25, pass_="fwd",
                         ms=0.75, N=4096, D=64)]
    run["rows"][2].update(host_us=150.0, config=[128, 64, 8, 3])
    facts = bsm.summary(run)
    assert facts["prefetch_lo_d64"] == facts["prefetch_hi_d64"] == pytest.approx(1.25)
    assert facts["tiles_d64"] == "128 × 64, 8 warps, 3 stages"
    assert facts["tiles_kb_d64"] == pytest.approx(2 * 64 * (128 + 2 * 3 * 64) / 1024)
    assert "tiles_per_sm_d64" not in facts  # GPU "G" has no preset
    run["provenance"]["gpu"] = "NVIDIA H100 80GB HBM3"
    assert bsm.summary(run)["tiles_per_sm_d64"] == 228 // 64
    assert facts["host_lo_us"] == 150.0 and facts["gpu_min_us"] == pytest.approx(300)
    run["rows"][1]["config"] = [128, 64, 8, 4]  # another mask kept more stages
    assert bsm.picked_tiles(run)[64] == "128 × 64, 8 warps, 3 or 4 stages"


# ---- fa3 and fp8: chapter 6's measured tables and figures -----------------------------------

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


def test_recorded_fp8_end_to_end_rows_add_up():
    from flashedu.recorded.fp8 import E2E, fp8_e2e_table

    run = recorded.latest("fp8")
    table = fp8_e2e_table(run)
    assert {r["N"] for r in table} == {r["N"] for r in run["rows"] if r.get("impl") == E2E}
    for r in table:
        assert r["speedup"] == pytest.approx(r["fp16_ms"] / r["e2e_ms"])
        # the quantiser's three tensors, one of them alone, and a kernel all cost something,
        # and the drop-in is not faster than its kernel alone
        assert 0 < r["v_ms"] < r["quant_ms"] and 0 < r["q_ms"] < r["quant_ms"]
        assert r["kernel_ms"] < r["e2e_ms"] and 0 < r["quant_share"] < 1
        # the kernel named is the one the drop-in chose (the bench row records it)
        assert r["attend"] in ("fp8_gluon", "fp8_triton")
    if run["provenance"]["capability"] == "sm_90":
        assert all(r["attend"] == "fp8_gluon" for r in table)


def test_fp8_design_costs_on_synthetic_rows():
    run = {"provenance": PROV, "rows": [
        _fp8_row(128, 4096, 1.0), _fp8_row(128, 4096, 1.1, fold_v=False), _fp8_row(128, 4096, 0.8, bm=64, warps=4),
        _fp8_row(128, 8192, 2.0), _fp8_row(128, 8192, 2.0, bm=64, warps=4, max_regs=168),
        _fp8_row(64, 4096, 9.0, fold_v=False)]}
    costs = fp8_design_costs(run)
    assert costs["two_acc"] == pytest.approx([10.0])  # only N = 4096 has both accumulator variants
    assert costs["rows128"] == pytest.approx([25.0, 0.0])


def test_fp8_gluon_table_pairs_the_fastest_of_each_kernel_per_shape():
    from flashedu.recorded.fp8 import fp8_gluon_table

    gluon = dict(kind="time", impl="fp8_gluon GluonConfig(block_n=128, stages=2)", D=128,
                 N=4096, ms=0.5, tflops=2.0)
    run = {"provenance": PROV, "rows": [
        _fp8_row(128, 4096, 1.0), _fp8_row(128, 4096, 0.6, bm=64, warps=4), gluon,
        dict(gluon, ms=0.8, impl="fp8_gluon GluonConfig(block_n=128, stages=3)"),
        _fp8_row(128, 8192, 2.0)]}  # no Gluon row at 8192: no entry
    (row,) = fp8_gluon_table(run)
    assert (row["D"], row["N"], row["gluon_config"]) == (128, 4096, "block_n=128, stages=2")
    assert row["x_triton"] == pytest.approx(0.6 / 0.5) and row["gluon_tflops"] == 2.0
    from flashedu.recorded.fp8 import fp8_gluon_summary

    summary = fp8_gluon_summary(run, N=4096)
    assert summary == {"g8_tflops": 2.0, "g8_triton_tflops": 1.0,
                       "g8_x_128_lo": pytest.approx(1.2), "g8_x_128_hi": pytest.approx(1.2)}
    assert fp8_gluon_summary({"provenance": PROV, "rows": [_fp8_row(128, 4096, 1.0)]}) == {}


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


# ---- decode and ring: chapter 7's measured sections, its glued numbers and prose ------------

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "book" / "src" / "ch07_beyond_one_block.py"
DECODE = sorted((recorded.DATA / "decode").glob("*.json"))
RING = sorted((recorded.DATA / "ring").glob("*.json"))


def _cells(text: str) -> list[tuple[str, str]]:
    """(kind, source) of each percent-format cell, markdown comment markers removed."""
    out = []
    for block in re.split(r"^# %%", text, flags=re.M)[1:]:
        head, _, body = block.partition("\n")
        if "[markdown]" in head:
            out.append(("markdown", "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#")
                                              for line in body.splitlines())))
        else:
            out.append(("code", body))
    return out


CELLS = _cells(SRC.read_text())


def _measured_cells() -> list[int]:
    """Indices of the two code cells that read the recorded files."""
    idx = [i for i, (kind, src) in enumerate(CELLS) if kind == "code"
           and ('recorded.latest("decode")' in src or 'recorded.latest("ring")' in src)]
    assert len(idx) == 2, "expected one measured cell for decoding and one for the ring"
    return idx


@pytest.fixture(scope="module")
def glued(request):
    """Run the chapter's two measured cells, in order, with ``glue`` recording and figures not shown."""
    values = {}
    mp = pytest.MonkeyPatch()
    mp.setattr(go.Figure, "show", lambda self, *a, **k: None)
    ns = {"glue": lambda name, value, **kw: values.__setitem__(name, value)}
    try:
        for i in _measured_cells():
            exec(compile(CELLS[i][1], f"{SRC.name}[cell {i}]", "exec"), ns)
    finally:
        mp.undo()
    return values


@pytest.fixture(scope="module")
def decode():
    assert DECODE, "no recorded decode file in flashedu/recorded/data/decode/"
    return json.loads(DECODE[0].read_text())


@pytest.fixture(scope="module")
def ring():
    assert RING, "no recorded ring file in flashedu/recorded/data/ring/"
    return json.loads(RING[0].read_text())


def _row(decode, impl, B, N_k):
    (r,) = [r for r in decode["rows"] if r["impl"] == impl and r["B"] == B and r["N_k"] == N_k]
    assert "ms" in r, f"{impl} B={B} N_k={N_k} was not timed: {r}"
    return r


# --- decoding -----------------------------------------------------------------------------------

def test_decode_file_is_the_one_the_chapter_reads(decode):
    assert recorded.load("decode")[0] == decode
    p = decode["provenance"]
    assert p["gpu"] and p["date"] and p["runtime"] == "compiled"


def _flash_attn_splits(programs, tiles, sms):
    """flash-attn's flash-decoding split count, written out independently of plan.py."""
    import math
    eff = {s: programs * s / sms / math.ceil(programs * s / sms) for s in range(1, min(128, sms, tiles) + 1)
           if s == 1 or math.ceil(tiles / s) != math.ceil(tiles / (s - 1))}
    return min(s for s, e in eff.items() if e >= 0.85 * max(eff.values()))


def test_decode_glued_numbers_match_the_file(glued, decode):
    hbm_GBps = 4.8e3 if decode["provenance"]["gpu"].endswith("H200") else None
    assert hbm_GBps, "update this test for a GPU other than the H200"
    timed = [r for r in decode["rows"] if "ms" in r]
    B1, Bmax = min(r["B"] for r in timed), max(r["B"] for r in timed)
    n, n0 = max(r["N_k"] for r in timed), min(r["N_k"] for r in timed)
    split, one, sdpa = (_row(decode, i, B1, n) for i in ("split_kv_triton", "split_kv_triton_1split", "sdpa_gqa"))
    bsplit, bsdpa = _row(decode, "split_kv_triton", Bmax, n), _row(decode, "sdpa_gqa", Bmax, n)
    # The GPU's own time (CUDA-graph replay), as the file records it beside the eager median.
    t = {k: r["graph_ms"] for k, r in (("split", split), ("one", one), ("sdpa", sdpa),
                                         ("bsplit", bsplit), ("bsdpa", bsdpa))}
    v2 = _row(decode, "v2_triton", B1, n)
    want = {
        "dec_gpu": decode["provenance"]["gpu"],
        "dec_date": decode["provenance"]["date"][:10],
        "dec_meas_Nk_k": n // 1024,
        "dec_meas_splits": split["num_splits"],
        "dec_meas_split_TBps": split["cache_bytes"] / t["split"] / 1e9,
        "dec_meas_one_GBps": one["cache_bytes"] / t["one"] / 1e6,
        "dec_meas_v2_GBps": v2["cache_bytes"] / v2["graph_ms"] / 1e6,
        "dec_meas_speedup": t["one"] / t["split"],
        "dec_hbm_TBps": hbm_GBps / 1e3,
        "dec_meas_split_hbm": 100 * split["cache_bytes"] / t["split"] / 1e6 / hbm_GBps,
        "dec_meas_sdpa_TBps": sdpa["cache_bytes"] / t["sdpa"] / 1e9,
        "dec_meas_sdpa_hbm": 100 * sdpa["cache_bytes"] / t["sdpa"] / 1e6 / hbm_GBps,
        "dec_meas_sdpa_over_split": t["split"] / t["sdpa"],
        "dec_meas_B_small": B1,
        "dec_meas_B_big": Bmax,
        "dec_meas_big_splits": bsplit["num_splits"],
        "dec_our_programs": split["num_splits"] * B1 * split["H_kv"],
        "dec_sms": decode["provenance"]["sms"],
        # flash-attn's rule, recomputed here by hand: the smallest eligible count whose last
        # wave is at least 85% as full as the best count's (see the next lines)
        "dec_fa_splits": _flash_attn_splits(B1 * split["H_kv"], -(-n // 128), decode["provenance"]["sms"]),
        "dec_meas_big_split_hbm": 100 * bsplit["cache_bytes"] / t["bsplit"] / 1e6 / hbm_GBps,
        "dec_meas_big_sdpa_hbm": 100 * bsdpa["cache_bytes"] / t["bsdpa"] / 1e6 / hbm_GBps,
        "dec_meas_small_k": n0 // 1024,
        # the GPU's own time (CUDA graph) where recorded, and the eager call's
        "dec_meas_small_split_us": 1e3 * _row(decode, "split_kv_triton", B1, n0).get(
            "graph_ms", _row(decode, "split_kv_triton", B1, n0)["ms"]),
        "dec_meas_small_one_us": 1e3 * _row(decode, "split_kv_triton_1split", B1, n0).get(
            "graph_ms", _row(decode, "split_kv_triton_1split", B1, n0)["ms"]),
        "dec_meas_small_eager_us": 1e3 * _row(decode, "split_kv_triton", B1, n0)["ms"],
        "dec_meas_err": max(r["max_err"] for r in decode["rows"] if "max_err" in r),
    }
    for name, value in want.items():
        assert name in glued, f"the chapter no longer glues {name}"
        got = glued[name]
        if isinstance(value, str):
            assert got == value, name
        else:
            assert got == pytest.approx(value, rel=1e-3), name  # cache_GBps is rounded to 0.1 in the file


def test_decode_claims_in_the_prose_hold(glued):
    g = glued
    assert g["dec_meas_speedup"] > 5, "the prose says the splits buy a large factor"
    assert g["dec_meas_sdpa_over_split"] < 1.05, "the prose: the tile was the last step to SDPA's speed"
    assert g["dec_meas_big_splits"] == 1, "the prose says the heuristic chose 1 split at the largest batch"
    assert g["dec_meas_small_split_us"] < g["dec_meas_small_one_us"], "the prose: splits pay on the GPU at 4k"
    assert g["dec_meas_small_eager_us"] > 2 * g["dec_meas_small_split_us"], "the prose: the eager call is host-bound"
    assert g["dec_meas_v2_GBps"] < 2 * g["dec_meas_one_GBps"]
    assert g["dec_meas_one_GBps"] / (1e3 * g["dec_hbm_TBps"]) < 0.1, "the prose: one split reads a few percent of HBM"
    assert g["dec_meas_split_hbm"] > 50, "the prose: the splits reach most of the bandwidth"
    for name in ("dec_meas_split_hbm", "dec_meas_sdpa_hbm", "dec_meas_big_split_hbm", "dec_meas_big_sdpa_hbm"):
        assert 0 < g[name] < 100, f"{name}: above the datasheet bandwidth means the byte count is wrong"


def test_decode_figure_draws_the_real_file(decode):
    from flashedu.viz.decode import IMPL_LABELS, measured_decode_figure

    fig = measured_decode_figure(decode)
    timed = [r for r in decode["rows"] if "ms" in r]
    # one line per labelled implementation and batch; ablation rows (forced one or two
    # launches, split counts) stay out of the figure
    series = {(r["impl"], r["B"]) for r in timed if r["impl"] in IMPL_LABELS}
    assert len(fig.data) == len(series)
    assert {d.name for d in fig.data} == {IMPL_LABELS[i] for i, _ in series}
    Bs = sorted({r["B"] for r in timed})
    assert [a.text for a in fig.layout.annotations][:len(Bs)] == [f"batch {B}" for B in Bs]
    title = fig.layout.title.text
    assert decode["provenance"]["gpu"] in title and decode["provenance"]["date"][:10] in title
    assert fig.layout.xaxis.type == "log" and "N_k" in fig.layout.xaxis.title.text
    assert "GB/s" in fig.layout.yaxis.title.text
    assert any(s.y0 == pytest.approx(4800.0) for s in fig.layout.shapes), "the HBM line is missing"
    top = max(r["cache_bytes"] / r["graph_ms"] / 1e6 for r in timed)
    assert fig.layout.yaxis.range[1] >= top
    assert "GPU time" in fig.layout.yaxis.title.text  # not eager calls (the file has graph times)
    first = sorted((r["N_k"], r["cache_bytes"] / r["graph_ms"] / 1e6) for r in timed
                   if r["impl"] == "split_kv_triton" and r["B"] == Bs[0])
    assert list(fig.data[0].y) == pytest.approx([y for _, y in first])


# --- the ring -----------------------------------------------------------------------------------

def _slowest(ring, N, layout, causal):
    rs = [r for r in ring["rows"]
          if r["test"] == "ring" and r["N"] == N and r["layout"] == layout and r["causal"] == causal]
    assert len(rs) == ring["provenance"]["world"], "one row per rank"
    return max(r["seconds"] for r in rs)


def _single(ring, N, causal):
    (r,) = [r for r in ring["rows"] if r["test"] == "single_gpu" and r["N"] == N and r["causal"] == causal]
    return r["seconds"]


def test_ring_file_is_the_one_the_chapter_reads(ring):
    assert recorded.load("ring")[0] == ring
    p = ring["provenance"]
    assert p["world"] >= 2 and p["nccl_env"]["NCCL_NVLS_ENABLE"] == "0"


def test_ring_glued_numbers_match_the_file(glued, ring):
    rows, world = ring["rows"], ring["provenance"]["world"]
    Ns = sorted({r["N"] for r in rows if r["test"] == "ring"})
    N, small = Ns[-1], Ns[0]
    contiguous = sorted((r for r in rows if r["test"] == "ring" and r["N"] == N and r["layout"] == "contiguous"
                         and r["causal"]), key=lambda r: r["rank"])
    busy = [sum(r["compute_s"]) for r in contiguous]

    def eff(layout):
        rs = [r["compute_s"] for r in rows
              if r["test"] == "ring" and r["N"] == N and r["layout"] == layout and r["causal"]]
        slowest_steps = sum(max(c[t] for c in rs) for t in range(len(rs[0])))
        return 100 * sum(map(sum, rs)) / (world * slowest_steps)

    ring_rows = [r for r in rows if r["test"] == "ring"]
    sends = [r for r in rows if r["test"] == "send_kv" and r["N"] == N]
    want = {
        "ring_gpu": ring["provenance"]["gpu"],
        "ring_world": world,
        "ring_date": ring["provenance"]["date"][:10],
        "ring_meas_err": max(r["max_err"] for r in rows if r["test"] == "check"),
        "ring_check_N": max(r["N"] for r in rows if r["test"] == "check"),
        "ring_meas_Nk": N // 1024,
        "ring_meas_per_gpu_k": N // world // 1024,
        "ring_speed_full": _single(ring, N, False) / _slowest(ring, N, "contiguous", False),
        "ring_speed_contiguous": _single(ring, N, True) / _slowest(ring, N, "contiguous", True),
        "ring_speed_zigzag": _single(ring, N, True) / _slowest(ring, N, "zigzag", True),
        "ring_speed_striped": _single(ring, N, True) / _slowest(ring, N, "striped", True),
        "ring_busy_least_ms": 1e3 * min(busy),
        "ring_busy_most_ms": 1e3 * max(busy),
        "ring_eff_meas_contiguous": eff("contiguous"),
        "ring_eff_meas_zigzag": eff("zigzag"),
        "ring_eff_meas_striped": eff("striped"),
        "ring_small_k": small // 1024,
        "ring_small_best_causal": max(_single(ring, small, True) / _slowest(ring, small, lay, True)
                                      for lay in ("contiguous", "zigzag", "striped")),
        "ring_wait_max_ms": 1e3 * max(max(r["wait_s"]) for r in ring_rows),
        "ring_wait_share": 100 * max(sum(r["wait_s"]) / r["seconds"] for r in ring_rows),
        "ring_send_ms": 1e3 * max(r["seconds"] for r in sends),
        "ring_send_GBps": min(r["bytes"] / r["seconds"] / 1e9 for r in sends),
        "ring_step_ms": 1e3 * min(r["compute_s"][0] for r in ring_rows if r["N"] == N),
    }
    for name, value in want.items():
        assert name in glued, f"the chapter no longer glues {name}"
        if isinstance(value, str):
            assert glued[name] == value, name
        else:
            assert glued[name] == pytest.approx(value, rel=1e-6), name
    # 2 ranks, contiguous, causal: step 0 both ranks do half a block, step 1 one rank a whole one.
    if world == 2:
        assert glued["ring_eff_model_contiguous"] == pytest.approx(100 * 2 / 3, abs=0.01)


def test_ring_claims_in_the_prose_hold(glued):
    g = glued
    assert g["ring_meas_err"] <= 2 ** -9, "the prose says: one step of fp16's last bit for an output below 4"
    assert g["ring_speed_full"] > 0.9 * g["ring_world"], "the prose says non-causal is close to the ideal"
    for fix in ("zigzag", "striped"):
        assert g[f"ring_speed_{fix}"] > 1.2 * g["ring_speed_contiguous"], f"the prose says {fix} fixes the imbalance"
        assert g[f"ring_eff_meas_{fix}"] > 95
    assert g["ring_busy_most_ms"] > 2 * g["ring_busy_least_ms"]
    assert abs(g["ring_eff_meas_contiguous"] - g["ring_eff_model_contiguous"]) < 3, "the prose says measured = model"
    assert g["ring_speed_contiguous"] > 1
    assert g["ring_small_best_causal"] < 1, "the prose says every causal ring lost to one GPU at the smallest size"
    assert g["ring_wait_share"] < 5 and g["ring_wait_max_ms"] < 1, "the prose says the transfers hid"
    assert g["ring_send_ms"] < 0.1 * g["ring_step_ms"]


def test_ring_figure_draws_the_real_file(ring):
    from flashedu.viz.ring import measured_ring_figure

    fig = measured_ring_figure(ring)
    p = ring["provenance"]
    assert f"{p['world']} GPUs" in fig.layout.title.text and p["gpu"] in fig.layout.title.text
    assert p["date"][:10] in fig.layout.title.text
    assert fig.layout.yaxis.type == "log" and "ms" in fig.layout.yaxis.title.text
    assert "sequence length" in fig.layout.xaxis.title.text
    Ns = sorted({r["N"] for r in ring["rows"] if r["test"] == "ring"})
    assert list(fig.data[0].x) == [f"{N // 1024}k" for N in Ns]
    assert list(fig.data[0].y) == pytest.approx([1e3 * _slowest(ring, N, "contiguous", True) for N in Ns])
    names = [t.name for t in fig.data[:6]]
    assert names[4:] == ["one GPU, causal", "one GPU, non-causal"]
    assert list(fig.data[4].y) == pytest.approx([1e3 * _single(ring, N, True) for N in Ns])
    # Right panel: compute per rank at the largest N, the wait stacked on it.
    comp, wait = fig.data[6], fig.data[7]
    assert comp.xaxis == "x2" and list(wait.base) == list(comp.y)
    assert max(wait.y) < 1 and min(comp.y) > 10


# --- the prose --------------------------------------------------------------------------------

def test_every_glued_name_in_the_prose_is_glued_by_the_chapter():
    text = SRC.read_text()
    used = set(re.findall(r"\{glue:text\}`([A-Za-z0-9_]+)", text))
    defined = set(re.findall(r"""glue\(\s*["']([A-Za-z0-9_]+)["']""", text))
    assert used and used <= defined, f"used but never glued: {sorted(used - defined)}"


def test_measured_prose_types_no_number_by_hand():
    """The markdown right after each measured cell quotes measurements only through glue."""
    for i in _measured_cells():
        kind, prose = CELLS[i + 1]
        assert kind == "markdown" and "{glue:text}" in prose
        bare = re.sub(r"\{glue:text\}`[^`]*`", "", prose)
        bare = re.sub(r"`[^`]*`", "", bare)                 # code spans (enable_gqa)
        bare = re.sub(r"\b[A-Za-z]+\d+\b", "", bare)         # fp16, fp32, v2
        numbers = re.findall(r"\d+(?:\.\d+)?", bare)
        assert set(numbers) <= {"2", "4"}, f"cell {i + 1} types numbers by hand: {numbers}"


# The papers' headline numbers beside ours (chapter 8).

def _headline_runs():
    from flashedu.recorded.bench import latest
    return {"bench": latest(), "fa3": recorded.latest("fa3"),
            "fa3_gluon": recorded.latest("fa3_gluon"), "fp8": recorded.latest("fp8")}


def test_headline_table_reads_every_row_from_the_records():
    from flashedu.recorded import papers
    rows = papers.headline_table(_headline_runs())
    assert len(rows) == len(papers.HEADLINES) and all(r["ours_value"] is not None for r in rows)
    fp16 = next(r for r in rows if r["claim"].startswith("fp16 forward, H100"))
    assert "fa3_gluon" in fp16["ours"]  # the fastest fp16 forward recorded
    fa3 = next(r for r in rows if "Table 2" in r["claim"])
    assert fa3["ours_value"] == ablation_summary(_headline_runs()["fa3"], paper_tflops=papers.FA3_ABLATION_TFLOPS)["fa3_best_8448"]
    lines = papers.markdown_table(_headline_runs()).splitlines()
    table = [line for line in lines if line.startswith("|")]
    assert len(table) == 2 + len(rows) and all(line.count("|") == 5 for line in table)
    assert sum(line[:1].isdigit() for line in lines) == len(rows)  # one "why" per row


def test_headline_table_without_records_says_so():
    from flashedu.recorded import papers
    rows = papers.headline_table({})
    assert {r["ours"] for r in rows} == {"not recorded"} and all(r["ours_value"] is None for r in rows)


def test_stage_ladder_and_causal_skip_read_the_ablation_rows():
    from flashedu.recorded.bench import causal_skip, latest, stage_ladder
    bench = latest()
    rows = bench["ablations"]["num-stages"]["rows"]
    ladder = stage_ladder(bench, D=128, N=16384, causal=False)
    want = {r["num_stages"] for r in rows if (r["D"], r["N"], r["causal"]) == (128, 16384, False)
            and r["fwd_status"] == "ok"}
    assert set(ladder) == want and len(want) >= 3
    skip = causal_skip(bench, D=128)
    assert "v2_triton" in skip and all(0.5 < x < 2.5 for x in skip["v2_triton"].values())
    assert stage_ladder(bench, D=999, N=1, causal=False) == {} and causal_skip(bench, D=999) == {}


# ---- the Gluon FA3 kernel: speed, ablation and timeline --------------------------------------

def test_fa3_gluon_run_times_every_schedule_beside_cudnn():
    from flashedu.recorded import fa3_gluon as rec
    from flashedu.ops.fa3.gluon import ABLATIONS

    run = recorded.latest("fa3_gluon")
    assert not run["partial"] and run["provenance"]["gpu"]
    for row in rec.speed_table(run):
        assert "sdpa_cudnn" in row["tflops"] and "fa3_gluon" in row["tflops"], row
        assert set(rec.ablation(run, D=row["D"], N=row["N"], causal=row["causal"])) >= set(ABLATIONS)
    # every timed row was checked against cuDNN first
    for r in rec.timed(run):
        assert r["err"] < 4e-3, r  # fp16 output against fp16 cuDNN


def test_fa3_gluon_variant_effect_is_against_the_default_of_its_own_run():
    from flashedu.recorded import fa3_gluon as rec

    runs = recorded.load("fa3_gluon_tuning")
    effect = rec.variant_effect(runs, "split mask")
    assert effect["low"] <= min(effect["ratios"].values()) <= effect["high"]
    D, causal, N = effect["worst"]
    run = next(r for r in runs if r["provenance"]["commit"] == effect["commits"][0])
    row = next(r for r in rec.speed_table(run) if (r["D"], r["causal"], r["N"]) == (D, causal, N))
    assert effect["low"] == row["tflops"]["fa3_gluon: split mask"] / row["tflops"]["fa3_gluon"]
    assert rec.variant_effect(runs, "no such variant") is None


def test_fa3_gluon_ablation_measures_each_switch_against_its_own_base():
    """Where the registered kernel is another build (persistent, three consumers), the record
    times the one-item two-consumer schedule apart, and the ablation compares with that."""
    from flashedu.recorded import fa3_gluon as rec

    run = recorded.latest("fa3_gluon")
    base_name = rec.PREFIX + "FA3 (all three ideas)"
    based = 0
    for row in rec.speed_table(run):
        t = row["tflops"]
        abl = rec.ablation(run, D=row["D"], N=row["N"], causal=row["causal"])
        assert abl["FA3 (all three ideas)"] == t.get(base_name, t["fa3_gluon"])
        based += base_name in t
    assert based > 0
    for r in rec.timed(run):
        if r["impl"] == base_name:
            assert not r["config"]["persistent"] and r["config"]["consumers"] == 2, r


def test_fa3_gluon_variant_effects_are_one_per_run_oldest_first():
    from flashedu.recorded import date
    from flashedu.recorded import fa3_gluon as rec

    runs = recorded.load("fa3_gluon_tuning")
    effects = rec.variant_effects(runs, "persistent")
    timed = sorted((r for r in runs if rec.variant_effect([r], "persistent")), key=date)
    assert len(effects) == len(timed) >= 2
    for effect, run in zip(effects, timed):
        assert effect == rec.variant_effect([run], "persistent")
        assert effect["commits"] == [run["provenance"]["commit"]]
    assert rec.variant_effects(runs, "no such variant") == []


def test_atomic_dq_table_takes_each_case_fastest_atomic_config():
    from flashedu.recorded.v2_bwd import ATOMIC, GLUON, TWO, atomic_dq_table

    run = recorded.latest("v2_bwd_ablation")
    table = atomic_dq_table(run)
    assert table
    for t in table:
        here = [r for r in run["rows"] if (r["D"], r["N"], r["causal"]) == (t["D"], t["N"], t["causal"])]
        atomic = [r["tflops"] for r in here if r["impl"] == ATOMIC and "tflops" in r]
        assert t["atomic"] == max(atomic)
        assert t["two"] == next(r["tflops"] for r in here if r["impl"] == TWO)
        assert t["ratio"] == t["atomic"] / t["two"]
        gluon = [r["tflops"] for r in here if r["impl"] == GLUON and "tflops" in r]
        assert ("gluon" in t) == bool(gluon)
        if gluon:
            assert t["gluon"] == max(gluon) and t["gluon_ratio"] == t["gluon"] / t["two"]
        # a config that failed (shared memory) or was wrong is a row without a time, never the pick
        assert all(r.get("max_rel_err", 0) < 1e-2 for r in here if "tflops" in r)


def test_gluon_column_leaves_out_the_removed_overlap_build():
    from flashedu.recorded.v2_bwd import ATOMIC, CUDNN, GLUON, TWO, atomic_dq_table, overlap_effect

    def row(impl, tflops, N=1024, config=None):
        return dict(D=128, N=N, causal=False, impl=impl, tflops=tflops,
                    **({} if config is None else {"config": config}))

    rows = []
    for N in (1024, 4096):
        rows += [row(CUDNN, 500.0, N), row(TWO, 300.0, N), row(ATOMIC, 290.0, N, [64, 128, 8, 3])]
    rows += [row(GLUON, 280.0, 1024, [2, False]), row(GLUON, 310.0, 1024, [3, False]),
             row(GLUON, 400.0, 1024, [2, True]),  # faster, but not the kernel in the repo
             row(GLUON, 320.0, 4096, [2]), row(GLUON, 330.0, 4096, [3])]
    table = {r["N"]: r for r in atomic_dq_table({"rows": rows})}
    assert table[1024]["gluon"] == 310.0 and table[1024]["gluon_config"] == (3, False)
    assert table[4096]["gluon"] == 330.0 and table[4096]["gluon_config"] == (3,)
    assert overlap_effect({"rows": rows}) == [400.0 / 310.0]  # 4096 has no overlapped row


def test_peer_table_keeps_cases_where_v2_the_peer_and_cudnn_all_ran():
    from flashedu.recorded.v2_speed import peer_markdown, peer_table

    def row(impl, tflops, N, **extra):
        return dict(impl=impl, D=128, causal=False, N=N, tflops=tflops, **extra)

    rows = [row("v2_triton", 480.0, 4096), row("peer", 400.0, 4096), row("sdpa_cudnn", 600.0, 4096),
            row("fa3_gluon", 590.0, 4096),
            # a peer whose output check failed has no time: the case is left out
            row("v2_triton", 490.0, 16384), row("sdpa_cudnn", 610.0, 16384),
            dict(impl="peer", D=128, causal=False, N=16384, error="ValueError: wrong output"),
            dict(impl="v2_triton picked", D=128, causal=False, N=4096, config="...")]
    (t,) = peer_table({"rows": rows})
    assert (t["N"], t["v2_peer"], t["v2_cudnn"], t["gluon"]) == (4096, 1.2, 0.8, 590.0)
    assert "| 128 | none | 4k | 480 | 400 | 590 | 600 | 1.20 | 0.80 |" in peer_markdown([t])


def test_ratio_range_reads_one_column_at_one_head_dim():
    from flashedu.recorded.v2_speed import ratio_range

    rows = [dict(D=64, v2_peer=1.03), dict(D=128, v2_peer=0.92, gluon=500.0),
            dict(D=128, v2_peer=1.08)]
    assert ratio_range(rows, "v2_peer") == (0.92, 1.08)
    assert ratio_range(rows, "v2_peer", D=64) == (1.03, 1.03)
    assert ratio_range(rows, "gluon") == (500.0, 500.0)
    with pytest.raises(ValueError, match="gluon"):
        ratio_range(rows, "gluon", D=64)


def test_fa3_timeline_phases_are_in_program_order():
    from flashedu.recorded import fa3_gluon as rec

    run = recorded.latest("fa3_timeline")
    summary = rec.timeline_summary(run)
    assert set(summary) == {e["schedule"] for e in run["rows"]}
    for entry in run["rows"]:
        for rows in rec.phases(entry):
            assert rows
            for r in rows:
                spans = [r[p] for p in ("turn", "wait_s", "softmax", "wait_o")]
                assert all(a <= b for a, b in spans)
                assert all(spans[i][1] == spans[i + 1][0] for i in range(3))


def test_fa3_gluon_figures_draw_each_schedule():
    from flashedu.recorded.fa3_gluon import SIM_OF
    from flashedu.viz.fa3_gluon import ablation_figure, timeline_figure

    fig = ablation_figure(recorded.latest("fa3_gluon"))
    assert len(fig.data[0].y) == len(SIM_OF)
    tl = timeline_figure(recorded.latest("fa3_timeline"))
    buttons = tl.layout.updatemenus[0].buttons
    assert len(buttons) == len(SIM_OF)
    for b in buttons:  # each button shows its own measured and model bars, and only those
        visible = b.args[0]["visible"]
        assert 0 < sum(visible) < len(tl.data)
        # and its measured lanes: two warpgroups, or the one 8-warp block without them
        lanes = {y for tr, on in zip(tl.data, visible) if on and tr.xaxis == "x" for y in tr.y}
        assert lanes == set(b.args[1]["yaxis.categoryarray"])
    assert buttons[-1].args[1]["yaxis.categoryarray"] == ["block (8 warps)"]


def test_fa3_gluon_speed_text_has_a_line_per_case_with_the_ratio():
    from flashedu.recorded import fa3_gluon as rec

    run = recorded.latest("fa3_gluon")
    lines = rec.speed_text(run).splitlines()
    table = rec.speed_table(run)
    assert len(lines) == 2 + len(table)
    for line, row in zip(lines[2:], table):
        t = row["tflops"]
        assert line.split()[-2] == f"{t['fa3_gluon'] / t['sdpa_cudnn']:.2f}"
        assert int(line.split()[2]) == row["N"]
