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
def _fp8_inner(acc, l_i, m_i, q, K, VT, desc_k, desc_vt, KS, VS, bh, offs_m, offs_d, lo, hi, N_K, N_KP,
               c_q, KV_BLOCK: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
               MASKED: tl.constexpr, CAUSAL: tl.constexpr, USE_TMA: tl.constexpr, NUM_STAGES: tl.constexpr,
               PRE_ROUND: tl.constexpr):
    for start_n in tl.range(lo, hi, BLOCK_N, num_stages=NUM_STAGES):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        offs_n = start_n + tl.arange(0, BLOCK_N)
        if USE_TMA:
            k = desc_k.load([bh, start_n, 0]).reshape(BLOCK_N, HEAD_DIM)
            vt = desc_vt.load([bh, 0, start_n]).reshape(HEAD_DIM, BLOCK_N)
        else:
            k = tl.load(K + offs_n[:, None] * HEAD_DIM + offs_d[None, :], mask=(offs_n < N_K)[:, None], other=0.0)
            vt = tl.load(VT + offs_d[:, None] * N_KP + offs_n[None, :], mask=(offs_n < N_K)[None, :], other=0.0)
        c = c_q * tl.load(KS + start_n // KV_BLOCK)  # scale·log2e·dq·dk for this tile
        s = tl.dot(q, tl.trans(k))  # [BLOCK_M, BLOCK_N], fp32, unscaled
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
            p = tl.math.exp2(s * c - m_sub[:, None])
        alpha = tl.math.exp2(m_i - m_sub)
        l_i = l_i * alpha + tl.sum(p, 1)
        # P·2⁸ stays a normal e4m3 number down to P = 2⁻¹⁴; the 2⁻⁸ goes into V's descale.
        p8 = p * 256.0
        if PRE_ROUND:
            p8 = _round_to_e4m3_grid(p8)
        pv = tl.dot(p8.to(tl.float8e4nv), tl.trans(vt))  # [BLOCK_M, D]; V K-major
        acc = acc * alpha[:, None] + pv * (tl.load(VS + start_n // KV_BLOCK) * 0.00390625)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _fp8_fwd_kernel(Q, K, VT, desc_q, desc_k, desc_vt, QS, KS, VS, O, N_Q, N_K, N_KP, n_qt, n_kt, sm_scale,
                    CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                    Q_BLOCK: tl.constexpr, KV_BLOCK: tl.constexpr, USE_TMA: tl.constexpr,
                    NUM_STAGES: tl.constexpr, PRE_ROUND: tl.constexpr):
    tl.static_assert(BLOCK_M % BLOCK_N == 0)
    n_m = tl.cdiv(N_Q, BLOCK_M)
    pid_m = n_m - 1 - tl.program_id(0) if CAUSAL else tl.program_id(0)
    bh = tl.program_id(1)
    bh64 = bh.to(tl.int64)
    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    if USE_TMA:
        q = desc_q.load([bh, start_m, 0]).reshape(BLOCK_M, HEAD_DIM)
    else:
        q = tl.load(Q + bh64 * N_Q * HEAD_DIM + offs_m[:, None] * HEAD_DIM + offs_d[None, :],
                    mask=(offs_m < N_Q)[:, None], other=0.0)
    c_q = sm_scale * 1.4426950408889634 * tl.load(QS + bh64 * n_qt + start_m // Q_BLOCK)
    K += bh64 * N_K * HEAD_DIM
    VT += bh64 * HEAD_DIM * N_KP
    KS += bh64 * n_kt
    VS += bh64 * n_kt
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    if CAUSAL:
        acc, l_i, m_i = _fp8_inner(acc, l_i, m_i, q, K, VT, desc_k, desc_vt, KS, VS, bh, offs_m, offs_d, 0,
                                   start_m, N_K, N_KP, c_q, KV_BLOCK, BLOCK_N, HEAD_DIM, False, False,
                                   USE_TMA, NUM_STAGES, PRE_ROUND)
        acc, l_i, m_i = _fp8_inner(acc, l_i, m_i, q, K, VT, desc_k, desc_vt, KS, VS, bh, offs_m, offs_d,
                                   start_m, tl.minimum(start_m + BLOCK_M, N_K), N_K, N_KP, c_q, KV_BLOCK,
                                   BLOCK_N, HEAD_DIM, True, True, USE_TMA, NUM_STAGES, PRE_ROUND)
    else:
        full_end = (N_K // BLOCK_N) * BLOCK_N
        acc, l_i, m_i = _fp8_inner(acc, l_i, m_i, q, K, VT, desc_k, desc_vt, KS, VS, bh, offs_m, offs_d, 0,
                                   full_end, N_K, N_KP, c_q, KV_BLOCK, BLOCK_N, HEAD_DIM, False, False,
                                   USE_TMA, NUM_STAGES, PRE_ROUND)
        acc, l_i, m_i = _fp8_inner(acc, l_i, m_i, q, K, VT, desc_k, desc_vt, KS, VS, bh, offs_m, offs_d,
                                   full_end, N_K, N_K, N_KP, c_q, KV_BLOCK, BLOCK_N, HEAD_DIM, True, False,
                                   USE_TMA, NUM_STAGES, PRE_ROUND)
    o = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    tl.store(O + bh64 * N_Q * HEAD_DIM + offs_m[:, None] * HEAD_DIM + offs_d[None, :],
             o.to(O.dtype.element_ty), mask=(offs_m < N_Q)[:, None])


@dataclass(frozen=True)
class FP8Config:
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    use_tma: bool


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
    q, k = tma_ready(q), tma_ready(k)
    n_kp = -(-N_K // 16) * 16
    vt = torch.zeros(B, H, D, n_kp, device=v.device, dtype=v.dtype)
    vt[..., :N_K] = v.transpose(-1, -2)  # [B, H, D, N_K]: V K-major for the second product
    o = torch.empty(B, H, N_Q, D, device=q.device, dtype=out_dtype)
    if cfg.use_tma:
        dq_, dk_, dvt = (_desc(q.view(B * H, N_Q, D), [1, bm, D]), _desc(k.view(B * H, N_K, D), [1, bn, D]),
                         _desc(vt.view(B * H, D, n_kp), [1, D, bn]))
    else:
        dq_ = dk_ = dvt = None
    grid = (triton.cdiv(N_Q, bm), B * H)
    _fp8_fwd_kernel[grid](q, k, vt, dq_, dk_, dvt, q_descale, k_descale, v_descale, o, N_Q, N_K, n_kp,
                          q_descale.shape[-1], k_descale.shape[-1], scale,
                          CAUSAL=causal, HEAD_DIM=D, BLOCK_M=bm, BLOCK_N=bn, Q_BLOCK=q_block, KV_BLOCK=kv_block,
                          USE_TMA=cfg.use_tma, NUM_STAGES=cfg.num_stages,
                          PRE_ROUND=not runtime.current().compiled, num_warps=cfg.num_warps,
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
