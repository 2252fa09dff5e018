"""The backward references (v1: FA1's Algorithm 4, v2: FA2's Algorithm 2) against fp64 autograd
of torch's SDPA, and their recorded traffic against the closed forms of ``formula(backward=True)``."""
from __future__ import annotations

import itertools

import pytest
import torch

import flashedu
from flashedu.iomodel import formula, simulate
from flashedu.iomodel.blocks import acc_itemsize, fully_masked
from flashedu.ops.v1 import reference_bwd as v1_backward
from flashedu.ops.v1.autograd import v1_attention_backward
from flashedu.ops.v2 import reference_bwd as v2_backward
from flashedu.ops.v2.autograd import v2_attention_backward
from flashedu.ops.v2.autograd import v2_attention_lse

from conftest import fresh_qkv

ALGS = ("v1", "v2")
KIB = 1024


def _grads(fn, q, k, v, do, **kw):
    q, k, v = (t.detach().requires_grad_(True) for t in (q, k, v))
    return torch.autograd.grad(fn(q, k, v, **kw), (q, k, v), do)


def _sdpa_grads(q, k, v, do, *, causal=False, scale=None):
    """The oracle: autograd of torch's SDPA in fp64."""
    q, k, v, do = (t.detach().double() for t in (q, k, v, do))
    return _grads(torch.nn.functional.scaled_dot_product_attention, q, k, v, do, is_causal=causal, scale=scale)


def _max_err(got, want):
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
    assert _max_err(got, _sdpa_grads(q, k, v, do, causal=causal)) < 1e-10


@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize("n_q,n_k", [(33, 70), (70, 33)])
def test_gradients_with_queries_and_keys_of_different_lengths(alg, n_q, n_k):
    q, _, _ = fresh_qkv(1, 2, n_q, 16, dtype=torch.float64, device="cpu")
    _, k, v = fresh_qkv(1, 2, n_k, 16, dtype=torch.float64, device="cpu")
    do = torch.randn_like(q)
    got = _grads(flashedu.get(f"{alg}_reference").fn, q, k, v, do, scale=0.3, block_r=16, block_c=32)
    assert _max_err(got, _sdpa_grads(q, k, v, do, scale=0.3)) < 1e-10


@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float16, 2e-2)])
def test_low_precision_gradients_come_back_in_the_input_dtype(alg, dtype, tol):
    q, k, v = fresh_qkv(2, 2, 77, 16, dtype=dtype, device="cpu")
    do = torch.randn_like(q)
    got = _grads(flashedu.get(f"{alg}_reference").fn, q, k, v, do, causal=True, block_r=16, block_c=16)
    assert all(g.dtype == dtype for g in got)
    assert _max_err(got, _sdpa_grads(q, k, v, do, causal=True)) < tol


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
    assert _max_err((dq[:, :, keep], dk, dv), want) < 1e-10


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
        formula("standard", N=64, d=16, block_r=16, block_c=16, backward=True)
    q, k, v = fresh_qkv(1, 1, 16, 8, dtype=torch.float32, device="cpu")
    o, L = v2_attention_lse(q, k, v)
    with pytest.raises(ValueError, match="do must"):
        v2_attention_backward(q, k, v, o, L, o[:, :, :8])
    with pytest.raises(ValueError, match="L must"):
        v2_attention_backward(q, k, v, o, L[:, :, :8], o)
    with pytest.raises(ValueError, match="block_c"):
        v2_attention_backward(q, k, v, o, L, o, block_r=8, block_c=0)
