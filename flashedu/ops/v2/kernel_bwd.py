"""FlashAttention-2 backward in Triton (Dao, 2023, Algorithm 2), three kernels.

    kernel 1  _bwd_preprocess   Δ = rowsum(dO ∘ O)                   reads O, dO      writes Δ [N]
    kernel 2  _bwd_dkdv         per K/V tile, loop over Q tiles:     reads Q, dO, L, Δ  writes dK, dV
              S = Q Kᵀ, P = exp(scale·S − L), dV += Pᵀ dO, dP = dO Vᵀ, dS = P ∘ (dP − Δ), dK += dSᵀ Q
    kernel 3  _bwd_dq           per Q tile, loop over K/V tiles:     reads K, V         writes dQ
              the same S, P, dP, dS recomputed, dQ += dS K

Why a separate dQ kernel rather than FA2's atomic adds: with atomics each (Q tile, K tile) pair
adds a Br×d fp32 block into a dQ accumulator in L2 (at N = 16k, d = 128 that is ~1 TB/s of
read-modify-write at the target speed, contended across the K/V programs of one head), needs an
fp32 dQ buffer and a cast pass afterwards, and makes dQ non-deterministic. The separate kernel
recomputes S and dP (7 matmuls instead of 5) but every program owns its output tile, so neither
kernel needs atomics or zero-initialised buffers.

All exponentials are base 2: the forward stores L in natural log (what the book derives), and the
kernels turn it into log2 units once per tile, so P = exp2(S·scale·log2 e − L·log2 e) is one FMA
and one MUFU op per element.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from flashedu import runtime
from flashedu.ops import _bound
from flashedu.ops._triton import LOG2E, launch, should_tune

# Kernels 2 and 3 in one launch (as the block-sparse backward), each with the config it was
# picked alone, once a call shape has run both alone: an ablation, measured by
# flashedu/bench/ablate_v2_bwd.py. Off: on the H200 it ran -7.5 … +2.7% against two launches
# (d128 N 4k lost most; docs/notes/v2-tuning.md, session 18). The block-sparse backward, whose
# dK/dV programs skip empty tiles and end unevenly, gains from it; this one does not.
ONE_LAUNCH = False
_PAIRS: dict = {}  # binding key -> (kernel 2's config, kernel 3's config)


@triton.jit
def _bwd_preprocess(O, DO, Delta, stride_oz, stride_oh, stride_om, stride_od,
                    stride_dz, stride_dh, stride_dm, stride_dd, H, N_Q,
                    BLOCK_M: tl.constexpr, HEAD_DIM: tl.constexpr):
    """Δ_i = Σ_d dO_id · O_id for one block of rows (fp32)."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    z, h = bh // H, bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    ok = offs_m < N_Q
    o_ptrs = O + z.to(tl.int64) * stride_oz + h.to(tl.int64) * stride_oh \
        + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od
    do_ptrs = DO + z.to(tl.int64) * stride_dz + h.to(tl.int64) * stride_dh \
        + offs_m[:, None] * stride_dm + offs_d[None, :] * stride_dd
    o = tl.load(o_ptrs, mask=ok[:, None], other=0.0).to(tl.float32)  # [BLOCK_M, D]
    do = tl.load(do_ptrs, mask=ok[:, None], other=0.0).to(tl.float32)  # [BLOCK_M, D]
    tl.store(Delta + bh.to(tl.int64) * N_Q + offs_m, tl.sum(o * do, axis=1), mask=ok)


@triton.jit
def _load_rows_stats(L, Delta, offs_m, N_Q, MASK_ROWS: tl.constexpr):
    """L in log2 units and Δ for a block of rows. Rows past N_Q get L = +inf so P = 0 there, and
    a fully masked row (L = -inf, unreachable with today's masks) also gets P = 0 instead of inf."""
    if MASK_ROWS:
        lse = tl.load(L + offs_m, mask=offs_m < N_Q, other=float("inf"))
        delta = tl.load(Delta + offs_m, mask=offs_m < N_Q, other=0.0)
    else:
        lse = tl.load(L + offs_m)
        delta = tl.load(Delta + offs_m)
    lse = tl.where(lse == float("-inf"), float("inf"), lse) * 1.4426950408889634
    return lse, delta


