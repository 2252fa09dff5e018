"""FlashAttention-2's own backward layout, as an ablation of ours: one kernel, dQ by atomic adds.

    kernel 1  _bwd_preprocess (kernel_bwd.py)   Δ = rowsum(dO ∘ O)
    kernel 2  _bwd_dkdv_dq      per K/V tile, loop over Q tiles: S, P, dV += Pᵀ dO, dP, dS,
                                dK += dSᵀ Q, and dQ_i += dS K added into an fp32 buffer in L2
    then      dQ = scale · buffer, cast to q's dtype

Five matmuls per (Q tile, K/V tile) pair instead of the two-kernel split's seven (S and dP are
not recomputed for dQ), paid for with a BLOCK_M × d fp32 read-modify-write per pair, a zeroed
buffer and a cast pass; dQ's sum order then depends on which program adds first, so it is not
bit-for-bit repeatable. kernel_bwd.py says why the split is the default; this file is what
``python -m flashedu.bench.ablate_v2_bwd`` times beside it (measured: no faster; appendix, case
study 1). Its two kernels copy kernel_bwd's ``_dkdv_inner`` and ``_bwd_dkdv`` line for line on
purpose, so that a diff of the files shows the idea and nothing else.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from flashedu.ops._triton import LOG2E
from flashedu.ops.v2.kernel_bwd import _bwd_preprocess, _load_rows_stats


@triton.jit
def _dkdv_dq_inner(dk, dv, k, v, Q, DO, L, Delta, DQ, stride_qm, stride_qd, stride_dm, stride_dd,
                   offs_n, offs_d, lo, hi, N_Q, qk_scale,
                   HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, MASK_CAUSAL: tl.constexpr,
                   MASK_ROWS: tl.constexpr, PRECISION: tl.constexpr):
    """kernel_bwd._dkdv_inner, plus each Q tile's share of dQ added into the fp32 buffer DQ."""
    for start_m in range(lo, hi, BLOCK_M):
        start_m = tl.multiple_of(start_m, BLOCK_M)
        offs_m = start_m + tl.arange(0, BLOCK_M)
        q_ptrs = Q + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd
        do_ptrs = DO + offs_m[:, None] * stride_dm + offs_d[None, :] * stride_dd
        dq_ptrs = DQ + offs_m[:, None] * HEAD_DIM + offs_d[None, :]
        if MASK_ROWS:
            q = tl.load(q_ptrs, mask=(offs_m < N_Q)[:, None], other=0.0)  # [BLOCK_M, D]
        else:
            q = tl.load(q_ptrs)
        lse, delta = _load_rows_stats(L, Delta, offs_m, N_Q, MASK_ROWS)
        sT = tl.dot(k, tl.trans(q), input_precision=PRECISION)  # Sᵀ [BLOCK_N, BLOCK_M]
        pT = tl.math.exp2(sT * qk_scale - lse[None, :])
        if MASK_CAUSAL:
            pT = tl.where(offs_m[None, :] >= offs_n[:, None], pT, 0.0)
        if MASK_ROWS:
            do = tl.load(do_ptrs, mask=(offs_m < N_Q)[:, None], other=0.0)  # [BLOCK_M, D]
        else:
            do = tl.load(do_ptrs)
        dv = tl.dot(pT.to(do.dtype), do, dv, input_precision=PRECISION)  # [BLOCK_N, D]
        dpT = tl.dot(v, tl.trans(do), input_precision=PRECISION)  # [BLOCK_N, BLOCK_M]
        dsT = (pT * (dpT - delta[None, :])).to(q.dtype)
        dk = tl.dot(dsT, q, dk, input_precision=PRECISION)  # [BLOCK_N, D]
        dq = tl.dot(tl.trans(dsT), k, input_precision=PRECISION)  # [BLOCK_M, D], this tile's share
        if MASK_ROWS:
            tl.atomic_add(dq_ptrs, dq, mask=(offs_m < N_Q)[:, None], sem="relaxed")
        else:
            tl.atomic_add(dq_ptrs, dq, sem="relaxed")
    return dk, dv


