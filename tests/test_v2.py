"""FlashAttention v2 (flashedu/ops/v2): the v2 reference's forward and backward against fp64, its
recorded backward traffic against the closed forms of ``formula(backward=True)``, and v2_triton
against the fp64 oracle: odd shapes, causal, gradients, strides.

Tests that cover several algorithms at once are here, with the latest algorithm they cover: the
tiled references (standard, v1, v2) on odd sizes and fresh inputs, the backward references (v1:
FA1's Algorithm 4, v2: FA2's Algorithm 2) against fp64 autograd of torch's SDPA, and the refusals
v1_triton and v2_triton share.

Under the interpreter (no GPU) kernel sizes stay small and only fp32/fp16 run; with a GPU the same
tests run fp16 and bf16 at larger sizes. Kernel errors are measured as max |x − ref| for outputs of
O(1) size and with a norm-wise relative bound (plus a small absolute floor) for gradients, whose
scale grows with N.
"""
from __future__ import annotations

import itertools
import math

import pytest
import torch

import flashedu
from conftest import DEVICE, GPU, fresh_qkv, oracle, tolerance
from conftest import oracle_grads as _oracle_grads, qkv_of_shape as _qkv  # the names the kernel tests use
from flashedu.iomodel import SRAMOverflowError, formula, simulate
from flashedu.iomodel.blocks import acc_itemsize, fully_masked
from flashedu.ops.standard.reference import causal_mask
from flashedu.ops.v1 import reference_bwd as v1_backward
from flashedu.ops.v1.autograd import v1_attention_backward
from flashedu.ops.v1.kernel import flash_attention_v1
from flashedu.ops.v2 import reference_bwd as v2_backward
from flashedu.ops.v2.autograd import v2_attention_backward, v2_attention_lse
from flashedu.ops.v2.kernel import flash_attention_v2, flash_attention_v2_lse


# ---- the forward references: standard, v1 and v2 together, kept with the latest -------------

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


# ---- the backward references: v1 and v2 together, kept with the latest ----------------------

ALGS = ("v1", "v2")
KIB = 1024


def _grads(fn, q, k, v, do, **kw):
    q, k, v = (t.detach().requires_grad_(True) for t in (q, k, v))
    return torch.autograd.grad(fn(q, k, v, **kw), (q, k, v), do)


def _sdpa_grads(q, k, v, do, *, causal=False, scale=None):
    """The oracle: autograd of torch's SDPA in fp64."""
    q, k, v, do = (t.detach().double() for t in (q, k, v, do))
    return _grads(torch.nn.functional.scaled_dot_product_attention, q, k, v, do, is_causal=causal, scale=scale)


def _max_grad_err(got, want):
    return max((a.double() - b).abs().max().item() for a, b in zip(got, want))


@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("N", [1, 7, 129, 300])
@pytest.mark.parametrize("D", [16, 32])
def test_gradients_match_fp64_autograd_of_sdpa(alg, causal, N, D, poison):
    q, k, v = fresh_qkv(1, 2, N, D, dtype=torch.float64, device="cpu")
    do = torch.randn_like(q)
    # Odd sizes against 16×32 tiles (short last tiles); N = 300 also with the default tiles.
    blocks = (None, None) if N == 300 and D == 32 else (16, 32)
    got = _grads(flashedu.get(f"{alg}_reference").fn, q, k, v, do, causal=causal,
                 block_r=blocks[0], block_c=blocks[1])
    assert all(g.dtype == torch.float64 and g.shape == t.shape for g, t in zip(got, (q, k, v)))
    assert _max_grad_err(got, _sdpa_grads(q, k, v, do, causal=causal)) < 1e-10


