"""The Gluon FA3 forward (flashedu/ops/fa3/gluon*.py). On a Hopper GPU the registry's tests run
it like every kernel and these add its schedules and timeline; on a CPU, where Gluon cannot run,
the kernel is still compiled for sm_90 and its resources checked."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

import flashedu
from conftest import GPU, fresh_qkv, oracle
from flashedu.ops.fa3 import gluon as fg

HOPPER = GPU and torch.cuda.get_device_capability() == (9, 0)
# Shared memory a Hopper block may opt into (227 KB).
HOPPER_SHARED = 232448


def test_registered_as_gluon_fa3_with_a_reason_off_hopper():
    impl = flashedu.get("fa3_gluon")
    assert (impl.algorithm, impl.backend, impl.chapter) == ("fa3", "gluon", 6)
    reason = impl.why_not(device="cuda" if GPU else "cpu", dtype=torch.float16)
    assert (reason is None) == HOPPER
    if not GPU:
        with pytest.raises(RuntimeError, match="Gluon kernels run compiled on a GPU only"):
            impl.fn(*(torch.randn(1, 1, 8, 64, dtype=torch.float16) for _ in range(3)))


def test_pingpong_needs_two_consumer_warpgroups():
    with pytest.raises(ValueError, match="pingpong needs warp_specialize"):
        fg.GluonConfig(warp_specialize=False)


def test_q_buffers_are_one_or_two():
    with pytest.raises(ValueError, match="q_buffers must be 1 or 2"):
        fg.GluonConfig(q_buffers=3)


def test_persistent_needs_a_producer_warp():
    with pytest.raises(ValueError, match="persistent needs warp_specialize"):
        fg.GluonConfig(warp_specialize=False, pingpong=False, persistent=True)


def test_three_consumers_need_warp_specialisation_and_fewer_registers():
    assert fg.max_consumer_regs(2) == 240 and fg.max_consumer_regs(3) == 160
    for bad, match in (({"consumers": 4}, "consumers must be 2 or 3"),
                       ({"consumers": 3, "warp_specialize": False, "pingpong": False},
                        "consumers=3 needs warp_specialize"),
                       ({"consumers": 3}, "consumer_regs=240 is more than 3")):
        with pytest.raises(ValueError, match=match):
            fg.GluonConfig(**bad)
    assert fg.GluonConfig(consumers=3, consumer_regs=160).block_m == 192
    assert fg.GluonConfig().block_m == fg.BLOCK_M == 128


@pytest.mark.parametrize("head_dim", [64, 128])
def test_persistent_by_shape_where_rows_are_short(head_dim):
    """The registered kernel goes persistent where a query tile meets few K/V tiles, causal or
    not; past that, D = 64 takes three consumer warpgroups (persistent if causal), D = 128 one
    work item a program."""
    base = fg.default_config(head_dim)
    short = fg.PERSISTENT_MAX_TILES * base.block_n
    for causal in (False, True):
        # the persistent config is the one-item config with the grid changed, nothing else
        # causal rows of two warpgroups skip the right half of warpgroup 0's diagonal tile
        half = {"half_diagonal": causal}
        for n_k in (1, short):
            assert (fg.default_config(head_dim, n_k=n_k, causal=causal)
                    == replace(base, persistent=True, **half))
        long = fg.default_config(head_dim, n_k=short + 1, causal=causal)
        if head_dim == 64:
            assert long == replace(base, consumers=3, consumer_regs=160, persistent=causal)
        else:  # one item a program
            assert long == replace(base, **half)
    assert base.pingpong and not base.persistent and base.consumers == 2  # no shape: one item per program


def test_each_ablation_turns_off_one_idea():
    full = fg.default_config(128)
    for name, cfg in fg.ablation_configs(128).items():
        changed = {k for k, v in cfg.__dict__.items() if v != full.__dict__[k]}
        assert changed == set(fg.ABLATIONS[name]), name


FULL = next(iter(fg.ABLATIONS))
COMPILED = ([(d, FULL) for d in fg.COMPILED_HEAD_DIMS]
            + [(d, s) for d in (64, 128) for s in fg.ABLATIONS if s != FULL])


@pytest.mark.parametrize("head_dim, schedule", COMPILED, ids=lambda x: str(x))
def test_compiles_for_sm90_within_hopper_limits(head_dim, schedule):
    """The kernel fits Hopper at every head dim, each schedule too: shared memory, warps,
    register budgets (compiled for sm_90 here, GPU or not)."""
    cfg = fg.ablation_configs(head_dim)[schedule]
    r = fg.hopper_resources(head_dim, config=cfg)
    assert r["shared_bytes"] <= HOPPER_SHARED
    assert r["wgmma"] > 0
    if cfg.warp_specialize:
        # 4 + 4 consumer warps and a producer warp, rounded to whole warpgroups: 384 threads;
        # the producer gives its registers back (24) so the consumers can grow to 240.
        assert r["threads"] == 384
        assert 24 in r["setmaxnreg"] and cfg.consumer_regs in r["setmaxnreg"]
    else:
        assert r["threads"] == 256 and r["setmaxnreg"] == []
    # Spills: none at small head dims; a few bytes at most where a consumer holds S, P and O.
    assert r["stack_bytes"] <= (0 if head_dim <= 64 else 128)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_split_mask_takes_the_mask_out_of_the_main_loop(causal):
    """Tested at run time in one loop, the mask compiles to a select on every score of every
    tile; SPLIT_MASK's main loop has none, and a quarter fewer instructions."""
    base = fg.hopper_resources(128, causal=causal)
    split = fg.hopper_resources(128, causal=causal,
                                config=replace(fg.default_config(128), split_mask=True))
    assert base["loop_exps"] == split["loop_exps"] >= 64  # one tile's softmax per iteration
    assert base["loop_selects"] >= 64 and split["loop_selects"] == 0
    assert split["loop_instructions"] < 0.8 * base["loop_instructions"]
    assert split["shared_bytes"] == base["shared_bytes"]
    assert split["setmaxnreg"] == base["setmaxnreg"] and split["stack_bytes"] <= 128


