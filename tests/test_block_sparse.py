"""Block-sparse FlashAttention: masks, CSR layout, FlexAttention interop, the reference and the
Triton kernels (forward and backward) against dense fp64 attention with the expanded token mask,
and the memory model's recording against the closed-form count.

Under the interpreter (no GPU) sizes stay small and run in fp32; with a GPU the same tests add
fp16/bf16 cases at N in the thousands.
"""
from __future__ import annotations

import math

import pytest
import torch

import flashedu
from conftest import GPU
from flashedu.ops.block_sparse import masks as bs
from flashedu.iomodel import formula, simulate
from flashedu.ops.block_sparse.api import block_sparse_attention
from flashedu.ops.block_sparse.kernel import block_sparse_flash_attention

DEVICE = flashedu.runtime.current().device


def masked_oracle(q, k, v, keep, *, scale=None):
    """fp64 attention with token mask ``keep`` [Hm, N, N_k]; a row with no kept key gives 0.
    Written out (not SDPA) so fully masked rows have zero, not NaN, gradients."""
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = (q @ k.transpose(-1, -2) * scale).masked_fill(~keep[None], -math.inf)  # [B, H, N, N_k]
    m = s.amax(-1, keepdim=True)
    e = torch.exp(s - torch.where(torch.isfinite(m), m, torch.zeros_like(m)))
    den = e.sum(-1, keepdim=True)
    return (e / torch.where(den > 0, den, torch.ones_like(den))) @ v


