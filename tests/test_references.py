"""The tiled references (standard, v1, v2) against the fp64 oracle, on odd sizes, fresh inputs."""
from __future__ import annotations

import math

import pytest
import torch

import flashedu
from flashedu.iomodel import SRAMOverflowError
from flashedu.iomodel.tiles import exp_diff, finite_or_zero, nonzero_or_one
from flashedu.ops.standard.reference import causal_mask
from flashedu.softmax import safe_softmax as masked_softmax
from flashedu.ops.v2.autograd import v2_attention_lse

from conftest import fresh_qkv, oracle, tolerance

NAMES = ("standard_reference", "v1_reference", "v2_reference")


def test_registered_with_algorithm_and_chapter():
    for name, alg, chapter in (("v1_reference", "v1", 3), ("v2_reference", "v2", 4)):
        impl = flashedu.get(name)
        assert (impl.algorithm, impl.backend, impl.chapter) == (alg, "reference", chapter)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("N", [1, 7, 129, 1000])
@pytest.mark.parametrize("blocks", [(16, 32), (None, None)], ids=["b16x32", "default"])
def test_matches_fp64_oracle(name, causal, N, blocks, poison):
    if N == 1000 and blocks == (16, 32):
        blocks = (64, 96)  # keep the loop count small; 1000 is still not a multiple
    q, k, v = fresh_qkv(1, 2, N, 32, dtype=torch.float64, device="cpu")
    o = flashedu.get(name).fn(q, k, v, causal=causal, block_r=blocks[0], block_c=blocks[1])
    assert o.shape == q.shape and o.dtype == q.dtype
    assert (o - oracle(q, k, v, causal=causal)).abs().max().item() < tolerance(torch.float64)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_low_precision_inputs_upcast_inside(name, dtype):
    q, k, v = fresh_qkv(2, 3, 77, 16, dtype=dtype, device="cpu")
    o = flashedu.get(name).fn(q, k, v, causal=True, block_r=16, block_c=16)
    assert o.dtype == dtype
    assert (o.double() - oracle(q, k, v, causal=True)).abs().max().item() < tolerance(dtype)


@pytest.mark.parametrize("name", NAMES)
def test_keys_longer_than_queries_and_custom_scale(name):
    q, _, _ = fresh_qkv(1, 1, 33, 8, dtype=torch.float64, device="cpu")
    _, k, v = fresh_qkv(1, 1, 70, 8, dtype=torch.float64, device="cpu")
    o = flashedu.get(name).fn(q, k, v, scale=0.3, block_r=16, block_c=32)
    assert (o - oracle(q, k, v, scale=0.3)).abs().max().item() < 1e-10


def test_v2_logsumexp_is_m_plus_log_l():
    q, k, v = fresh_qkv(1, 2, 45, 16, dtype=torch.float64, device="cpu")
    o, L = v2_attention_lse(q, k, v, causal=True, block_r=16, block_c=16)
    s = (q @ k.transpose(-1, -2)) / math.sqrt(16)
    s = s.masked_fill(~causal_mask(45, 45, "cpu"), float("-inf"))
    assert torch.allclose(L, torch.logsumexp(s, dim=-1), atol=1e-12)


def test_standard_reference_is_differentiable():
    q, k, v = (t.requires_grad_(True) for t in fresh_qkv(1, 2, 37, 8, dtype=torch.float64, device="cpu"))
    o = flashedu.get("standard_reference").fn(q, k, v, causal=True, block_r=16, block_c=8)
    g = torch.autograd.grad(o.square().sum(), (q, k, v))
    o2 = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    g2 = torch.autograd.grad(o2.square().sum(), (q, k, v))
    assert all((a - b).abs().max() < 1e-10 for a, b in zip(g, g2))


def test_masked_softmax_and_causal_mask_keep_their_behaviour():
    s = torch.tensor([[0.0, 1.0, float("-inf")], [float("-inf")] * 3])
    p = masked_softmax(s)
    assert torch.equal(p[1], torch.zeros(3)) and torch.allclose(p[0].sum(), torch.tensor(1.0))
    assert p[0, 2] == 0
    assert torch.equal(causal_mask(2, 3, "cpu"), torch.tensor([[True, False, False], [True, True, False]]))


def test_tile_helpers_keep_fully_masked_rows_at_zero():
    ninf = torch.tensor([float("-inf")])
    assert exp_diff(ninf, ninf).item() == 0.0  # not NaN
    assert exp_diff(torch.tensor([1.0]), torch.tensor([2.0])).item() == pytest.approx(math.exp(-1))
    assert finite_or_zero(ninf).item() == 0.0
    assert nonzero_or_one(torch.tensor([0.0])).item() == 1.0


@pytest.mark.parametrize("name", NAMES)
def test_bad_arguments_raise_naming_them(name):
    fn = flashedu.get(name).fn
    q, k, v = fresh_qkv(1, 1, 16, 8, dtype=torch.float32, device="cpu")
    with pytest.raises(ValueError, match="block_c"):
        fn(q, k, v, block_r=8, block_c=0)
    with pytest.raises(ValueError, match="sram_bytes"):
        fn(q, k, v, sram_bytes=-1)
    with pytest.raises(SRAMOverflowError, match="capacity"):
        fn(q, k, v, block_r=16, block_c=16, sram_bytes=512)
    with pytest.raises(ValueError, match="q must have shape"):
        fn(q[0], k, v)
