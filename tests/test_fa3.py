"""FA3 on Hopper (flashedu/fa3sim and flashedu/ops/fa3): the simulator's invariants and the TMA
kernel.

Simulator: no resource is ever more than fully booked, no task starts before what it waits for,
work is conserved, and overlapping never loses to no overlap. The TMA kernel runs under the
interpreter at small sizes (compiled at larger ones, and at every pipeline depth, when a GPU is
here). FA3's FP8 building blocks and kernel are tested in test_fp8.py.
"""
from __future__ import annotations

import json
from collections import defaultdict

import pytest
import torch
from hypothesis import given, settings, strategies as st

from conftest import DEVICE, GPU, fresh_qkv, oracle
from flashedu import fa3sim
from flashedu.ops.fa3.kernel import HAS_WARP_SPECIALIZE, TMAConfig, flash_attention_tma, tma_forward

SIM_PARAMS = st.fixed_dictionaries(dict(
    d=st.sampled_from([32, 64, 128, 256]), block_n=st.sampled_from([32, 64, 128, 176]),
    n_blocks=st.integers(1, 10), stages=st.integers(1, 4), alu_ops_per_score=st.floats(0, 8),
    gemm_latency=st.floats(0, 600), load_latency=st.floats(0, 3000), load_bytes_per_clk=st.floats(4, 128)))


# ---- the simulator --------------------------------------------------------------------------

def _check_invariants(r: fa3sim.SimResult):
    by_name = {t.name: t for t in r.tasks}
    for t in r.tasks:
        assert t.start is not None and t.end >= t.work_end >= t.start
        for d in t.deps:
            assert t.start >= by_name[d].end - 1e-6, f"{t.name} started before {d} was done"
        for d in t.work_deps:
            assert t.start >= by_name[d].work_end - 1e-6, f"{t.name} took its turn before {d} left it"
    shares = defaultdict(float)
    done = defaultdict(float)
    for s in r.segments:
        shares[(s.resource, s.t0)] += s.share
        done[s.task] += (s.t1 - s.t0) * s.share
        assert by_name[s.task].start - 1e-6 <= s.t0 < s.t1 <= by_name[s.task].work_end + 1e-6
    assert max(shares.values()) <= 1 + 1e-9, "a resource was booked beyond its capacity"
    for t in r.tasks:
        assert done[t.name] == pytest.approx(t.work, rel=1e-6, abs=1e-6), f"{t.name}: work not conserved"


@settings(max_examples=25, deadline=None)
@given(params=SIM_PARAMS, schedule=st.sampled_from(list(fa3sim.SCHEDULES)))
def test_schedules_respect_resources_and_dependencies(params, schedule):
    _check_invariants(fa3sim.simulate(schedule, **params))


@settings(max_examples=40, deadline=None)
@given(params=SIM_PARAMS, stages=st.integers(2, 4))
def test_overlapping_never_loses_to_no_overlap(params, stages):
    params["stages"] = stages
    base = fa3sim.simulate("no_overlap", **params).makespan
    # Not ping-pong: taking turns can cost a little on very short loops with long GEMM latency.
    for name in ("intra_warpgroup", "warp_specialized"):
        assert fa3sim.simulate(name, **params).makespan <= base * (1 + 1e-9), name


def test_intra_warpgroup_pipelining_needs_two_buffers():
    """With one K/V buffer the pipelined order holds Vⱼ until after GEMM0 of j+1, so Vⱼ₊₁ cannot
    be fetched early: when loads are the bottleneck it can lose to no overlap. FA3 uses >= 2."""
    p = dict(d=32, block_n=32, n_blocks=2, alu_ops_per_score=0.0, load_bytes_per_clk=4.0)
    assert fa3sim.simulate("intra_warpgroup", stages=1, **p).makespan > fa3sim.simulate("no_overlap", **p).makespan
    assert fa3sim.simulate("intra_warpgroup", stages=2, **p).makespan <= fa3sim.simulate("no_overlap", **p).makespan


def test_pingpong_gives_the_tensor_cores_to_one_warpgroup_at_a_time():
    r = fa3sim.simulate("pingpong", d=128, n_blocks=6)
    gemms = [t for t in r.tasks if t.kind.startswith("gemm")]
    for a in gemms:
        for b in gemms:
            if a.lane != b.lane:
                assert a.work_end <= b.start + 1e-6 or b.work_end <= a.start + 1e-6, (a.name, b.name)


