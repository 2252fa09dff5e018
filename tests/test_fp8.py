"""FP8 attention (flashedu/ops/fp8): the rotation, the quantisation, the recipes, and the kernel
against its reference.

The rotation is orthogonal and leaves QKᵀ alone; FA3's recipe beats the per-tensor baseline on
fresh outlier inputs. The kernel runs under the interpreter at small sizes (compiled at larger ones
when a GPU is here) and refuses clearly where it cannot run.
"""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import flashedu
from conftest import DEVICE, GPU, oracle
from flashedu.ops import fp8
from flashedu.ops.fp8.kernel import FP8Config, flash_attention_fp8


# ---- FP8: rotation, quantisation, recipes ---------------------------------------------------

@pytest.mark.parametrize("d", [1, 2, 16, 128, 256])
def test_hadamard_is_orthogonal_and_fast_transform_matches_it(d):
    H = fp8.hadamard_matrix(d)
    assert torch.allclose(H @ H.T, torch.eye(d, dtype=H.dtype), atol=1e-12)
    x = torch.randn(5, 3, d, dtype=torch.float64)
    assert torch.allclose(fp8.fwht(x), x @ H, atol=1e-12)
    signs = fp8.random_signs(d, dtype=torch.float64)
    assert torch.allclose(fp8.rotate(x, signs), x @ fp8.rotation(d, signs), atol=1e-12)
    if GPU:  # the GPU path is a dense matmul: the same rotation to fp32 rounding
        xf = x.float()
        assert torch.allclose(fp8.rotate(xf.cuda(), signs.float()).cpu(), fp8.rotate(xf, signs.float()), atol=1e-5)


def test_rotation_leaves_scores_unchanged():
    q, k = torch.randn(2, 3, 50, 64, dtype=torch.float64), torch.randn(2, 3, 70, 64, dtype=torch.float64)
    signs = fp8.random_signs(64, dtype=torch.float64)
    s = fp8.rotate(q, signs) @ fp8.rotate(k, signs).transpose(-1, -2)
    assert torch.allclose(s, q @ k.transpose(-1, -2), atol=1e-10)


def test_fwht_rejects_bad_input():
    with pytest.raises(ValueError, match="power of two"):
        fp8.fwht(torch.randn(4, 48))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        fp8.fwht([1.0, 2.0])


@pytest.mark.parametrize("per_tensor", [False, True], ids=["per-tile", "per-tensor"])
def test_quantize_maps_each_tile_max_to_448(per_tensor):
    x = torch.randn(2, 2, 300, 64) * torch.logspace(-2, 2, 300)[:, None]  # tiles of very different size
    qx = fp8.quantize(x, block=64, per_tensor=per_tensor)
    assert qx.x8.dtype == fp8.E4M3 and qx.scale.shape == (2, 2, 5)
    tile_max = torch.nn.functional.pad(qx.x8.float().abs(), (0, 0, 0, 20)).view(2, 2, 5, -1).amax(-1)
    if per_tensor:
        assert torch.unique(qx.scale).numel() == 1 and tile_max.max() == fp8.E4M3_MAX
    else:
        assert (tile_max == fp8.E4M3_MAX).all()
    big = x.abs() > 1e-3 * x.abs().amax()  # the normal range of e4m3 relative to the scale
    rel = ((qx.dequantize() - x).abs() / x.abs())[big]
    assert rel.max() <= 2 ** -4 + 1e-6  # 3 mantissa bits: half an ulp is 2^-4 relative


def test_fa3_recipe_beats_per_tensor_baseline_on_fresh_outlier_inputs():
    seed = torch.seed()
    r = fp8.rmse_table(B=1, H=4, N=512, D=128, seed=seed,
                       recipes=("fp16_flash", "fp8_per_tensor", "fp8_incoherent", "fp8_fa3"))
    assert r["fp8_fa3"] < r["fp8_per_tensor"], f"seed {seed}: {r}"
    assert r["fp8_incoherent"] < r["fp8_per_tensor"], f"seed {seed}: {r}"
    assert r["fp16_flash"] < r["fp8_fa3"] / 10, f"seed {seed}: {r}"


