"""v1_triton and v2_triton against the fp64 oracle: odd shapes, causal, gradients, strides.

Under the interpreter (no GPU) sizes stay small and only fp32/fp16 run; with a GPU the same tests
run fp16 and bf16 at larger sizes. Errors are measured as max |x − ref| for outputs of O(1) size
and with a norm-wise relative bound (plus a small absolute floor) for gradients, whose scale
grows with N.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import flashedu
from conftest import GPU, fresh_qkv, oracle, tolerance
from flashedu.ops.v1.kernel import flash_attention_v1
from flashedu.ops.v2.autograd import v2_attention_lse
from flashedu.ops.v2.kernel import flash_attention_v2, flash_attention_v2_lse

DEVICE = flashedu.runtime.current().device
DTYPES = [torch.float16, torch.bfloat16] if GPU else [torch.float32]
# Relative gradient error allowed. fp32: the interpreter computes in fp32 (numpy), observed
# ~1e-7, so 1e-5 leaves room for N=1000 sums. fp16/bf16: P and dS are rounded to the input dtype
# before their matmuls, as in every FA2 kernel: errors of a few ulps of the dtype (fp16 ulp
# 1e-3, bf16 8e-3), well below a wrong index or a missing tile, which give O(1).
GRAD_RTOL = {torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 4e-2}
# Plus an absolute floor per element, the forward's tolerance for O(1) values: with one key, dq
# and dk are exactly 0 in fp64 but rounding noise of dP − Δ (each ~sqrt(D) in size) elsewhere.
GRAD_ATOL = {dt: tolerance(dt) for dt in GRAD_RTOL}

# (B, H, N_Q, N_K, D): 1 and 7 are smaller than any tile, 129 is one past a power of two.
FWD_SHAPES = [(1, 1, 1, 1, 16), (2, 3, 7, 7, 16), (1, 2, 129, 129, 32), (1, 1, 70, 70, 64),
              (1, 1, 33, 33, 128)]
GRAD_SHAPES = [(1, 1, 1, 1, 16), (1, 2, 7, 7, 32), (1, 1, 129, 129, 64), (1, 1, 40, 40, 128)]
if GPU:
    FWD_SHAPES += [(2, 3, 1000, 1000, 64), (1, 2, 1000, 1000, 128), (2, 4, 2048, 2048, 64),
                   (1, 4, 4096, 4096, 128)]
    GRAD_SHAPES += [(2, 3, 1000, 1000, 64), (1, 2, 1000, 1000, 128), (2, 4, 2048, 2048, 64),
                    (1, 4, 2048, 2048, 128)]
else:
    FWD_SHAPES += [(1, 1, 1000, 1000, 16)]


def ids(shape):
    return "x".join(map(str, shape))


def _qkv(shape, dtype, grad=False):
    B, H, N, NK, D = shape
    q, k, v = fresh_qkv(B, H, N, D, n_k=NK, dtype=dtype, device=DEVICE)
    return tuple(t.requires_grad_(grad) for t in (q, k, v))


def _max_err(o, ref):
    return (o.double().cpu() - ref).abs().max().item()


def _grad_err(x, ref, dtype):
    """‖x − ref‖ over what is allowed (< 1 passes): GRAD_RTOL·‖ref‖ + GRAD_ATOL·sqrt(numel)."""
    allowed = GRAD_RTOL[dtype] * ref.norm().item() + GRAD_ATOL[dtype] * ref.numel() ** 0.5
    return (x.double().cpu() - ref).norm().item() / allowed


def _oracle_grads(q, k, v, do, *, causal, scale=None):
    """dq, dk, dv of fp64 SDPA on the CPU."""
    q, k, v = (t.detach().to("cpu", torch.float64).requires_grad_() for t in (q, k, v))
    o = F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
    return torch.autograd.grad(o, (q, k, v), do.to("cpu", torch.float64))


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", FWD_SHAPES, ids=ids)
def test_v2_forward_matches_oracle(shape, dtype, causal, poison):
    if causal and not GPU and shape[2] >= 1000:
        pytest.skip("the interpreter is slow: N=1000 is checked once, without causal")
    q, k, v = _qkv(shape, dtype)
    o = flash_attention_v2(q, k, v, causal=causal)
    assert o.shape == q.shape and o.dtype == q.dtype
    assert not torch.isnan(o).any(), "output has NaN: an element was not written"
    assert _max_err(o, oracle(q, k, v, causal=causal)) < tolerance(dtype)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", GRAD_SHAPES, ids=ids)
def test_v2_gradients_match_oracle(shape, dtype, causal, poison):
    q, k, v = _qkv(shape, dtype, grad=True)
    o = flash_attention_v2(q, k, v, causal=causal)
    do = torch.randn(o.shape, dtype=torch.float64).to(device=DEVICE, dtype=dtype)
    dq, dk, dv = torch.autograd.grad(o, (q, k, v), do)
    refs = _oracle_grads(q, k, v, do, causal=causal)
    for name, g, ref in zip(("dq", "dk", "dv"), (dq, dk, dv), refs):
        assert g.shape == ref.shape and g.dtype == dtype
        assert not torch.isnan(g).any(), f"{name} has NaN: an element was not written"
        err = _grad_err(g, ref, dtype)
        assert err < 1, f"{name}: error {err:.2f}x what is allowed"


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_v2_lse_matches_reference(causal, poison):
    """L = m + log ℓ, the one statistic the forward saves, equals the readable reference's."""
    dtype = DTYPES[0]
    q, k, v = _qkv((1, 2, 77, 77, 32), dtype)
    o, lse = flash_attention_v2_lse(q, k, v, causal=causal)
    ref_o, ref_lse = v2_attention_lse(*(t.double().cpu() for t in (q, k, v)), causal=causal)
    assert lse.dtype == torch.float32 and lse.shape == q.shape[:3]
    assert (lse.double().cpu() - ref_lse).abs().max().item() < 10 * tolerance(dtype)
    assert _max_err(o, ref_o) < tolerance(dtype)


