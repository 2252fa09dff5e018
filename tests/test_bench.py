"""The benchmark harness on the CPU: FLOP counts, cases, the results schema, failures and memory
skips recorded as rows, the correctness column, provenance, and a clean refusal without a GPU.
Nothing here times anything: a fake timer calls the function once and returns a constant."""
from __future__ import annotations

import copy
import json

import pytest
import torch

import flashedu
from flashedu import recorded
from flashedu.bench import __main__ as cli
from flashedu.bench import ablations, harness, providers as provmod, runner, schema
from flashedu.bench.cases import HIDDEN, TOKENS, dtype_name, make_case, preset, sweep
from flashedu.bench.flops import attention_flops, tflops
from flashedu.bench.providers import Provider, fits
from flashedu.bench.report import ablation_table, headline, table
from flashedu.exercises import check_attention_flops, check_naive_memory

from conftest import GPU


def fake_timer(fn):
    fn()  # the provider really runs; only the clock is fake
    return 0.5


def wrong_attention(q, k, v, *, causal=False):
    return v.clone()  # the right shape, the wrong function


def boom(q, k, v, *, causal=False):
    raise RuntimeError("no kernel for this shape")


TOY = [make_case(dtype="fp32", D=16, causal=c, N=32, tokens=64, hidden=32) for c in (False, True)]
EXTRA = [Provider("boom", boom, "triton", "v2", True, torch.float32),
         Provider("wrong", wrong_attention, "triton", "v2", False, torch.float32)]


@pytest.fixture(scope="module")
def toy_result():
    return runner.collect(TOY, device="cpu", timer=fake_timer, only=("standard_torch", "sdpa_math"),
                          extra=EXTRA, ceilings={"matmul_bf16_tflops": 100.0}, progress=False)


def rows_of(result, impl, causal=False):
    return next(r for r in result["times"] if r["impl"] == impl and r["causal"] == causal)


# --- FLOPs -----------------------------------------------------------------------------------

def test_flops_match_the_papers_count():
    B, H, N, D = 2, 16, 4096, 128
    fwd = attention_flops("fwd", B=B, H=H, N=N, D=D, causal=False)
    assert fwd == 4 * B * H * N * N * D
    assert attention_flops("fwd", B=B, H=H, N=N, D=D, causal=True) == fwd / 2
    assert attention_flops("bwd", B=B, H=H, N=N, D=D, causal=False) == 2.5 * fwd
    assert attention_flops("fwdbwd", B=B, H=H, N=N, D=D, causal=True) == 3.5 * fwd / 2
    assert tflops(1e12, 1000.0) == pytest.approx(1.0)


@pytest.mark.parametrize("kwargs, exc", [
    (dict(pass_="forward"), ValueError), (dict(N=0), ValueError), (dict(D=True), ValueError),
    (dict(causal=1), TypeError)])
def test_flops_reject_bad_arguments(kwargs, exc):
    args = dict(pass_="fwd", B=1, H=1, N=8, D=8, causal=False) | kwargs
    with pytest.raises(exc, match=next(iter(kwargs)).rstrip("_")):
        attention_flops(**args)


def test_exercise_checker_accepts_the_count_and_rejects_a_wrong_one():
    assert check_attention_flops(lambda p, B, H, N, D, c: attention_flops(p, B=B, H=H, N=N, D=D, causal=c))
    assert not check_attention_flops(lambda p, B, H, N, D, c: 4.0 * B * H * N * N * D)
    assert check_naive_memory(lambda B, H, N: 16 * B * H * N * N)
    assert not check_naive_memory(lambda B, H, N: 12 * B * H * N * N)


# --- cases -----------------------------------------------------------------------------------

def test_full_sweep_holds_tokens_and_hidden_fixed():
    spec = preset("full")
    assert spec["passes"] == ("fwd", "bwd", "fwdbwd")
    cases = sweep(**{k: v for k, v in spec.items() if k != "passes"})
    assert len(cases) == 2 * 3 * 2 * 6
    assert all(c.B * c.N == TOKENS and c.H * c.D == HIDDEN for c in cases)
    assert {c.N for c in cases} == {512, 1024, 2048, 4096, 8192, 16384}
    assert {c.dtype for c in cases} == {"float16", "bfloat16"}
    assert "fp8" in preset("full", fp8=True)["dtypes"]
    quick = preset("quick")
    assert len(sweep(**{k: v for k, v in quick.items() if k != "passes"})) < len(cases) / 4


