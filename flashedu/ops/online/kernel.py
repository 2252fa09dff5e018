"""Attention in one pass over the keys, in Triton (chapter 2).

The kernel beside :mod:`.reference`: each program takes BLOCK_M query rows, keeps their state
(m, ℓ, o) in registers while the keys and values stream past BLOCK_N at a time, and writes o / ℓ
once at the end. No ``tl.dot`` yet: a block of rows times a block of keys is spelled out as a
broadcast multiply and a sum over the head dim, so every line is arithmetic a reader can check by
hand. Chapter 3 hands those two products to ``tl.dot`` (the tensor cores) and grows the tiles
until one load of a K/V tile serves many rows; here BLOCK_M is a handful of rows, so each program
re-reads all of K and V for very little work.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from flashedu import runtime
from flashedu.validate import check_qkv

DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@triton.jit
def _online_attention_kernel(Q, K, V, O, N, N_K, D, scale,
                             stride_qz, stride_qn, stride_kz, stride_kn,
                             stride_vz, stride_vn, stride_oz, stride_on,
                             CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                             BLOCK_D: tl.constexpr):
    # [online-kernel-start]
    z = tl.program_id(1).to(tl.int64)                    # which (batch, head)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M] query rows
    cols = tl.arange(0, BLOCK_D)                         # [BLOCK_D] head dim, padded to 2^k
    row_ok, col_ok = rows < N, cols < D
    q = tl.load(Q + z * stride_qz + rows[:, None] * stride_qn + cols[None, :],
                mask=row_ok[:, None] & col_ok[None, :], other=0.0).to(tl.float32)

    m = tl.full((BLOCK_M,), float("-inf"), tl.float32)  # running max of each row's scores
    l = tl.zeros((BLOCK_M,), tl.float32)                 # running sum of exp(score - m)
    o = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)         # running sum of exp(score - m) * v
    # Causal: the last row here sees keys 0..its index, so no later key block is visited.
    hi = tl.minimum(N_K, (tl.program_id(0) + 1) * BLOCK_M) if CAUSAL else N_K
    for start in range(0, hi, BLOCK_N):
        keys = start + tl.arange(0, BLOCK_N)             # [BLOCK_N]
        kv_mask = (keys < N_K)[:, None] & col_ok[None, :]
        k = tl.load(K + z * stride_kz + keys[:, None] * stride_kn + cols[None, :],
                    mask=kv_mask, other=0.0).to(tl.float32)  # [BLOCK_N, BLOCK_D]
        v = tl.load(V + z * stride_vz + keys[:, None] * stride_vn + cols[None, :],
                    mask=kv_mask, other=0.0).to(tl.float32)  # [BLOCK_N, BLOCK_D]
        # s[i, j] = q_i · k_j: multiply [BLOCK_M, 1, D] by [1, BLOCK_N, D], sum over D.
        s = tl.sum(q[:, None, :] * k[None, :, :], axis=2) * scale  # [BLOCK_M, BLOCK_N]
        keep = (keys < N_K)[None, :]
        if CAUSAL:
            keep = keep & (keys[None, :] <= rows[:, None])
        s = tl.where(keep, s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=1))  # finite: key 0 is in the first block
        alpha = tl.exp(m - m_new)                 # shrinks the old sums if the max grew
        p = tl.exp(s - m_new[:, None])            # [BLOCK_M, BLOCK_N]; masked: 0
        l = l * alpha + tl.sum(p, axis=1)
        # o_i += sum_j p[i, j] v_j: [BLOCK_M, BLOCK_N, 1] times [1, BLOCK_N, D], sum over j.
        o = o * alpha[:, None] + tl.sum(p[:, :, None] * v[None, :, :], axis=1)
        m = m_new
    o = o / l[:, None]                            # one division, after the last block
    tl.store(O + z * stride_oz + rows[:, None] * stride_on + cols[None, :],
             o.to(O.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])
    # [online-kernel-end]


def online_attention_triton(q, k, v, *, causal: bool = False, scale: float | None = None,
                            block_m: int | None = None, block_n: int | None = None) -> torch.Tensor:
    """Attention with a few query rows per Triton program; same call as every registered entry.

    The blocks default to sizes where the broadcast product ``[block_m, block_n, D]`` stays
    small: registers on a GPU, and few programs for the interpreter on a CPU (its cost is per
    program and per loop step, not per element)."""
    scale = check_qkv(q, k, v, causal=causal, scale=scale, dtypes=DTYPES, name="online_triton")
    B, H, N, D = q.shape
    N_K = k.shape[2]
    BLOCK_D = triton.next_power_of_2(D)
    compiled = runtime.current().compiled
    if block_m is None:
        block_m = max(1, min(16, 4096 // (BLOCK_D * 32))) if compiled else 32
    if block_n is None:
        block_n = 32 if compiled else 128
    for name, b in (("block_m", block_m), ("block_n", block_n)):
        if not isinstance(b, int) or isinstance(b, bool) or b < 1 or b & (b - 1):
            raise ValueError(f"online_triton: {name} must be a power of 2, got {b!r}")
    runtime.require_triton("online_triton", q)  # after the argument checks: they hold anywhere
    # [B·H, N, D] views with a unit last stride, so the kernel needs one stride per dim fewer.
    Q, K, V = (t.reshape(B * H, t.shape[2], D).contiguous() for t in (q, k, v))
    O = torch.empty_like(Q)
    _online_attention_kernel[(triton.cdiv(N, block_m), B * H)](
        Q, K, V, O, N, N_K, D, scale,
        Q.stride(0), Q.stride(1), K.stride(0), K.stride(1),
        V.stride(0), V.stride(1), O.stride(0), O.stride(1),
        CAUSAL=causal, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=BLOCK_D)
    return O.view(B, H, N, D)