@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize("n_q,n_k", [(33, 70), (70, 33)])
def test_gradients_with_queries_and_keys_of_different_lengths(alg, n_q, n_k):
    q, _, _ = fresh_qkv(1, 2, n_q, 16, dtype=torch.float64, device="cpu")
    _, k, v = fresh_qkv(1, 2, n_k, 16, dtype=torch.float64, device="cpu")
    do = torch.randn_like(q)
    got = _grads(flashedu.get(f"{alg}_reference").fn, q, k, v, do, scale=0.3, block_r=16, block_c=32)
    assert _max_grad_err(got, _sdpa_grads(q, k, v, do, scale=0.3)) < 1e-10


@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float16, 2e-2)])
def test_low_precision_gradients_come_back_in_the_input_dtype(alg, dtype, tol):
    q, k, v = fresh_qkv(2, 2, 77, 16, dtype=dtype, device="cpu")
    do = torch.randn_like(q)
    got = _grads(flashedu.get(f"{alg}_reference").fn, q, k, v, do, causal=True, block_r=16, block_c=16)
    assert all(g.dtype == dtype for g in got)
    assert _max_grad_err(got, _sdpa_grads(q, k, v, do, causal=True)) < tol


@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize("causal,n_k", [(False, 5), (True, 5), (False, 7)])
def test_gradcheck_in_fp64(alg, causal, n_k):
    q, _, _ = fresh_qkv(1, 1, 5, 4, dtype=torch.float64, device="cpu")
    _, k, v = fresh_qkv(1, 1, n_k, 4, dtype=torch.float64, device="cpu")
    fn = flashedu.get(f"{alg}_reference").fn
    inputs = tuple(t.requires_grad_(True) for t in (q, k, v))
    assert torch.autograd.gradcheck(lambda *x: fn(*x, causal=causal, block_r=2, block_c=3), inputs)


@pytest.mark.parametrize("alg", ALGS)
def test_a_row_that_saw_no_key_gets_zero_gradients_not_nan(alg):
    """Row 3's forward state is the empty one (L = m = -inf, ℓ = 0, o = 0): it must add nothing
    to dK, dV and get dQ = 0, where exp(S - (-inf)) would give inf and NaN."""
    q, k, v = fresh_qkv(1, 2, 20, 8, dtype=torch.float64, device="cpu")
    do = torch.randn_like(q)
    o, L = v2_attention_lse(q, k, v)
    o[:, :, 3], L[:, :, 3] = 0.0, float("-inf")
    kw = dict(block_r=8, block_c=8)
    if alg == "v2":
        dq, dk, dv = v2_attention_backward(q, k, v, o, L, do, **kw)
    else:  # ℓ = 1 and m = L describe the same softmax as L
        l = torch.where(L > float("-inf"), torch.ones_like(L), torch.zeros_like(L))
        dq, dk, dv = v1_attention_backward(q, k, v, o, l, L, do, **kw)
    keep = [r for r in range(20) if r != 3]
    want = _sdpa_grads(q[:, :, keep], k, v, do[:, :, keep])
    assert torch.equal(dq[:, :, 3], torch.zeros_like(dq[:, :, 3]))
    assert _max_grad_err((dq[:, :, keep], dk, dv), want) < 1e-10


@pytest.mark.parametrize("alg", ALGS)
def test_forward_report_and_no_grad_path_are_unchanged(alg):
    q, k, v = fresh_qkv(1, 1, 40, 8, dtype=torch.float64, device="cpu")
    fn = flashedu.get(f"{alg}_reference").fn
    o, report = fn(q.requires_grad_(True), k, v, block_r=16, block_c=16, return_report=True)
    assert o.requires_grad and report.trace.phases()[-1] == "forward"
    with torch.no_grad():
        o2, report2 = fn(q, k, v, block_r=16, block_c=16, return_report=True)
    assert torch.equal(o.detach(), o2) and report.counts() == report2.counts()


@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("N,d,br,bc", [(256, 32, 32, 64), (512, 64, 64, 64), (1000, 64, 64, 128),
                                       (333, 16, 32, 16), (7, 16, 16, 32)])