@triton.jit
def _bwd_dkdv_dq(Q, K, V, DO, L, Delta, DK, DV, DQ,
                 stride_qz, stride_qh, stride_qm, stride_qd,
                 stride_kz, stride_kh, stride_kn, stride_kd,
                 stride_vz, stride_vh, stride_vn, stride_vd,
                 stride_dz, stride_dh, stride_dm, stride_dd,
                 H, N_Q, N_K, scale, qk_scale,
                 CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
    """One program per (K/V tile, batch·head), as kernel_bwd._bwd_dkdv; DQ is fp32
    [B·H, N_Q, D], zeroed, unscaled."""
    tl.static_assert(BLOCK_N % BLOCK_M == 0)
    pid_n = tl.program_id(0)
    bh = tl.program_id(1)
    z, h = (bh // H).to(tl.int64), (bh % H).to(tl.int64)
    start_n = pid_n * BLOCK_N
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    col_ok = (offs_n < N_K)[:, None]
    k = tl.load(K + z * stride_kz + h * stride_kh + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd,
                mask=col_ok, other=0.0)  # [BLOCK_N, D]
    v = tl.load(V + z * stride_vz + h * stride_vh + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                mask=col_ok, other=0.0)  # [BLOCK_N, D]
    Q += z * stride_qz + h * stride_qh
    DO += z * stride_dz + h * stride_dh
    L += bh.to(tl.int64) * N_Q
    Delta += bh.to(tl.int64) * N_Q
    DQ += bh.to(tl.int64) * N_Q * HEAD_DIM
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)

    full_end = (N_Q // BLOCK_M) * BLOCK_M
    if CAUSAL:
        dk, dv = _dkdv_dq_inner(dk, dv, k, v, Q, DO, L, Delta, DQ, stride_qm, stride_qd, stride_dm,
                                stride_dd, offs_n, offs_d, start_n, tl.minimum(start_n + BLOCK_N, N_Q),
                                N_Q, qk_scale, HEAD_DIM, BLOCK_M, True, True, PRECISION)
        lo = start_n + BLOCK_N
    else:
        lo = 0
    mid = tl.maximum(lo, full_end)
    dk, dv = _dkdv_dq_inner(dk, dv, k, v, Q, DO, L, Delta, DQ, stride_qm, stride_qd, stride_dm, stride_dd,
                            offs_n, offs_d, lo, full_end, N_Q, qk_scale, HEAD_DIM, BLOCK_M, False, False,
                            PRECISION)
    dk, dv = _dkdv_dq_inner(dk, dv, k, v, Q, DO, L, Delta, DQ, stride_qm, stride_qd, stride_dm, stride_dd,
                            offs_n, offs_d, mid, N_Q, N_Q, qk_scale, HEAD_DIM, BLOCK_M, False, True,
                            PRECISION)

    out = bh.to(tl.int64) * N_K * HEAD_DIM + offs_n[:, None] * HEAD_DIM + offs_d[None, :]
    tl.store(DV + out, dv.to(DV.dtype.element_ty), mask=col_ok)
    tl.store(DK + out, (dk * scale).to(DK.dtype.element_ty), mask=col_ok)


def atomic_buffers(do, q, k, o):
    """What a backward with dQ by atomics needs before its kernel: Δ = rowsum(dO ∘ O)
    [B, H, N_Q] (fp32, by v2's preprocess kernel), dQ's fp32 accumulator of zeros
    [B, H, N_Q, D], and dK, dV [B, H, N_K, D] in q's dtype."""
    B, H, N_Q, D = q.shape
    delta = torch.empty(B, H, N_Q, device=q.device, dtype=torch.float32)  # [B, H, N_Q]
    _bwd_preprocess[(triton.cdiv(N_Q, 64), B * H)](o, do, delta, *o.stride(), *do.stride(), H, N_Q,
                                                   BLOCK_M=64, HEAD_DIM=D, num_warps=4)
    dq_acc = torch.zeros(B, H, N_Q, D, device=q.device, dtype=torch.float32)  # [B, H, N_Q, D]
    dk = torch.empty(B, H, k.shape[2], D, device=q.device, dtype=q.dtype)
    return delta, dq_acc, dk, torch.empty_like(dk)


def attention_backward_atomic(do, q, k, v, o, lse, *, causal: bool, scale: float,
                              config: tuple[int, int, int, int] = (64, 128, 8, 3)):
    """dq, dk, dv as :func:`~flashedu.ops.v2.kernel_bwd.attention_backward` returns them, by one
    kernel with dQ added atomically. ``config``: (BLOCK_M, BLOCK_N, warps, stages)."""
    B, H, N_Q, D = q.shape
    N_K = k.shape[2]
    if do.stride(-1) != 1:
        do = do.contiguous()
    bm, bn, warps, stages = config
    delta, dq_acc, dk, dv = atomic_buffers(do, q, k, o)
    _bwd_dkdv_dq[(triton.cdiv(N_K, bn), B * H)](
        q, k, v, do, lse, delta, dk, dv, dq_acc, *q.stride(), *k.stride(), *v.stride(), *do.stride(),
        H, N_Q, N_K, scale, scale * LOG2E, CAUSAL=causal, HEAD_DIM=D, BLOCK_M=bm, BLOCK_N=bn,
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32", num_warps=warps, num_stages=stages)
    return (dq_acc * scale).to(q.dtype), dk, dv


__all__ = ["atomic_buffers", "attention_backward_atomic"]