def test_case_arguments_are_checked():
    with pytest.raises(ValueError, match="N must divide"):
        make_case(dtype="fp16", D=64, causal=False, N=3000)
    with pytest.raises(ValueError, match="D must divide"):
        make_case(dtype="fp16", D=96, causal=False, N=1024, hidden=2000)
    with pytest.raises(ValueError, match="dtype"):
        dtype_name("int8")
    assert dtype_name("BF16") == "bfloat16"


def test_providers_come_from_the_registry(monkeypatch):
    base = dict(backend="triton", chapter=9, fn=boom, summary="", dtypes=(torch.float16,))
    fake = [flashedu.Impl(name="fast", algorithm="v2", **base),
            flashedu.Impl(name="noncausal", algorithm="v2", causal=False, **base),
            flashedu.Impl(name="eight", algorithm="fp8", **base)]
    monkeypatch.setattr(provmod, "registry", lambda **kw: fake)
    monkeypatch.setattr(flashedu.Impl, "why_not", lambda self, **kw: None)
    names = lambda case: [p.name for p in provmod.registered(case, device="cuda")]  # noqa: E731
    assert names(make_case(dtype="fp16", D=64, causal=False, N=1024)) == ["fast", "noncausal"]
    assert names(make_case(dtype="fp16", D=64, causal=True, N=1024)) == ["fast"]
    assert names(make_case(dtype="fp8", D=64, causal=False, N=1024)) == ["eight"]
    assert provmod.peers(make_case(dtype="fp8", D=64, causal=False, N=1024)) == []


# --- measuring -------------------------------------------------------------------------------

def test_a_failing_provider_is_recorded_not_raised(toy_result):
    r = rows_of(toy_result, "boom")
    assert all(r[f"{p}_status"] == "error: RuntimeError: no kernel for this shape" for p in ("fwd", "bwd", "fwdbwd"))
    assert "fwd_ms" not in r
    ok = rows_of(toy_result, "standard_torch")
    assert ok["fwd_status"] == ok["bwd_status"] == ok["fwdbwd_status"] == "ok"
    assert ok["fwd_tflops"] == pytest.approx(
        tflops(attention_flops("fwd", B=2, H=2, N=32, D=16, causal=False), 0.5), abs=0.01)
    assert ok["fwd_frac"] == pytest.approx(ok["fwd_tflops"] / 100.0, abs=1e-4)


def test_a_broken_cuda_context_stops_the_sweep_and_keeps_the_rows(tmp_path):
    """After an illegal memory access every later CUDA call fails: the sweep stops at once,
    keeps the rows it has (the guilty one with its error) and says so, instead of recording
    an error for every provider of every later case."""
    def crash(q, k, v, *, causal=False):
        raise torch.AcceleratorError("CUDA error: an illegal memory access was encountered")

    saved = []
    result = runner.collect(TOY, device="cpu", timer=fake_timer, only=("standard_torch",),
                            extra=[Provider("crash", crash, "triton", "v2", True, torch.float32)],
                            progress=False, log=lambda msg: None, on_case=lambda r: saved.append(r))
    assert "crash fwd" in result["stopped"] and "illegal memory access" in result["stopped"]
    assert [r["impl"] for r in result["times"]] == ["standard_torch", "crash"]  # first case only
    assert rows_of(result, "standard_torch")["fwd_status"] == "ok"
    assert rows_of(result, "crash")["fwd_status"].startswith("error: AcceleratorError")
    assert saved and saved[-1] is result


def test_correctness_column_tells_right_from_wrong(toy_result):
    for causal in (False, True):
        right = rows_of(toy_result, "standard_torch", causal)
        assert right["err"] < 1e-5 and right["grad_err"] < 1e-5
        assert rows_of(toy_result, "wrong", causal)["err"] > 0.1
    assert rows_of(toy_result, "wrong")["bwd_status"] == "skipped: no backward"


def test_memory_skip(monkeypatch):
    naive = Provider("standard_torch", boom, "torch", "standard", True, torch.float16)
    case = make_case(dtype="fp16", D=128, causal=False, N=16384)
    assert not fits(naive, case, with_grad=True, free=40 * 2**30)
    assert fits(naive, case, with_grad=True, free=140 * 2**30)
    assert fits(Provider("v2_triton", boom, "triton", "v2", True, torch.float16), case, with_grad=True, free=1)
    monkeypatch.setattr(harness, "free_bytes", lambda device: 1)
    toy = Provider("standard_torch", flashedu.get("standard_torch").fn, "torch", "standard", True, torch.float32)
    rows = harness.measure(TOY[0], [toy], passes=("fwd", "bwd"), timer=fake_timer, device="cpu")
    assert rows[0]["fwd_status"] == rows[0]["bwd_status"] == "skipped: memory"