@pytest.mark.parametrize("head_dim", [64, 128])
def test_half_diagonal_compiles_within_hopper_limits(head_dim):
    """Warpgroup 0's half-width last tile adds GEMMs of 64 keys beside the 128-key ones (more
    wgmma instructions), in the same shared memory, with about the same main loop and no
    spills."""
    cfg = replace(fg.default_config(head_dim), persistent=True)
    base = fg.hopper_resources(head_dim, causal=True, config=cfg)
    r = fg.hopper_resources(head_dim, causal=True, config=replace(cfg, half_diagonal=True))
    assert r["shared_bytes"] == base["shared_bytes"] and r["wgmma"] > base["wgmma"]
    # (triton 3.9 schedules the main loop two instructions apart at d = 128)
    loop, base_loop = r["loop_instructions"], base["loop_instructions"]
    assert abs(loop - base_loop) <= 0.01 * base_loop
    assert r["loop_spills"] == 0
    assert r["stack_bytes"] <= max(base["stack_bytes"], 160)


def test_half_diagonal_needs_two_consumer_warpgroups():
    with pytest.raises(ValueError, match="half_diagonal"):
        fg.GluonConfig(consumers=3, consumer_regs=160, half_diagonal=True)
    with pytest.raises(ValueError, match="half_diagonal"):
        fg.GluonConfig(warp_specialize=False, pingpong=False, half_diagonal=True)


@pytest.mark.parametrize("head_dim, causal", [(128, False), (128, True), (64, False), (64, True)],
                         ids=["d128", "d128-causal", "d64", "d64-causal"])
def test_persistent_compiles_within_hopper_limits(head_dim, causal):
    """The persistent build gives O its own shared memory (next to Q, which already holds the
    next work item's) and still fits; its main loop is the one-item kernel's, give or take the
    ring positions that now run on across items, and reloads nothing from the stack."""
    base = fg.hopper_resources(head_dim, causal=causal)
    cfg = replace(fg.default_config(head_dim), persistent=True)
    r = fg.hopper_resources(head_dim, causal=causal, config=cfg)
    o_bytes = 2 * 64 * head_dim * 2  # two warpgroups' [64, D] fp16 tiles
    assert base["shared_bytes"] + o_bytes <= r["shared_bytes"] <= HOPPER_SHARED
    assert r["threads"] == 384 and r["setmaxnreg"] == base["setmaxnreg"]
    assert r["wgmma"] == base["wgmma"] and r["loop_exps"] == base["loop_exps"]
    assert r["loop_selects"] == base["loop_selects"]
    assert r["loop_instructions"] <= 1.1 * base["loop_instructions"]
    # What spills is loop-invariant (the first tile's mask, hoisted out of the work-item loop)
    # and reloaded once per item, not per K/V tile; the main loop itself has none.
    assert r["loop_spills"] == 0 and r["stack_bytes"] <= 160