@triton.jit
def _dkdv_inner(dk, dv, k, v, Q, DO, L, Delta, stride_qm, stride_qd, stride_dm, stride_dd,
                offs_n, offs_d, lo, hi, N_Q, qk_scale,
                BLOCK_M: tl.constexpr, MASK_CAUSAL: tl.constexpr, MASK_ROWS: tl.constexpr,
                PRECISION: tl.constexpr):
    """Accumulate one K/V tile's dK, dV over the Q tiles starting at rows lo..hi (step BLOCK_M).

    Works on transposed scores Sᵀ [BLOCK_N, BLOCK_M] so that dV += Pᵀ dO and dK += dSᵀ Q are plain
    dots with K/V rows on the M side of the MMA."""
    # [v2-bwd-dkdv-start]
    for start_m in range(lo, hi, BLOCK_M):
        start_m = tl.multiple_of(start_m, BLOCK_M)
        offs_m = start_m + tl.arange(0, BLOCK_M)
        q_ptrs = Q + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd
        do_ptrs = DO + offs_m[:, None] * stride_dm + offs_d[None, :] * stride_dd
        if MASK_ROWS:
            q = tl.load(q_ptrs, mask=(offs_m < N_Q)[:, None], other=0.0)  # [BLOCK_M, D]
        else:
            q = tl.load(q_ptrs)
        lse, delta = _load_rows_stats(L, Delta, offs_m, N_Q, MASK_ROWS)
        sT = tl.dot(k, tl.trans(q), input_precision=PRECISION)  # Sᵀ [BLOCK_N, BLOCK_M]
        pT = tl.math.exp2(sT * qk_scale - lse[None, :])  # Pᵀ recomputed from L
        if MASK_CAUSAL:
            pT = tl.where(offs_m[None, :] >= offs_n[:, None], pT, 0.0)
        if MASK_ROWS:
            do = tl.load(do_ptrs, mask=(offs_m < N_Q)[:, None], other=0.0)  # [BLOCK_M, D]
        else:
            do = tl.load(do_ptrs)
        dv = tl.dot(pT.to(do.dtype), do, dv, input_precision=PRECISION)  # [BLOCK_N, D]
        dpT = tl.dot(v, tl.trans(do), input_precision=PRECISION)  # [BLOCK_N, BLOCK_M]
        dsT = pT * (dpT - delta[None, :])
        dk = tl.dot(dsT.to(q.dtype), q, dk, input_precision=PRECISION)  # [BLOCK_N, D]
    # [v2-bwd-dkdv-end]
    return dk, dv