def test_inputs_are_fresh_and_not_zero():
    a, b = (harness.make_inputs(TOY[0], device="cpu") for _ in range(2))
    assert all(t.abs().sum() > 0 for t in a)
    assert not torch.equal(a[0], b[0])


def test_collect_leaves_out_cases_done_before():
    res = runner.collect(TOY, device="cpu", timer=fake_timer, only=("standard_torch",), skip={TOY[0].key()},
                         progress=False)
    assert {r["causal"] for r in res["times"]} == {True}


def test_run_wires_the_sweep(monkeypatch, tmp_path):
    seen, real_collect = {}, runner.collect

    def fake_collect(cases, **kw):
        seen.update(cases=cases, **kw)
        return real_collect([], passes=kw["passes"], ceilings=kw["ceilings"], device="cpu", progress=False)

    monkeypatch.setattr(runner, "refusal", lambda: None)
    monkeypatch.setattr(runner._ceilings, "measure", lambda timer: {"matmul_bf16_tflops": 1.0,
                                                                   "matmul_fp16_tflops": 2.0, "copy_tbs": 1.0})
    monkeypatch.setattr(runner, "collect", fake_collect)
    done = {"times": [dict(dtype="float16", D=64, causal=False, N=512)]}
    res = runner.run("full", passes=("fwd",), Ds=(64,), dtypes=("float16",), skip_done=done,
                     out=tmp_path / "r.json", progress=False)
    assert len(seen["cases"]) == 12 and seen["passes"] == ("fwd",)
    assert ("float16", 64, False, 512) in seen["skip"]
    assert json.loads((tmp_path / "r.json").read_text())["sweep"]["preset"] == "full"
    assert res["ceilings"]["matmul_fp16_tflops"] == 2.0
    with pytest.raises(ValueError, match="ablations"):
        runner.run("quick", passes=(), ablations=("warp-specialize",), progress=False)


def test_each_dtype_is_compared_with_its_own_matmul():
    from flashedu.bench.ceilings import for_dtype

    c = {"matmul_bf16_tflops": 700.0, "matmul_fp16_tflops": 650.0}
    assert for_dtype(c, "float16") == 650.0 and for_dtype(c, "bfloat16") == 700.0
    assert for_dtype({}, "float16") is None


# --- the file --------------------------------------------------------------------------------

def test_result_validates_and_carries_provenance(toy_result, monkeypatch):
    schema.validate(json.loads(json.dumps(toy_result)))
    info = toy_result["info"]
    for key in ("date", "torch", "triton", "runtime", "commit", "describe"):
        assert key in info
    monkeypatch.setenv("FLASHEDU_COMMIT", "abc1234")
    assert runner.info()["commit"] == "abc1234"


@pytest.mark.parametrize("field, value, match", [
    ("schema", "other/0", "schema"), ("dtype", "int8", "dtype"), ("N", 0, "N must"),
    ("fwd_status", "fine", "fwd_status"), ("fwd_ms", None, "fwd_ms"), ("err", "small", "err")])
def test_schema_names_the_wrong_field(toy_result, field, value, match):
    bad = copy.deepcopy(toy_result)
    target = bad if field == "schema" else rows_of(bad, "standard_torch")
    target[field] = value
    with pytest.raises(ValueError, match=match):
        schema.validate(bad)


def test_merge_unites_parts_of_a_split_run(toy_result):
    fwd, bwd = copy.deepcopy(toy_result), copy.deepcopy(toy_result)
    for r in fwd["times"]:
        for k in [k for k in r if k.startswith(("bwd", "fwdbwd"))]:
            del r[k]
    for r in bwd["times"]:
        for k in [k for k in r if k.startswith("fwd_")]:
            del r[k]
    merged = schema.merge(fwd, bwd)
    assert len(merged["times"]) == len(toy_result["times"])
    assert rows_of(merged, "standard_torch") == rows_of(toy_result, "standard_torch")
    # Merging into a merged file keeps every part's provenance, not just its first part's.
    later = copy.deepcopy(bwd)
    later["info"]["commit"] = "later"
    again = schema.merge(merged, later)
    assert [p["info"]["commit"] for p in again["parts"]] == [fwd["info"]["commit"], bwd["info"]["commit"], "later"]
    other = copy.deepcopy(toy_result)
    other["info"]["gpu"] = "Another GPU"
    with pytest.raises(ValueError, match="one GPU"):
        schema.merge(toy_result, other)