def test_backward_simulation_equals_exact_formula(alg, causal, N, d, br, bc):
    r = simulate(alg, N=N, d=d, block_r=br, block_c=bc, causal=causal, backward=True, batch=2, heads=3)
    f = formula(alg, N=N, d=d, block_r=br, block_c=bc, causal=causal, backward=True, batch=2, heads=3)
    assert {n: (t.read_elements, t.write_elements) for n, t in r.per_tensor.items()} == f.exact.per_tensor
    assert (r.read_elements, r.write_elements) == (f.exact.reads, f.exact.writes)
    assert (r.read_bytes, r.write_bytes) == f.exact.bytes(itemsize=2, stat_itemsize=acc_itemsize(r.dtype))
    assert f.seed is None and "no backward count" in f.note
    # Recomputation: one exponential per score, as in the forward; five matmuls instead of two.
    fwd = simulate(alg, N=N, d=d, block_r=br, block_c=bc, causal=causal, batch=2, heads=3)
    assert r.exps == fwd.exps and 2 * r.flops == 5 * fwd.flops


@pytest.mark.parametrize("N,d,br,bc", [(1024, 64, 64, 128), (2048, 128, 128, 64), (768, 32, 32, 256)])
def test_backward_closed_forms_for_blocks_dividing_n(N, d, br, bc):
    Nd, Tc = N * d, N // bc
    v2 = formula("v2", N=N, d=d, block_r=br, block_c=bc, backward=True).exact
    v1 = formula("v1", N=N, d=d, block_r=br, block_c=bc, backward=True).exact
    assert (v2.reads, v2.writes) == (4 * Nd + Tc * (3 * Nd + 2 * N), 3 * Nd + N + Tc * Nd)
    assert (v1.reads, v1.writes) == (2 * Nd + Tc * (4 * Nd + 2 * N), 5 * Nd + Tc * Nd)
    # v1 reloads O_i every step (Tc·Nd) and zeroes dK, dV (2Nd); v2 reads O, dO once (2Nd), stores D (N).
    assert v1.total - v2.total == Tc * Nd - N


@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_numeric_and_shape_only_backward_record_the_same(alg, causal, dtype):
    B, H, N, D = 2, 3, 77, 16
    q, k, v = fresh_qkv(B, H, N, D, dtype=dtype, device="cpu")
    do = torch.randn_like(q)
    o, L = v2_attention_lse(q, k, v, causal=causal)
    kw = dict(causal=causal, block_r=16, block_c=32, sram_bytes=64 * KIB, return_report=True)
    if alg == "v2":
        *_, numeric = v2_attention_backward(q, k, v, o, L, do, **kw)
    else:
        *_, numeric = v1_attention_backward(q, k, v, o, torch.ones_like(L), L, do, **kw)
    shape = simulate(alg, N=N, d=D, causal=causal, block_r=16, block_c=32, sram_bytes=64 * KIB,
                     dtype=dtype, batch=B, heads=H, backward=True)
    assert numeric.numeric and not shape.numeric
    assert numeric.counts() == shape.counts()
    assert numeric.trace._raw == shape.trace._raw


@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_backward_trace_visits_every_tile_once(alg, causal):
    N, br, bc = 300, 32, 64
    r = simulate(alg, N=N, d=16, block_r=br, block_c=bc, causal=causal, backward=True)
    assert r.trace.phases() == ["init" if alg == "v1" else "preprocess", "backward"]
    every = [(i, j) for i in range(r.Tr) for j in range(r.Tc)]
    seen = [(e.i, e.j) for e in r.trace if e.phase == "backward" and e.kind in ("compute", "skip")]
    assert sorted(seen) == every
    skipped = {(e.i, e.j) for e in r.trace if e.kind == "skip"}
    masked = {(i, j) for i, j in every if causal and fully_masked(i * br, min(N, (i + 1) * br), j * bc)}
    assert skipped == masked and (len(masked) > 0) == causal
    assert r.tiles_computed == len(every) - len(masked) and r.tiles_skipped == len(masked)
    assert not any(e.kind == "load" and (e.i, e.j) in skipped for e in r.trace)
    # K/V tiles are the outer loop: the backward visits (i, j) column by column.
    assert seen == sorted(seen, key=lambda t: (t[1], t[0]))
    if alg == "v2":  # one program per K/V tile, all adding into dQ
        assert all(e.program == e.j for e in r.trace if e.phase == "backward" and e.j >= 0)