@triton.jit
def _dkdv_program(pid_n, Q, K, V, DO, L, Delta, DK, DV,
                  stride_qz, stride_qh, stride_qm, stride_qd,
                  stride_kz, stride_kh, stride_kn, stride_kd,
                  stride_vz, stride_vh, stride_vn, stride_vd,
                  stride_dz, stride_dh, stride_dm, stride_dd,
                  H, N_Q, N_K, scale, qk_scale,
                  CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
    """K/V tile pid_n of batch·head program_id(1): K_j, V_j stay on chip while Q tiles stream by."""
    tl.static_assert(BLOCK_N % BLOCK_M == 0)
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
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)

    # Rows past full Q tiles need masked loads; everything before them runs mask-free.
    full_end = (N_Q // BLOCK_M) * BLOCK_M
    if CAUSAL:
        # Q rows < start_n never see this tile: skipped. The diagonal band is masked.
        dk, dv = _dkdv_inner(dk, dv, k, v, Q, DO, L, Delta, stride_qm, stride_qd, stride_dm, stride_dd,
                             offs_n, offs_d, start_n, tl.minimum(start_n + BLOCK_N, N_Q), N_Q, qk_scale,
                             BLOCK_M, True, True, PRECISION)
        lo = start_n + BLOCK_N
    else:
        lo = 0
    mid = tl.maximum(lo, full_end)
    dk, dv = _dkdv_inner(dk, dv, k, v, Q, DO, L, Delta, stride_qm, stride_qd, stride_dm, stride_dd,
                         offs_n, offs_d, lo, full_end, N_Q, qk_scale, BLOCK_M, False, False, PRECISION)
    dk, dv = _dkdv_inner(dk, dv, k, v, Q, DO, L, Delta, stride_qm, stride_qd, stride_dm, stride_dd,
                         offs_n, offs_d, mid, N_Q, N_Q, qk_scale, BLOCK_M, False, True, PRECISION)

    # dK and dV are written [B, H, N_K, D] contiguous (allocated here, not the caller's layout).
    out = bh.to(tl.int64) * N_K * HEAD_DIM + offs_n[:, None] * HEAD_DIM + offs_d[None, :]
    tl.store(DV + out, dv.to(DV.dtype.element_ty), mask=col_ok)
    tl.store(DK + out, (dk * scale).to(DK.dtype.element_ty), mask=col_ok)


@triton.jit
def _dq_inner(dq, q, do, lse, delta, K, V, stride_kn, stride_kd, stride_vn, stride_vd,
              offs_m, offs_d, lo, hi, N_K, qk_scale,
              BLOCK_N: tl.constexpr, MASK_CAUSAL: tl.constexpr, MASK_COLS: tl.constexpr,
              PRECISION: tl.constexpr):
    """Accumulate one Q tile's dQ over the K/V tiles starting at columns lo..hi (step BLOCK_N).

    Columns past N_K load K = V = 0, so their (non-zero) P multiplies a zero row of K: no mask on
    the scores is needed there, only on the loads."""
    # [v2-bwd-dq-start]
    for start_n in range(lo, hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k_ptrs = K + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd
        v_ptrs = V + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd
        if MASK_COLS:
            k = tl.load(k_ptrs, mask=(offs_n < N_K)[:, None], other=0.0)  # [BLOCK_N, D]
            v = tl.load(v_ptrs, mask=(offs_n < N_K)[:, None], other=0.0)  # [BLOCK_N, D]
        else:
            k = tl.load(k_ptrs)
            v = tl.load(v_ptrs)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION)  # [BLOCK_M, BLOCK_N]
        p = tl.math.exp2(s * qk_scale - lse[:, None])
        if MASK_CAUSAL:
            p = tl.where(offs_m[:, None] >= offs_n[None, :], p, 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)  # [BLOCK_M, BLOCK_N]
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=PRECISION)  # [BLOCK_M, D]
    # [v2-bwd-dq-end]
    return dq


