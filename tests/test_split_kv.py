"""Split-KV decoding: reference and Triton kernels against fp64 attention on odd lengths and
split counts, grouped-query heads, merge-order invariance of the partial states, traffic, and
errors that name the argument."""
from __future__ import annotations

import random

import pytest
import torch

import flashedu
from conftest import GPU, oracle, tolerance
from flashedu.ops.split_kv import (merge_partials, simulate_split_kv, split_kv_attention,
                                   split_kv_attention_triton, split_kv_partials)
from flashedu.ops.split_kv.plan import FLASH_ATTN_WAVE_FILL, num_splits_heuristic, split_ranges
from flashedu.softmax.state import State, finalize, merge, merge_all

DEVICE = flashedu.runtime.current().device
DT = torch.float16 if GPU else torch.float32


def gqa_inputs(B, H, H_kv, N_q, N_k, D, *, dtype, device="cpu"):
    g = torch.Generator().manual_seed(torch.seed())
    shapes = [(B, H, N_q, D), (B, H_kv, N_k, D), (B, H_kv, N_k, D)]
    return tuple(torch.randn(*s, generator=g, dtype=torch.float64).to(device=device, dtype=dtype) for s in shapes)


def gqa_oracle(q, k, v, *, causal=False, scale=None):
    group = q.shape[1] // k.shape[1]
    return oracle(q, k.repeat_interleave(group, 1), v.repeat_interleave(group, 1), causal=causal, scale=scale)


# (B, H, H_kv, N_q, N_k, D, num_splits): odd key lengths, more splits than tiles, one split.
CASES = [
    pytest.param((1, 1, 1, 1, 1, 16, None), id="single-key"),
    pytest.param((2, 8, 2, 1, 333, 32, None), id="decode-gqa4-default-splits"),
    pytest.param((1, 4, 1, 3, 100, 16, 5), id="3-rows-mqa-5-splits"),
    pytest.param((3, 6, 3, 2, 47, 16, 7), id="batch3-more-splits-than-tiles"),
    pytest.param((1, 2, 2, 1, 130, 16, 1), id="one-split"),
]


@pytest.mark.parametrize("case", CASES)
def test_reference_matches_fp64(case):
    B, H, H_kv, N_q, N_k, D, S = case
    q, k, v = gqa_inputs(B, H, H_kv, N_q, N_k, D, dtype=torch.float64)
    o = split_kv_attention(q, k, v, num_splits=S, block_r=16, block_c=16)
    assert o.shape == q.shape and o.dtype == q.dtype
    assert (o - gqa_oracle(q, k, v)).abs().max().item() < tolerance(torch.float64)


@pytest.mark.parametrize("one_launch", [True, False], ids=["one-launch", "two-launches"])
@pytest.mark.parametrize("case", CASES)
def test_triton_matches_fp64(case, one_launch, poison):
    B, H, H_kv, N_q, N_k, D, S = case
    q, k, v = gqa_inputs(B, H, H_kv, N_q, N_k, D, dtype=DT, device=DEVICE)
    o = split_kv_attention_triton(q, k, v, num_splits=S, one_launch=one_launch)
    assert o.shape == q.shape and o.dtype == q.dtype and not torch.isnan(o).any()
    assert (o.double().cpu() - gqa_oracle(q, k, v)).abs().max().item() < tolerance(DT)


def test_one_launch_leaves_its_tickets_at_zero_and_runs_again(poison):
    """The merging program resets its row block's counter: a second launch with the same
    buffers (fresh inputs, a causal one in between) merges again, and every counter is 0."""
    from flashedu.ops.split_kv import kernel as skv
    for causal, n_q in ((False, 1), (True, 37), (False, 1)):
        q, k, v = gqa_inputs(2, 8, 2, n_q, 37 if causal else 301, 32, dtype=DT, device=DEVICE)
        o = split_kv_attention_triton(q, k, v, causal=causal, num_splits=3)
        assert not torch.isnan(o).any()
        err = (o.double().cpu() - gqa_oracle(q, k, v, causal=causal)).abs().max().item()
        assert err < tolerance(DT)
    assert skv._TICKETS and all(int(t.abs().sum()) == 0 for t in skv._TICKETS.values())