@pytest.mark.parametrize("n_q,n_k", [(9, 40), (40, 9), (1, 33), (33, 1)], ids=lambda n: str(n))
def test_v2_cross_lengths_with_gradients(n_q, n_k, poison):
    dtype = DTYPES[0]
    q, k, v = _qkv((1, 2, n_q, n_k, 32), dtype, grad=True)
    o = flash_attention_v2(q, k, v, scale=0.3)
    assert _max_err(o, oracle(q, k, v, scale=0.3)) < tolerance(dtype)
    do = torch.randn(o.shape, dtype=torch.float64).to(device=DEVICE, dtype=dtype)
    grads = torch.autograd.grad(o, (q, k, v), do)
    for g, ref in zip(grads, _oracle_grads(q, k, v, do, causal=False, scale=0.3)):
        assert _grad_err(g, ref, dtype) < 1


@pytest.mark.parametrize("layout", ["bnhd", "d_strided"])
def test_v2_non_contiguous_inputs(layout):
    """[B, N, H, D] storage viewed as [B, H, N, D] (strides passed to the kernel), and a head
    dim with stride 2 (copied first): same values, same result, gradients too."""
    dtype = DTYPES[0]
    B, H, N, D = 2, 3, 45, 32
    g = torch.Generator().manual_seed(0)
    if layout == "bnhd":
        base = [torch.randn(B, N, H, D, generator=g, dtype=torch.float64) for _ in range(3)]
        views = [t.to(DEVICE, dtype).transpose(1, 2) for t in base]
    else:
        base = [torch.randn(B, H, N, 2 * D, generator=g, dtype=torch.float64) for _ in range(3)]
        views = [t.to(DEVICE, dtype)[..., ::2] for t in base]
    assert not any(t.is_contiguous() for t in views)
    q, k, v = (t.requires_grad_() for t in views)
    o = flash_attention_v2(q, k, v, causal=True)
    assert _max_err(o, oracle(q, k, v, causal=True)) < tolerance(dtype)
    do = torch.randn(o.shape, dtype=torch.float64).to(device=DEVICE, dtype=dtype)
    grads = torch.autograd.grad(o, (q, k, v), do)
    for g_, ref in zip(grads, _oracle_grads(q, k, v, do, causal=True)):
        assert _grad_err(g_, ref, dtype) < 1


@pytest.mark.parametrize("fn", [flash_attention_v2, flash_attention_v1], ids=["v2", "v1"])
@pytest.mark.parametrize("head_dim", [8, 48, 512])
def test_bad_head_dim_is_a_value_error(fn, head_dim):
    q = torch.randn(1, 1, 4, head_dim, device=DEVICE)
    with pytest.raises(ValueError, match=f"head dim D={head_dim}"):
        fn(q, q, q)


def test_head_dim_256_runs_or_names_the_head_dim(poison):
    """D = 256 runs where shared memory allows; elsewhere the error names the head dim."""
    dtype = DTYPES[0]
    q, k, v = _qkv((1, 1, 37, 37, 256), dtype, grad=True)
    try:
        o = flash_attention_v2(q, k, v, causal=True)
    except ValueError as e:
        assert "D=256" in str(e) and GPU
        return
    assert _max_err(o, oracle(q, k, v, causal=True)) < tolerance(dtype)
    do = torch.randn(o.shape, dtype=torch.float64).to(device=DEVICE, dtype=dtype)
    for g, ref in zip(torch.autograd.grad(o, (q, k, v), do), _oracle_grads(q, k, v, do, causal=True)):
        assert _grad_err(g, ref, dtype) < 1


@pytest.mark.skipif(GPU, reason="the interpreter's fp16 path; the GPU runs fp16 everywhere")
def test_v2_fp16_under_the_interpreter(poison):
    q, k, v = _qkv((1, 2, 50, 50, 32), torch.float16, grad=True)
    o = flash_attention_v2(q, k, v, causal=True)
    assert o.dtype == torch.float16
    assert _max_err(o, oracle(q, k, v, causal=True)) < tolerance(torch.float16)
    do = torch.randn(o.shape, dtype=torch.float64).to(torch.float16)
    for g, ref in zip(torch.autograd.grad(o, (q, k, v), do), _oracle_grads(q, k, v, do, causal=True)):
        assert _grad_err(g, ref, torch.float16) < 1


@pytest.mark.skipif(GPU, reason="compiled mode supports bf16 on Ampere and newer")
@pytest.mark.parametrize("fn", [flash_attention_v2, flash_attention_v1], ids=["v2", "v1"])
def test_bf16_is_refused_under_the_interpreter(fn):
    q = torch.randn(1, 1, 4, 16, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="bfloat16"):
        fn(q, q, q)


V1_SHAPES = [(1, 1, 1, 1, 16), (2, 3, 7, 7, 16), (1, 2, 129, 129, 32), (1, 1, 70, 45, 64),
             (1, 1, 33, 33, 128)]
if GPU:
    V1_SHAPES += [(2, 3, 1000, 1000, 64), (1, 2, 1000, 1000, 128), (1, 4, 2048, 2048, 128)]


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", V1_SHAPES, ids=ids)
def test_v1_forward_matches_oracle(shape, dtype, causal, poison):
    if causal and shape[2] != shape[3]:
        pytest.skip("causal needs N_Q == N_K")
    q, k, v = _qkv(shape, dtype)
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