THREE = fg.GluonConfig(stages=3, consumers=3, consumer_regs=fg.max_consumer_regs(3))


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("persistent", [False, True], ids=["one-item", "persistent"])
def test_three_consumer_warpgroups_compile_within_hopper_limits(persistent, causal):
    """D = 64 with 192 query rows a program: 4 + 4 + 4 consumer warps and the producer's
    warpgroup (512 threads), each consumer at 160 registers. Under triton 3.6 (the GPU
    machine's) the main loop is the two-consumer kernel's, with at most one spilled value
    reloaded in it (persistent); triton 3.9's register allocator spills in it (74 local
    loads and stores at D = 64, docs/notes/gluon-fa3.md), so there the loop is not checked."""
    two = fg.hopper_resources(64, causal=causal)
    r = fg.hopper_resources(64, causal=causal, config=replace(THREE, persistent=persistent))
    assert r["threads"] == 512 and {24, 160} <= set(r["setmaxnreg"])
    assert r["shared_bytes"] <= HOPPER_SHARED
    assert r["loop_exps"] == two["loop_exps"] and r["loop_selects"] == two["loop_selects"]
    if r["triton"].startswith("3.6."):
        assert r["loop_spills"] <= (2 if persistent else 0)
        assert r["loop_instructions"] <= 1.05 * two["loop_instructions"]


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("persistent", [False, True], ids=["one-item", "persistent"])
@pytest.mark.parametrize("head_dim", [64, 128])
def test_fp8_build_compiles_within_hopper_limits(head_dim, persistent, causal):
    """The FP8 build (e4m3 Q, K and Vᵀ, fp16 O in buffers of its own): e4m3 wgmma, half the
    bytes of the fp16 kernel's K/V ring, the same registers and exponentials, no spills in
    its main loop."""
    cfg = replace(fg.default_config(head_dim), persistent=persistent)
    fp16 = fg.hopper_resources(head_dim, causal=causal, config=cfg)
    r = fg.hopper_resources(head_dim, torch.float8_e4m3fn, causal=causal, config=cfg)
    assert r["shared_bytes"] < fp16["shared_bytes"] <= HOPPER_SHARED
    assert r["threads"] == 384 and r["setmaxnreg"] == fp16["setmaxnreg"]
    assert r["wgmma"] > 0 and r["loop_exps"] == fp16["loop_exps"]
    assert r["loop_spills"] == 0 and r["stack_bytes"] <= 160


SCHEDULES = [(8, 512, 132), (8, 33, 132), (7, 100, 132), (2, 3, 4), (1, 5, 132), (16, 66, 132),
             (5, 7, 6), (32, 128, 132)]