@pytest.mark.parametrize("impl", [split_kv_attention, split_kv_attention_triton], ids=["reference", "triton"])
def test_causal_square_with_gqa(impl):
    q, k, v = gqa_inputs(2, 4, 2, 37, 37, 16, dtype=DT if impl is split_kv_attention_triton else torch.float64,
                         device=DEVICE if impl is split_kv_attention_triton else "cpu")
    o = impl(q, k, v, causal=True, num_splits=3)
    assert (o.double().cpu() - gqa_oracle(q, k, v, causal=True)).abs().max().item() < tolerance(q.dtype)


@pytest.mark.skipif(not GPU, reason="a long cache: GPU only")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_long_cache_gqa_8_to_1(dtype):
    q, k, v = gqa_inputs(2, 64, 8, 1, 50_003, 128, dtype=dtype, device="cuda")
    o = split_kv_attention_triton(q, k, v)
    ref = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), enable_gqa=True)
    assert (o.float() - ref).abs().max().item() < tolerance(dtype)


def test_kernel_partials_merge_in_any_order():
    """⊕ is associative and commutative: the kernel's partial states merged in a shuffled order,
    and as a balanced tree, give the kernel's own merged output."""
    q, k, v = gqa_inputs(2, 4, 1, 1, 150, 16, dtype=DT, device=DEVICE)
    state, ranges = split_kv_partials(q, k, v, num_splits=6)
    S = state.o.shape[0]
    assert S == 6 and ranges[0][0] == 0 and ranges[-1][1] == 150
    parts = [State(state.m[s], state.l[s], state.o[s]) for s in range(S)]
    want = merge_partials(state, dtype=torch.float32).cpu()
    order = list(range(S))
    random.Random(0).shuffle(order)
    shuffled = finalize(merge_all(parts[s] for s in order)).cpu()
    tree = finalize(merge(merge(parts[0], parts[1]), merge(merge(parts[2], parts[3]), merge(parts[4], parts[5])))).cpu()
    for got in (shuffled, tree):
        assert (got - want).abs().max().item() < 1e-5
    perm = torch.tensor(order, device=state.o.device)
    permuted = State(*(t.index_select(0, perm) for t in (state.m, state.l, state.o)))
    assert (merge_partials(permuted, dtype=torch.float32).cpu() - want).abs().max().item() < 1e-5
    assert (want.double() - gqa_oracle(q, k, v)).abs().max().item() < tolerance(DT)


def test_reference_traffic_is_exact_and_shape_only_agrees():
    """K and V are read once per group of query heads (not once per query head); each split
    writes its (m, ℓ, o) once and the merge reads them back."""
    B, H, H_kv, N_k, D, S = 2, 8, 2, 200, 16, 4
    q, k, v = gqa_inputs(B, H, H_kv, 1, N_k, D, dtype=torch.float32)
    _, r = split_kv_attention(q, k, v, num_splits=S, block_r=16, block_c=16, return_report=True)
    R = H // H_kv  # packed rows per K/V head
    assert r.per_tensor["K"].read_elements == B * H_kv * N_k * D
    assert r.per_tensor["Q"].read_elements == S * B * H_kv * R * D
    assert r.per_tensor["O_split"].write_elements == S * B * H_kv * R * D == r.per_tensor["O_split"].read_elements
    assert r.per_tensor["O"].write_elements == B * H * D
    shape_only = simulate_split_kv(N_k=N_k, d=D, heads=H, kv_heads=H_kv, batch=B, num_splits=S,
                                   block_r=16, block_c=16, dtype=torch.float32)
    assert shape_only.counts() == r.counts()


def test_split_ranges_cover_the_keys_in_whole_tiles():
    for n_k, S, bn in ((1, 1, 16), (333, 4, 16), (100, 9, 16), (4096, 7, 128)):
        ranges = split_ranges(n_k, S, bn)
        assert len(ranges) == S and ranges[0][0] == 0 and ranges[-1][1] == n_k
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        # Splits start on tile boundaries; past the end of the keys they are empty.
        assert all((lo % bn == 0 or lo == n_k) and lo <= hi for lo, hi in ranges)