def random_grid(heads, Tr, Tc, density, seed):
    """A random tile grid with at least one empty block row and one empty block column."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.rand(heads, Tr, Tc, generator=g) < density
    if Tr > 1 and Tc > 1:
        grid[:, Tr // 2, :] = False
        grid[:, :, Tc // 3] = False
    return grid


def case_masks():
    """(id, mask, B, H, D): shared and per-head, full and partial tiles, odd N, N_k ≠ N."""
    g = torch.Generator().manual_seed(1)
    token = torch.rand(2, 77, 77, generator=g) < 0.25
    token[0, 10] = False  # a query row that sees no key at all
    token[:, :, 5] = False
    return [
        ("random-shared-odd", bs.from_blocks(random_grid(1, 5, 5, 0.5, 0)[0], block_r=16, N=70, N_k=70), 2, 2, 16),
        ("random-perhead", bs.BlockSparseMask(random_grid(3, 4, 4, 0.6, 1), 16, 16, 64, 64), 1, 3, 32),
        ("token-perhead-partial", bs.from_token_mask(token, block_r=32, block_c=16), 1, 2, 16),
        ("butterfly", bs.butterfly(100, block=16), 1, 2, 16),
        ("window", bs.sliding_window(90, window=20, block=32), 1, 1, 64),
        ("cross-lengths", bs.from_blocks(random_grid(1, 2, 5, 0.7, 2)[0], block_r=32, block_c=16, N=40, N_k=70),
         1, 2, 16),
    ]


CASES = case_masks()
if GPU:
    CASES += [("gpu-random", bs.random_blocks(2048, block=64, density=0.3, heads=4), 2, 4, 64),
              ("gpu-window-d128", bs.sliding_window(1000, window=200, block=64), 1, 2, 128)]


def _run(fn, mask, B, H, D, causal, dtype, device):
    g = torch.Generator().manual_seed(hash((mask.N, B, H, D, causal)) % 2**31)
    q = torch.randn(B, H, mask.N, D, generator=g, dtype=torch.float64)
    k, v = (torch.randn(B, H, mask.N_k, D, generator=g, dtype=torch.float64) for _ in range(2))
    do = torch.randn(B, H, mask.N, D, generator=g, dtype=torch.float64)
    leaves = [t.to(device=device, dtype=dtype).clone().requires_grad_(True) for t in (q, k, v)]
    o = fn(*leaves, causal=causal, block_mask=mask)
    o.backward(do.to(device=device, dtype=dtype))
    exact = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    ref = masked_oracle(*exact, mask.dense(causal=causal))
    ref.backward(do)
    return o, leaves, ref, exact, mask.dense(causal=causal)


def _check(o, leaves, ref, exact, keep, tol):
    assert not torch.isnan(o).any(), "output has NaN: an element was not written"
    assert (o.double().cpu() - ref).abs().max().item() < tol
    for name, got, want in zip("qkv", leaves, exact):
        assert got.grad is not None and not torch.isnan(got.grad).any(), f"d{name} missing or NaN"
        err = (got.grad.double().cpu() - want.grad).norm() / (want.grad.norm() + 1)
        assert err < tol * 10, f"d{name}: relative error {err:.2e}"
    # Rows that see no key: output 0 and zero dq, exactly; keys no query sees: zero dk, dv.
    empty_rows = ~keep.any(-1)  # [Hm, N]
    empty_cols = ~keep.any(-2)  # [Hm, N_k]
    for h in range(leaves[0].shape[1]):
        hm = h % keep.shape[0]
        assert (o[:, h, empty_rows[hm].to(o.device)] == 0).all()
        assert (leaves[0].grad[:, h, empty_rows[hm].to(o.device)] == 0).all()
        for t in leaves[1:]:
            assert (t.grad[:, h, empty_cols[hm].to(o.device)] == 0).all()


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("case", CASES[:6], ids=[c[0] for c in CASES[:6]])
def test_reference_matches_masked_oracle(case, causal):
    _, mask, B, H, D = case
    if causal and mask.N != mask.N_k:
        pytest.skip("causal needs N == N_k")
    _check(*_run(block_sparse_attention, mask, B, H, D, causal, torch.float64, "cpu"), tol=1e-10)


TRITON_DTYPES = [torch.float16, torch.bfloat16] if GPU else [torch.float32]
TOL = {torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}


@pytest.mark.parametrize("dtype", TRITON_DTYPES, ids=str)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_triton_matches_masked_oracle(case, causal, dtype, poison):
    _, mask, B, H, D = case
    if causal and mask.N != mask.N_k:
        pytest.skip("causal needs N == N_k")
    _check(*_run(block_sparse_flash_attention, mask, B, H, D, causal, dtype, DEVICE), tol=TOL[dtype])


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("module, flag", [("kernel", "USE_RUN"), ("kernel", "PREFETCH_INDEX"),
                                          ("kernel_bwd", "PREFETCH_INDEX"),
                                          ("kernel_bwd", "ONE_LAUNCH")])
def test_triton_launch_options_do_not_change_the_result(module, flag, causal, monkeypatch, poison):
    """Walking the consecutive run by pointers (USE_RUN) is only a shortcut, reading the next
    block index early (PREFETCH_INDEX, forward and backward) only a schedule, and the backward's
    two passes in one launch (ONE_LAUNCH) only a grid: flipped, each gives the same result."""
    import importlib

    mod = importlib.import_module(f"flashedu.ops.block_sparse.{module}")
    monkeypatch.setattr(mod, flag, not getattr(mod, flag))
    for name in ("window", "butterfly", "token-perhead-partial"):
        _, mask, B, H, D = next(c for c in CASES if c[0] == name)
        _check(*_run(block_sparse_flash_attention, mask, B, H, D, causal, TRITON_DTYPES[0], DEVICE),
               tol=TOL[TRITON_DTYPES[0]])


def test_dense_mask_is_attention_and_v2_traffic():
    q, k, v = (torch.randn(1, 2, 50, 16, dtype=torch.float64) for _ in range(3))
    o = block_sparse_attention(q, k, v, causal=True)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert (o - ref).abs().max() < 1e-12
    assert simulate("block_sparse", N=1000, d=64).counts() == simulate("v2", N=1000, d=64).counts()


def test_bad_masks_name_the_argument():
    # On the runtime's device: on a GPU machine the Triton wrapper refuses CPU tensors first.
    q = torch.randn(1, 2, 64, 16, device=flashedu.runtime.current().device)
    with pytest.raises(TypeError, match="block_mask"):
        block_sparse_attention(q, q, q, block_mask=torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="block_mask is for N=32"):
        block_sparse_attention(q, q, q, block_mask=bs.local(32, block=16))
    with pytest.raises(ValueError, match="heads"):
        block_sparse_flash_attention(q, q, q, block_mask=bs.random_blocks(64, block=16, density=0.5, heads=3))
    with pytest.raises(ValueError, match="multiples of 16"):
        block_sparse_flash_attention(q, q, q, block_mask=bs.local(64, block=8))
    with pytest.raises(TypeError, match="blocks must be a bool"):
        bs.from_blocks(torch.ones(4, 4), block_r=16)
    with pytest.raises(ValueError, match="blocks must have shape"):
        bs.BlockSparseMask(torch.ones(1, 3, 4, dtype=torch.bool), 16, 16, 64, 64)
    with pytest.raises(ValueError, match="token_mask must have shape"):
        bs.BlockSparseMask(torch.ones(1, 4, 4, dtype=torch.bool), 16, 16, 64, 64, torch.ones(1, 64, 63, dtype=torch.bool))
    with pytest.raises(ValueError, match="density"):
        bs.random_blocks(64, block=16, density=1.5)
    with pytest.raises(ValueError, match="block_r=24 must divide"):
        bs.local(64, block=32).refine(24, 32)


def test_pattern_structure():
    T = 16
    loc = bs.local(T * 32, block=32, width=2).blocks[0]
    assert (loc == loc.T).all() and loc.sum(-1).tolist() == [min(i + 2, T - 1) - max(i - 2, 0) + 1 for i in range(T)]
    st = bs.strided(T * 32, block=32, stride=4).blocks[0]
    assert (st == st.T).all() and st.diagonal().all() and st.sum() == sum(T - abs(o) for o in range(-T + 1, T) if o % 4 == 0)
    gl = bs.global_local(T * 32, block=32, width=1, n_global=2).blocks[0]
    assert gl[:2].all() and gl[:, :2].all() and (gl == gl.T).all()
    bf = bs.butterfly(T * 32, block=32).blocks[0]
    assert (bf == bf.T).all() and bf.diagonal().all()
    assert (bf.sum(-1) == 1 + int(math.log2(T))).all()  # the diagonal plus one tile per factor
    i, j = torch.nonzero(bf, as_tuple=True)
    assert all(bin(a ^ b).count("1") <= 1 for a, b in zip(i.tolist(), j.tolist()))
    r = bs.random_blocks(T * 32, block=32, density=0.25, heads=3)
    assert r.blocks.shape == (3, T, T) and (r.blocks.sum((1, 2)) == round(0.25 * T * T)).all()
    assert not (r.blocks[0] == r.blocks[1]).all()  # one grid per head
    bb = bs.bigbird(T * 32, block=32, width=1, n_global=1, n_random=2).blocks[0]
    base = bs.global_local(T * 32, block=32, width=1, n_global=1).blocks[0]
    assert ((bb & base) == base).all() and (bb.sum(-1)[1:] == base.sum(-1)[1:] + 2).all()


def test_token_mask_to_blocks_full_partial_skipped():
    token = torch.zeros(64, 64, dtype=torch.bool)
    token[:32, :32] = True  # tile (0, 0): full
    token[40, 50] = True  # tile (1, 1): partial
    m = bs.from_token_mask(token, block_r=32)
    assert m.blocks[0].tolist() == [[True, False], [False, True]]
    assert m.partial()[0].tolist() == [[False, False], [False, True]]
    assert (m.dense() == token).all()
    w = bs.sliding_window(256, window=40, block=32)
    assert (w.dense()[0] == ((torch.arange(256)[:, None] - torch.arange(256)).abs() <= 40)).all()
    assert w.partial().any() and (w.blocks & ~w.partial()).any()
    assert (w.refine(16, 16).dense() == w.dense()).all()


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_csr_round_trip_and_kernel_order(causal):
    for seed, (Hm, N, br, bc) in enumerate([(1, 100, 16, 16), (3, 128, 32, 16), (2, 77, 16, 32)]):
        token = torch.rand(Hm, N, N, generator=torch.Generator().manual_seed(seed)) < 0.05
        m = bs.BlockSparseMask(random_grid(Hm, -(-N // br), -(-N // bc), 0.5, seed), br, bc, N, N, token)
        grid = m.effective_blocks(causal)
        csr = bs.to_csr(grid)
        assert (bs.from_csr(csr) == grid).all() and (csr.counts == grid.sum(-1)).all()
        assert csr.counts.min() == 0  # empty rows are in the test
        lay = bs.kernel_layout(m, causal=causal)
        assert (bs.from_csr(lay.rows) == grid).all()
        assert (bs.from_csr(lay.cols) == grid.transpose(1, 2)).all()
        partial = m.partial() & grid
        for r in range(Hm * m.Tr):
            h, i = divmod(r, m.Tr)
            lo, hi, mid = int(lay.rows.ptr[r]), int(lay.rows.ptr[r + 1]), int(lay.rows.ptr[r] + lay.rows.clean[r])
            # run: the longest prefix of the clean entries that is first, first+1, ...
            clean = lay.rows.index[lo:mid].tolist()
            run = next((n for n in range(len(clean)) if clean[n] != clean[0] + n), len(clean))
            assert int(lay.rows.run[r]) == run, f"row {r}: run {int(lay.rows.run[r])}, clean entries {clean}"
            assert int(lay.rows.first[r]) == (int(lay.rows.index[lo]) if hi > lo else 0)
            for e in range(lo, hi):
                j = int(lay.rows.index[e])
                masked = partial[h, i, j] or (causal and min(N, (j + 1) * bc) - 1 > i * br) or (j + 1) * bc > N
                assert masked == (e >= mid), f"entry ({h}, {i}, {j}) in the wrong loop"
                t = int(lay.rows.tile[e])
                assert (t >= 0) == bool(partial[h, i, j])
                if t >= 0:  # the tile carries that piece of the token mask
                    tile = lay.tiles[t].bool()[:min(br, N - i * br), :min(bc, N - j * bc)]
                    assert (tile == token[h, i * br:(i + 1) * br, j * bc:(j + 1) * bc]).all()


@pytest.mark.skipif(bs.flex_available() is not None, reason=str(bs.flex_available()))
def test_flex_attention_round_trip():
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    for m, causal in ((bs.butterfly(256, block=32), False), (bs.sliding_window(200, window=30, block=32), True),
                      (bs.random_blocks(128, block=32, density=0.4, heads=2), True)):
        fm = bs.to_flex(m, causal=causal)
        assert (fm.to_dense()[0].bool()[:, :m.Tr, :m.Tc] == m.effective_blocks(causal)).all()
        back = bs.from_flex(fm)
        assert (back.dense() == m.dense(causal=causal)).all()
        q, k, v = (torch.randn(1, m.heads, m.N, 16, dtype=torch.float64) for _ in range(3))
        ours = block_sparse_attention(q, k, v, causal=causal, block_mask=m)
        theirs = flex_attention(q, k, v, block_mask=fm)
        # Flex leaves a row with no key undefined (NaN or 0 by version); compare rows with keys.
        rows = m.dense(causal=causal).any(-1).expand(1, q.shape[1], -1) if m.heads == 1 else m.dense(causal=causal).any(-1)[None]
        assert (ours - theirs)[rows].abs().max() < 1e-10
        assert (block_sparse_attention(q, k, v, block_mask=fm) - ours).abs().max() < 1e-12
    made = create_block_mask(lambda b, h, q_, kv: (q_ - kv).abs() <= 40, None, None, 256, 256, device="cpu",
                             BLOCK_SIZE=64)
    assert (bs.from_flex(made).dense()[0] == bs.sliding_window(256, window=40, block=64).dense()[0]).all()


@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "bwd"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_simulated_traffic_equals_formula(causal, backward):
    token = torch.rand(2, 300, 300, generator=torch.Generator().manual_seed(3)) < 0.02
    for m in (bs.butterfly(1000, block=64), bs.sliding_window(700, window=90, block=64),
              bs.random_blocks(512, block=32, density=0.3, heads=3), bs.from_token_mask(token, block_r=64)):
        heads = m.heads if m.heads > 1 else 4
        r = simulate("block_sparse", N=m.N, d=32, block_mask=m, causal=causal, backward=backward,
                     heads=heads, batch=2)
        f = formula("block_sparse", N=m.N, d=32, block_r=r.block_r, block_c=r.block_c, block_mask=m,
                    causal=causal, backward=backward, heads=heads, batch=2)
        assert (r.read_elements, r.write_elements) == (f.exact.reads, f.exact.writes)
        assert (r.read_bytes, r.write_bytes) == f.exact.bytes()
        assert {n: (t.read_elements, t.write_elements) for n, t in r.per_tensor.items()} == f.exact.per_tensor
        if not backward:
            assert r.tiles_computed == m.nnz(causal)
    # The IO saving: at density s, the K/V stream is s times v2's (N a multiple of the blocks).
    m = bs.random_blocks(4096, block=128, density=0.25)
    kv = formula("block_sparse", N=4096, d=64, block_r=128, block_c=128, block_mask=m).exact.per_tensor["K"][0]
    assert kv == 0.25 * formula("v2", N=4096, d=64, block_r=128, block_c=128).exact.per_tensor["K"][0]


def test_exercise_checkers_accept_right_and_reject_wrong():
    from flashedu.exercises import check_block_sparse_reads, check_csr, check_programs_per_sm

    def reads(N, d, Br, Bc, nnz):
        return N * d + 2 * nnz * Bc * d

    def csr(grid):
        counts = grid.sum(-1)
        return [0] + counts.cumsum(0).tolist(), torch.nonzero(grid)[:, 1].tolist()

    assert check_block_sparse_reads(reads)
    assert not check_block_sparse_reads(lambda N, d, Br, Bc, nnz: N * d + 2 * (N // Br) * N * d)
    assert check_csr(csr)
    assert not check_csr(lambda grid: ([0] + grid.sum(-1).tolist(), torch.nonzero(grid)[:, 1].tolist()))
    assert check_programs_per_sm(lambda bm, bn, s, d, kb: int(kb * 1024 // (2 * d * (bm + 2 * s * bn))))
    # Forgetting the Q tile, or V's buffers, fits too many programs.
    assert not check_programs_per_sm(lambda bm, bn, s, d, kb: int(kb * 1024 // (2 * d * 2 * s * bn)))
    assert not check_programs_per_sm(lambda bm, bn, s, d, kb: int(kb * 1024 // (2 * d * (bm + s * bn))))


def test_widgets_show_the_schedule_and_the_mask():
    from flashedu.viz.block_sparse import density_figure, pattern_explorer, pattern_gallery

    masks = {"local": bs.local(512, block=64, width=1), "random": bs.random_blocks(512, block=64, density=0.3)}
    fig = pattern_explorer(masks, heads=2)
    P = len(masks)
    last, first = fig.frames[-1], fig.frames[0]
    for p, m in enumerate(masks.values()):
        grid = last.data[p].z
        listed = m.blocks[0].numpy()
        assert ((grid == 1) == listed).all() and ((grid == 2) == ~listed).all()  # done / skipped
        assert (first.data[p].z == 2).sum() == (~listed).sum()  # skipped from the first frame
        assert last.data[P + p].y[0] > first.data[P + p].y[0]  # bytes read grow
    buttons = fig.layout.updatemenus[-1].buttons
    assert [b.label for b in buttons] == list(masks) and "of 64 tiles" in buttons[1].args[1]["title.text"]
    with pytest.raises(ValueError, match="share N"):
        pattern_explorer({"a": bs.local(512, block=64), "b": bs.local(256, block=64)})
    gal = pattern_gallery({**masks, "window": bs.sliding_window(512, window=50, block=64)})
    assert (gal.data[2].z == 2).any()  # partial tiles drawn apart
    d = density_figure({"model": ([1, 0.5], [1, 0.52])}, measured=[dict(density=0.5, ratio=0.6, label="GPU")])
    assert len(d.data) == 3 and d.layout.xaxis.title.text


def test_config_choice_keeps_dividing_tiles_and_times_once(monkeypatch):
    import triton

    from flashedu.ops.block_sparse import configs
    from flashedu.ops import _triton
    from flashedu.ops.block_sparse.kernel import FWD_CONFIGS

    m = bs.local(256, block=32)
    got = configs.candidates(FWD_CONFIGS, m, head_dim=64, elem_bytes=4, resident=0, resident_tiles=1)
    assert got and all(32 % c.kwargs["BLOCK_M"] == 0 and 32 % c.kwargs["BLOCK_N"] == 0 for c in got)
    fake = [triton.Config({"BLOCK_M": b, "BLOCK_N": b}) for b in (64, 32, 16)]
    speed = {64: 3.0, 32: 1.0, 16: 2.0}
    calls = []
    monkeypatch.setattr(_triton, "_graph_ms", lambda fn: (fn(), calls.append(1), speed[last[0]])[2])
    last = [None]
    run = lambda c: last.__setitem__(0, c.kwargs["BLOCK_M"])  # noqa: E731
    assert _triton.choose("t", fake, ("k",), run, tune=True).kwargs["BLOCK_M"] == 32
    # Timed once per key: two rounds over the three configs, then never again.
    assert _triton.choose("t", fake, ("k",), run, tune=True).kwargs["BLOCK_M"] == 32 and len(calls) == 6
    assert _triton.choose("t", fake, ("other",), run, tune=False) is fake[0]
    assert _triton.picked("t", ("k",)) is fake[1] and _triton.picked("t", ("other",)) is None
