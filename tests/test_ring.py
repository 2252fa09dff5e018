"""Ring attention: layouts and their causal balance, the one-process simulation, the real ring
over 2, 3 and 4 gloo processes (forward and backward, fp64) against single-process attention,
the kernel path of one step, the communication model, and errors."""
from __future__ import annotations

import pytest
import torch

import flashedu
from conftest import GPU, fresh_qkv, oracle, tolerance
from flashedu.ops.ring import ring_attention_processes, run_processes, work_matrix
from flashedu.ops.ring.blocks import block_state, block_state_flash
from flashedu.ops.ring.layout import LAYOUTS, positions, shard, shard_segments, step_efficiency, unshard
from flashedu.ops.ring.model import overlap_threshold, ring_step
from flashedu.ops.ring.reference import ring_simulated
from flashedu.ops.ring.tasks import pass_around_task
from flashedu.softmax.state import finalize

DEVICE = flashedu.runtime.current().device


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("n, world", [(1, 1), (7, 2), (37, 3), (40, 4), (5, 4)])
def test_layouts_partition_the_sequence(layout, n, world):
    every = torch.cat([positions(n, world, r, layout) for r in range(world)])
    assert torch.equal(torch.sort(every).values, torch.arange(n))
    x = torch.randn(1, 2, n, 3)
    assert torch.equal(unshard([shard(x, world, r, layout) for r in range(world)], layout), x)
    for r in range(world):  # the runs the kernels use hold the same positions, in the same order
        segs = shard_segments(n, world, r, layout)
        assert torch.equal(torch.cat([s.positions() for s in segs]), positions(n, world, r, layout))


def test_zigzag_holds_one_early_and_one_late_chunk():
    assert positions(16, 4, 0, "zigzag").tolist() == [0, 1, 14, 15]
    assert positions(16, 4, 3, "zigzag").tolist() == [6, 7, 8, 9]
    assert positions(10, 4, 1, "striped").tolist() == [1, 5, 9]


def test_causal_work_is_lopsided_for_contiguous_and_balanced_for_zigzag():
    n, P = 64, 4
    for layout in LAYOUTS:
        assert work_matrix(n, P, layout).sum() == n * (n + 1) // 2  # every causal pair, once
    w = work_matrix(n, P, "contiguous")
    assert (w[0, 1:] == 0).all() and (w[P - 1] > 0).all()  # rank 0 idles after step 0
    z = work_matrix(n, P, "zigzag")
    assert (z[:, 1:] == z[0, 1]).all()  # after step 0, every rank does the same work
    assert step_efficiency(z) > 0.9 > 0.7 > step_efficiency(w)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("world", [1, 2, 3, 5])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_simulated_ring_is_exact(layout, world, causal):
    q, k, v = fresh_qkv(2, 2, 29, 16, dtype=torch.float64, device="cpu")
    trace = []
    o = ring_simulated(q, k, v, causal=causal, world_size=world, layout=layout, trace=trace)
    assert (o - oracle(q, k, v, causal=causal)).abs().max().item() < tolerance(torch.float64)
    for r in range(world):  # every rank met every shard exactly once
        assert sorted(e["holds"] for e in trace if e["rank"] == r) == list(range(world))


def test_simulated_ring_cross_lengths():
    q, _, _ = fresh_qkv(1, 2, 11, 8, dtype=torch.float64, device="cpu")
    _, k, v = fresh_qkv(1, 2, 30, 8, dtype=torch.float64, device="cpu")
    o = ring_simulated(q, k, v, world_size=3, layout="striped", scale=0.3)
    assert (o - oracle(q, k, v, scale=0.3)).abs().max().item() < 1e-10


# (processes, causal, layout): 2, 3 and 4 gloo processes; each run takes about a second.
RUNS = [(2, False, "contiguous"), (2, True, "contiguous"), (3, True, "zigzag"), (4, True, "zigzag"),
        (4, False, "striped"), (3, True, "striped")]


@pytest.mark.parametrize("world, causal, layout", RUNS, ids=[f"{p}proc-{'causal' if c else 'full'}-{lay}" for p, c, lay in RUNS])
def test_gloo_ring_equals_single_process_attention(world, causal, layout):
    q, k, v = fresh_qkv(2, 2, 23, 16, dtype=torch.float64, device="cpu")
    do = torch.randn_like(q)
    out = ring_attention_processes(q, k, v, world_size=world, causal=causal, layout=layout, do=do, timeout_s=90)
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    ref = torch.nn.functional.scaled_dot_product_attention(*leaves, is_causal=causal)
    ref.backward(do)
    assert (out["o"] - ref.detach()).abs().max().item() < tolerance(torch.float64)
    for name, t in zip(("dq", "dk", "dv"), leaves):
        assert (out[name] - t.grad).abs().max().item() < tolerance(torch.float64), name


