"""Launching a bound kernel (flashedu.ops._bound): the same results as Triton's own path, a new
binding wherever Triton would specialise differently, and no binding under the interpreter."""
from __future__ import annotations

import pytest
import triton
import torch

from conftest import DEVICE, GPU, fresh_qkv, oracle, oracle_grads, tolerance
from flashedu.ops import _bound
from flashedu.ops.split_kv.kernel import _split_kernel, split_kv_attention_triton
from flashedu.ops.v2 import kernel as v2k


def test_aligned_sees_a_view_that_starts_off_a_16_byte_boundary():
    t = torch.zeros(64, dtype=torch.float16)
    assert _bound.aligned(t, t[8:])  # 16 bytes in
    assert not _bound.aligned(t, t[1:])  # 2 bytes in: Triton would compile another kernel


@pytest.mark.skipif(GPU, reason="the interpreter's path")
def test_the_interpreter_never_binds():
    _bound.clear()
    q, k, v = fresh_qkv(1, 2, 33, 16, dtype=torch.float32, device=DEVICE)
    for _ in range(2):
        v2k.flash_attention_v2(q, k, v)
    assert not _bound._BOUND


def _strided(q):
    # Same values, other strides: [B, N, H, D] memory seen as [B, H, N, D].
    return q.transpose(1, 2).contiguous().transpose(1, 2)


def _misaligned(q):
    # Same values, starting 2 bytes past an aligned address.
    flat = torch.empty(q.numel() + 1, dtype=q.dtype, device=q.device)
    view = flat[1:].view(q.shape)
    view.copy_(q)
    return view


@pytest.mark.skipif(not GPU, reason="bindings exist only for compiled kernels")
@pytest.mark.parametrize("causal", [False, True])
def test_v2_forward_bound_calls_match_the_oracle(poison, causal):
    _bound.clear()
    for layout in (lambda t: t, _strided, _misaligned, lambda t: t):
        q, k, v = (layout(t) for t in fresh_qkv(2, 3, 129, 64, dtype=torch.float16, device=DEVICE))
        for _ in range(2):  # the first call binds, the second launches the binding
            o = v2k.flash_attention_v2(q, k, v, causal=causal)
            err = (o.double().cpu() - oracle(q, k, v, causal=causal)).abs().max().item()
            assert err < tolerance(torch.float16), err
    # contiguous, strided, misaligned: three bindings (the fourth layout reuses the first)
    assert sum(key[0] is v2k._fwd_kernel for key in _bound._BOUND) == 3


@pytest.mark.skipif(not GPU, reason="bindings exist only for compiled kernels")
def test_v2_backward_bound_calls_match_the_oracle():
    _bound.clear()
    for _ in range(2):
        q, k, v = (t.requires_grad_() for t in fresh_qkv(1, 2, 200, 64, dtype=torch.float16,
                                                         device=DEVICE))
        do = torch.randn_like(q)
        v2k.flash_attention_v2(q, k, v, causal=True).backward(do)
        for got, want in zip((q.grad, k.grad, v.grad), oracle_grads(q, k, v, do, causal=True)):
            err = (got.double().cpu() - want).abs().max().item()
            assert err < 4 * tolerance(torch.float16), err


@pytest.mark.skipif(not GPU, reason="bindings exist only for compiled kernels")
def test_split_kv_bound_decode_matches_the_oracle(poison):
    _bound.clear()
    for _ in range(3):
        q = torch.randn(2, 8, 1, 128, device=DEVICE, dtype=torch.float16)
        k, v = (torch.randn(2, 2, 5000, 128, device=DEVICE, dtype=torch.float16) for _ in range(2))
        o = split_kv_attention_triton(q, k, v)
        want = oracle(q, k.repeat_interleave(4, 1), v.repeat_interleave(4, 1))
        assert (o.double().cpu() - want).abs().max().item() < tolerance(torch.float16)
    assert sum(key[0] is _split_kernel for key in _bound._BOUND) == 1


@pytest.mark.skipif(not GPU, reason="bindings exist only for compiled kernels")
def test_a_binding_hands_the_launcher_addresses_not_tensors():
    _bound.clear()
    q, k, v = fresh_qkv(1, 2, 64, 64, dtype=torch.float16, device=DEVICE)
    v2k.flash_attention_v2(q, k, v)
    (bound,) = [b for key, b in _bound._BOUND.items() if key[0] is v2k._fwd_kernel]
    assert bound._pointers == (0, 1, 2, 3, 4)  # Q, K, V, O and L's stand-in
    if triton.__version__.startswith("3.6."):  # the version the direct C launch was written for
        assert bound._direct is not None


def test_call_key_tells_apart_every_call_the_checks_or_triton_would_treat_differently():
    q, k, v = (torch.zeros(1, 2, 32, 16) for _ in range(3))
    key = _bound.call_key(q, k, v, True)
    assert _bound.strides(key) == (*q.stride(), *k.stride(), *v.stride())
    assert _bound.call_key(q, k, v, True) == key
    flat = torch.zeros(q.numel() + 1)
    for other in (_strided(q), q.half(), flat[1:].view(q.shape), q[:, :, :31]):
        assert _bound.call_key(other, k, v, True) != key  # strides, dtype, alignment, shape
    assert _bound.call_key(q, k, v, False) != key  # the caller's options


def test_quick_scale_passes_only_what_the_full_check_would_return_unchanged():
    from flashedu.validate import quick_scale
    assert quick_scale(None, 64) == 0.125 and quick_scale(0.3, 64) == 0.3
    # anything else goes to the full checks, which accept ints and name what is wrong
    for bad in (-1.0, 0.0, float("nan"), float("inf"), 1, True, "0.1"):
        assert quick_scale(bad, 64) is None


@pytest.mark.skipif(not GPU, reason="the checks are skipped only for calls bound on a GPU")
def test_calls_that_skip_the_checks_still_refuse_a_bad_scale():
    q = torch.randn(1, 8, 1, 64, device=DEVICE, dtype=torch.float16)
    k, v = (torch.randn(1, 2, 300, 64, device=DEVICE, dtype=torch.float16) for _ in range(2))
    qq = torch.randn(1, 2, 300, 64, device=DEVICE, dtype=torch.float16)
    for call in (lambda **kw: split_kv_attention_triton(q, k, v, **kw),
                 lambda **kw: v2k.flash_attention_v2(qq, k, v, **kw)):
        call()
        call()  # bound, checks skipped
        with pytest.raises(ValueError, match="scale"):
            call(scale=-1.0)
        with pytest.raises(ValueError, match="scale"):
            call(scale=float("nan"))
