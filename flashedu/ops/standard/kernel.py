"""Standard attention in Triton, unfused on purpose: three kernels, S and P round-trip HBM.

This is the kernel-level picture of seed 002's standard algorithm, so the reader sees what fusion
removes before chapter 3 fuses it:

    kernel 1  _matmul_kernel   S = scale · Q Kᵀ      reads Q, K     writes S  [B·H, N, N]
    kernel 2  _softmax_kernel  P = softmax(S)        reads S        writes P  [B·H, N, N]
    kernel 3  _matmul_kernel   O = P V               reads P, V     writes O  [B·H, N, D]

S and P are stored in the input dtype, as a framework's unfused attention stores them; each
kernel accumulates in fp32.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from flashedu import runtime
from flashedu.validate import check_qkv

DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@triton.jit
def _matmul_kernel(a_ptr, b_ptr, c_ptr, M, N, K, alpha,
                   stride_az, stride_am, stride_ak,
                   stride_bz, stride_bk, stride_bn,
                   stride_cz, stride_cm, stride_cn,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                   PRECISION: tl.constexpr):
    """C[z] = alpha · A[z] @ B[z], one BLOCK_M × BLOCK_N tile of C per program.

    Kᵀ is never copied: passing K with its row and column strides swapped reads it transposed.
    """
    # int64 offsets: S and P hold B·H·N² scores, past 2**31 from N = 8k at 32 heads, where
    # int32 arithmetic wraps and the kernel writes outside the tensor.
    pid_m = tl.program_id(0).to(tl.int64)
    pid_n = tl.program_id(1).to(tl.int64)
    z = tl.program_id(2).to(tl.int64)  # which (batch, head)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + z * stride_az + rm[:, None] * stride_am + rk[None, :] * stride_ak
    b_ptrs = b_ptr + z * stride_bz + rk[:, None] * stride_bk + rn[None, :] * stride_bn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k_ok = (k0 + rk) < K
        a = tl.load(a_ptrs, mask=(rm[:, None] < M) & k_ok[None, :], other=0.0)
        b = tl.load(b_ptrs, mask=k_ok[:, None] & (rn[None, :] < N), other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk
    acc = acc * alpha
    c_ptrs = c_ptr + z * stride_cz + rm[:, None] * stride_cm + rn[None, :] * stride_cn
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=(rm[:, None] < M) & (rn[None, :] < N))


@triton.jit
def _softmax_kernel(s_ptr, p_ptr, N_K, stride_sz, stride_sm, stride_pz, stride_pm,
                    CAUSAL: tl.constexpr, BLOCK_N: tl.constexpr):
    """P[z, row] = softmax(S[z, row]); the whole row is loaded at once (one read, one write)."""
    row = tl.program_id(0).to(tl.int64)  # int64 offsets, as in _matmul_kernel
    z = tl.program_id(1).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    keep = cols < N_K
    if CAUSAL:
        keep = keep & (cols <= row)
    s = tl.load(s_ptr + z * stride_sz + row * stride_sm + cols, mask=keep, other=float("-inf"))
    s = s.to(tl.float32)
    m = tl.max(s, axis=0)
    # A fully masked row has m = -inf: subtract 0 instead, so exp gives 0 rather than NaN.
    m = tl.where(m == float("-inf"), 0.0, m)
    e = tl.exp(s - m)
    l = tl.sum(e, axis=0)
    p = e / tl.where(l > 0.0, l, 1.0)
    tl.store(p_ptr + z * stride_pz + row * stride_pm + cols, p.to(p_ptr.dtype.element_ty),
             mask=cols < N_K)


def _matmul(a, b, c, alpha, blocks):
    """c[z] = alpha · a[z] @ b[z] for 3-d strided views."""
    Z, M, K = a.shape
    N = b.shape[2]
    bm, bn, bk = blocks
    precision = "ieee" if a.dtype == torch.float32 else "tf32"
    grid = (triton.cdiv(M, bm), triton.cdiv(N, bn), Z)
    _matmul_kernel[grid](a, b, c, M, N, K, alpha,
                         *a.stride(), *b.stride(), *c.stride(),
                         BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, PRECISION=precision)


def standard_attention_triton(q, k, v, *, causal: bool = False, scale: float | None = None,
                              return_intermediates: bool = False):
    """Unfused attention with S and P materialised; same call as every registered implementation.

    With ``return_intermediates=True`` returns ``(o, S, P)`` so a chapter can show the N×N tensors.
    """
    scale = check_qkv(q, k, v, causal=causal, scale=scale, dtypes=DTYPES, name="standard_triton")
    runtime.require_triton("standard_triton", q)
    B, H, N, D = q.shape
    N_K = k.shape[2]
    Q = q.contiguous().view(B * H, N, D)
    K = k.contiguous().view(B * H, N_K, D)
    V = v.contiguous().view(B * H, N_K, D)
    # [standard-launches-start]
    S = torch.empty(B * H, N, N_K, device=q.device, dtype=q.dtype)
    P = torch.empty_like(S)
    O = torch.empty(B * H, N, D, device=q.device, dtype=q.dtype)
    blocks = (64, 64, 32) if runtime.current().compiled else (32, 32, 32)

    _matmul(Q, K.transpose(1, 2), S, scale, blocks)  # kernel 1: S = scale · Q Kᵀ
    # kernel 2: P = softmax(S), one program per row of S
    _softmax_kernel[(N, B * H)](S, P, N_K, S.stride(0), S.stride(1), P.stride(0), P.stride(1),
                                CAUSAL=causal, BLOCK_N=triton.next_power_of_2(N_K))
    _matmul(P, V, O, 1.0, blocks)  # kernel 3: O = P V
    # [standard-launches-end]

    o = O.view(B, H, N, D)
    if return_intermediates:
        return o, S.view(B, H, N, N_K), P.view(B, H, N, N_K)
    return o