def test_gloo_ring_reports_steps_and_bytes():
    q, k, v = fresh_qkv(1, 2, 12, 8, dtype=torch.float32, device="cpu")
    out = ring_attention_processes(q, k, v, world_size=3, causal=True, layout="zigzag")
    assert (out["o"].double() - oracle(q, k, v, causal=True)).abs().max().item() < tolerance(torch.float32)
    for rank, r in enumerate(out["ranks"]):
        assert [s["holder"] for s in r["stats"]] == [(rank - t) % 3 for t in range(3)]
        # K and V of a 4-token shard, fp32, at every step but the last.
        assert [s["sent_bytes"] for s in r["stats"]] == [2 * 2 * 4 * 8 * 4] * 2 + [0]


def test_pass_around_and_the_deadline():
    assert run_processes(pass_around_task, 4) == [[r, (r - 1) % 4, (r - 2) % 4, (r - 3) % 4] for r in range(4)]
    with pytest.raises(TimeoutError, match="did not finish"):
        run_processes(pass_around_task, 2, 60.0, timeout_s=3)


def test_a_wrong_shard_is_reported_by_the_rank():
    from flashedu.ops.ring import tasks

    q, k, v = fresh_qkv(1, 1, 9, 8, dtype=torch.float64, device="cpu")
    # causal attention of 9 queries with 10 keys: refused in every process, with the reason.
    with pytest.raises(Exception, match="causal=True needs q and k of one total length"):
        run_processes(tasks.attention_task, 2, q, torch.cat((k, k[:, :, :1]), 2),
                      torch.cat((v, v[:, :, :1]), 2), True, "contiguous", timeout_s=60)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_one_step_with_the_kernel_equals_the_dense_step(layout):
    n, P = 40, 3
    dtype = torch.float16 if GPU else torch.float32
    q, k, v = fresh_qkv(1, 2, n, 16, dtype=dtype, device=DEVICE)
    for r, j in ((0, 0), (1, 0), (0, 2), (2, 1)):
        qs, ks, vs = (shard(t, P, r if t is q else j, layout) for t in (q, k, v))
        dense = block_state(*(t.double() for t in (qs, ks, vs)), positions(n, P, r, layout),
                            positions(n, P, j, layout), causal=True, scale=0.25)
        flash = block_state_flash(qs, ks, vs, shard_segments(n, P, r, layout), shard_segments(n, P, j, layout),
                                  causal=True, scale=0.25)
        assert (finalize(dense) - finalize(flash).double()).abs().max().item() < tolerance(dtype)
        assert torch.equal(torch.isinf(dense.m), torch.isinf(flash.m))  # the same rows see no key


def test_overlap_threshold_is_where_compute_meets_comm():
    n = overlap_threshold(heads=32, kv_heads=8, causal=True, gpu="H100", link="PCIe 5.0 x16")
    step = ring_step(round(n), heads=32, kv_heads=8, causal=True, gpu="H100", link="PCIe 5.0 x16")
    assert step.comm_s == pytest.approx(step.compute_s, rel=1e-3)
    assert ring_step(round(2 * n), heads=32, kv_heads=8, causal=True, link="PCIe 5.0 x16").hidden
    assert not ring_step(round(n / 2), heads=32, kv_heads=8, causal=True, link="PCIe 5.0 x16").hidden
    assert overlap_threshold(link="NVLink 4") < overlap_threshold(link="PCIe 5.0 x16")


def test_bad_inputs():
    q, k, v = fresh_qkv(1, 2, 8, 16, dtype=torch.float64, device="cpu")
    with pytest.raises(ValueError, match="layout must be one of"):
        ring_simulated(q, k, v, layout="spiral")
    with pytest.raises(ValueError, match="world_size"):
        ring_simulated(q, k, v, world_size=0)
    with pytest.raises(ValueError, match="world_size"):
        run_processes(pass_around_task, 0)


def test_ring_figures():
    from flashedu.viz.ring import DONE, MASKED, TODO, measured_ring_figure, overlap_figure, ring_figure

    fig = ring_figure(world=3, n=12, layout="zigzag")
    assert len(fig.frames) == 3
    last = fig.frames[-1].data[0].z
    assert TODO not in set(int(x) for row in last for x in row)  # every score computed or masked
    first = fig.frames[0].data[0].z
    assert int(first[0][11]) == MASKED and DONE not in set(int(x) for row in first for x in row)
    assert len(overlap_figure().data) == 4
    rows = [dict(test="ring", N=16384, layout=lay, causal=c, rank=r, seconds=0.01 * (r + 1))
            for lay, c in (("contiguous", True), ("zigzag", True), ("striped", True), ("contiguous", False))
            for r in range(2)]
    rows += [dict(test="single_gpu", N=16384, causal=c, seconds=0.05) for c in (True, False)]
    fig = measured_ring_figure(dict(rows=rows, provenance=dict(world=2, gpu="NVIDIA H200", date="2026-11-22")))
    assert fig.data[0].y[0] == pytest.approx(20.0)  # the slowest rank, in ms