def test_fp8_widget_builds():
    from flashedu.viz.fp8 import block_errors, fp8_widget

    q, k, _ = fp8.outlier_qkv(1, 1, 256, 64, generator=torch.Generator().manual_seed(1))
    errs = block_errors(q, k, block=64)
    assert set(errs) == {"per-tensor scale", "per-tile scales", "rotation + per-tile"}
    assert all(len(e) == 4 for e in errs.values())
    fig = fp8_widget(q, k, block=64, n_rows=3)
    assert len(fig.layout.updatemenus[0].buttons) == 3 and fig.layout.width is None


# ---- the kernel -----------------------------------------------------------------------------

def _tiled_fp8_inputs(B, H, N, NK, D, q_block, kv_block, seed):
    """Outlier inputs with every tile scaled by its own power of ten, so a kernel that reads the
    wrong descale is off by orders of magnitude."""
    g = torch.Generator().manual_seed(seed)
    q, _, _ = fp8.outlier_qkv(B, H, N, D, generator=g)
    _, k, v = fp8.outlier_qkv(B, H, NK, D, generator=g)
    q = q * torch.logspace(-1, 1, -(-N // q_block)).repeat_interleave(q_block)[:N, None].half()
    v = v * torch.logspace(1, -1, -(-NK // kv_block)).repeat_interleave(kv_block)[:NK, None].half()
    return fp8.prepare_fp8(q, k, v, "fp8_fa3", block_m=q_block, block_n=kv_block, generator=g)


FP8_CASES = [(1, 1, 1, 1, 32, False), (1, 2, 70, 70, 64, True), (2, 1, 100, 37, 32, False),
             (1, 1, 129, 129, 128, True)]


# The kernel's speed variants must not change what it computes (fold_v off: a second
# accumulator; exp_fma: exps from the cubic instead of MUFU; half-height Q tiles: BLOCK_N >
# BLOCK_M, where the causal diagonal tile is only partly left of the diagonal).
FP8_VARIANTS = {"plain": {}, "two-accumulators": dict(fold_v=False), "exp-fma": dict(exp_fma=True), "kv-wider-than-q": dict(block_m=16 if not GPU else 32)}


@pytest.mark.parametrize("variant", FP8_VARIANTS)
@pytest.mark.parametrize("use_tma", [False, True], ids=["pointers", "tma"])
@pytest.mark.parametrize("case", FP8_CASES, ids=lambda c: "x".join(map(str, c)))
def test_fp8_kernel_matches_its_reference(case, use_tma, variant, poison):
    B, H, N, NK, D, causal = case
    if GPU and use_tma and flashedu.runtime.current().capability < (9, 0):
        pytest.skip("TMA needs sm_90")
    q_block, kv_block = 64, 64
    q8, k8, v8, kw = _tiled_fp8_inputs(B, H, N, NK, D, q_block, kv_block, seed=N + D)
    cfg = FP8Config(64, 64, 4, 2, use_tma) if GPU else FP8Config(32, 32, 4, 1, use_tma)
    cfg = dataclasses.replace(cfg, **FP8_VARIANTS[variant])
    ref = fp8.fp8_attention_reference(q8, k8, v8, causal=causal, block_n=cfg.block_n, **kw)
    o = flash_attention_fp8(*(t.to(DEVICE) for t in (q8, k8, v8)), causal=causal, config=cfg,
                            **{a: (t.to(DEVICE) if isinstance(t, torch.Tensor) else t) for a, t in kw.items()})
    assert o.dtype == torch.float16 and not torch.isnan(o).any()
    diff = (o.float().cpu() - ref.float()).abs()
    # fp16 output: half an ulp of the largest entries; the GPU's exp2 may also flip a rounding of P.
    tol = (2e-2 if GPU else 2e-3) * ref.float().abs().max().item() + 1e-3
    assert diff.max().item() <= tol, f"max |kernel - reference| = {diff.max().item():.3g}"


@pytest.mark.parametrize("N", [64, 70])
def test_fp8_v_layouts_give_the_same_output(N):
    """prepare_fp8 stores V K-major, which the kernel reads in place; a plain contiguous V is
    copied into that layout first. Same values, so the same output, bit for bit."""
    q8, k8, v8, kw = _tiled_fp8_inputs(1, 2, N, N, 32, 32, 32, seed=N)
    assert fp8.is_k_major(v8) and not fp8.is_k_major(v8.contiguous())
    assert torch.equal(v8.float(), v8.contiguous().float())
    cfg = FP8Config(64, 64, 4, 2, True) if GPU else FP8Config(32, 32, 4, 1, False)
    dev = {a: (t.to(DEVICE) if isinstance(t, torch.Tensor) else t) for a, t in kw.items()}
    outs = [flash_attention_fp8(q8.to(DEVICE), k8.to(DEVICE), v.to(DEVICE), config=cfg, **dev)
            for v in (v8, v8.contiguous())]
    assert torch.equal(outs[0], outs[1])


def test_fp8_kernels_refuse_other_dtypes_and_old_gpus(monkeypatch):
    q = torch.randn(1, 1, 8, 32)
    for name in ("fp8_triton", "fp8_reference"):
        with pytest.raises(TypeError, match="float8_e4m3fn"):
            flashedu.get(name).fn(q, q, q)
    with pytest.raises(ValueError, match="k_descale must have shape"):
        q8 = q.to(fp8.E4M3)
        flashedu.get("fp8_reference").fn(q8, q8, q8, k_descale=torch.ones(1, 1, 3))
    from flashedu import runtime

    for cap, name, need in (((8, 6), "fp8_triton", "sm_89"), ((8, 9), "v2_tma_triton", "sm_90")):
        fake = runtime.decide(cuda=True, capability=cap, gpu_name="Some GPU")
        monkeypatch.setattr(runtime, "_CURRENT", fake)
        impl = flashedu.get(name)
        dtype = fp8.E4M3 if name.startswith("fp8") else torch.float16
        assert need in impl.why_not(device="cuda", dtype=dtype)
    fake = runtime.decide(cuda=True, capability=(9, 0), gpu_name="H100")
    monkeypatch.setattr(runtime, "_CURRENT", fake)
    assert flashedu.get("fp8_triton").why_not(device="cuda", dtype=fp8.E4M3) is None


HOPPER = GPU and torch.cuda.get_device_capability() == (9, 0)


@pytest.mark.skipif(not HOPPER, reason="the Gluon kernel runs on Hopper (sm_90) only")
@pytest.mark.parametrize("persistent", [False, True], ids=["one-item", "persistent"])
@pytest.mark.parametrize("case", [  # B, H, N, N_K, D, causal, q_block, kv_block
    (1, 2, 70, 70, 64, True, 64, 128), (1, 1, 129, 129, 128, True, 128, 128),
    (2, 1, 300, 300, 128, False, 128, 256), (3, 50, 320, 320, 64, True, 64, 256),
    (1, 2, 1000, 1000, 128, False, 192, 128)], ids=lambda c: "x".join(map(str, c)))
def test_fp8_gluon_matches_the_reference(case, persistent, poison):
    """The Gluon FA3 kernel's FP8 build computes what the FP8 reference computes, with every
    tile's descale a different power of ten (a wrong descale is off by orders of magnitude),
    K/V tiles narrower than the quantisation block (kv_block 256: two tiles a descale), and
    more work items than SMs (persistent)."""
    from dataclasses import replace

    from flashedu.ops.fa3.gluon import default_config
    from flashedu.ops.fp8.gluon import flash_attention_fp8_gluon

    B, H, N, NK, D, causal, q_block, kv_block = case
    q8, k8, v8, kw = _tiled_fp8_inputs(B, H, N, NK, D, q_block, kv_block, seed=N + D)
    cfg = replace(default_config(D), persistent=persistent)
    ref = fp8.fp8_attention_reference(q8, k8, v8, causal=causal, block_n=cfg.block_n, **kw)
    o = flash_attention_fp8_gluon(*(t.cuda() for t in (q8, k8, v8)), causal=causal, config=cfg,
                                  **{a: (t.cuda() if isinstance(t, torch.Tensor) else t)
                                     for a, t in kw.items()})
    torch.cuda.synchronize()
    assert o.dtype == torch.float16 and not torch.isnan(o).any()
    diff = (o.float().cpu() - ref.float()).abs()
    # 3%, not the Triton kernel's 2%: at 150 heads a few entries miss the reference by just
    # over 2% of the largest output, and the Triton FP8 kernel misses it by the same amount at
    # the same entries (a GPU run at b006d56), so it is the GPU's e4m3 arithmetic (its
    # tensor cores' sums), not this kernel. A wrong descale is off by orders of magnitude.
    tol = 3e-2 * ref.float().abs().max().item() + 1e-3
    assert diff.max().item() <= tol, f"max |kernel - reference| = {diff.max().item():.3g}"


def test_fp8_gluon_refuses_blocks_that_split_a_tile():
    from flashedu.ops.fa3.gluon import GluonConfig, gluon_fp8_forward

    with pytest.raises(ValueError, match="q_block=96 must be a multiple of 64"):
        gluon_fp8_forward(*(torch.empty(1, 1, 8, 64) for _ in range(3)), causal=False,
                          scale=1.0, q_descale=None, k_descale=None, v_descale=None,
                          q_block=96, kv_block=128, config=GluonConfig())
    with pytest.raises(ValueError, match="kv_block=384 a power-of-two multiple of 128"):
        gluon_fp8_forward(*(torch.empty(1, 1, 8, 64) for _ in range(3)), causal=False,
                          scale=1.0, q_descale=None, k_descale=None, v_descale=None,
                          q_block=128, kv_block=384, config=GluonConfig())


def test_fp8_gluon_checks_its_inputs_and_says_where_it_cannot_run():
    from flashedu.ops.fp8.gluon import flash_attention_fp8_gluon

    q8, k8, v8, kw = _tiled_fp8_inputs(1, 1, 8, 8, 32, 64, 128, seed=0)
    with pytest.raises(ValueError, match="head dim D=32 is not supported"):
        flash_attention_fp8_gluon(q8, k8, v8, **kw)
    with pytest.raises(TypeError, match="must be float8_e4m3fn"):
        flash_attention_fp8_gluon(*(torch.zeros(1, 1, 8, 64) for _ in range(3)))
    if not HOPPER:
        q8, k8, v8, kw = _tiled_fp8_inputs(1, 1, 8, 8, 64, 64, 128, seed=0)
        with pytest.raises(RuntimeError, match="fp8_gluon cannot run here"):
            flash_attention_fp8_gluon(q8, k8, v8, **kw)


@pytest.mark.skipif(not GPU, reason="needs a GPU")
def test_fp8_kernel_error_on_gpu_matches_the_simulation():
    """At a Table 3 size on the GPU: the kernel's RMSE against fp64 is the simulation's."""
    if flashedu.get("fp8_triton").why_not(device="cuda", dtype=fp8.E4M3):
        pytest.skip("this GPU has no FP8 tensor cores")
    g = torch.Generator().manual_seed(torch.seed())
    q, k, v = fp8.outlier_qkv(1, 4, 2048, 128, generator=g)
    q8, k8, v8, kw = fp8.prepare_fp8(q, k, v, "fp8_fa3", generator=g)
    exact = oracle(q, k, v)
    sim = fp8.fp8_attention_reference(q8, k8, v8, **kw)
    o = flash_attention_fp8(q8.cuda(), k8.cuda(), v8.cuda(),
                            **{a: (t.cuda() if isinstance(t, torch.Tensor) else t) for a, t in kw.items()})
    e_sim, e_gpu = fp8.rmse(sim, exact), fp8.rmse(o.cpu(), exact)
    assert e_gpu == pytest.approx(e_sim, rel=0.15), (e_gpu, e_sim)
    assert fp8.rmse(o.cpu(), sim) < 0.3 * e_sim
    assert math.isfinite(e_gpu)


def test_descale_fold_checker_accepts_right_and_rejects_wrong():
    from flashedu.exercises import check_descale_fold

    assert check_descale_fold(lambda acc, u, a, pv, s: (acc * (a * (u / s))[:, None] + pv, s))
    # the true sum, but with pv scaled (two accumulators' arithmetic), or u never updated
    assert not check_descale_fold(lambda acc, u, a, pv, s: (acc * a[:, None] + pv * s, 1.0))
    assert not check_descale_fold(lambda acc, u, a, pv, s: (acc * (a * (u / s))[:, None] + pv, u))


# FP8 end to end: the fused quantiser (quant_kernel) and the registered drop-in (dropin).

@pytest.mark.parametrize("N,D,bm,bn", [(1, 32, 64, 32), (129, 64, 64, 32), (100, 128, 32, 64)])
def test_fused_quantiser_matches_the_torch_recipe(N, D, bm, bn):
    from flashedu.ops.fp8.quant_kernel import prepare_fp8_triton
    dtype = torch.float16 if GPU else torch.float32
    q, k, v = (torch.randn(2, 3, N, D, dtype=dtype) * 3 for _ in range(3))
    q[0, 0, 0, 0] = 40.0  # an outlier: its tile's scale, and the rotation, must deal with it
    signs = fp8.random_signs(D, generator=torch.Generator().manual_seed(5))
    want = fp8.prepare_fp8(q, k, v, "fp8_fa3", block_m=bm, block_n=bn,
                           generator=torch.Generator().manual_seed(5))
    got = prepare_fp8_triton(*(t.to(DEVICE) for t in (q, k, v)), signs=signs, block_m=bm, block_n=bn)
    for key in ("q_descale", "k_descale", "v_descale"):
        torch.testing.assert_close(got[3][key].cpu(), want[3][key], rtol=1e-5, atol=0)
    assert fp8.is_k_major(got[2]) and got[0].dtype == fp8.E4M3
    for name, a, b, block in (("q8", got[0], want[0], bm), ("k8", got[1], want[1], bn),
                              ("v8", got[2], want[2], bn)):
        a, b = a.float().cpu(), b.float().cpu()
        assert a.shape == b.shape
        # The rotation's sums run in another order than the torch transform's: a value on a
        # rounding boundary may land one e4m3 step away (at most 32 on the ±448 scale).
        off = (a - b).abs()
        assert (off > 0).float().mean() < 2e-3 and off.max() <= 32, f"{name}: {off.max()}"
        if name == "v8":  # not rotated: the same arithmetic, so the same bits
            assert torch.equal(a, b)


@pytest.mark.parametrize("k_major", [False, True], ids=["rows", "k-major"])
def test_fused_quantiser_tiles_per_program_change_nothing(k_major, poison):
    """Several tiles per program (the loop) write the same bytes and scales as one per program,
    including a last program with tiles past the end."""
    from flashedu.ops.fp8.quant_kernel import quantize_tiles
    dtype = torch.float16 if GPU else torch.float32
    x = torch.randn(2, 2, 200, 64, dtype=dtype, device=DEVICE) * 5
    signs = None if k_major else fp8.random_signs(64, generator=torch.Generator().manual_seed(1))
    one = quantize_tiles(x, block=32, signs=signs, k_major=k_major)
    for tiles, warps in ((3, 4), (8, 8)):  # 7 tiles: 3 programs of 3, or 1 of 8
        got = quantize_tiles(x, block=32, signs=signs, k_major=k_major, tiles=tiles, num_warps=warps)
        assert torch.equal(got[1], one[1])
        assert torch.equal(got[0].float(), one[0].float())


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_fp8_dropin_computes_what_the_simulation_computes(causal, poison):
    """The drop-in is the fused quantiser then the kernel: its output against the CPU simulation
    of the kernel on the very values the quantiser wrote (the quantiser against the torch
    recipe is the test above)."""
    from flashedu.ops.fp8.dropin import fp8_attention_triton, rotation_signs
    from flashedu.ops.fp8.kernel import default_config
    from flashedu.ops.fp8.quant_kernel import prepare_fp8_triton
    dtype = torch.float16 if GPU else torch.float32
    q, k, v = (torch.randn(1, 2, 150, 64, dtype=dtype, device=DEVICE) for _ in range(3))
    o = fp8_attention_triton(q, k, v, causal=causal, block_m=64, block_n=64)
    assert o.dtype == dtype and not torch.isnan(o).any()
    q8, k8, v8, kw = prepare_fp8_triton(q, k, v, signs=rotation_signs(64), block_m=64, block_n=64)
    kw = {a: (t.cpu() if isinstance(t, torch.Tensor) else t) for a, t in kw.items()}
    # The kernel's K/V tile never straddles two scale blocks: gcd(its tile, the scale block).
    sim = fp8.fp8_attention_reference(q8.cpu(), k8.cpu(), v8.cpu(), causal=causal,
                                      block_n=math.gcd(default_config(64).block_n, 64), **kw)
    diff = (o.float().cpu() - sim.float()).abs().max().item()
    # as test_fp8_kernel_matches_its_reference allows
    assert diff <= (2e-2 if GPU else 2e-3) * sim.float().abs().max().item() + 1e-3, diff


def test_fp8_dropin_rejects_what_the_rotation_cannot_take():
    from flashedu.ops.fp8.dropin import fp8_attention_triton
    q = torch.randn(1, 1, 8, 48, device=DEVICE)
    with pytest.raises(ValueError, match="head dim D=48"):
        fp8_attention_triton(q, q, q)
    with pytest.raises(TypeError, match="dtype of q, k, v"):
        fp8_attention_triton(*(torch.zeros(1, 1, 8, 32, dtype=torch.float64, device=DEVICE),) * 3)


# Which kernel the drop-in attends with: fp8_gluon on Hopper at D=128 with fp16 o, else fp8_triton.

def test_fp8_gluon_is_registered_as_gluon_with_a_reason_off_hopper(monkeypatch):
    """Registered like fa3_gluon: backend "gluon", so why_not is runtime.why_not_gluon's answer
    (None on sm_90 alone) and the registry's tests skip it elsewhere with that reason."""
    from flashedu import runtime

    impl = flashedu.get("fp8_gluon")
    assert (impl.algorithm, impl.backend, impl.chapter) == ("fp8", "gluon", 6)
    assert impl.dtypes == (fp8.E4M3,) and impl.devices == ("cuda",)
    assert impl.head_dims == (64, 128) and "float8_e4m3fn" in impl.extra["takes"]
    assert (impl.why_not(device=DEVICE, dtype=fp8.E4M3) is None) == HOPPER
    assert "float8_e4m3fn" in impl.why_not(device="cuda", dtype=torch.float16)
    monkeypatch.setattr(runtime, "_CURRENT", runtime.decide(cuda=True, capability=(8, 9),
                                                             gpu_name="L4"))
    assert "sm_89" in impl.why_not(device="cuda", dtype=fp8.E4M3)
    monkeypatch.setattr(runtime, "_CURRENT", runtime.decide(cuda=False))
    assert "compiled on a GPU only" in impl.why_not(device="cuda", dtype=fp8.E4M3)
    assert "fp8_gluon" in flashedu.get("fp8_e2e_triton").summary


def _fake_q(D=128, dtype=torch.float16, device="cuda"):
    """What attention_kernel reads of q (shape, dtype, device), with no GPU needed."""
    import types
    return types.SimpleNamespace(shape=(1, 2, 8, D), dtype=dtype, device=torch.device(device))


def test_dropin_attends_with_gluon_at_d128_fp16_on_hopper_only(monkeypatch):
    import importlib.util

    from flashedu import runtime
    from flashedu.ops.fp8.dropin import attention_kernel

    monkeypatch.setattr(runtime, "_CURRENT", runtime.decide(cuda=True, capability=(9, 0),
                                                             gpu_name="H100"))
    # A Triton without Gluon runs fp8_triton even on Hopper (why_not_gluon says so).
    gluon = "fp8_gluon" if importlib.util.find_spec("triton.experimental.gluon") else "fp8_triton"
    assert attention_kernel(_fake_q()) == gluon
    assert attention_kernel(_fake_q(), block_m=64, block_n=256) == gluon
    for q, blocks in ((_fake_q(D=64), {}),  # Gluon was slower at D=64
                      (_fake_q(dtype=torch.bfloat16), {}),  # Gluon writes fp16 only
                      (_fake_q(dtype=torch.float32), {}),
                      (_fake_q(device="cpu"), {}),
                      (_fake_q(), dict(block_m=96)),  # a warpgroup's 64 rows split a Q scale
                      (_fake_q(), dict(block_n=64)),  # a 128-row K/V tile splits a scale
                      (_fake_q(), dict(block_n=384))):  # not a power-of-two count of tiles
        assert attention_kernel(q, **blocks) == "fp8_triton", (q, blocks)
    for fake in (runtime.decide(cuda=True, capability=(8, 9), gpu_name="L4"),
                 runtime.decide(cuda=True, capability=(10, 0), gpu_name="B200"),
                 runtime.decide(cuda=True, capability=(9, 0), gpu_name="H100", force_cpu=True),
                 runtime.decide(cuda=False)):
        monkeypatch.setattr(runtime, "_CURRENT", fake)
        assert attention_kernel(_fake_q()) == "fp8_triton", fake


def test_dropin_calls_the_kernel_attention_kernel_names(monkeypatch):
    """The drop-in hands the quantiser's e4m3 tensors and descales to the kernel the choice
    names, and returns its o (here a stand-in for fp8_gluon, since no GPU is needed)."""
    from flashedu.ops.fp8 import dropin

    calls = []

    def fake_gluon(q8, k8, v8, *, causal, scale, **kw):
        calls.append((q8.dtype, causal, scale, sorted(kw)))
        return torch.zeros(q8.shape, dtype=torch.float16, device=q8.device)

    monkeypatch.setattr(dropin, "flash_attention_fp8_gluon", fake_gluon)
    q = torch.randn(1, 1, 8, 128, device=DEVICE)
    monkeypatch.setattr(dropin, "attention_kernel", lambda q, **blocks: "fp8_gluon")
    o = dropin.fp8_attention_triton(q, q, q, causal=True, scale=0.5)
    assert calls == [(fp8.E4M3, True, 0.5, ["k_descale", "kv_block", "q_block", "q_descale",
                                              "v_descale"])]
    assert o.dtype == torch.float16 and not o.any()
    monkeypatch.setattr(dropin, "attention_kernel", lambda q, **blocks: "fp8_triton")
    o = dropin.fp8_attention_triton(q, q, q, causal=True, scale=0.5)
    assert len(calls) == 1 and o.dtype == q.dtype and o.abs().sum() > 0


@pytest.mark.skipif(not HOPPER, reason="the Gluon kernel runs on Hopper (sm_90) only")
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_fp8_dropin_through_gluon_matches_the_oracle(causal, poison, monkeypatch):
    """On Hopper at D=128 with fp16 q the registered drop-in attends with fp8_gluon, and is as
    close to fp64 attention as the entry says, at N that leave partial tiles (1, 129, 1000),
    with outputs pre-filled with NaN."""
    from conftest import fresh_qkv

    from flashedu.ops.fp8 import dropin

    calls = []
    real = dropin.flash_attention_fp8_gluon
    monkeypatch.setattr(dropin, "flash_attention_fp8_gluon",
                        lambda *a, **kw: calls.append(1) or real(*a, **kw))
    impl = flashedu.get("fp8_e2e_triton")
    for n in (1, 129, 1000):
        q, k, v = fresh_qkv(2, 3, n, 128, dtype=torch.float16, device="cuda")  # [B, H, N, D]
        assert dropin.attention_kernel(q) == "fp8_gluon"
        o = impl.fn(q, k, v, causal=causal)
        assert o.shape == q.shape and o.dtype == torch.float16
        assert not torch.isnan(o).any(), f"N={n}: an element was not written"
        err = (o.double().cpu() - oracle(q, k, v, causal=causal)).abs().max().item()
        assert err < impl.tolerance, f"N={n}: max error {err:.3f}"
    assert len(calls) == 3