def test_the_chapter_4_file_reads_as_a_harness_file():
    old = next(r for r in [recorded.first("v2_tuning")] if "schema" not in r)
    new = schema.validate(schema.normalize(old))
    assert {r["dtype"] for r in new["times"]} == {"float16"}
    assert all(r["impl"] != "autotune_picks" for r in new["times"])
    assert schema.latest([old])["source"] == "flashedu/bench/tune_v2.py"
    assert "v2_triton" in table(new)


def test_causal_skip_pairs_each_causal_run_with_the_unmasked_one(monkeypatch):
    def fake_measure(case, provs, **kw):
        return [dict(impl=p.name, **case.as_dict(), fwd_status="ok", fwd_ms=1.0 if case.causal else 2.0)
                for p in provs]

    monkeypatch.setattr(ablations, "measure", fake_measure)
    ab = ablations.causal_skip(Ns=(1024,), Ds=(64,), device="cpu")
    assert ab["rows"] and all(r["full_over_causal"] == 2.0 for r in ab["rows"])
    assert {r["impl"] for r in ab["rows"]} <= {"v2_triton", "sdpa_flash", "standard_torch"}
    assert "cannot turn its tile skipping off" in ab["description"]


def test_ablation_table_formats_rows():
    ab = dict(description="d", rows=[dict(impl="v2_triton", D=64, N=4096, B=4, H=32, causal_ms=1.0,
                                          full_ms=1.9, full_over_causal=1.9)])
    assert "1.90x" in ablation_table("causal-skip", ab)
    assert set(ablations.ABLATIONS) == {"v1-vs-v2", "causal-skip", "block-sizes", "num-stages"}


# --- without a GPU ---------------------------------------------------------------------------

@pytest.mark.skipif(GPU, reason="this machine has a GPU")
def test_run_refuses_cleanly_without_a_gpu(capsys):
    with pytest.raises(RuntimeError, match="CUDA GPU.*recorded"):
        runner.run("quick")
    assert cli.main(["--quick"]) == 2
    assert "CUDA GPU" in capsys.readouterr().err


def test_cli_rejects_unknown_passes():
    with pytest.raises(SystemExit):
        cli.main(["--pass", "sideways"])


def test_chapter_figures_read_a_harness_file(toy_result):
    from flashedu.viz.tflops import tflops_figure
    from flashedu.viz.speedups import measured_roofline_figure, speedup_figure, speedups

    new = copy.deepcopy(schema.normalize(next(r for r in [recorded.first("v2_tuning")] if "schema" not in r)))
    new["ceilings"] = {"matmul_bf16_tflops": 773.0, "copy_tbs": 4.27}
    std = [dict(r, impl="standard_triton", fwd_ms=2 * r["fwd_ms"]) for r in new["times"] if r["impl"] == "v1_triton"]
    new["times"] += std + [dict(std[-1], impl="sdpa_math", fwd_status="skipped: memory", bwd_status="error: boom")]
    for key in ("fwd_ms", "fwd_tflops"):
        new["times"][-1].pop(key)
    sp = speedups(schema.validate(new))
    assert dict(sp[("standard_triton", "v1_triton", 64, False)])[4096] == pytest.approx(2.0)
    fig = tflops_figure(new, impls=None, live=new, live_label="your GPU")
    names = {t.name for t in fig.data}
    assert "matmul ceiling, same run" in names and any(n.endswith("— your GPU") for n in names)
    assert fig.layout.width is None
    assert len(speedup_figure(new).data) > 1
    roof = measured_roofline_figure(new, N=4096, D=128)
    assert "measured in the same run" in {t.name for t in roof.data}
    with pytest.raises(ValueError, match="no forward recorded"):
        measured_roofline_figure(new, N=333, D=128)


def test_table_keeps_a_nan_error_visible():
    rows = [dict(impl="a", dtype="float16", D=64, causal=False, N=n, fwd_status="ok", fwd_tflops=1.0, err=e)
            for n, e in ((512, float("nan")), (1024, 1e-3))]
    assert table({"times": rows}).splitlines()[-1].endswith("a nan")


