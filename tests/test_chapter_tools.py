"""The helpers the chapters call (flashedu.chapter, .exercises, .provenance, iomodel.steps and the
figures chapters 1-2 compute): roofline steps, exercise checkers (which must reject wrong answers,
not only accept right ones), fp64 checks with a fallback, provenance. Figures drawn from recorded
data are tested in test_recorded.py."""
from __future__ import annotations

import json
import math

import pytest
import torch

from flashedu import exercises, hardware, provenance
from flashedu.iomodel import simulate
from flashedu.iomodel.steps import standard_steps
from flashedu.softmax import State, merge
from flashedu.viz.growth import standard_traffic_by_tensor
from flashedu.viz.roofline import roofline_figure


@pytest.mark.parametrize("N,d", [(7, 16), (129, 32), (1000, 64)])
def test_standard_steps_add_up_to_the_recording(N, d):
    r = simulate("standard", N=N, d=d)
    steps = standard_steps(r)
    assert [s.name for s in steps] == ["S = QKᵀ", "P = softmax(S)", "O = PV"]
    assert sum(s.bytes for s in steps) == r.total_bytes
    assert steps[0].flops == steps[2].flops == 2 * N * N * d
    assert steps[1].intensity < steps[0].intensity


def test_standard_steps_reject_other_algorithms():
    with pytest.raises(ValueError, match="standard"):
        standard_steps(simulate("v2", N=64, d=16))


def test_roofline_figure_merges_identical_points_and_places_them_on_the_roof():
    steps = standard_steps(simulate("standard", N=1024, d=64))
    fig = roofline_figure([(s.name, s.flops, s.bytes) for s in steps], "H100")
    markers = [t for t in fig.data if t.mode == "markers+text"]
    assert [m.text[0] for m in markers] == ["S = QKᵀ and O = PV", "P = softmax(S)"]
    g = hardware.gpu("H100")
    for m, s in zip(markers, (steps[0], steps[1])):
        assert m.y[0] == pytest.approx(min(g.fp16_flops, s.intensity * g.hbm_bandwidth) / 1e12)
    with pytest.raises(ValueError, match="points"):
        roofline_figure([])


def test_growth_share_of_s_and_p():
    rows = standard_traffic_by_tensor([64, 256], d=32)
    for r in rows:
        assert r["intermediates"] + r["others"] == r["total"]
        # S and P: N² elements each, written once and read once, 2 bytes each.
        assert r["intermediates"] == 2 * 2 * r["N"] ** 2 * 2


def test_provenance_collects_versions():
    info = provenance.collect()
    assert info["torch"] == torch.__version__ and info["date"]
    json.dumps(info)
    assert info["torch"] in provenance.label(info)


def test_merge_checker_accepts_right_and_rejects_wrong(capsys):
    assert exercises.check_merge(lambda a, b: merge(a, b))
    # Forgets to rescale: wrong whenever the maxima differ.
    assert not exercises.check_merge(lambda a, b: State(torch.maximum(a.m, b.m), a.l + b.l, a.o + b.o))
    # Right formula but NaN for the empty state (subtracts m = -inf).
    def nan_merge(a, b):
        m = torch.maximum(a.m, b.m)
        return m, a.l * torch.exp(a.m - m) + b.l * torch.exp(b.m - m), a.o * torch.exp(a.m - m) + b.o * torch.exp(b.m - m)
    assert not exercises.check_merge(nan_merge)
    assert "NaN" in capsys.readouterr().out


def test_softmax_checker_accepts_right_and_rejects_wrong():
    assert exercises.check_softmax(lambda x: torch.softmax(x, -1).nan_to_num(0.0))
    assert not exercises.check_softmax(lambda x: torch.exp(x) / torch.exp(x).sum(-1, keepdim=True))
    assert not exercises.check_softmax(lambda x: torch.softmax(x, -1))  # NaN on masked rows


def test_bytes_checker_accepts_right_and_rejects_wrong():
    assert exercises.check_s_and_p_bytes(lambda N, h, i: 2 * N * N * h * i)
    assert not exercises.check_s_and_p_bytes(lambda N, h, i: N * N * h * i)


def test_memory_hierarchy_is_cited():
    assert "FlashAttention" in hardware.MEMORY_HIERARCHY_SOURCE
    bw = [lvl.bandwidth for lvl in hardware.MEMORY_HIERARCHY]
    assert bw == sorted(bw, reverse=True) and math.isclose(bw[1], 1.5e12)


def test_traffic_vs_sram_falls_as_one_over_m_and_seed_is_below_exact():
    from flashedu.viz.io_complexity import traffic_vs_sram, traffic_vs_sram_figure

    rows = traffic_vs_sram(N=1024, d=32, sram_kib=(16, 32, 64, 128))
    v1 = [r["v1"] for r in rows]
    assert v1 == sorted(v1, reverse=True) and v1[0] > 3 * v1[-1]
    assert all(r["v1_seed"] < r["v1"] for r in rows)
    assert len(traffic_vs_sram_figure(N=512, d=32, sram_kib=(16, 64)).data) == 4