@triton.jit
def _dq_program(pid, Q, K, V, DO, L, Delta, DQ,
                stride_qz, stride_qh, stride_qm, stride_qd,
                stride_kz, stride_kh, stride_kn, stride_kd,
                stride_vz, stride_vh, stride_vn, stride_vd,
                stride_dz, stride_dh, stride_dm, stride_dd,
                H, N_Q, N_K, scale, qk_scale,
                CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
    """Q tile pid (counted from the last, causal) of batch·head program_id(1): Q_i, dO_i, L_i,
    Δ_i stay on chip while K/V tiles stream by."""
    tl.static_assert(BLOCK_M % BLOCK_N == 0)
    n_m = tl.cdiv(N_Q, BLOCK_M)
    # Causal: the longest rows first, so the last wave is made of short programs.
    pid_m = n_m - 1 - pid if CAUSAL else pid
    bh = tl.program_id(1)
    z, h = (bh // H).to(tl.int64), (bh % H).to(tl.int64)
    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = (offs_m < N_Q)[:, None]
    q = tl.load(Q + z * stride_qz + h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
                mask=row_ok, other=0.0)  # [BLOCK_M, D]
    do = tl.load(DO + z * stride_dz + h * stride_dh + offs_m[:, None] * stride_dm + offs_d[None, :] * stride_dd,
                 mask=row_ok, other=0.0)  # [BLOCK_M, D]
    lse, delta = _load_rows_stats(L + bh.to(tl.int64) * N_Q, Delta + bh.to(tl.int64) * N_Q,
                                  offs_m, N_Q, True)
    K += z * stride_kz + h * stride_kh
    V += z * stride_vz + h * stride_vh
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    if CAUSAL:
        # Off-diagonal tiles mask-free, then the diagonal band with the causal mask.
        dq = _dq_inner(dq, q, do, lse, delta, K, V, stride_kn, stride_kd, stride_vn, stride_vd,
                       offs_m, offs_d, 0, start_m, N_K, qk_scale, BLOCK_N, False, False, PRECISION)
        dq = _dq_inner(dq, q, do, lse, delta, K, V, stride_kn, stride_kd, stride_vn, stride_vd,
                       offs_m, offs_d, start_m, tl.minimum(start_m + BLOCK_M, N_K), N_K, qk_scale,
                       BLOCK_N, True, True, PRECISION)
    else:
        full_end = (N_K // BLOCK_N) * BLOCK_N
        dq = _dq_inner(dq, q, do, lse, delta, K, V, stride_kn, stride_kd, stride_vn, stride_vd,
                       offs_m, offs_d, 0, full_end, N_K, qk_scale, BLOCK_N, False, False, PRECISION)
        dq = _dq_inner(dq, q, do, lse, delta, K, V, stride_kn, stride_kd, stride_vn, stride_vd,
                       offs_m, offs_d, full_end, N_K, N_K, qk_scale, BLOCK_N, False, True, PRECISION)

    out = bh.to(tl.int64) * N_Q * HEAD_DIM + offs_m[:, None] * HEAD_DIM + offs_d[None, :]
    tl.store(DQ + out, (dq * scale).to(DQ.dtype.element_ty), mask=row_ok)


@triton.jit
def _bwd_dkdv(Q, K, V, DO, L, Delta, DK, DV,
              stride_qz, stride_qh, stride_qm, stride_qd,
              stride_kz, stride_kh, stride_kn, stride_kd,
              stride_vz, stride_vh, stride_vn, stride_vd,
              stride_dz, stride_dh, stride_dm, stride_dd,
              H, N_Q, N_K, scale, qk_scale,
              CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
    """Kernel 2: one program per (K/V tile, batch·head)."""
    _dkdv_program(tl.program_id(0), Q, K, V, DO, L, Delta, DK, DV,
                  stride_qz, stride_qh, stride_qm, stride_qd,
                  stride_kz, stride_kh, stride_kn, stride_kd,
                  stride_vz, stride_vh, stride_vn, stride_vd,
                  stride_dz, stride_dh, stride_dm, stride_dd,
                  H, N_Q, N_K, scale, qk_scale, CAUSAL, HEAD_DIM, BLOCK_M, BLOCK_N, PRECISION)


@triton.jit
def _bwd_dq(Q, K, V, DO, L, Delta, DQ,
            stride_qz, stride_qh, stride_qm, stride_qd,
            stride_kz, stride_kh, stride_kn, stride_kd,
            stride_vz, stride_vh, stride_vn, stride_vd,
            stride_dz, stride_dh, stride_dm, stride_dd,
            H, N_Q, N_K, scale, qk_scale,
            CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr,
            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
    """Kernel 3: one program per (Q tile, batch·head)."""
    _dq_program(tl.program_id(0), Q, K, V, DO, L, Delta, DQ,
                stride_qz, stride_qh, stride_qm, stride_qd,
                stride_kz, stride_kh, stride_kn, stride_kd,
                stride_vz, stride_vh, stride_vn, stride_vd,
                stride_dz, stride_dh, stride_dm, stride_dd,
                H, N_Q, N_K, scale, qk_scale, CAUSAL, HEAD_DIM, BLOCK_M, BLOCK_N, PRECISION)


@triton.jit
def _bwd_both(Q, K, V, DO, L, Delta, DK, DV, DQ,
              stride_qz, stride_qh, stride_qm, stride_qd,
              stride_kz, stride_kh, stride_kn, stride_kd,
              stride_vz, stride_vh, stride_vn, stride_vd,
              stride_dz, stride_dh, stride_dm, stride_dd,
              H, N_Q, N_K, scale, qk_scale,
              CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr,
              BLOCK_M1: tl.constexpr, BLOCK_N1: tl.constexpr,
              BLOCK_M2: tl.constexpr, BLOCK_N2: tl.constexpr, PRECISION: tl.constexpr):
    """Kernels 2 and 3 in one grid (``ONE_LAUNCH``), dK/dV programs first: the last wave of
    dK/dV programs shares the GPU with dQ programs instead of ending a launch alone."""
    pid = tl.program_id(0)
    n_kv = tl.cdiv(N_K, BLOCK_N1)
    if pid < n_kv:
        _dkdv_program(pid, Q, K, V, DO, L, Delta, DK, DV,
                      stride_qz, stride_qh, stride_qm, stride_qd,
                      stride_kz, stride_kh, stride_kn, stride_kd,
                      stride_vz, stride_vh, stride_vn, stride_vd,
                      stride_dz, stride_dh, stride_dm, stride_dd,
                      H, N_Q, N_K, scale, qk_scale, CAUSAL, HEAD_DIM, BLOCK_M1, BLOCK_N1, PRECISION)
    else:
        _dq_program(pid - n_kv, Q, K, V, DO, L, Delta, DQ,
                    stride_qz, stride_qh, stride_qm, stride_qd,
                    stride_kz, stride_kh, stride_kn, stride_kd,
                    stride_vz, stride_vh, stride_vn, stride_vd,
                    stride_dz, stride_dh, stride_dm, stride_dd,
                    H, N_Q, N_K, scale, qk_scale, CAUSAL, HEAD_DIM, BLOCK_M2, BLOCK_N2, PRECISION)


# (BLOCK_M, BLOCK_N, num_warps, num_stages). dK/dV: a small Q tile streams past a large resident
# K/V tile; dQ: the mirror image. Large problems autotune over this arch's list; small ones take
# the first entry that fits. The last entries exist for D = 256, where (64, 64, 8, 2) for dK/dV
# and (128, 32, 8, 3) for dQ were the fastest on an H200 (flashedu/bench/tune_v2_bwd.py; v2-tuning.md),
# though they spill a few hundred bytes a thread. sm_75 compiles tl.dot to FMA loops (no MMA;
# checked with triton 3.9's compiler), which is why the kernels ask for sm_80.
DKDV_CONFIGS = {
    "sm90": [(64, 128, 8, 3), (32, 128, 8, 4), (64, 128, 8, 4), (32, 128, 8, 3), (64, 64, 4, 3),
             (64, 64, 8, 2), (32, 32, 4, 2), (16, 32, 8, 2)],
    "sm80": [(32, 128, 8, 3), (64, 64, 4, 3), (32, 64, 4, 3), (16, 32, 8, 2)],
    "sm86": [(32, 64, 4, 3), (64, 64, 4, 2), (32, 128, 8, 2), (16, 32, 8, 1)],
    "interpreter": [(32, 32, 4, 1)],
}
DQ_CONFIGS = {
    "sm90": [(128, 64, 8, 3), (128, 32, 8, 4), (128, 64, 8, 4), (64, 64, 4, 3), (128, 32, 8, 3),
             (64, 32, 4, 4), (64, 16, 8, 2)],
    "sm80": [(128, 32, 8, 3), (64, 64, 4, 3), (64, 32, 4, 3), (64, 16, 8, 2)],
    "sm86": [(64, 32, 4, 3), (64, 64, 4, 2), (128, 32, 8, 2), (64, 16, 8, 1)],
    "interpreter": [(32, 32, 4, 1)],
}


def attention_backward(do, q, k, v, o, lse, *, causal: bool, scale: float,
                       dkdv_config: triton.Config | None = None,
                       dq_config: triton.Config | None = None):
    """dq, dk, dv for o = softmax(scale·q kᵀ) v given dO and L = m + log ℓ ``[B, H, N_Q]`` (fp32).

    q, k, v, o, do: ``[B, H, N, D]`` with unit stride in D. Returns contiguous gradients."""
    B, H, N_Q, D = q.shape
    if do.stride(-1) != 1:
        do = do.contiguous()
    delta = torch.empty(B, H, N_Q, device=q.device, dtype=torch.float32)  # [B, H, N_Q]
    pre_block = 64 if runtime.current().compiled else 32
    _bound.run(_bwd_preprocess, (o.shape, o.stride(), do.stride(), o.dtype, o.device.index,
                                 _bound.aligned(o, do)),
               (triton.cdiv(N_Q, pre_block), B * H), (o, do, delta, *o.stride(), *do.stride(), H, N_Q),
               dict(BLOCK_M=pre_block, HEAD_DIM=D), num_warps=4, num_stages=3)
    args, consts, common = _launch_args(do, q, k, v, causal=causal, scale=scale)
    key = common["bind_key"]
    pair = _PAIRS.get(key) if ONE_LAUNCH and dkdv_config is None and dq_config is None else None
    if pair is not None:  # kernels 2 and 3 in one launch, with the configs each picked alone
        kv, qc = pair
        dk = torch.empty(B, H, k.shape[2], D, device=q.device, dtype=q.dtype)
        dv, dq = torch.empty_like(dk), torch.empty_like(q, memory_format=torch.contiguous_format)
        grid = (triton.cdiv(k.shape[2], kv.kwargs["BLOCK_N"])
                + triton.cdiv(N_Q, qc.kwargs["BLOCK_M"]), B * H)
        _bound.run(_bwd_both, key, grid, (q, k, v, do, lse, delta, dk, dv, dq, *args),
                   dict(consts, BLOCK_M1=kv.kwargs["BLOCK_M"], BLOCK_N1=kv.kwargs["BLOCK_N"],
                        BLOCK_M2=qc.kwargs["BLOCK_M"], BLOCK_N2=qc.kwargs["BLOCK_N"]),
                   num_warps=kv.num_warps, num_stages=kv.num_stages)
        return dq, dk, dv
    dk, dv, kv = _dkdv(do, q, k, v, lse, delta, args, consts, common, config=dkdv_config)
    dq = torch.empty_like(q, memory_format=torch.contiguous_format)
    qc = launch(_bwd_dq, lambda meta: (triton.cdiv(N_Q, meta["BLOCK_M"]), B * H),
                (q, k, v, do, lse, delta, dq, *args), consts,
                table=DQ_CONFIGS, resident=0, config=dq_config, **common)
    # One launch takes one warp count and pipeline depth: both picks must share them.
    if ONE_LAUNCH and dkdv_config is None and dq_config is None and kv is not None and qc is not None \
            and (kv.num_warps, kv.num_stages) == (qc.num_warps, qc.num_stages):
        _PAIRS[key] = (kv, qc)
    return dq, dk, dv


def _launch_args(do, q, k, v, *, causal: bool, scale: float):
    B, H, N_Q, D = q.shape
    N_K = k.shape[2]
    args = (*q.stride(), *k.stride(), *v.stride(), *do.stride(), H, N_Q, N_K, scale, scale * LOG2E)
    consts = dict(CAUSAL=causal, HEAD_DIM=D, PRECISION="ieee" if q.dtype == torch.float32 else "tf32")
    common = dict(head_dim=D, elem_bytes=q.element_size(), tune=should_tune(B, H, N_Q, N_K),
                  name="v2_triton backward",
                  bind_key=(q.shape, N_K, q.stride(), k.stride(), v.stride(), do.stride(),
                            q.dtype, causal, q.device.index, _bound.aligned(q, k, v, do)))
    return args, consts, common


def attention_dkdv(do, q, k, v, lse, delta, *, causal: bool, scale: float,
                   config: triton.Config | None = None):
    """dk, dv alone (kernel 2), given L and D = rowsum(dO ∘ O) ``[B, H, N_Q]`` in fp32: what lab 4
    asks the reader to write, timed beside it."""
    args, consts, common = _launch_args(do, q, k, v, causal=causal, scale=scale)
    dk, dv, _ = _dkdv(do, q, k, v, lse, delta, args, consts, common, config=config)
    return dk, dv


def _dkdv(do, q, k, v, lse, delta, args, consts, common, *, config):
    """Kernel 2's launch: dk, dv and the config that ran."""
    B, H = q.shape[:2]
    N_K = k.shape[2]
    dk = torch.empty(B, H, N_K, q.shape[3], device=q.device, dtype=q.dtype)
    dv = torch.empty_like(dk)
    ran = launch(_bwd_dkdv, lambda meta: (triton.cdiv(N_K, meta["BLOCK_N"]), B * H),
                 (q, k, v, do, lse, delta, dk, dv, *args), consts,
                 table=DKDV_CONFIGS, resident=1, acc_tiles=2, config=config, **common)
    return dk, dv, ran
