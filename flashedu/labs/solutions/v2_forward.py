"""Lab 3, a solution: FlashAttention-2's forward (Dao, 2023, Algorithm 1) as a Triton kernel.

One program per (Q tile, batch·head); Q_i stays on chip while K/V tiles stream past; the
running (m, ℓ, acc) live in registers and O is divided by ℓ once, after the loop. Simpler than
the book's own kernel (flashedu/ops/v2/kernel.py): one loop, always masked, contiguous inputs.
"""
from __future__ import annotations

import triton
import triton.language as tl

from flashedu import runtime

LOG2E = 1.4426950408889634  # exp(x) = exp2(x · log2 e)


# [v2_forward-solution-start]
@triton.jit
def v2_forward_kernel(Q, K, V, O, L, N, qk_scale, CAUSAL: tl.constexpr, D: tl.constexpr,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    i = tl.program_id(0)  # which Q tile
    bh = tl.program_id(1)  # which (batch, head)
    base = bh.to(tl.int64) * N * D  # q, k, v, o are contiguous [B, H, N, D]
    offs_m = i * BLOCK_M + tl.arange(0, BLOCK_M)  # this tile's query rows
    offs_d = tl.arange(0, D)
    row_ok = offs_m < N  # the last tile may be short
    q = tl.load(Q + base + offs_m[:, None] * D + offs_d[None, :],
                mask=row_ok[:, None], other=0.0)  # [BLOCK_M, D], loaded once
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # in log2 units
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, D], dtype=tl.float32)  # unnormalised O_i
    # Causal: keys after this tile's last query are never needed.
    hi = tl.minimum(N, (i + 1) * BLOCK_M) if CAUSAL else N
    for start in range(0, hi, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        col_ok = offs_n < N
        k = tl.load(K + base + offs_n[:, None] * D + offs_d[None, :],
                    mask=col_ok[:, None], other=0.0)  # [BLOCK_N, D]
        v = tl.load(V + base + offs_n[:, None] * D + offs_d[None, :],
                    mask=col_ok[:, None], other=0.0)  # [BLOCK_N, D]
        s = tl.dot(q, tl.trans(k)) * qk_scale  # [BLOCK_M, BLOCK_N], log2 units
        keep = col_ok[None, :]
        if CAUSAL:
            keep = keep & (offs_n[None, :] <= offs_m[:, None])
        s = tl.where(keep, s, float("-inf"))
        # Key 0 is visible to every row, so m_new is finite from the first tile on.
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.math.exp2(m_i - m_new)  # rescales what was summed under the old max
        p = tl.math.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    o = acc / l_i[:, None]  # the one divide
    tl.store(O + base + offs_m[:, None] * D + offs_d[None, :], o.to(O.dtype.element_ty),
             mask=row_ok[:, None])
    # L = m + log ℓ in natural log, for the backward: (m₂ + log2 ℓ) · ln 2
    tl.store(L + bh.to(tl.int64) * N + offs_m,
             (m_i + tl.math.log2(l_i)) * 0.6931471805599453, mask=row_ok)


def v2_forward(q, k, v, o, L, *, causal, scale):
    B, H, N, D = q.shape
    block = 64 if runtime.current().compiled else 32  # the interpreter: fewer, smaller steps
    grid = (triton.cdiv(N, block), B * H)
    v2_forward_kernel[grid](q, k, v, o, L, N, scale * LOG2E, CAUSAL=causal, D=D,
                            BLOCK_M=block, BLOCK_N=block)
# [v2_forward-solution-end]