@pytest.mark.parametrize("alg,module", [("v1", v1_backward), ("v2", v2_backward)])
@pytest.mark.parametrize("d,sram_kib", list(itertools.product((32, 64, 128), (64, 100, 228))))
def test_default_backward_tiles_fit_and_peak_is_the_footprint(alg, module, d, sram_kib):
    r = simulate(alg, N=512, d=d, sram_bytes=sram_kib * KIB, backward=True)
    assert (r.block_r, r.block_c) == module.backward_block_sizes(d=d, sram_bytes=sram_kib * KIB,
                                                                 dtype=torch.float16)
    assert r.sram_peak_bytes == module.backward_footprint(block_r=r.block_r, block_c=r.block_c, d=d,
                                                          itemsize=2, acc=4) <= r.sram_bytes
    forward = simulate(alg, N=512, d=d, sram_bytes=sram_kib * KIB)
    assert r.block_r * r.block_c <= forward.block_r * forward.block_c  # more tiles on chip, smaller ones


def test_backward_rejects_what_it_cannot_run():
    with pytest.raises(NotImplementedError, match="standard"):
        simulate("standard", N=64, d=16, backward=True)
    with pytest.raises(ValueError, match="backward=True"):
        formula("v2_split_bwd", N=64, d=16, block_r=16, block_c=16)  # a backward only
    q, k, v = fresh_qkv(1, 1, 16, 8, dtype=torch.float32, device="cpu")
    o, L = v2_attention_lse(q, k, v)
    with pytest.raises(ValueError, match="do must"):
        v2_attention_backward(q, k, v, o, L, o[:, :, :8])
    with pytest.raises(ValueError, match="L must"):
        v2_attention_backward(q, k, v, o, L[:, :, :8], o)
    with pytest.raises(ValueError, match="block_c"):
        v2_attention_backward(q, k, v, o, L, o, block_r=8, block_c=0)


# ---- v2_triton (and v1_triton where one check covers both kernels) --------------------------

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


def _max_err(o, ref):
    return (o.double().cpu() - ref).abs().max().item()


def _grad_err(x, ref, dtype):
    """‖x − ref‖ over what is allowed (< 1 passes): GRAD_RTOL·‖ref‖ + GRAD_ATOL·sqrt(numel)."""
    allowed = GRAD_RTOL[dtype] * ref.norm().item() + GRAD_ATOL[dtype] * ref.numel() ** 0.5
    return (x.double().cpu() - ref).norm().item() / allowed


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


def test_v2_forward_without_a_backward_stores_no_lse(poison):
    """A call no backward will follow skips L: the same O, and no L tensor at all."""
    from flashedu.ops.v2.kernel import attention_forward
    dtype = DTYPES[0]
    q, k, v = _qkv((1, 2, 77, 77, 32), dtype)
    o, lse = attention_forward(q, k, v, causal=True, scale=0.2, store_lse=False)
    ref_o, _ = v2_attention_lse(*(t.double().cpu() for t in (q, k, v)), causal=True, scale=0.2)
    assert lse is None
    assert _max_err(o, ref_o) < tolerance(dtype)


