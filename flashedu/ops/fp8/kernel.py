"""FlashAttention's forward in FP8 (e4m3) with per-tile descales, in Triton (chapter 6).

Inputs come quantised (:func:`flashedu.ops.fp8.prepare_fp8`: Q and K rotated by M = D·H, then one
scale per tile); the kernel multiplies in e4m3 with fp32 accumulation and folds the descales in
once per score: S = (Q8 K8ᵀ)·dq·dk·scale. P, in [0, 1], is computed as P·2⁸ (the 2⁸ inside the
exponent) and cast to e4m3 for the second product; ℓ sums the same P·2⁸, so the factor cancels.
V's descale enters through the running rescale of acc (see ``_fp8_fold``). Two Hopper details:

* FP8 tensor-core instructions read both operands "K-major" (the reduction dim contiguous). For
  Q K8ᵀ, K [N, D] already is; for P V the reduction runs over keys, so V must be stored
  transposed, [B, H, D, N_K] (padded to a multiple of 16 keys, which TMA needs for its row
  stride). :func:`flashedu.ops.fp8.prepare_fp8` quantises V straight into that layout; any other V
  is copied into it on each call, a transposing copy of one-byte elements that costs as much
  at every N for a fixed B·N, so most at small N (docs/notes/fp8-tuning.md);
* on sm_90 the tiles arrive by TMA (tensor descriptors); on sm_89 (Ada: FP8 but no TMA) by
  ordinary masked loads. The interpreter runs both.

:func:`flashedu.ops.fp8.reference.fp8_attention_reference` is this kernel's arithmetic in PyTorch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from flashedu import runtime
from flashedu.ops.fp8.e4m3_grid import round_to_e4m3_grid
from flashedu.ops.fp8.quant import transposed
from flashedu.ops.fp8.reference import check_fp8_inputs
from flashedu.ops._triton import choose, max_shared_memory, should_tune
from flashedu.ops.fa3.kernel import tma_ready

HEAD_DIMS = (32, 64, 128, 256)
MIN_CAPABILITY = (8, 9)  # fp8e4nv tensor cores: Ada and Hopper


@triton.jit
def _exp2_fma(x):
    """2^x for finite x ≤ 8 (the kernel's exponents, P·2⁸) without the MUFU unit: only FMA-pipe
    arithmetic (FlashAttention-4's trick for the exp bottleneck). x = j + f with j an integer and
    f in [-0.5, 0.5]; 2^f is a cubic (relative error 7.5e-5, far below e4m3's 2⁻⁴ step) and 2^j
    goes straight into the exponent bits. x is clamped at -125 so that the result stays a normal
    float (≈ 0 anyway). Measured slower than MUFU on an H200 (docs/notes/fp8-tuning.md): kept as
    the ``exp_fma`` option so that the result can be reproduced."""
    x = tl.maximum(x, -125.0)
    t = x + 12582912.0  # 1.5·2²³: this add rounds x to the integer j, held in t's low mantissa bits
    f = x - (t - 12582912.0)
    p = ((0.05517166 * f + 0.24261113) * f + 0.69326097) * f + 0.99992806
    # t's bits are 0x4B400000 + j; shifted left by 23 only j << 23 survives: add it to p's exponent.
    bits = p.to(tl.int32, bitcast=True) + (t.to(tl.int32, bitcast=True) << 23)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _fp8_fold(acc, l_i, m_i, u, s, vt, c, vs, offs_m, offs_n, N_K, MASKED: tl.constexpr, CAUSAL: tl.constexpr,
              PRE_ROUND: tl.constexpr, FOLD_V: tl.constexpr, EXP_FMA: tl.constexpr):
    """Fold one K/V tile's raw scores s = Q8 K8ᵀ [BLOCK_M, BLOCK_N] (fp32) and its Vᵀ tile into
    the running (acc, ℓ, m). c = scale·log2e·dq·dk, vs = this tile's V descale.

    P is computed directly as P·2⁸ = exp2(s·c − (m − 8)): the factor 2⁸ keeps P a normal e4m3
    number down to P = 2⁻¹⁴, and costs nothing inside the exponent. ℓ sums the same P·2⁸, so
    the factor cancels in acc / ℓ. With FOLD_V, acc is kept in units of u (the last tile's V
    descale): acc·u is the true sum. Rescaling acc by alpha·u/vs before the product lets the
    tensor core accumulate P·V straight into acc, as in the fp16 kernel, instead of a second
    [BLOCK_M, D] accumulator."""
    # [fp8-fold-start]
    if MASKED:
        keep = (offs_n < N_K)[None, :]
        if CAUSAL:
            keep = keep & (offs_m[:, None] >= offs_n[None, :])
        s = tl.where(keep, s * c, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
        p8 = tl.math.exp2(s - (m_sub - 8.0)[:, None])
    else:
        m_new = tl.maximum(m_i, tl.max(s, 1) * c)
        m_sub = m_new
        if EXP_FMA:
            p8 = _exp2_fma(s * c - (m_sub - 8.0)[:, None])
        else:
            p8 = tl.math.exp2(s * c - (m_sub - 8.0)[:, None])
    alpha = tl.math.exp2(m_i - m_sub)
    l_i = l_i * alpha + tl.sum(p8, 1)
    if PRE_ROUND:
        p8 = round_to_e4m3_grid(p8)
    p8 = p8.to(tl.float8e4nv)
    if FOLD_V:
        acc = acc * (alpha * (u / vs))[:, None]
        acc = tl.dot(p8, tl.trans(vt), acc)  # [BLOCK_M, D]; V K-major
        u = vs
    else:
        acc = acc * alpha[:, None] + tl.dot(p8, tl.trans(vt)) * vs
    # [fp8-fold-end]
    return acc, l_i, m_new, u


@triton.jit
def _fp8_load_k(K, desc_k, bh, start_n, offs_d, N_K, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
                USE_TMA: tl.constexpr):
    offs_n = start_n + tl.arange(0, BLOCK_N)
    if USE_TMA:
        return desc_k.load([bh, start_n, 0]).reshape(BLOCK_N, HEAD_DIM)
    return tl.load(K + offs_n[:, None] * HEAD_DIM + offs_d[None, :], mask=(offs_n < N_K)[:, None], other=0.0)


@triton.jit
def _fp8_load_vt(VT, desc_vt, bh, start_n, offs_d, N_K, N_KP, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
                 USE_TMA: tl.constexpr):
    offs_n = start_n + tl.arange(0, BLOCK_N)
    if USE_TMA:
        return desc_vt.load([bh, 0, start_n]).reshape(HEAD_DIM, BLOCK_N)
    return tl.load(VT + offs_d[:, None] * N_KP + offs_n[None, :], mask=(offs_n < N_K)[None, :], other=0.0)


@triton.jit
def _fp8_inner(acc, l_i, m_i, u, q, K, VT, desc_k, desc_vt, KS, VS, bh, offs_m, offs_d, lo, hi, N_K, N_KP,
               c_q, KV_BLOCK: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
               MASKED: tl.constexpr, CAUSAL: tl.constexpr, USE_TMA: tl.constexpr, NUM_STAGES: tl.constexpr,
               PRE_ROUND: tl.constexpr, FOLD_V: tl.constexpr, EXP_FMA: tl.constexpr):
    """The K/V tiles at columns lo..hi (step BLOCK_N) folded into one Q tile's state."""
    # [fp8-inner-start]
    for start_n in tl.range(lo, hi, BLOCK_N, num_stages=NUM_STAGES):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k = _fp8_load_k(K, desc_k, bh, start_n, offs_d, N_K, BLOCK_N, HEAD_DIM, USE_TMA)
        vt = _fp8_load_vt(VT, desc_vt, bh, start_n, offs_d, N_K, N_KP, BLOCK_N, HEAD_DIM,
                          USE_TMA)  # Vᵀ [D, BLOCK_N]: V is stored K-major for the FP8 MMA
        c = c_q * tl.load(KS + start_n // KV_BLOCK)  # scale·log2e·dq·dk for this tile
        vs = tl.load(VS + start_n // KV_BLOCK)  # this tile's V descale
        s = tl.dot(q, tl.trans(k))  # [BLOCK_M, BLOCK_N], fp32, unscaled: e4m3 × e4m3
        acc, l_i, m_i, u = _fp8_fold(acc, l_i, m_i, u, s, vt, c, vs, offs_m, offs_n, N_K,
                                     MASKED, CAUSAL, PRE_ROUND, FOLD_V, EXP_FMA)
    # [fp8-inner-end]
    return acc, l_i, m_i, u


@triton.jit
def _fp8_finish(acc, l_i, u, O, bh64, offs_m, offs_d, N_Q, HEAD_DIM: tl.constexpr, FOLD_V: tl.constexpr):
    if FOLD_V:
        acc = acc * u
    o = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    tl.store(O + bh64 * N_Q * HEAD_DIM + offs_m[:, None] * HEAD_DIM + offs_d[None, :],
             o.to(O.dtype.element_ty), mask=(offs_m < N_Q)[:, None])


@triton.jit
def _fp8_load_q(Q, desc_q, bh, bh64, start_m, N_Q, ROWS: tl.constexpr, HEAD_DIM: tl.constexpr,
                USE_TMA: tl.constexpr):
    offs_m = start_m + tl.arange(0, ROWS)
    offs_d = tl.arange(0, HEAD_DIM)
    if USE_TMA:
        q = desc_q.load([bh, start_m, 0]).reshape(ROWS, HEAD_DIM)
    else:
        q = tl.load(Q + bh64 * N_Q * HEAD_DIM + offs_m[:, None] * HEAD_DIM + offs_d[None, :],
                    mask=(offs_m < N_Q)[:, None], other=0.0)
    return q, offs_m


@triton.jit
def _fp8_fwd_kernel(Q, K, VT, desc_q, desc_k, desc_vt, QS, KS, VS, O, N_Q, N_K, N_KP, n_qt, n_kt, sm_scale,
                    CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                    Q_BLOCK: tl.constexpr, KV_BLOCK: tl.constexpr, USE_TMA: tl.constexpr,
                    NUM_STAGES: tl.constexpr, PRE_ROUND: tl.constexpr, FOLD_V: tl.constexpr,
                    EXP_FMA: tl.constexpr):
    n_m = tl.cdiv(N_Q, BLOCK_M)
    pid_m = n_m - 1 - tl.program_id(0) if CAUSAL else tl.program_id(0)
    bh = tl.program_id(1)
    bh64 = bh.to(tl.int64)
    start_m = pid_m * BLOCK_M
    offs_d = tl.arange(0, HEAD_DIM)
    c_q = sm_scale * 1.4426950408889634 * tl.load(QS + bh64 * n_qt + start_m // Q_BLOCK)
    K += bh64 * N_K * HEAD_DIM
    VT += bh64 * HEAD_DIM * N_KP
    KS += bh64 * n_kt
    VS += bh64 * n_kt
    # K/V columns 0..full_end need no mask: whole tiles left of the causal diagonal (BLOCK_N
    # may be larger than BLOCK_M: the tile holding start_m is masked), or all whole tiles.
    if CAUSAL:
        full_end = (start_m // BLOCK_N) * BLOCK_N
        tail_end = tl.minimum(start_m + BLOCK_M, N_K)
    else:
        full_end = (N_K // BLOCK_N) * BLOCK_N
        tail_end = N_K
    q, offs_m = _fp8_load_q(Q, desc_q, bh, bh64, start_m, N_Q, BLOCK_M, HEAD_DIM, USE_TMA)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    u = tl.full([], 1.0, tl.float32)
    acc, l_i, m_i, u = _fp8_inner(acc, l_i, m_i, u, q, K, VT, desc_k, desc_vt, KS, VS, bh, offs_m, offs_d, 0,
                                  full_end, N_K, N_KP, c_q, KV_BLOCK, BLOCK_N, HEAD_DIM, False, False,
                                  USE_TMA, NUM_STAGES, PRE_ROUND, FOLD_V, EXP_FMA)
    acc, l_i, m_i, u = _fp8_inner(acc, l_i, m_i, u, q, K, VT, desc_k, desc_vt, KS, VS, bh, offs_m, offs_d,
                                  full_end, tail_end, N_K, N_KP, c_q, KV_BLOCK, BLOCK_N, HEAD_DIM, True,
                                  CAUSAL, USE_TMA, NUM_STAGES, PRE_ROUND, FOLD_V, False)
    _fp8_finish(acc, l_i, u, O, bh64, offs_m, offs_d, N_Q, HEAD_DIM, FOLD_V)


@dataclass(frozen=True)
class FP8Config:
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    use_tma: bool
    fold_v: bool = True  # P·V accumulates into acc (acc kept in units of a V descale)
    exp_fma: bool = False  # the mask-free tiles' exps by a cubic on the FMA units instead of MUFU
    max_regs: int | None = None  # a register cap per thread, so that more programs share an SM


# Per arch, the configs a large problem is timed over once per shape (the fastest is kept);
# small problems and tests take the first that fits. sm_90: 128-row tiles with 8 warps (one
# program per SM at ~175 registers a thread), and 64-row tiles with 4 warps, two or three of
# which share an SM, so that one's softmax can run under another's GEMMs.
CONFIGS = {
    "sm90": [FP8Config(128, 128, 8, 3, True), FP8Config(64, 128, 4, 2, True, max_regs=168),
             FP8Config(64, 128, 4, 3, True), FP8Config(64, 64, 4, 3, True),
             FP8Config(128, 64, 8, 3, True, max_regs=128)],
    "sm89": [FP8Config(128, 64, 8, 2, False), FP8Config(64, 64, 4, 2, False)],
    "interpreter": [FP8Config(32, 32, 4, 1, False)],
}


def _fits(cfg: FP8Config, head_dim: int) -> bool:
    """Shared memory: the Q tile plus `stages` K and Vᵀ tiles, one byte per element."""
    need = head_dim * (cfg.block_m + 2 * cfg.num_stages * cfg.block_n)
    return need <= max_shared_memory()


def configs_here(head_dim: int) -> list[FP8Config]:
    """This arch's configs whose tiles fit its shared memory at this head dim."""
    rt = runtime.current()
    key = "interpreter" if not rt.compiled else "sm90" if rt.capability >= (9, 0) else "sm89"
    out = [c for c in CONFIGS[key] if _fits(c, head_dim)]
    if not out:
        raise ValueError(f"fp8_triton: head dim D={head_dim} does not fit this GPU's shared memory")
    return out


def default_config(head_dim: int = 128) -> FP8Config:
    """The config a small problem gets here: the first that fits."""
    return configs_here(head_dim)[0]


def _desc(t: torch.Tensor, block: list[int]):
    from triton.tools.tensor_descriptor import TensorDescriptor

    return TensorDescriptor(t, shape=list(t.shape), strides=list(t.stride()), block_shape=block)


def fp8_forward(q, k, v, *, causal: bool, scale: float, q_descale, k_descale, v_descale, q_block: int,
                kv_block: int, config: FP8Config | None = None, out_dtype=torch.float16) -> torch.Tensor:
    """The launch, from validated inputs (descales [B, H, tiles] fp32)."""
    B, H, N_Q, D = q.shape
    N_K = k.shape[2]
    q, k = tma_ready(q), tma_ready(k)
    vt = transposed(v)  # [B, H, D, N_K padded]: V K-major for the second product
    n_kp = vt.shape[-1]
    o = torch.empty(B, H, N_Q, D, device=q.device, dtype=out_dtype)
    compiled = runtime.current().compiled

    def run(cfg: FP8Config):
        # One descale per kernel tile: the tiles must not straddle two quantisation blocks.
        bm = math.gcd(cfg.block_m, q_block)
        bn = math.gcd(cfg.block_n, kv_block)
        if bn < 16:
            raise ValueError(f"fp8_triton: q_block={q_block} and kv_block={kv_block} must be multiples of 16")
        if cfg.use_tma:
            dq_, dk_, dvt = (_desc(q.view(B * H, N_Q, D), [1, bm, D]), _desc(k.view(B * H, N_K, D), [1, bn, D]),
                             _desc(vt.view(B * H, D, n_kp), [1, D, bn]))
        else:
            dq_ = dk_ = dvt = None
        _fp8_fwd_kernel[(triton.cdiv(N_Q, bm), B * H)](
            q, k, vt, dq_, dk_, dvt, q_descale, k_descale, v_descale, o, N_Q, N_K, n_kp,
            q_descale.shape[-1], k_descale.shape[-1], scale,
            CAUSAL=causal, HEAD_DIM=D, BLOCK_M=bm, BLOCK_N=bn, Q_BLOCK=q_block, KV_BLOCK=kv_block,
            USE_TMA=cfg.use_tma, NUM_STAGES=cfg.num_stages, PRE_ROUND=not compiled, FOLD_V=cfg.fold_v,
            EXP_FMA=cfg.exp_fma, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
            **({"maxnreg": cfg.max_regs} if cfg.max_regs and compiled else {}))

    if config is None:
        key = (B, H, N_Q, N_K, D, causal, q_block, kv_block, out_dtype)
        config = choose("fp8_fwd", configs_here(D), key, run, tune=should_tune(B, H, N_Q, N_K))
    run(config)
    return o


def flash_attention_fp8(q, k, v, *, causal: bool = False, scale: float | None = None, q_descale=None,
                        k_descale=None, v_descale=None, q_block: int = 128, kv_block: int = 128,
                        config: FP8Config | None = None, out_dtype=torch.float16) -> torch.Tensor:
    """Attention of float8_e4m3fn ``q, k, v`` [B, H, N, D] with per-tile fp32 descales
    (q: [B, H, ceil(N_Q/q_block)], k and v: [B, H, ceil(N_K/kv_block)]; None: 1). sm_89 or
    newer, or the interpreter; D in {32, 64, 128, 256}. Forward only. Returns o in ``out_dtype``.
    """
    scale, dq, dk, dv = check_fp8_inputs(q, k, v, causal=causal, scale=scale, q_descale=q_descale,
                                         k_descale=k_descale, v_descale=v_descale, q_block=q_block,
                                         kv_block=kv_block, name="fp8_triton")
    if q.shape[-1] not in HEAD_DIMS:
        raise ValueError(f"fp8_triton: head dim D={q.shape[-1]} is not supported; supported: {HEAD_DIMS}")
    runtime.require_triton("fp8_triton", q, min_capability=MIN_CAPABILITY)
    return fp8_forward(q, k, v, causal=causal, scale=scale, q_descale=dq, k_descale=dk, v_descale=dv,
                       q_block=q_block, kv_block=kv_block, config=config, out_dtype=out_dtype)


__all__ = ["CONFIGS", "FP8Config", "configs_here", "default_config", "HEAD_DIMS", "MIN_CAPABILITY", "flash_attention_fp8", "fp8_forward"]
