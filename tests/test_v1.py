"""FlashAttention v1 (flashedu/ops/v1): v1_triton's forward against the fp64 oracle, and its backward
(Algorithm 4 in v1's schedule) against fp64 autograd and the v1 reference.

Under the interpreter (no GPU): fp32 (plus one small fp16 case) at N ≤ 129, D ≤ 64 for gradients
(D ≤ 128 forward). With a GPU: fp16 and bf16, N up to 2048, D up to 128. Gradients are compared
norm-wise, relative to the reference's norm plus a small absolute floor per element, because their
size grows with N. The v1 reference is tested beside v2's, in test_v2.py, as are the refusals that
v1_triton and v2_triton share.
"""
from __future__ import annotations

import math

import pytest
import torch

import flashedu
from conftest import DEVICE, GPU, fresh_qkv, oracle, qkv_of_shape, tolerance
from conftest import oracle_grads as _oracle_grads
from flashedu.ops.v1.kernel_bwd import attention_backward
from flashedu.ops.v1.kernel import flash_attention_v1, flash_attention_v1_stats

DTYPES = [torch.float16, torch.bfloat16] if GPU else [torch.float32]


# ---- the forward ----------------------------------------------------------------------------

V1_SHAPES = [(1, 1, 1, 1, 16), (2, 3, 7, 7, 16), (1, 2, 129, 129, 32), (1, 1, 70, 45, 64),
             (1, 1, 33, 33, 128)]
if GPU:
    V1_SHAPES += [(2, 3, 1000, 1000, 64), (1, 2, 1000, 1000, 128), (1, 4, 2048, 2048, 128)]


def ids(shape):
    return "x".join(map(str, shape))


def _max_err(o, ref):
    return (o.double().cpu() - ref).abs().max().item()


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", V1_SHAPES, ids=ids)
def test_v1_forward_matches_oracle(shape, dtype, causal, poison):
    if causal and shape[2] != shape[3]:
        pytest.skip("causal needs N_Q == N_K")
    q, k, v = qkv_of_shape(shape, dtype)
    o = flash_attention_v1(q, k, v, causal=causal)
    assert not torch.isnan(o).any(), "output has NaN: an element was not written"
    # O is re-rounded to the input dtype after every K/V tile (FA1 keeps it in HBM): Tc roundings
    # of a running average, each at most half an ulp of |O| <= 1, so twice the usual tolerance.
    assert _max_err(o, oracle(q, k, v, causal=causal)) < 2 * tolerance(dtype)


def test_v1_strided_inputs_and_block_sizes(poison):
    dtype = DTYPES[0]
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 50, 2, 32, generator=g, dtype=torch.float64).to(DEVICE, dtype).transpose(1, 2)
               for _ in range(3))
    o = flash_attention_v1(q, k, v, causal=True, block_m=16, block_n=16)
    assert _max_err(o, oracle(q, k, v, causal=True)) < 2 * tolerance(dtype)
    with pytest.raises(ValueError, match="block_m"):
        flash_attention_v1(q, k, v, block_m=24)


# ---- the backward ---------------------------------------------------------------------------

# Relative gradient error allowed (norm-wise). fp32: the interpreter computes in fp32 and shows
# ~1e-7; 1e-5 leaves room for sums over N. fp16/bf16: P and dS are rounded to the input dtype
# before their matmuls (a few ulps: fp16 ulp ~1e-3, bf16 ~8e-3), and D_i = rowsum(dO ∘ O) reads
# an O that v1's forward re-rounded after every K/V tile (twice the forward's error, see
# test_v1_forward_matches_oracle), so twice v2_triton's bounds. A wrong index, a missing tile or a
# dropped scale gives errors of O(1), far above these.
GRAD_RTOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 8e-2}
# Plus an absolute floor per element, the forward's tolerance for O(1) values: with one key, dq
# and dk are exactly 0 in fp64 but rounding noise of dP − D_i elsewhere.
GRAD_ATOL = {dt: tolerance(dt) for dt in GRAD_RTOL}