def test_headline_table_puts_each_pass_in_its_column(toy_result):
    text = headline(toy_result, dtype="float32", cases=((16, 32),), impls=("standard_torch", "wrong", "absent"))
    head, _, naive, wrong = text.splitlines()
    assert head.split(" | ")[1:3] == ["d=16 N=32 full fwd", "d=16 N=32 full bwd"]
    r = rows_of(toy_result, "standard_torch")
    assert naive.split(" | ")[1] == f"{r['fwd_tflops']:.0f}"
    assert wrong.split(" | ")[2] == "–"  # no backward
    assert "absent" not in text


def test_attention_flops_counts_cross_lengths():
    assert attention_flops("fwd", B=1, H=1, N=3, D=2, causal=False, N_k=5) == 4.0 * 3 * 5 * 2
    assert attention_flops("fwd", B=1, H=1, N=3, D=2, causal=False) == 4.0 * 3 * 3 * 2
    with pytest.raises(ValueError, match="N_k"):
        attention_flops("fwd", B=1, H=1, N=3, D=2, causal=False, N_k=0)


def test_forward_grid_checks_then_times_every_candidate_and_keeps_failures(monkeypatch):
    """flashedu.bench.fwd_grid (v2_speed's and fa3_gluon's loop) on the CPU, with the GPU parts
    stubbed: every case, every candidate, its error against the reference, a failing candidate
    kept as a row, the deadline honoured."""
    from flashedu.bench import fwd_grid, peers, recorder

    def reference(q, k, v, *, causal=False, scale=None):
        return torch.nn.functional.scaled_dot_product_attention(
            q.float(), k.float(), v.float(), is_causal=causal).to(q.dtype)

    monkeypatch.setattr(peers, "sdpa_peer", lambda name: reference)
    clock = iter(range(1, 10_000))  # each timing a new value: 1, 2, 3, ... ms
    monkeypatch.setattr(recorder, "gpu_time", lambda fn: {"ms": float(next(clock))})

    class Rec:
        saved = []

        def save(self, rows, final=False):
            self.saved.append((len(rows), final))

    def candidates(q, k, v, causal):
        def broken():
            raise RuntimeError("does not compile")
        return {"same": (lambda: reference(q, k, v, causal=causal), {"config": "x"}),
                "off": (lambda: reference(q, k, v, causal=causal) + 1, {}),
                "broken": (broken, {})}

    grid = fwd_grid.Grid(Rec(), tokens=64, hidden=32, device="cpu")
    grid.run([16], [16, 32], candidates=candidates, deadline=60)
    rows = grid.rows
    assert len(rows) == 2 * 2 * 4  # causal or not × two N × (reference + three)
    by = {(r["impl"], r["causal"], r["N"]): r for r in rows}
    assert by[("same", True, 32)]["err"] == 0 and by[("same", True, 32)]["config"] == "x"
    assert by[("off", False, 16)]["err"] == pytest.approx(1, abs=1e-2)
    assert "does not compile" in by[("broken", False, 16)]["error"]
    assert by[("same", False, 16)]["B"] == 4 and by[("same", False, 16)]["H"] == 2
    # three interleaved rounds per case: the three candidates that ran once each, then all
    # again, twice; a row's ms is the median of its rounds
    timed = [r for r in rows if "ms" in r]
    assert all(len(r["ms_rounds"]) == 3 and r["ms"] == sorted(r["ms_rounds"])[1] for r in timed)
    first = by[("sdpa_cudnn", False, 16)]["ms_rounds"]
    assert first == [1.0, 4.0, 7.0] and by[("off", False, 16)]["ms_rounds"] == [3.0, 6.0, 9.0]
    assert "ms_rounds" not in by[("broken", False, 16)]
    assert by[("same", True, 16)]["tflops"] == round(4 * 4 * 2 * 16 * 16 * 16 / 2 / (
        by[("same", True, 16)]["ms"] * 1e-3) / 1e12, 1)
    assert Rec.saved[-1] == (len(rows), True)
    only = fwd_grid.Grid(Rec(), tokens=64, hidden=32, device="cpu")
    only.run([16], [16], candidates=candidates, deadline=60, causals=(True,))
    assert {r["causal"] for r in only.rows} == {True} and len(only.rows) == 4
    late = fwd_grid.Grid(Rec(), tokens=64, hidden=32, device="cpu")
    late.run([16], [16], candidates=candidates, deadline=-1)
    assert late.rows == [{"note": "deadline reached", "D": 16, "causal": False, "N": 16}]
