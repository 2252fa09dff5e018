"""The memory-hierarchy engine (flashedu/iomodel): recorded traffic against closed forms, shape-only
against numeric runs, SRAM limits, the event trace's coverage of the tile grid, the tile helpers'
arithmetic on fully masked rows, and programs onto SMs (seed 000: v1 parallelises over batch ×
heads, v2 over Q blocks too) with the warp partition inside a program."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from flashedu import iomodel
from flashedu.iomodel import SRAM, SRAMOverflowError, fa1_block_sizes, formula, simulate
from flashedu.iomodel.blocks import acc_itemsize, fully_masked, n_tiles, sram_footprint
from flashedu.iomodel.parallel import occupancy, programs, warp_partition
from flashedu.iomodel.tiles import exp_diff, finite_or_zero, nonzero_or_one
from flashedu.ops.standard.reference import standard_attention
from flashedu.ops.v1.autograd import v1_attention
from flashedu.ops.v2.autograd import v2_attention
from flashedu.viz.parallelism import sm_waves_figure, warp_partition_figure

KIB = 1024
ALGS = ("standard", "v1", "v2")
NUMERIC = {"standard": standard_attention, "v1": v1_attention, "v2": v2_attention}


def _assert_matches_formula(r, causal=False):
    f = formula(r.algorithm, N=r.N, d=r.d, block_r=r.block_r, block_c=r.block_c, causal=causal,
                batch=r.batch, heads=r.heads)
    assert (r.read_elements, r.write_elements) == (f.exact.reads, f.exact.writes)
    assert {n: (t.read_elements, t.write_elements) for n, t in r.per_tensor.items()} == f.exact.per_tensor
    e = r.per_tensor["Q"].itemsize
    assert (r.read_bytes, r.write_bytes) == f.exact.bytes(itemsize=e, stat_itemsize=acc_itemsize(r.dtype))
    return f


# Blocks that divide N: the case the seed's formulas are written for.
@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize("N,d,br,bc", [(256, 32, 32, 64), (512, 64, 64, 64), (1024, 64, 64, 128),
                                       (512, 128, 128, 32), (1024, 16, 16, 16)])
def test_simulation_equals_exact_formula_blocks_dividing_n(alg, N, d, br, bc):
    _assert_matches_formula(simulate(alg, N=N, d=d, block_r=br, block_c=bc, sram_bytes=1024 * KIB))


# Default block sizes over a grid of (N, d, SRAM): includes N not a multiple of the blocks.
@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize("N,d,sram_kib", list(itertools.product((256, 1000), (32, 64, 128), (64, 100, 228))))
def test_simulation_equals_exact_formula_default_blocks(alg, N, d, sram_kib):
    r = simulate(alg, N=N, d=d, sram_bytes=sram_kib * KIB)
    _assert_matches_formula(r)
    assert r.sram_peak_bytes <= r.sram_bytes


@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize("N,br,bc", [(512, 64, 64), (1000, 64, 128), (333, 32, 16)])
def test_causal_simulation_equals_exact_formula(alg, N, br, bc):
    r = simulate(alg, N=N, d=32, block_r=br, block_c=bc, causal=True)
    f = _assert_matches_formula(r, causal=True)
    assert f.seed is None
    expected_skips = 0 if alg == "standard" else sum(
        fully_masked(i * br, min(N, (i + 1) * br), j * bc) for i in range(r.Tr) for j in range(r.Tc))
    assert r.tiles_skipped == expected_skips
    if alg != "standard":
        assert expected_skips > 0 and r.read_elements < simulate(alg, N=N, d=32, block_r=br, block_c=bc).read_elements


def test_batch_and_heads_multiply_the_traffic():
    one = simulate("v2", N=256, d=32, block_r=64, block_c=64)
    many = simulate("v2", N=256, d=32, block_r=64, block_c=64, batch=2, heads=3)
    assert many.read_bytes == 6 * one.read_bytes and many.write_elements == 6 * one.write_elements
    assert many.sram_peak_bytes == one.sram_peak_bytes and len(many.trace) == len(one.trace)


@pytest.mark.parametrize("N,d,br,bc", [(1024, 64, 64, 128), (2048, 128, 128, 128), (768, 32, 32, 256)])
def test_seed_formulas_are_what_seed_001_writes(N, d, br, bc):
    Tr, Tc = N // br, N // bc
    v1 = formula("v1", N=N, d=d, block_r=br, block_c=bc)
    v2 = formula("v2", N=N, d=d, block_r=br, block_c=bc)
    assert (v1.seed.reads, v1.seed.writes) == (2 * N * d + 2 * Tc * N * d, Tc * N * d + 2 * Tc * N)
    assert (v2.seed.reads, v2.seed.writes) == (N * d + 2 * Tr * N * d, N * d + N)
    # v2 moves exactly what the seed says; v1 also reads ℓ_i, m_i each step and initialises O, ℓ, m.
    assert (v2.exact.reads, v2.exact.writes) == (v2.seed.reads, v2.seed.writes)
    assert v1.exact.reads - v1.seed.reads == 2 * Tc * N
    assert v1.exact.writes - v1.seed.writes == N * d + 2 * N
    assert "2·Tc·N" in v1.note and v1.order == "Θ(N²d²/M)"
    std = formula("standard", N=N, d=d, block_r=br, block_c=bc)
    assert (std.seed.reads, std.seed.writes) == (3 * N * d + 2 * N * N, 2 * N * N + N * d)
    assert std.exact.reads - std.seed.reads == 2 * (Tr - 1) * N * d


def test_fa1_block_sizes_are_the_papers():
    assert fa1_block_sizes(4 * 64 * 100, 64) == (64, 100)
    assert fa1_block_sizes(1000, 64) == (4, 4)  # ⌈1000/256⌉ = 4
    assert fa1_block_sizes(16 * 16 * 4, 16) == (16, 16)
    r = simulate("v1", N=1024, d=64, sram_bytes=228 * KIB)
    assert (r.block_r, r.block_c) == fa1_block_sizes(228 * KIB // (2 * 2), 64)


def test_papers_literal_m_overflows_sram():
    """With M = all of the SRAM, Algorithm 1's blocks leave no room for S_ij: the engine says so."""
    sram = 228 * KIB
    br, bc = fa1_block_sizes(sram // 2, 128)  # fp16: M = SRAM bytes / 2
    with pytest.raises(SRAMOverflowError, match=r"tile S_ij .* capacity is 233,472 B"):
        simulate("v1", N=1024, d=128, sram_bytes=sram, block_r=br, block_c=bc)


def test_sram_overflow_names_tile_bytes_and_capacity():
    with pytest.raises(SRAMOverflowError) as err:
        simulate("v2", N=512, d=64, sram_bytes=64 * KIB, block_r=128, block_c=128)
    msg = str(err.value)
    assert "tile O_i [128 × 64]" in msg and "32,768 B" in msg and "capacity is 65,536 B" in msg
    with pytest.raises(SRAMOverflowError, match="whole row of S"):
        simulate("standard", N=65536, d=64, sram_bytes=64 * KIB, block_r=16, block_c=16)


def test_sram_counts_and_peak():
    s = SRAM(1000)
    s.alloc("a", 10, 10, 4)
    s.alloc("b", 10, 10, 2)
    assert (s.used_bytes, s.peak_bytes) == (600, 600)
    s.free("a")
    s.alloc("c", 20, 10, 2)
    assert (s.used_bytes, s.peak_bytes) == (600, 600)
    with pytest.raises(SRAMOverflowError, match="tile d"):
        s.alloc("d", 20, 10, 4)
    with pytest.raises(ValueError, match="sram_bytes"):
        SRAM(0)


@pytest.mark.parametrize("alg", ("v1", "v2"))
def test_sram_peak_is_the_documented_footprint(alg):
    r = simulate(alg, N=512, d=64, block_r=64, block_c=128)
    assert r.sram_peak_bytes == sram_footprint(alg, block_r=64, block_c=128, d=64, itemsize=2, acc=4)


@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_numeric_and_shape_only_runs_record_the_same(alg, causal, dtype):
    B, H, N, D = 2, 3, 77, 16
    q, k, v = (torch.randn(B, H, N, D).to(dtype) for _ in range(3))
    _, numeric = NUMERIC[alg](q, k, v, causal=causal, block_r=16, block_c=32, sram_bytes=64 * KIB,
                              return_report=True)
    shape = simulate(alg, N=N, d=D, causal=causal, block_r=16, block_c=32, sram_bytes=64 * KIB,
                     dtype=dtype, batch=B, heads=H)
    assert numeric.numeric and not shape.numeric
    assert numeric.counts() == shape.counts()
    assert numeric.trace._raw == shape.trace._raw


def _tiles(r, phase, kinds=("compute", "skip")):
    return [(e.i, e.j) for e in r.trace if e.phase == phase and e.kind in kinds]


@pytest.mark.parametrize("alg", ("v1", "v2"))
@pytest.mark.parametrize("causal", [False, True])
def test_trace_covers_every_tile_once(alg, causal):
    N, br, bc = 300, 32, 64
    r = simulate(alg, N=N, d=16, block_r=br, block_c=bc, causal=causal)
    every = [(i, j) for i in range(r.Tr) for j in range(r.Tc)]
    seen = _tiles(r, "forward")
    assert sorted(seen) == every  # each (i, j) exactly once
    skipped = set(_tiles(r, "forward", ("skip",)))
    masked = {(i, j) for i, j in every if causal and fully_masked(i * br, min(N, (i + 1) * br), j * bc)}
    assert skipped == masked
    assert r.tiles_computed == len(every) - len(masked)
    # nothing is loaded for a skipped tile
    assert not any(e.kind == "load" and (e.i, e.j) in skipped for e in r.trace)


def test_standard_trace_has_three_passes():
    N, br, bc = 200, 32, 64
    r = simulate("standard", N=N, d=16, block_r=br, block_c=bc, causal=True)
    every = sorted((i, j) for i in range(r.Tr) for j in range(r.Tc))
    assert r.trace.phases() == ["S = QKᵀ", "P = softmax(S)", "O = PV"]
    assert sorted(_tiles(r, "S = QKᵀ")) == every and sorted(_tiles(r, "O = PV")) == every
    softmax = [e for e in r.trace if e.phase == "P = softmax(S)" and e.kind == "compute"]
    assert sum(e.elements for e in softmax) == N * N  # every row of S once


def test_event_bytes_add_up_and_v2_programs_own_one_q_tile():
    r = simulate("v2", N=256, d=32, block_r=64, block_c=32)
    ev = r.events
    assert sum(e.bytes for e in ev if e.kind == "load") == r.read_bytes
    assert sum(e.bytes for e in ev if e.kind == "store") == r.write_bytes
    assert all(e.program == e.i for e in ev if e.i >= 0)
    first = ev[0]
    assert (first.kind, first.tensor, first.buffer, first.i, first.bytes) == ("load", "Q", "Q_i", 0, 64 * 32 * 2)
    assert r.trace[-1] == ev[-1]


def test_v1_keeps_o_l_m_in_hbm_and_v2_keeps_them_on_chip():
    v1 = simulate("v1", N=256, d=32, block_r=32, block_c=64)
    v2 = simulate("v2", N=256, d=32, block_r=32, block_c=64)
    assert v1.per_tensor["O"].read_elements == v1.Tc * 256 * 32
    assert v1.per_tensor["l"].read_elements == v1.Tc * 256
    assert v2.per_tensor["O"].read_elements == 0 and set(v2.per_tensor) == {"Q", "K", "V", "O", "L"}
    assert v1.flops == v2.flops == 4 * 256 * 256 * 32
    assert v2.exps == 256 * 256


def test_simulate_rejects_bad_arguments():
    with pytest.raises(ValueError, match="algorithm"):
        simulate("v3", N=64, d=16)
    with pytest.raises(ValueError, match="N must"):
        simulate("v2", N=0, d=16)
    with pytest.raises(ValueError, match="block_r"):
        simulate("v2", N=64, d=16, block_r=0)
    with pytest.raises(ValueError, match="block_sparse"):
        simulate("v2", N=64, d=16, block_mask=torch.ones(1, 1, dtype=torch.bool))
    with pytest.raises(NotImplementedError, match="standard"):
        simulate("standard", N=64, d=16, backward=True)
    assert simulate("v2", N=64, d=16, backward=True).backward
    assert not simulate("v2", N=64, d=16).backward
    with pytest.raises(ValueError, match="algorithm"):
        formula("v9", N=64, d=16, block_r=16, block_c=16)


def test_shape_only_run_is_cheap_enough_for_a_sweep():
    # Not a timing test: it checks the work a 64k sweep implies stays linear in the tile count.
    r = simulate("v2", N=4096, d=128, block_r=128, block_c=128)
    assert len(r.trace) == 32 * (1 + 3 * 32 + 2)
    assert n_tiles(65536, 128) ** 2 == 262_144
    assert iomodel.DEFAULT_SRAM_BYTES == 228 * KIB


# ---- the tile helpers the tiled references share (iomodel.tiles) ----------------------------

def test_tile_helpers_keep_fully_masked_rows_at_zero():
    ninf = torch.tensor([float("-inf")])
    assert exp_diff(ninf, ninf).item() == 0.0  # not NaN
    assert exp_diff(torch.tensor([1.0]), torch.tensor([2.0])).item() == pytest.approx(math.exp(-1))
    assert finite_or_zero(ninf).item() == 0.0
    assert nonzero_or_one(torch.tensor([0.0])).item() == 1.0


# ---- programs onto SMs, warps inside a program (iomodel.parallel) ---------------------------

def test_v1_leaves_sms_idle_with_few_heads_and_v2_fills_them():
    v1 = occupancy("v1", batch=1, heads=16, N=16384, gpu="A100")
    v2 = occupancy("v2", batch=1, heads=16, N=16384, gpu="A100", block_r=128)
    assert (v1.programs, v1.waves) == (16, 1)
    assert v1.utilization == pytest.approx(16 / 108)
    assert v2.programs == 16 * 128 and v2.waves == -(-2048 // 108)
    assert v2.utilization > 0.99


def test_programs_counts_partial_q_blocks_and_rejects_unknown():
    assert programs("v2", batch=2, heads=3, N=129, block_r=64) == 2 * 3 * 3
    with pytest.raises(ValueError, match="algorithm"):
        programs("v3", batch=1, heads=1, N=1)
    with pytest.raises(ValueError, match="per_sm"):
        occupancy("v1", batch=1, heads=1, N=1, per_sm=0)


def test_warp_partition_split_q_exchanges_nothing():
    k = warp_partition("split_k", block_r=64, block_c=64, d=64, warps=4)
    q = warp_partition("split_q", block_r=64, block_c=64, d=64, warps=4)
    assert q["smem_exchange_bytes"] == 0 and k["smem_exchange_bytes"] == 2 * 4 * 64 * 64 * 4
    assert {w for row in k["owner"] for w in row} == {0, 1, 2, 3}
    assert all(len(set(row)) == 1 for row in q["owner"])  # a row belongs to one warp
    assert all(len(set(row)) == 4 for row in k["owner"])  # a row is shared by all warps
    with pytest.raises(ValueError, match="scheme"):
        warp_partition("split_z", block_r=8, block_c=8, d=8)


def test_sm_figure_runs_on_one_clock_so_the_faster_finishes_first():
    """Frames are moments on one time axis: v2 (short programs, many waves) is finished while v1
    (16 programs, each as long as all of a head's Q tiles) is still busy, never the reverse."""
    v1 = occupancy("v1", batch=1, heads=16, N=8192, gpu="H100")
    v2 = occupancy("v2", batch=1, heads=16, N=8192, gpu="H100")
    assert v1.program_time == 8192 // 128 and v2.program_time == 1
    assert v2.finish_time < v1.finish_time == 64
    assert [v1.busy_at(t) for t in (0, 63.9, 64)] == [16, 16, 0]
    assert v2.busy_at(0) == v2.slots and v2.busy_at(v2.finish_time) == 0
    fig = sm_waves_figure(batch=1, heads=16, N=8192, gpu="H100")
    times = [float(f.name) for f in fig.frames]
    assert times == sorted(times) and times[0] == 0 and times[-1] == v1.finish_time
    assert [v1.done_at(t) for t in (0, 32, 64)] == [0, 0.5, 1] and v2.done_at(v2.finish_time) == 1
    bars = [list(f.data[2].x) for f in fig.frames]  # % of the work done, v1 then v2
    assert bars[0] == [0, 0] and bars[-1] == [100, 100] and bars[1][1] > bars[1][0]
    done = 2  # the "finished" colour
    for f, t in zip(fig.frames, times):
        v1_z, v2_z = (np.array(d.z, dtype=float) for d in f.data[:2])
        v1_done, v2_done = bool(np.all(v1_z[~np.isnan(v1_z)] == done)), bool(np.all(v2_z[~np.isnan(v2_z)] == done))
        assert v1_done == (t >= v1.finish_time) and v2_done == (t >= v2.finish_time)
        assert not (v1_done and not v2_done)
    assert len(warp_partition_figure().data) >= 2
