"""The Gluon backward (flashedu/ops/fa3/gluon_bwd*.py): compiled for sm_90 on any machine and its
resources checked; on a Hopper GPU, its gradients against fp64 autograd."""
from __future__ import annotations

import pytest
import torch

from conftest import GPU, fresh_qkv, tolerance
from flashedu.ops.fa3 import gluon_bwd as gb

HOPPER = GPU and torch.cuda.get_device_capability() == (9, 0)
HOPPER_SHARED = 232448  # shared memory a Hopper block may opt into (227 KB)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("head_dim", gb.HEAD_DIMS)
def test_compiles_for_sm90_within_hopper_limits(head_dim, causal):
    """Two warpgroups, the five GEMMs of a Q tile (one wgmma per 16-wide step of each
    reduction: D for Sᵀ and dPᵀ, BLOCK_M for dV and dK, BLOCK_N for dQ; the causal build has a
    second loop for the diagonal tiles), one exponential per score, in shared memory."""
    r = gb.hopper_bwd_resources(head_dim, causal=causal)
    assert r["shared_bytes"] <= HOPPER_SHARED
    assert r["threads"] == 256 and r["setmaxnreg"] == []
    steps = 2 * head_dim // 16 + 2 * gb.BLOCK_M // 16 + gb.BLOCK_N // 16
    assert r["wgmma"] == steps * (2 if causal else 1)
    assert r["loop_exps"] == gb.BLOCK_M * gb.BLOCK_N // 256
    # K's and V's wgmma descriptors, hoisted out of the loop, spilled 26 instructions' worth at
    # d = 128 before _tile read them through an opaque index. triton 3.6's ptxas (the GPU
    # machine's) then spills nothing in the loop; 3.9's still spills a little in the causal one.
    assert r["loop_spills"] <= (0 if head_dim == 64 or not causal else 16)
    assert r["stack_bytes"] <= (0 if head_dim == 64 else 128)


def test_fa3_gluon_takes_this_backward_only_when_switched_on(monkeypatch):
    from flashedu.ops.fa3 import gluon as fg
    assert fg._backward_for(128) is None  # chapter 4's: as fast or faster (case study 1)
    monkeypatch.setattr(fg, "GLUON_BACKWARD", True)
    assert fg._backward_for(128) is gb.gluon_backward and fg._backward_for(64) is gb.gluon_backward
    assert fg._backward_for(256) is None  # no room in shared memory: chapter 4's


def test_rejects_head_dims_it_has_no_room_for():
    q = torch.zeros(1, 1, 8, 256)
    with pytest.raises(ValueError, match="head dim must be one of"):
        gb.gluon_backward(q, q, q, q, q, q[..., 0], causal=False, scale=1.0)


# Odd sizes: shorter than a tile, one past a tile, longer keys than queries (not causal).
SHAPES = [(1, 1, 1, 1, 64), (2, 3, 129, 129, 64), (1, 2, 1000, 1000, 128), (1, 1, 70, 300, 128)]


@pytest.mark.skipif(not HOPPER, reason="Gluon's wgmma kernels run on a Hopper GPU (sm_90) only")
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_gradients_match_fp64_oracle(shape, dtype, causal, poison):
    B, H, N, N_K, D = shape
    if causal and N != N_K:
        pytest.skip("causal attention needs as many keys as queries here")
    from flashedu.ops.v2.kernel import flash_attention_v2_lse

    q, k, v = fresh_qkv(B, H, N, D, n_k=N_K, dtype=dtype, device="cuda")
    do = torch.randn_like(q)
    o, lse = flash_attention_v2_lse(q, k, v, causal=causal)
    got = gb.gluon_backward(do, q, k, v, o, lse, causal=causal, scale=D ** -0.5)
    exact = [t.detach().cpu().double().requires_grad_(True) for t in (q, k, v)]
    torch.nn.functional.scaled_dot_product_attention(*exact, is_causal=causal).backward(
        do.cpu().double())
    for name, g, want in zip("qkv", got, exact):
        assert g.dtype == dtype and not torch.isnan(g).any(), f"d{name} has NaN"
        err = (g.double().cpu() - want.grad).abs().max().item()
        assert err < 4 * tolerance(dtype), f"d{name}: max error {err:.2e}"


@pytest.mark.skipif(not HOPPER, reason="Gluon's wgmma kernels run on a Hopper GPU (sm_90) only")
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("head_dim", gb.HEAD_DIMS)
def test_fa3_gluon_autograd_with_this_backward(head_dim, causal, monkeypatch, poison):
    """fa3_gluon's forward and this backward through autograd (GLUON_BACKWARD on), as the
    registry calls it, against fp64 autograd."""
    from flashedu.ops.fa3 import gluon as fg
    monkeypatch.setattr(fg, "GLUON_BACKWARD", True)
    q, k, v = fresh_qkv(2, 2, 200, head_dim, dtype=torch.float16, device="cuda")
    do = torch.randn_like(q)
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    fg.flash_attention_fa3(*leaves, causal=causal).backward(do)
    exact = [t.detach().cpu().double().requires_grad_(True) for t in (q, k, v)]
    torch.nn.functional.scaled_dot_product_attention(*exact, is_causal=causal).backward(
        do.cpu().double())
    for name, got, want in zip("qkv", leaves, exact):
        assert got.grad is not None and not torch.isnan(got.grad).any(), f"d{name} missing or NaN"
        err = (got.grad.double().cpu() - want.grad).abs().max().item()
        assert err < 4 * tolerance(torch.float16), f"d{name}: max error {err:.2e}"