def test_autograd_calls_the_backward_kernel_it_is_given():
    """FlashAttentionV2 hands its saved tensors to the backward kernel a caller passes (chapter
    6's Gluon backward), and that kernel's gradients are what autograd returns."""
    from flashedu.ops.v2.kernel import FlashAttentionV2, _v2_kernel
    q, k, v = _qkv((1, 2, 9, 9, 32), DTYPES[0], grad=True)
    seen = {}

    def backward_kernel(do, q_, k_, v_, o, lse, *, causal, scale):
        seen.update(causal=causal, scale=scale, lse_shape=tuple(lse.shape))
        return torch.full_like(q_, 1.0), torch.full_like(k_, 2.0), torch.full_like(v_, 3.0)

    o = FlashAttentionV2.apply(q, k, v, True, 0.25, _v2_kernel, backward_kernel)
    grads = torch.autograd.grad(o, (q, k, v), torch.ones_like(o))
    assert seen == dict(causal=True, scale=0.25, lse_shape=(1, 2, 9))
    assert [g.unique().tolist() for g in grads] == [[1.0], [2.0], [3.0]]


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


# v2_triton's backward, three passes (flashedu/ops/v2/reference_bwd_split.py), against the model.

@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("N,d,br,bc", [(256, 32, 32, 64), (1000, 64, 64, 128), (7, 16, 16, 32),
                                       (333, 16, 32, 16)])
def test_split_backward_simulation_equals_exact_formula(causal, N, d, br, bc):
    kw = dict(N=N, d=d, block_r=br, block_c=bc, causal=causal, backward=True, batch=2, heads=3)
    r, f = simulate("v2_split_bwd", **kw), formula("v2_split_bwd", **kw)
    assert {n: (t.read_elements, t.write_elements) for n, t in r.per_tensor.items()} == f.exact.per_tensor
    assert (r.read_bytes, r.write_bytes) == f.exact.bytes(itemsize=2, stat_itemsize=4)
    # S and dP are computed in both loops: seven products per score, against the forward's two.
    fwd = simulate("v2", N=N, d=d, block_r=br, block_c=bc, causal=causal, batch=2, heads=3)
    assert 2 * r.flops == 7 * fwd.flops


@pytest.mark.parametrize("N,d,br,bc", [(1024, 64, 64, 128), (2048, 128, 128, 64)])
def test_split_backward_closed_form_and_what_it_trades(N, d, br, bc):
    Nd, Tr, Tc = N * d, N // br, N // bc
    split = formula("v2_split_bwd", N=N, d=d, block_r=br, block_c=bc, backward=True).exact
    alg2 = formula("v2", N=N, d=d, block_r=br, block_c=bc, backward=True).exact
    assert (split.reads, split.writes) == (6 * Nd + 2 * N + Tc * (2 * Nd + 2 * N) + 2 * Tr * Nd,
                                           N + 3 * Nd)
    # Algorithm 2 moves dQ_i through HBM (fp32) once per K/V tile; the split streams K, V twice.
    assert alg2.per_tensor["dQ"] == (Tc * Nd, Nd + Tc * Nd) and split.per_tensor["dQ"] == (0, Nd)
    assert split.per_tensor["K"] == (Nd + Tr * Nd, 0)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("N", [1, 7, 129])
def test_split_backward_gradients_match_autograd(causal, N):
    from flashedu.iomodel.run import run_backward
    q, k, v = fresh_qkv(2, 3, N, 16, dtype=torch.float64, device="cpu")
    do = torch.randn_like(q)
    o, L = v2_attention_lse(q, k, v, causal=causal)
    got, report = run_backward("v2_split_bwd", q, k, v, o, do, {"L": L}, causal=causal, scale=None,
                               block_r=16, block_c=32, sram_bytes=64 * 1024)
    assert _max_grad_err(got, _sdpa_grads(q, k, v, do, causal=causal)) < 1e-10
    shape = simulate("v2_split_bwd", N=N, d=16, causal=causal, block_r=16, block_c=32,
                     sram_bytes=64 * 1024, dtype=torch.float64, batch=2, heads=3, backward=True)
    assert report.counts() == shape.counts()