def test_num_splits_heuristic():
    assert num_splits_heuristic(programs=128, n_blocks=1000, sms=132) == 1  # the GPU is full already
    # 8 programs on 132 SMs: the best eligible count is 49 (392 programs in 3 waves of 132,
    # efficiency 0.99); the smallest count within 95% of that is 16 (128 of 132 SMs busy, 0.97),
    # where flash-attn's 85% would take 14 (112 busy, 0.85).
    assert num_splits_heuristic(programs=8, n_blocks=1024, sms=132) == 16
    assert num_splits_heuristic(programs=8, n_blocks=1024, sms=132,
                                wave_fill=FLASH_ATTN_WAVE_FILL) == 14
    assert num_splits_heuristic(programs=32, n_blocks=1024, sms=132) == 4  # 128 busy again
    assert num_splits_heuristic(programs=8, n_blocks=3, sms=132) <= 3  # never more splits than tiles


def test_bad_inputs_name_the_argument():
    q, k, v = gqa_inputs(1, 6, 4, 1, 20, 16, dtype=torch.float32)
    for impl in (split_kv_attention, split_kv_attention_triton):
        with pytest.raises(ValueError, match=r"H = 6 heads of q a multiple of H_kv.*H_kv = 4"):
            impl(q, k, v)
        with pytest.raises(ValueError, match="batch and head dims"):
            impl(q[:, :4], k, v[:, :2])
        with pytest.raises(ValueError, match="causal"):
            impl(q[:, :4], k, v, causal=True)
    with pytest.raises(ValueError, match="num_splits"):
        split_kv_attention(q[:, :4], k, v, num_splits=0)
    for bad in (dict(num_splits=0), dict(num_splits=2.0), dict(num_splits=[2]),
                dict(num_splits=True), dict(block_n=-16), dict(block_n="16")):
        name = next(iter(bad))
        with pytest.raises(ValueError, match=name):
            split_kv_attention_triton(q[:, :4], k, v, **bad)
    with pytest.raises(TypeError, match="one_launch"):
        split_kv_attention_triton(q[:, :4], k, v, one_launch=1)


def test_decode_animation_timeline_and_figures():
    from flashedu.viz.decode import (FINISHED, IDLE, MERGING, READING, _timeline, decode_figure,
                                     measured_decode_figure, split_weights_figure)

    # 6 programs of 3 tiles on 4 SMs: two waves (4, then 2 busy), one merge step, then done.
    end, states = _timeline(6, 4, 3, 1, 2)
    assert end == 7
    assert list(states(0)) == [READING] * 4 and list(states(4)) == [READING] * 2 + [IDLE] * 2
    assert list(states(6)) == [MERGING] * 2 + [IDLE] * 2 and list(states(7)) == [FINISHED] * 4
    fig = decode_figure(batch=1, heads=8, kv_heads=2, N_k=4096, gpu="A100")
    assert len(fig.frames) > 5 and fig.layout.sliders
    shares = split_weights_figure(N_k=256, num_splits=4).data[1].y
    assert sum(shares) == pytest.approx(1.0)
    rows = [dict(impl="split_kv_triton", B=1, N_k=n, ms=0.1, cache_GBps=g) for n, g in ((4096, 900.0), (65536, 3000.0))]
    fig = measured_decode_figure(dict(rows=rows, provenance=dict(gpu="NVIDIA H200", torch="2.11", date="2026-11-22")))
    assert list(fig.data[0].y) == [900.0, 3000.0]


def test_default_merges_in_the_launch_only_on_a_short_cache(monkeypatch):
    """one_launch=None: a cache of at most ONE_LAUNCH_MAX_BYTES merges in the split launch, a
    longer one through the second kernel; both, and one split in one launch, give the same
    attention."""
    from flashedu.ops.split_kv import kernel as skv
    merges = []
    real_merge = skv._merge
    monkeypatch.setattr(skv, "_merge", lambda *a: merges.append(1) or real_merge(*a))
    q, k, v = gqa_inputs(1, 4, 2, 1, 150, 16, dtype=DT, device=DEVICE)
    short = split_kv_attention_triton(q, k, v, num_splits=3)
    assert merges == []
    monkeypatch.setattr(skv, "ONE_LAUNCH_MAX_BYTES", 2 * k.numel() * k.element_size() - 1)
    long = split_kv_attention_triton(q, k, v, num_splits=3)
    assert merges == [1]
    assert (short - long).abs().max().item() < tolerance(DT)
    # one split in one launch: nothing to merge, the program writes o itself
    alone = split_kv_attention_triton(q, k, v, num_splits=1, one_launch=True)
    assert merges == [1]
    assert (alone - long).abs().max().item() < tolerance(DT)