# 1 and 7 are smaller than any tile, 129 is one past a power of two (a one-row tail tile).
LENGTHS = [1, 7, 129] + ([1000, 2048] if GPU else [])
HEAD_DIMS = [16, 32, 64] + ([128] if GPU else [])


def _qkv(B, H, N, D, dtype, n_k=None):
    q, k, v = fresh_qkv(B, H, N, D, n_k=n_k, dtype=dtype, device=DEVICE)
    return tuple(t.requires_grad_() for t in (q, k, v))


def _do(o):
    return torch.randn(o.shape, dtype=torch.float64).to(device=o.device, dtype=o.dtype)


def _grad_err(x, ref, dtype):
    """‖x − ref‖ over what is allowed (< 1 passes): GRAD_RTOL·‖ref‖ + GRAD_ATOL·sqrt(numel)."""
    allowed = GRAD_RTOL[dtype] * ref.norm().item() + GRAD_ATOL[dtype] * ref.numel() ** 0.5
    return (x.double().cpu() - ref).norm().item() / allowed


def _check_grads(grads, refs, dtype):
    for name, g, ref in zip(("dq", "dk", "dv"), grads, refs):
        assert g.shape == ref.shape and g.dtype == dtype, f"{name}: {g.shape} {g.dtype}"
        assert not torch.isnan(g).any(), f"{name} has NaN: an element was not written"
        err = _grad_err(g, ref, dtype)
        assert err < 1, f"{name}: error {err:.2f}x what is allowed"


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("D", HEAD_DIMS, ids=lambda d: f"D{d}")
@pytest.mark.parametrize("N", LENGTHS, ids=lambda n: f"N{n}")
def test_gradients_match_fp64_oracle(N, D, dtype, causal, poison):
    B, H = (2, 2) if N < 1000 else (1, 3)
    q, k, v = _qkv(B, H, N, D, dtype)
    o = flash_attention_v1(q, k, v, causal=causal)
    do = _do(o)
    grads = torch.autograd.grad(o, (q, k, v), do)
    _check_grads(grads, _oracle_grads(q, k, v, do, causal=causal), dtype)


@pytest.mark.parametrize("n_q,n_k", [(9, 40), (40, 9), (1, 33), (33, 1)], ids=lambda n: str(n))
def test_cross_lengths(n_q, n_k, poison):
    """N_Q ≠ N_K (non-causal) and a scale other than 1/sqrt(D): tail tiles in rows and columns."""
    dtype = DTYPES[0]
    q, k, v = _qkv(1, 2, n_q, 32, dtype, n_k=n_k)
    o = flash_attention_v1(q, k, v, scale=0.3)
    do = _do(o)
    grads = torch.autograd.grad(o, (q, k, v), do)
    _check_grads(grads, _oracle_grads(q, k, v, do, causal=False, scale=0.3), dtype)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_gradients_equal_the_v1_reference(causal):
    """Same algorithm, same 16 × 16 tiles: the kernel and the readable Algorithm 4 agree in fp32
    to fp32 rounding: a bound 100x tighter than any algorithmic difference would leave."""
    ref_impl = flashedu.get("v1_reference")
    q, k, v = _qkv(1, 2, 45, 16, torch.float32)
    do = _do(q.detach())
    o = flash_attention_v1(q, k, v, causal=causal, block_m=16, block_n=16)
    grads = torch.autograd.grad(o, (q, k, v), do)
    leaves = [t.detach().cpu().requires_grad_() for t in (q, k, v)]
    o_ref = ref_impl.fn(*leaves, causal=causal, block_r=16, block_c=16)
    refs = torch.autograd.grad(o_ref, leaves, do.cpu())
    for name, g, ref in zip(("dq", "dk", "dv"), grads, refs):
        err = (g.cpu() - ref).abs().max().item()
        assert err < 1e-5 * max(1.0, ref.abs().max().item()), f"{name}: max difference {err:.2e}"


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_forward_keeps_l_and_m(causal, poison):
    """ℓ and m, what the backward reads: m = rowmax(scale·S), ℓ = Σ exp(scale·S − m)."""
    dtype = DTYPES[0]
    q, k, v = (t.detach() for t in _qkv(1, 2, 50, 32, dtype))
    o, lsum, mmax = flash_attention_v1_stats(q, k, v, causal=causal)
    assert lsum.shape == mmax.shape == q.shape[:3] and lsum.dtype == mmax.dtype == torch.float32
    s = (q.double().cpu() @ k.double().cpu().transpose(-1, -2)) / math.sqrt(32)  # [B, H, N, N]
    if causal:
        s = s.masked_fill(torch.ones(50, 50, dtype=torch.bool).triu(1), float("-inf"))
    m = s.amax(-1)
    l_ = torch.exp(s - m[..., None]).sum(-1)
    assert (mmax.double().cpu() - m).abs().max().item() < 10 * tolerance(dtype)
    assert ((lsum.double().cpu() - l_) / l_).abs().max().item() < 10 * tolerance(dtype)