def test_unfused_backward_moves_seven_n_by_n_tensors():
    N, N_k, d = 300, 200, 64
    f = formula("standard", N=N, N_k=N_k, d=d, block_r=64, block_c=64, backward=True).exact
    square = ("P", "dP", "dS")
    assert sum(f.per_tensor[n][0] for n in square) == 5 * N * N_k  # P twice, dP once, dS twice
    assert sum(f.per_tensor[n][1] for n in square) == 2 * N * N_k  # dP, dS
    assert f.reads - 5 * N * N_k == 3 * N * d + 2 * N_k * d
    assert f.writes - 2 * N * N_k == N * d + 2 * N_k * d
    assert f.bytes(itemsize=2)[1] == 2 * f.writes  # nothing fp32 in an unfused fp16 backward


def test_backward_traffic_compares_the_three_at_one_tile():
    from flashedu.ops.v2.reference_bwd_split import backward_traffic
    r = backward_traffic(1024, 64)
    alg2 = simulate("v2", N=1024, d=64, backward=True)
    assert r.tile == alg2.block_r and r.algorithm2 == alg2.read_bytes + alg2.write_bytes
    # the unfused backward: seven N×N fp16 transfers, plus its N×d reads and writes
    assert r.unfused == 2 * (7 * 1024 * 1024 + 5 * 1024 * 64 + 3 * 1024 * 64)
    assert r.three_passes < r.algorithm2


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", GRAD_SHAPES, ids=ids)
def test_one_launch_backward_matches_oracle(shape, dtype, causal, poison, monkeypatch):
    """kernel_bwd.ONE_LAUNCH: the first call runs kernels 2 and 3 alone and keeps their
    configs; the second launches both in one grid. Both answers match the oracle."""
    from flashedu.ops.v2 import kernel_bwd
    monkeypatch.setattr(kernel_bwd, "ONE_LAUNCH", True)
    monkeypatch.setattr(kernel_bwd, "_PAIRS", {})
    q, k, v = _qkv(shape, dtype)
    o, lse = flash_attention_v2_lse(q, k, v, causal=causal)
    do = torch.randn(o.shape, dtype=torch.float64).to(device=DEVICE, dtype=dtype)
    want = _oracle_grads(q, k, v, do, causal=causal)
    for call in ("alone", "one launch"):
        grads = kernel_bwd.attention_backward(do, q, k, v, o, lse, causal=causal,
                                              scale=q.shape[-1] ** -0.5)
        for name, g, ref in zip(("dq", "dk", "dv"), grads, want):
            assert not torch.isnan(g).any(), f"{call}: {name} has NaN: an element was not written"
            assert _grad_err(g, ref, dtype) < 1, f"{call}, {name}: {_grad_err(g, ref, dtype):.2f}x"
    assert len(kernel_bwd._PAIRS) == 1, "the second call should have found the first's configs"


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", GRAD_SHAPES, ids=ids)
def test_atomic_dq_backward_matches_oracle(shape, dtype, causal, poison):
    """The one-kernel ablation (kernel_bwd_atomic: dQ by atomic adds into a zeroed buffer)."""
    from flashedu.ops.v2.kernel_bwd_atomic import attention_backward_atomic
    q, k, v = _qkv(shape, dtype)
    o, lse = flash_attention_v2_lse(q, k, v, causal=causal)
    do = torch.randn(o.shape, dtype=torch.float64).to(device=DEVICE, dtype=dtype)
    config = (64, 128, 8, 3) if GPU else (16, 32, 4, 1)
    grads = attention_backward_atomic(do, q, k, v, o, lse, causal=causal,
                                      scale=q.shape[-1] ** -0.5, config=config)
    for name, g, ref in zip(("dq", "dk", "dv"), grads, _oracle_grads(q, k, v, do, causal=causal)):
        assert g.shape == ref.shape and g.dtype == dtype
        assert not torch.isnan(g).any(), f"{name} has NaN: an element was not written"
        assert _grad_err(g, ref, dtype) < 1, f"{name}: error {_grad_err(g, ref, dtype):.2f}x allowed"