@pytest.mark.parametrize("n_m, bh, programs", SCHEDULES)
def test_paired_order_is_a_permutation_and_pairs_on_one_program(n_m, bh, programs):
    """Every causal (head, query tile) is one work item; every two full rounds give each
    program one pair, the long tile then its short one: n_m + 1 K/V tiles of one head."""
    order = fg.paired_order(n_m, bh, programs)
    assert sorted(order) == list(range(n_m * bh))
    P = min(programs, n_m * bh)
    start = bh if n_m % 2 else 0  # after the unpaired middle tiles
    pairs = bh * (n_m // 2)
    for first in range(start, start + pairs // P * 2 * P, 2 * P):
        for p in range(P):
            (b0, m0), (b1, m1) = divmod(order[first + p], n_m), divmod(order[first + P + p], n_m)
            assert b0 == b1 and m0 + m1 == n_m - 1 and m0 > m1


@pytest.mark.parametrize("n_m, bh, programs", SCHEDULES)
def test_causal_schedule_gives_every_item_once_and_balances_the_programs(n_m, bh, programs):
    """Both schedules run every item once, on min(programs, items) programs; the balanced one
    leaves no program more than one item's work ahead of the average, however ragged the
    paired rounds end (192-row query tiles against 128-row K/V tiles too)."""
    P = min(programs, n_m * bh)
    for block_m in (128, 192):
        tiles = fg.causal_tiles(n_m, block_m, 128, n_m * block_m)
        paired = fg.causal_schedule(n_m, bh, programs, tiles, balanced=False)
        balanced = fg.causal_schedule(n_m, bh, programs, tiles, balanced=True)
        order = fg.paired_order(n_m, bh, programs)
        assert paired == [order[p::P] for p in range(P)]
        assert len(balanced) == P
        assert sorted(c for mine in balanced for c in mine) == list(range(n_m * bh))
        loads = fg.schedule_work(balanced, tiles)
        avg = sum(loads) / P
        assert max(loads) <= avg + max(tiles) + fg.ITEM_OVERHEAD
        assert max(loads) <= max(fg.schedule_work(paired, tiles))


def test_balanced_schedule_evens_out_the_ragged_last_round():
    """d = 64, causal, N = 1k, 16 sequences of 32 heads: 2048 pairs leave 68 for a last round
    on 132 programs, so the paired schedule's busiest program has a pair's work more than
    most; the balanced one ends within one short item of the average."""
    n_m, bh, P = 8, 512, 132
    tiles = fg.causal_tiles(n_m, 128, 128, 1024)
    assert tiles == list(range(1, 9))
    paired = fg.schedule_work(fg.causal_schedule(n_m, bh, P, tiles, balanced=False), tiles)
    balanced = fg.schedule_work(fg.causal_schedule(n_m, bh, P, tiles, balanced=True), tiles)
    avg = sum(balanced) / P
    assert max(paired) - avg > n_m / 2 and max(balanced) - avg <= 1 + fg.ITEM_OVERHEAD


def test_schedule_table_holds_offsets_then_items():
    """What the kernel reads (_work_items): P + 1 offsets, then every program's items."""
    tiles = fg.causal_tiles(5, 128, 128, 600)
    for balanced in (False, True):
        items = fg.causal_schedule(5, 7, 6, tiles, balanced=balanced)
        t = fg._schedule_tensor(5, 7, 6, 128, 128, 600, balanced, torch.device("cpu")).tolist()
        P = len(items)
        for p in range(P):
            assert t[P + 1 + t[p]:P + 1 + t[p + 1]] == items[p]
        assert t[P] == 5 * 7 and len(t) == P + 1 + 5 * 7


# ---- on a Hopper GPU ----------------------------------------------------------------------------

needs_hopper = pytest.mark.skipif(not HOPPER, reason="the Gluon kernel runs on Hopper (sm_90) only")


@needs_hopper
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("schedule", list(fg.ABLATIONS))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("head_dim", [64, 128, 256])
def test_every_schedule_matches_the_oracle(head_dim, dtype, schedule, causal, poison):
    """Each FA3 schedule computes the same O and L (the switches move work in time only), at N
    that leave partial tiles, with outputs pre-filled with NaN."""
    cfg = fg.ablation_configs(head_dim)[schedule]
    for n in (1, 129, 1000):
        q, k, v = fresh_qkv(2, 3, n, head_dim, dtype=dtype, device="cuda")
        scale = 1 / math.sqrt(head_dim)
        o, lse = fg.gluon_forward(q, k, v, causal=causal, scale=scale, config=cfg)
        assert not torch.isnan(o).any() and not torch.isnan(lse).any()
        err = (o.double().cpu() - oracle(q, k, v, causal=causal)).abs().max().item()
        assert err < (2e-2 if dtype == torch.bfloat16 else 4e-3), f"N={n}: max error {err:.2e}"
        s = (q.double() @ k.double().transpose(-1, -2)) * scale
        if causal:
            s = s.masked_fill(torch.ones(n, n, dtype=torch.bool, device="cuda").triu(1), -math.inf)
        assert (lse.double() - torch.logsumexp(s, -1)).abs().max().item() < 1e-3


@needs_hopper
def test_stage_counts_and_tile_widths_agree():
    q, k, v = fresh_qkv(1, 2, 1000, 128, dtype=torch.float16, device="cuda")
    ref = oracle(q, k, v)
    base = fg.default_config(128)
    for cfg in (replace(base, stages=3), replace(base, block_n=64), replace(base, split_mask=True)):
        o, _ = fg.gluon_forward(q, k, v, causal=False, scale=128 ** -0.5, config=cfg)
        assert (o.double().cpu() - ref).abs().max().item() < 4e-3, cfg


@needs_hopper
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("head_dim", [64, 128])
def test_split_mask_matches_the_oracle(head_dim, causal, poison):
    cfg = replace(fg.default_config(head_dim), split_mask=True)
    for n in (1, 127, 128, 129, 1000, 2048):
        q, k, v = fresh_qkv(1, 2, n, head_dim, dtype=torch.float16, device="cuda")
        o, _ = fg.gluon_forward(q, k, v, causal=causal, scale=head_dim ** -0.5, config=cfg)
        err = (o.double().cpu() - oracle(q, k, v, causal=causal)).abs().max().item()
        assert err < 4e-3, f"N={n}: max error {err:.2e}"


@needs_hopper
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("head_dim", [64, 128])
def test_persistent_matches_the_oracle(head_dim, dtype, causal, poison):
    """One program per SM looping over work items: the same O and L, at N that leave partial
    tiles, and once with more work items than SMs (B·H = 150, three query tiles of three K/V
    tiles each), so every program runs several items and the ring and barrier phases carry
    across them at odd offsets."""
    cfg = replace(fg.default_config(head_dim), persistent=True)
    shapes = ((1, 2, 1), (1, 2, 127), (2, 3, 1000), (1, 2, 2048), (3, 50, 320))
    _matches_the_oracle(cfg, head_dim, dtype, causal, shapes)
    if causal:  # balanced by the cost model: another table, the same kernel
        _matches_the_oracle(replace(cfg, balanced=True), head_dim, dtype, causal, shapes[-2:])
    # one Q buffer a warpgroup: the next item's Q waits for this one's last GEMM0
    _matches_the_oracle(replace(cfg, q_buffers=1), head_dim, dtype, causal, shapes[-2:])


def _matches_the_oracle(cfg, head_dim, dtype, causal, shapes):
    """O and L of ``cfg`` against fp64 at each (B, H, N), outputs poisoned beforehand."""
    scale = head_dim ** -0.5
    for b, h, n in shapes:
        q, k, v = fresh_qkv(b, h, n, head_dim, dtype=dtype, device="cuda")
        o, lse = fg.gluon_forward(q, k, v, causal=causal, scale=scale, config=cfg)
        torch.cuda.synchronize()
        assert not torch.isnan(o).any() and not torch.isnan(lse).any()
        err = (o.double().cpu() - oracle(q, k, v, causal=causal)).abs().max().item()
        assert err < (2e-2 if dtype == torch.bfloat16 else 4e-3), f"B={b} H={h} N={n}: {err:.2e}"
        s = (q.double() @ k.double().transpose(-1, -2)) * scale
        if causal:
            s = s.masked_fill(torch.ones(n, n, dtype=torch.bool, device="cuda").triu(1), -math.inf)
        assert (lse.double() - torch.logsumexp(s, -1)).abs().max().item() < 1e-3, (b, h, n)


@needs_hopper
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("variant", ["ping-pong", "no ping-pong", "persistent"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_three_consumer_warpgroups_match_the_oracle(dtype, variant, causal, poison):
    """192 query rows a program, which K/V tiles of 128 do not divide: the causal diagonal
    falls inside a warpgroup's tile, and a warpgroup's rows can end before a tile's first
    column (a tile wholly masked for it)."""
    cfg = {"ping-pong": THREE, "no ping-pong": replace(THREE, pingpong=False),
           "persistent": replace(THREE, persistent=True)}[variant]
    _matches_the_oracle(cfg, 64, dtype, causal, ((1, 2, 1), (1, 2, 191), (2, 3, 1000),
                                                 (1, 2, 2048), (3, 50, 320)))


@needs_hopper
@pytest.mark.parametrize("persistent", [False, True], ids=["one-item", "persistent"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("head_dim", [64, 128])
def test_half_diagonal_matches_the_oracle(head_dim, dtype, persistent, poison):
    """Warpgroup 0 computing only the left half of its diagonal K/V tile: the same O and L,
    with items of one K/V tile (its first GEMM already the half one) and of several, a
    partial last tile, and more items than SMs."""
    cfg = replace(fg.default_config(head_dim), persistent=persistent, half_diagonal=True)
    _matches_the_oracle(cfg, head_dim, dtype, True, ((1, 2, 1), (1, 2, 70), (1, 2, 129),
                                                     (2, 3, 1000), (3, 50, 320)))


@needs_hopper
def test_three_consumer_timeline_has_three_warpgroups():
    q, k, v = fresh_qkv(1, 2, 2048, 64, dtype=torch.float16, device="cuda")
    t = fg.timeline(q, k, v, iters=3, program=0, config=THREE)
    assert len(t["warpgroups"]) == 3
    for wg in t["warpgroups"]:
        for it in wg["iterations"]:
            ts = [it[e] for e in fg.EVENTS]
            assert all(x is not None for x in ts) and ts == sorted(ts), it


@needs_hopper
def test_timeline_refuses_persistent():
    q, k, v = fresh_qkv(1, 2, 256, 128, dtype=torch.float16, device="cuda")
    with pytest.raises(ValueError, match="persistent"):
        fg.timeline(q, k, v, config=replace(fg.default_config(128), persistent=True))


@needs_hopper
def test_timeline_events_are_ordered_per_warpgroup():
    q, k, v = fresh_qkv(1, 2, 2048, 128, dtype=torch.float16, device="cuda")
    t = fg.timeline(q, k, v, iters=4, program=0)
    assert len(t["warpgroups"]) == 2
    for wg in t["warpgroups"]:
        assert 0.3 < wg["ns_per_cycle"] < 2.0  # an H200 SM runs at 0.5-2 GHz
        for it in wg["iterations"]:
            ts = [it[e] for e in fg.EVENTS]
            assert all(x is not None for x in ts) and ts == sorted(ts), it