def test_fa1_and_v1_traffic_checkers_reject_wrong_answers():
    import math

    assert not exercises.check_fa1_blocks(lambda M, d: (math.ceil(M / (4 * d)),) * 2)
    # The seed's formula alone misses the two terms the exact count has.
    seed_only = lambda N, d, br, bc: (2 * N * d + 2 * (N // bc) * N * d, (N // bc) * N * d + 2 * (N // bc) * N)  # noqa: E731
    assert not exercises.check_v1_traffic(seed_only)


def test_v2_traffic_and_programs_checkers():
    right = lambda N, d, br, bc: (N * d + 2 * (N // br) * N * d, N * d + N)  # noqa: E731
    assert exercises.check_v2_traffic(right)
    assert not exercises.check_v2_traffic(lambda N, d, br, bc: (N * d + 2 * (N // bc) * N * d, N * d + N))
    progs = lambda a, B, H, N, br: B * H * (1 if a == "v1" else -(-N // br))  # noqa: E731
    assert exercises.check_programs(progs)
    assert not exercises.check_programs(lambda a, B, H, N, br: B * H * (N // br if a == "v2" else 1))


def test_check_against_fp64_reports_errors_and_falls_back(capsys, monkeypatch):
    from flashedu import chapter, runtime

    q, k, v = (torch.randn(1, 2, 9, 16, dtype=torch.float64) for _ in range(3))
    errs = chapter.check_against_fp64("v2_reference", q, k, v, causal=True)
    assert set(errs) == {"o", "dq", "dk", "dv"} and max(errs.values()) < 1e-10
    assert "v2_reference" in capsys.readouterr().out
    # Where the kernel cannot run (bf16 under the interpreter) the fallback runs, with a message.
    monkeypatch.setattr(runtime, "_CURRENT", runtime.decide(cuda=False))
    errs = chapter.check_against_fp64("standard_triton", q.bfloat16(), k.bfloat16(), v.bfloat16(),
                                      backward=False, fallback="standard_reference")
    out = capsys.readouterr().out
    assert "standard_triton cannot run here" in out and "standard_reference on cpu" in out
    assert errs["o"] < 2e-2


def test_check_against_fp64_with_a_token_mask_catches_an_ignored_mask():
    from flashedu import chapter

    q, k, v = (torch.randn(1, 1, 8, 16, dtype=torch.float64) for _ in range(3))
    keep = torch.rand(1, 1, 8, 8) < 0.5
    keep[0, 0, 3] = False  # a row with no key: the oracle gives 0
    # standard_reference ignores the token mask, so the comparison must show a large error.
    errs = chapter.check_against_fp64("standard_reference", q, k, v, backward=False, token_mask=keep)
    assert errs["o"] > 1e-3


@pytest.mark.parametrize("name", sorted(n for n in dir(exercises) if n.startswith("check_")))
def test_every_checker_reports_a_raising_answer_as_wrong(name, capsys):
    def boom(*args, **kwargs):
        raise ValueError("not written yet")

    assert getattr(exercises, name)(boom, cases=3) is False
    assert "raised ValueError: not written yet" in capsys.readouterr().out


def test_timeline_stats_checker_rejects_means_and_shares_of_the_wrong_span():
    from statistics import median

    from flashedu import recorded
    from flashedu.exercises import check_timeline_stats
    from flashedu.recorded.fa3_gluon import timeline_summary

    def right(its):
        p = median(b["turn"] - a["turn"] for a, b in zip(its, its[1:]))
        return p, median(i["softmax_done"] - i["s_ready"] for i in its) / p

    def means(its):
        p = (its[-1]["turn"] - its[0]["turn"]) / (len(its) - 1)
        return p, sum(i["softmax_done"] - i["s_ready"] for i in its) / len(its) / p

    def whole_step(its):  # the share of issue-to-O, not of the softmax alone
        p = median(b["turn"] - a["turn"] for a, b in zip(its, its[1:]))
        return p, median(i["o_ready"] - i["turn"] for i in its) / p

    assert check_timeline_stats(right)
    assert not check_timeline_stats(means) and not check_timeline_stats(whole_step)
    # the right answer on the record agrees with the reader's own summary of it
    run = recorded.latest("fa3_timeline")
    for entry in run["rows"]:
        per_wg = [right(wg["iterations"]) for wg in entry["warpgroups"]]
        summary = timeline_summary(run)[entry["schedule"]]
        assert min(p for p, _ in per_wg) <= summary["period"] <= max(p for p, _ in per_wg)
