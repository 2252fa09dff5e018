"""Online softmax (flashedu/softmax and flashedu/ops/online): chapter 2's claims as properties.

Online softmax equals safe softmax for any length and any block split; the merge operator is
associative and commutative with an identity; fully masked rows give 0; the Triton kernels match.
"""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import flashedu
from flashedu.softmax import (empty_state, finalize, merge, merge_all, naive_softmax, online_softmax,
                              online_softmax_trace, running_mean_average, running_mean_sum,
                              safe_softmax, state_of_block)

lengths = st.integers(min_value=1, max_value=300)
seeds = st.integers(min_value=0, max_value=2**31 - 1)


def rand(*shape, seed, scale=3.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


@settings(max_examples=60, deadline=None)
@given(n=lengths, block=st.integers(1, 64), seed=seeds)
def test_online_equals_safe_for_any_length_and_block(n, block, seed):
    x = rand(3, n, seed=seed)
    exact = torch.softmax(x, dim=-1)
    assert torch.allclose(online_softmax(x, block=block), exact, atol=1e-12, rtol=0)
    assert torch.allclose(safe_softmax(x), exact, atol=1e-12, rtol=0)


def test_naive_softmax_overflows_in_fp16_and_safe_does_not():
    x = torch.tensor([10.0, 12.0], dtype=torch.float16)  # exp(12) > 65504, fp16's largest
    assert torch.isnan(naive_softmax(x)).any()
    assert torch.allclose(safe_softmax(x).double(), torch.softmax(x.double(), -1), atol=1e-3)


def test_huge_logits_and_masked_rows():
    x = torch.tensor([[1e4, -1e4, 0.0], [-math.inf, -math.inf, -math.inf], [-math.inf, 2.0, -math.inf]],
                     dtype=torch.float64)
    for f in (safe_softmax, online_softmax):
        y = f(x)
        assert torch.equal(y[0], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
        assert torch.equal(y[1], torch.zeros(3, dtype=torch.float64)), "fully masked row must be 0"
        assert torch.equal(y[2], torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))


def _partial_states(s, v, cuts):
    bounds = [0, *cuts, s.shape[-1]]
    return [state_of_block(s[..., a:b], v[..., a:b, :]) for a, b in zip(bounds, bounds[1:]) if b > a]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(3, 200), seed=seeds, data=st.data())
def test_merge_of_any_partition_is_attention(n, seed, data):
    s, v = rand(3, n, seed=seed), rand(n, 5, seed=seed + 1)  # 3 query rows share v
    cuts = sorted(data.draw(st.lists(st.integers(1, n - 1), max_size=6, unique=True)))
    parts = _partial_states(s, v, cuts)
    exact = torch.softmax(s, -1) @ v
    assert torch.allclose(finalize(merge_all(parts)), exact, atol=1e-12)
    # Any order: reversed, and a random permutation.
    assert torch.allclose(finalize(merge_all(parts[::-1])), exact, atol=1e-12)
    perm = data.draw(st.permutations(range(len(parts))))
    assert torch.allclose(finalize(merge_all([parts[i] for i in perm])), exact, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(seed=seeds)
def test_merge_is_associative_and_commutative_with_identity(seed):
    s, v = rand(4, 30, seed=seed), rand(30, 3, seed=seed + 1)
    a, b, c = _partial_states(s, v, [7, 19])
    left, right = merge(merge(a, b), c), merge(a, merge(b, c))
    for x, y in ((left, right), (merge(a, b), merge(b, a))):
        assert torch.allclose(x.m, y.m) and torch.allclose(x.l, y.l, atol=1e-12) and torch.allclose(x.o, y.o, atol=1e-12)
    e = empty_state((4,), 3, dtype=torch.float64)
    ae = merge(a, e)
    assert torch.equal(ae.m, a.m) and torch.equal(ae.l, a.l) and torch.equal(ae.o, a.o)


def test_merge_of_two_empty_states_is_empty_not_nan():
    e = empty_state((2,), 4)
    both = merge(e, e)
    assert torch.equal(finalize(both), torch.zeros(2, 4))
    assert not torch.isnan(both.l).any()


def test_trace_and_running_means():
    trace = online_softmax_trace(torch.tensor([1.0, 3.0, 2.0, 5.0]))
    assert [m for _, m, _ in trace] == [1.0, 3.0, 3.0, 5.0]
    # The final running sum is sum(exp(x - 5)).
    assert math.isclose(trace[-1][2], sum(math.exp(x - 5) for x in (1, 3, 2, 5)))
    xs = [4.0, 8.0, 15.0, 16.0, 23.0, 42.0]
    means = running_mean_average(xs)
    sums, mean = running_mean_sum(xs)
    assert math.isclose(means[-1], mean) and math.isclose(sums[-1], sum(xs))
    assert all(math.isclose(m, sum(xs[:i + 1]) / (i + 1)) for i, m in enumerate(means))
    with pytest.raises(ValueError, match="1-d"):
        online_softmax_trace(torch.zeros(2, 2))


@pytest.mark.parametrize("online", [True, False], ids=["online", "safe"])
@pytest.mark.parametrize("n", [1, 7, 129, 1000])
def test_triton_softmax_matches(n, online, poison):
    from flashedu.ops.online.softmax_kernel import softmax_triton

    device = flashedu.runtime.current().device
    x = torch.randn(5, n, dtype=torch.float64) * 4
    x[1, : n // 2] = -math.inf  # a half-masked row
    x[3] = -math.inf  # a fully masked row
    y = softmax_triton(x.float().to(device), online=online).double().cpu()
    assert not torch.isnan(y).any()
    assert torch.allclose(y, safe_softmax(x), atol=1e-6)
    assert torch.equal(y[3], torch.zeros(n, dtype=torch.float64))


def test_triton_softmax_rejects_bad_input():
    from flashedu.ops.online.softmax_kernel import softmax_triton

    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        softmax_triton([1.0, 2.0])
    with pytest.raises(ValueError, match="non-empty last dim"):
        softmax_triton(torch.zeros(3, 0))


@pytest.mark.parametrize("block_m, block_n", [(1, 16), (2, 4), (8, 32)])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_online_attention_kernel_any_blocks(block_m, block_n, causal, poison):
    """One-pass attention in Triton for blocks that do not divide N (37) or D (24 pads to 32)."""
    from conftest import fresh_qkv, oracle
    from flashedu.ops.online.kernel import online_attention_triton

    device = flashedu.runtime.current().device
    q, k, v = fresh_qkv(1, 2, 37, 24, dtype=torch.float32, device=device)
    o = online_attention_triton(q, k, v, causal=causal, block_m=block_m, block_n=block_n)
    assert (o.double().cpu() - oracle(q, k, v, causal=causal)).abs().max().item() < 2e-5


@pytest.mark.parametrize("bad", [0, 3, 2.0, True])
def test_online_attention_kernel_rejects_bad_blocks(bad):
    from flashedu.ops.online.kernel import online_attention_triton

    q = torch.randn(1, 1, 4, 16)
    with pytest.raises(ValueError, match="block_n must be a power of 2"):
        online_attention_triton(q, q, q, block_n=bad)
