"""Lab 4, a solution: the dK/dV kernel of FlashAttention-2's backward (Dao, 2023, Algorithm 2).

One program per (K/V tile, batch·head): K_j, V_j stay on chip while the Q tiles stream past;
P is recomputed from L = m + log ℓ (no softmax pass), and D_i = rowsum(dO_i ∘ O_i) is given.
dQ is another kernel (flashedu/ops/v2/kernel_bwd.py), not part of this lab.
"""
from __future__ import annotations

import triton
import triton.language as tl

from flashedu import runtime

LOG2E = 1.4426950408889634


# [v2_backward-solution-start]
@triton.jit
def dkdv_kernel(Q, K, V, DO, L, Dl, DK, DV, N, scale, CAUSAL: tl.constexpr,
                D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    j = tl.program_id(0)  # which K/V tile
    bh = tl.program_id(1)  # which (batch, head)
    base = bh.to(tl.int64) * N * D  # every [B, H, N, D] tensor is contiguous
    offs_n = j * BLOCK_N + tl.arange(0, BLOCK_N)  # this tile's keys
    offs_d = tl.arange(0, D)
    col_ok = offs_n < N
    kv = base + offs_n[:, None] * D + offs_d[None, :]
    k = tl.load(K + kv, mask=col_ok[:, None], other=0.0)  # [BLOCK_N, D]
    v = tl.load(V + kv, mask=col_ok[:, None], other=0.0)  # [BLOCK_N, D]
    dk = tl.zeros([BLOCK_N, D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, D], dtype=tl.float32)
    # Causal: queries before this tile's first key never see it.
    lo = (j * BLOCK_N // BLOCK_M) * BLOCK_M if CAUSAL else 0
    for start in range(lo, N, BLOCK_M):
        offs_m = start + tl.arange(0, BLOCK_M)
        row_ok = offs_m < N
        qo = base + offs_m[:, None] * D + offs_d[None, :]
        q = tl.load(Q + qo, mask=row_ok[:, None], other=0.0)  # [BLOCK_M, D]
        do = tl.load(DO + qo, mask=row_ok[:, None], other=0.0)  # [BLOCK_M, D]
        lse = tl.load(L + bh * N + offs_m, mask=row_ok, other=0.0)  # [BLOCK_M]
        delta = tl.load(Dl + bh * N + offs_m, mask=row_ok, other=0.0)  # [BLOCK_M]
        sT = tl.dot(k, tl.trans(q)) * scale  # Sᵀ [BLOCK_N, BLOCK_M]
        # P recomputed from L (natural log), in base 2: exp(x) = exp2(x · log2 e)
        pT = tl.math.exp2((sT - lse[None, :]) * 1.4426950408889634)
        if CAUSAL:
            pT = tl.where(offs_m[None, :] >= offs_n[:, None], pT, 0.0)
        pT = tl.where(row_ok[None, :], pT, 0.0)  # rows past N add nothing
        dv += tl.dot(pT.to(do.dtype), do)  # dV_j += P_ijᵀ dO_i
        dpT = tl.dot(v, tl.trans(do))  # dP_ijᵀ = V_j dO_iᵀ
        dsT = pT * (dpT - delta[None, :])  # dS = P ∘ (dP − D_i)
        dk += tl.dot(dsT.to(q.dtype), q)  # dK_j += dS_ijᵀ Q_i (× scale below)
    tl.store(DK + kv, (dk * scale).to(DK.dtype.element_ty), mask=col_ok[:, None])
    tl.store(DV + kv, dv.to(DV.dtype.element_ty), mask=col_ok[:, None])


def v2_backward_dkdv(q, k, v, do, L, Dl, dk, dv, *, causal, scale):
    B, H, N, D = q.shape
    block = 64 if runtime.current().compiled else 32
    grid = (triton.cdiv(N, block), B * H)
    dkdv_kernel[grid](q, k, v, do, L, Dl, dk, dv, N, scale, CAUSAL=causal, D=D,
                      BLOCK_M=block, BLOCK_N=block)
# [v2_backward-solution-end]
