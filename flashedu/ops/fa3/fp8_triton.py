"""FlashAttention's forward in FP8 (e4m3) with per-tile descales, in Triton (chapter 6).

Inputs come quantised (:func:`flashedu.fp8.prepare_fp8`: Q and K rotated by M = D·H, then one
scale per tile); the kernel multiplies in e4m3 with fp32 accumulation and folds the descales in
once per score: S = (Q8 K8ᵀ)·dq·dk·scale. P, in [0, 1], is multiplied by 2⁸ and cast to e4m3
for the second product, and V's descale (over 2⁸) multiplies that product. Two Hopper details:

* FP8 tensor-core instructions read both operands "K-major" (the reduction dim contiguous). For
  Q K8ᵀ, K [N, D] already is; for P V the reduction runs over keys, so V is passed transposed,
  [B, H, D, N_K] (padded to a multiple of 16 keys, which TMA needs for its row stride);
* on sm_90 the tiles arrive by TMA (tensor descriptors); on sm_89 (Ada: FP8 but no TMA) by
  ordinary masked loads. The interpreter runs both.

:func:`flashedu.fp8.reference.fp8_attention_reference` is this kernel's arithmetic in PyTorch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ... import runtime
from ...fp8.reference import check_fp8_inputs
from .triton_impl import tma_ready

HEAD_DIMS = (32, 64, 128, 256)
MIN_CAPABILITY = (8, 9)  # fp8e4nv tensor cores: Ada and Hopper


@triton.jit
def _round_to_e4m3_grid(x):
    """Round x ≥ 0 to 3 mantissa bits (nearest, ties to even) in fp32, so that the cast to e4m3
    after it is exact. Only under the interpreter: its fp32 → e4m3 cast loses the carry when a
    value rounds up to a power of two (31.9 → 16 instead of 32); the GPU's cast is correct."""
    bits = x.to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFFF + ((bits >> 20) & 1)) & 0xFFF00000
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _exp2_fma(x):
    """2^x for -inf < x ≤ 0 without the MUFU unit: only FMA-pipe arithmetic (FlashAttention-4's
    trick for the exp bottleneck). x = j + f with j an integer and f in [-0.5, 0.5]; 2^f is a
    cubic (relative error 7.5e-5, far below e4m3's 2⁻⁴ step) and 2^j goes straight into the
    exponent bits. x is clamped at -125 so that the result stays a normal float (≈ 0 anyway)."""
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

    With FOLD_V, acc is kept in units of u (the last tile's V descale): acc·u·2⁻⁸ is the true
    sum. Rescaling acc by alpha·u/vs before the product lets the tensor core accumulate P·V
    straight into acc, as in the fp16 kernel, instead of a second [BLOCK_M, D] accumulator."""
    if MASKED:
        keep = (offs_n < N_K)[None, :]
        if CAUSAL:
            keep = keep & (offs_m[:, None] >= offs_n[None, :])
        s = tl.where(keep, s * c, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(s - m_sub[:, None])
    else:
        m_new = tl.maximum(m_i, tl.max(s, 1) * c)
        m_sub = m_new
        if EXP_FMA:
            p = _exp2_fma(s * c - m_sub[:, None])
        else:
            p = tl.math.exp2(s * c - m_sub[:, None])
    alpha = tl.math.exp2(m_i - m_sub)
    l_i = l_i * alpha + tl.sum(p, 1)
    # P·2⁸ stays a normal e4m3 number down to P = 2⁻¹⁴; the 2⁻⁸ goes into V's descale.
    p8 = p * 256.0
    if PRE_ROUND:
        p8 = _round_to_e4m3_grid(p8)
    p8 = p8.to(tl.float8e4nv)
    if FOLD_V:
        acc = acc * (alpha * (u / vs))[:, None]
        acc = tl.dot(p8, tl.trans(vt), acc)  # [BLOCK_M, D]; V K-major
        u = vs
    else:
        acc = acc * alpha[:, None] + tl.dot(p8, tl.trans(vt)) * vs
    return acc, l_i, m_new, u


@triton.jit
def _fp8_load_kv(K, VT, desc_k, desc_vt, bh, start_n, offs_d, N_K, N_KP, BLOCK_N: tl.constexpr,
                 HEAD_DIM: tl.constexpr, USE_TMA: tl.constexpr):
    offs_n = start_n + tl.arange(0, BLOCK_N)
    if USE_TMA:
        k = desc_k.load([bh, start_n, 0]).reshape(BLOCK_N, HEAD_DIM)
        vt = desc_vt.load([bh, 0, start_n]).reshape(HEAD_DIM, BLOCK_N)
    else:
        k = tl.load(K + offs_n[:, None] * HEAD_DIM + offs_d[None, :], mask=(offs_n < N_K)[:, None], other=0.0)
        vt = tl.load(VT + offs_d[:, None] * N_KP + offs_n[None, :], mask=(offs_n < N_K)[None, :], other=0.0)
    return k, vt, offs_n


@triton.jit
def _fp8_inner(acc, l_i, m_i, u, q, K, VT, desc_k, desc_vt, KS, VS, bh, offs_m, offs_d, lo, hi, N_K, N_KP,
               c_q, KV_BLOCK: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
               MASKED: tl.constexpr, CAUSAL: tl.constexpr, USE_TMA: tl.constexpr, NUM_STAGES: tl.constexpr,
               PRE_ROUND: tl.constexpr, FOLD_V: tl.constexpr, EXP_FMA: tl.constexpr):
    """The K/V tiles at columns lo..hi (step BLOCK_N) folded into one Q tile's state."""
    for start_n in tl.range(lo, hi, BLOCK_N, num_stages=NUM_STAGES):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        k, vt, offs_n = _fp8_load_kv(K, VT, desc_k, desc_vt, bh, start_n, offs_d, N_K, N_KP, BLOCK_N, HEAD_DIM,
                                     USE_TMA)
        c = c_q * tl.load(KS + start_n // KV_BLOCK)  # scale·log2e·dq·dk for this tile
        vs = tl.load(VS + start_n // KV_BLOCK)
        s = tl.dot(q, tl.trans(k))  # [BLOCK_M, BLOCK_N], fp32, unscaled
        acc, l_i, m_i, u = _fp8_fold(acc, l_i, m_i, u, s, vt, c, vs, offs_m, offs_n, N_K, MASKED, CAUSAL,
                                     PRE_ROUND, FOLD_V, EXP_FMA)
    return acc, l_i, m_i, u


@triton.jit
def _fp8_inner_pair(acc0, l0, m0, u0, acc1, l1, m1, u1, q0, q1, K, VT, desc_k, desc_vt, KS, VS, bh, offs_m0,
                    offs_m1, offs_d, lo, hi, N_K, N_KP, c_q0, c_q1, KV_BLOCK: tl.constexpr,
                    BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, USE_TMA: tl.constexpr,
                    NUM_STAGES: tl.constexpr, PRE_ROUND: tl.constexpr, FOLD_V: tl.constexpr,
                    EXP_FMA: tl.constexpr):
    """Mask-free tiles for two half Q tiles at once, FA3's intra-warpgroup overlap written out:
    both score products are issued before either softmax, so the tensor cores can work on
    the second half's QKᵀ (and then the first half's PV) while the first half's exps run.
    EXP_FMA = 1 moves the second half's exps to the FMA units, 2 both halves'."""
    for start_n in tl.range(lo, hi, BLOCK_N, num_stages=NUM_STAGES):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        k, vt, offs_n = _fp8_load_kv(K, VT, desc_k, desc_vt, bh, start_n, offs_d, N_K, N_KP, BLOCK_N, HEAD_DIM,
                                     USE_TMA)
        ks = tl.load(KS + start_n // KV_BLOCK)
        vs = tl.load(VS + start_n // KV_BLOCK)
        s0 = tl.dot(q0, tl.trans(k))
        s1 = tl.dot(q1, tl.trans(k))
        acc0, l0, m0, u0 = _fp8_fold(acc0, l0, m0, u0, s0, vt, c_q0 * ks, vs, offs_m0, offs_n, N_K, False, False,
                                     PRE_ROUND, FOLD_V, EXP_FMA >= 2)
        acc1, l1, m1, u1 = _fp8_fold(acc1, l1, m1, u1, s1, vt, c_q1 * ks, vs, offs_m1, offs_n, N_K, False, False,
                                     PRE_ROUND, FOLD_V, EXP_FMA >= 1)
    return acc0, l0, m0, u0, acc1, l1, m1, u1


@triton.jit
def _fp8_finish(acc, l_i, u, O, bh64, offs_m, offs_d, N_Q, HEAD_DIM: tl.constexpr, FOLD_V: tl.constexpr):
    if FOLD_V:
        acc = acc * (u * 0.00390625)
    else:
        acc = acc * 0.00390625
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
                    SPLIT_M: tl.constexpr, EXP_FMA: tl.constexpr):
    tl.static_assert(BLOCK_M % BLOCK_N == 0)
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
    # K/V columns 0..full_end need no mask: left of the causal diagonal, or whole tiles.
    if CAUSAL:
        full_end = start_m
        tail_end = tl.minimum(start_m + BLOCK_M, N_K)
    else:
        full_end = (N_K // BLOCK_N) * BLOCK_N
        tail_end = N_K
    if SPLIT_M:
        HALF: tl.constexpr = BLOCK_M // 2
        q0, offs_m0 = _fp8_load_q(Q, desc_q, bh, bh64, start_m, N_Q, HALF, HEAD_DIM, USE_TMA)
        q1, offs_m1 = _fp8_load_q(Q, desc_q, bh, bh64, start_m + HALF, N_Q, HALF, HEAD_DIM, USE_TMA)
        acc0 = tl.zeros([HALF, HEAD_DIM], dtype=tl.float32)
        acc1 = tl.zeros([HALF, HEAD_DIM], dtype=tl.float32)
        l0 = tl.zeros([HALF], dtype=tl.float32)
        l1 = tl.zeros([HALF], dtype=tl.float32)
        m0 = tl.full([HALF], float("-inf"), dtype=tl.float32)
        m1 = tl.full([HALF], float("-inf"), dtype=tl.float32)
        u0 = tl.full([], 1.0, tl.float32)
        u1 = tl.full([], 1.0, tl.float32)
        acc0, l0, m0, u0, acc1, l1, m1, u1 = _fp8_inner_pair(
            acc0, l0, m0, u0, acc1, l1, m1, u1, q0, q1, K, VT, desc_k, desc_vt, KS, VS, bh, offs_m0, offs_m1,
            offs_d, 0, full_end, N_K, N_KP, c_q, c_q, KV_BLOCK, BLOCK_N, HEAD_DIM, USE_TMA, NUM_STAGES,
            PRE_ROUND, FOLD_V, EXP_FMA)
        acc0, l0, m0, u0 = _fp8_inner(acc0, l0, m0, u0, q0, K, VT, desc_k, desc_vt, KS, VS, bh, offs_m0, offs_d,
                                      full_end, tail_end, N_K, N_KP, c_q, KV_BLOCK, BLOCK_N, HEAD_DIM, True,
                                      CAUSAL, USE_TMA, NUM_STAGES, PRE_ROUND, FOLD_V, False)
        acc1, l1, m1, u1 = _fp8_inner(acc1, l1, m1, u1, q1, K, VT, desc_k, desc_vt, KS, VS, bh, offs_m1, offs_d,
                                      full_end, tail_end, N_K, N_KP, c_q, KV_BLOCK, BLOCK_N, HEAD_DIM, True,
                                      CAUSAL, USE_TMA, NUM_STAGES, PRE_ROUND, FOLD_V, False)
        _fp8_finish(acc0, l0, u0, O, bh64, offs_m0, offs_d, N_Q, HEAD_DIM, FOLD_V)
        _fp8_finish(acc1, l1, u1, O, bh64, offs_m1, offs_d, N_Q, HEAD_DIM, FOLD_V)
    else:
        q, offs_m = _fp8_load_q(Q, desc_q, bh, bh64, start_m, N_Q, BLOCK_M, HEAD_DIM, USE_TMA)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        u = tl.full([], 1.0, tl.float32)
        acc, l_i, m_i, u = _fp8_inner(acc, l_i, m_i, u, q, K, VT, desc_k, desc_vt, KS, VS, bh, offs_m, offs_d, 0,
                                      full_end, N_K, N_KP, c_q, KV_BLOCK, BLOCK_N, HEAD_DIM, False, False,
                                      USE_TMA, NUM_STAGES, PRE_ROUND, FOLD_V, EXP_FMA > 0)
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
    split_m: bool = False  # two half Q tiles per program, their softmaxes under each other's GEMMs
    exp_fma: int = 0  # score exps on the FMA units: 0 none, 1 one half (split_m) or all, 2 all
    max_regs: int | None = None  # registers per thread (128 with 8 warps: two programs per SM)


CONFIGS = {
    "sm90": FP8Config(128, 128, 8, 3, True),
    "sm89": FP8Config(128, 64, 8, 2, False),
    "interpreter": FP8Config(32, 32, 4, 1, False),
}


def default_config() -> FP8Config:
    rt = runtime.current()
    if not rt.compiled:
        return CONFIGS["interpreter"]
    return CONFIGS["sm90" if rt.capability >= (9, 0) else "sm89"]


def _desc(t: torch.Tensor, block: list[int]):
    from triton.tools.tensor_descriptor import TensorDescriptor

    return TensorDescriptor(t, shape=list(t.shape), strides=list(t.stride()), block_shape=block)


def fp8_forward(q, k, v, *, causal: bool, scale: float, q_descale, k_descale, v_descale, q_block: int,
                kv_block: int, config: FP8Config | None = None, out_dtype=torch.float16) -> torch.Tensor:
    """The launch, from validated inputs (descales [B, H, tiles] fp32)."""
    B, H, N_Q, D = q.shape
    N_K = k.shape[2]
    cfg = config or default_config()
    # One descale per kernel tile: the tiles must not straddle two quantisation blocks.
    bm = math.gcd(cfg.block_m, q_block)
    bn = math.gcd(cfg.block_n, kv_block, bm)  # BLOCK_N divides BLOCK_M: the causal split needs it
    if bn < 16:
        raise ValueError(f"fp8_triton: q_block={q_block} and kv_block={kv_block} must be multiples of 16")
    if cfg.split_m and bm < 32:
        raise ValueError(f"fp8_triton: split_m needs Q tiles of at least 32 rows, got {bm}")
    q, k = tma_ready(q), tma_ready(k)
    n_kp = -(-N_K // 16) * 16
    vt = torch.zeros(B, H, D, n_kp, device=v.device, dtype=v.dtype)
    vt[..., :N_K] = v.transpose(-1, -2)  # [B, H, D, N_K]: V K-major for the second product
    o = torch.empty(B, H, N_Q, D, device=q.device, dtype=out_dtype)
    if cfg.use_tma:
        q_rows = bm // 2 if cfg.split_m else bm
        dq_, dk_, dvt = (_desc(q.view(B * H, N_Q, D), [1, q_rows, D]), _desc(k.view(B * H, N_K, D), [1, bn, D]),
                         _desc(vt.view(B * H, D, n_kp), [1, D, bn]))
    else:
        dq_ = dk_ = dvt = None
    grid = (triton.cdiv(N_Q, bm), B * H)
    _fp8_fwd_kernel[grid](q, k, vt, dq_, dk_, dvt, q_descale, k_descale, v_descale, o, N_Q, N_K, n_kp,
                          q_descale.shape[-1], k_descale.shape[-1], scale,
                          CAUSAL=causal, HEAD_DIM=D, BLOCK_M=bm, BLOCK_N=bn, Q_BLOCK=q_block, KV_BLOCK=kv_block,
                          USE_TMA=cfg.use_tma, NUM_STAGES=cfg.num_stages,
                          PRE_ROUND=not runtime.current().compiled, FOLD_V=cfg.fold_v, SPLIT_M=cfg.split_m,
                          EXP_FMA=cfg.exp_fma, num_warps=cfg.num_warps,
                          **({"maxnreg": cfg.max_regs} if cfg.max_regs and runtime.current().compiled else {}),
                          num_stages=cfg.num_stages)
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


__all__ = ["CONFIGS", "FP8Config", "HEAD_DIMS", "MIN_CAPABILITY", "flash_attention_fp8", "fp8_forward"]