def test_rows_that_saw_no_key_get_zero_gradients(poison):
    """A row whose forward saw no key (ℓ = 0, m = -inf, O = 0) has P = 0: its dQ is 0 and it
    adds nothing to dK, dV, the same as a zero dO on that row. Not NaN from 0/0 or exp(-inf + inf)."""
    dtype = DTYPES[0]
    q, k, v = (t.detach() for t in _qkv(1, 2, 40, 16, dtype))
    o, lsum, mmax = flash_attention_v1_stats(q, k, v)
    dead = torch.tensor([0, 5, 33, 39])  # first tile, middle, the 8-row tail tile
    o[:, :, dead], lsum[:, :, dead], mmax[:, :, dead] = 0.0, 0.0, float("-inf")
    do = _do(o)
    grads = attention_backward(do, q, k, v, o, lsum, mmax, causal=False, scale=0.25,
                               block_m=32, block_n=32)
    do_live = do.clone()
    do_live[:, :, dead] = 0.0
    refs = _oracle_grads(q, k, v, do_live, causal=False)
    assert (grads[0][:, :, dead] == 0).all()
    _check_grads(grads, refs, dtype)


def test_strided_inputs_small_blocks_and_no_grad(poison):
    """[B, N, H, D] storage viewed as [B, H, N, D] (strides passed to both kernels), 16 × 16
    tiles (several causal diagonal tiles), a non-contiguous dO; without grad, a plain tensor."""
    dtype = DTYPES[0]
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 50, 3, 32, generator=g, dtype=torch.float64).to(DEVICE, dtype)
               .transpose(1, 2).requires_grad_() for _ in range(3))
    o = flash_attention_v1(q, k, v, causal=True, block_m=16, block_n=16)
    do = _do(o.transpose(1, 2).contiguous()).transpose(1, 2)  # [B, H, N, D] view, D unit-stride
    assert not do.is_contiguous()
    grads = torch.autograd.grad(o, (q, k, v), do)
    _check_grads(grads, _oracle_grads(q, k, v, do, causal=True), dtype)
    with torch.no_grad():
        assert flash_attention_v1(q, k, v).grad_fn is None
    assert flash_attention_v1(*(t.detach() for t in (q, k, v))).requires_grad is False


@pytest.mark.skipif(GPU, reason="the interpreter's fp16 path; the GPU runs fp16 everywhere")
def test_fp16_under_the_interpreter(poison):
    q, k, v = _qkv(1, 2, 40, 32, torch.float16)
    o = flash_attention_v1(q, k, v, causal=True)
    do = _do(o)
    grads = torch.autograd.grad(o, (q, k, v), do)
    _check_grads(grads, _oracle_grads(q, k, v, do, causal=True), torch.float16)


def test_backward_rejects_bad_statistics():
    q = torch.randn(1, 1, 8, 16, device=DEVICE)
    stats = torch.zeros(1, 1, 8, device=DEVICE)
    args = dict(causal=False, scale=0.25, block_m=32, block_n=32)
    with pytest.raises(ValueError, match="lsum"):
        attention_backward(q, q, q, q, q, stats[..., :4], stats, **args)
    with pytest.raises(TypeError, match="mmax"):
        attention_backward(q, q, q, q, q, stats, stats.double(), **args)
    with pytest.raises(TypeError, match="do"):
        attention_backward(None, q, q, q, q, stats, stats, **args)