def test_ordering_at_d128_matches_the_papers_direction():
    t = {n: r.tflops for n, r in fa3sim.compare(d=128).items()}
    assert t["no_overlap"] < t["warp_specialized"] < t["intra_warpgroup"] < t["pingpong"]
    assert t["fa3"] > t["warp_specialized"]


def test_exp_share_from_the_presets():
    shares = {e.d: e.ratio for e in fa3sim.exp_share_table((64, 128, 256))}
    assert shares[128] == pytest.approx(0.5, rel=0.01)  # the paper: exp takes ~50% of GEMM time
    assert shares[64] == pytest.approx(2 * shares[128]) and shares[256] == pytest.approx(shares[128] / 2)
    with pytest.raises(ValueError, match="d must be"):
        fa3sim.exp_share(0)


def test_engine_and_simulate_reject_bad_input():
    with pytest.raises(ValueError, match="cycle"):
        fa3sim.run([fa3sim.Task("a", "r", 1, "x", "load", deps=["b"]), fa3sim.Task("b", "r", 1, "x", "load", deps=["a"])])
    with pytest.raises(ValueError, match="unknown task"):
        fa3sim.run([fa3sim.Task("a", "r", 1, "x", "load", deps=["nope"])])
    with pytest.raises(ValueError, match="schedule"):
        fa3sim.simulate("magic")
    with pytest.raises(ValueError, match="block_m"):
        fa3sim.simulate(block_m=127)
    with pytest.raises(ValueError, match="stages"):
        fa3sim.simulate(stages=0)


def test_gantt_figure_plays_and_switches_schedules():
    from flashedu.viz.gantt import gantt_figure, schedule_bars

    fig = gantt_figure(frames=6)
    assert len(fig.frames) == 6 and len(fig.frames[0].data) == len(fig.data)
    assert sum(len(tr.x or ()) for tr in fig.frames[0].data) < sum(len(tr.x) for tr in fig.frames[-1].data)
    menus = fig.layout.updatemenus
    assert menus[0].buttons[0].method == "animate" and len(menus[1].buttons) == len(fa3sim.SCHEDULES)
    assert fig.layout.width is None
    json.loads(fig.to_json())
    assert len(schedule_bars(fa3sim.compare(n_blocks=4)).data) == 2


# ---- the TMA kernel -------------------------------------------------------------------------

TMA_SHAPES = [(1, 1, 1, 1, 16), (2, 3, 7, 7, 32), (1, 2, 129, 129, 64), (1, 1, 9, 40, 32)]
if GPU:
    TMA_SHAPES += [(2, 4, 1000, 1000, 64), (1, 4, 4096, 4096, 128)]


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("shape", TMA_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_tma_kernel_matches_oracle(shape, causal, poison):
    B, H, N, NK, D = shape
    if causal and N != NK:
        pytest.skip("causal needs equal lengths")
    dtype = torch.float16 if GPU else torch.float32
    q, k, v = fresh_qkv(B, H, N, D, n_k=NK, dtype=dtype, device=DEVICE)
    err = (flash_attention_tma(q, k, v, causal=causal).double().cpu() - oracle(q, k, v, causal=causal)).abs().max()
    assert err.item() < (4e-3 if GPU else 2e-5)


@pytest.mark.skipif(not GPU, reason="pipeline depth and warp specialisation only exist when compiled")
@pytest.mark.parametrize("stages", [1, 2, 3, 4])
@pytest.mark.parametrize("ws", [False, True], ids=["plain", "warp-specialised"])
def test_tma_kernel_every_stage_count_on_gpu(stages, ws):
    if ws and not HAS_WARP_SPECIALIZE:
        pytest.skip("this Triton has no warp_specialize")
    q, k, v = fresh_qkv(2, 4, 2048, 128, dtype=torch.float16, device="cuda")
    o, _ = tma_forward(q, k, v, causal=False, scale=128 ** -0.5, config=TMAConfig(128, 64, 8, stages, ws))
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert (o - ref).abs().max().item() < 4e-3
