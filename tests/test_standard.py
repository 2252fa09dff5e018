"""Standard attention (flashedu/ops/standard): the reference's gradients against SDPA's, the causal
mask and masked softmax it is built on, and standard_triton past int32 offsets (GPU only).

The reference's forward is checked against the fp64 oracle beside v1's and v2's, in test_v2.py.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import flashedu
from conftest import GPU, fresh_qkv
from flashedu.ops.standard.reference import causal_mask
from flashedu.softmax import safe_softmax as masked_softmax


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


@pytest.mark.skipif(not GPU, reason="2**31 scores need 12 GiB of GPU memory; the interpreter is too slow")
def test_standard_triton_past_int32_offsets():
    """B·H·N² = 3 · 32768² > 2**31 scores: the last head's S and P lie past int32 offsets, where
    an int32 kernel wraps around (the H200 benchmark hit an illegal memory access there)."""
    from flashedu.ops.standard.kernel import standard_attention_triton

    q, k, v = (torch.randn(1, 3, 32768, 16, device="cuda", dtype=torch.float16) for _ in range(3))
    o = standard_attention_triton(q, k, v, causal=True)
    torch.cuda.synchronize()
    last = F.scaled_dot_product_attention(*(t[:, 2:].float() for t in (q, k, v)), is_causal=True)
    assert (o[:, 2:].float() - last).abs().max().item() < 1e-2
