"""FlashAttention-1 forward in Triton, with Algorithm 1's schedule kept on purpose.

Faithful, not fast: one program per (batch, head) walks every tile in v1's order, K/V tiles
outer, Q tiles inner, and O_i, ℓ_i, m_i make a round trip through HBM on every inner step, with
O_i kept as a running *average* (re-normalised each step). Chapter 4 times this beside
``v2_triton`` to measure what swapping the loops buys: v2 runs one program per Q tile (B·H·Tr
programs instead of B·H) and keeps O_i, ℓ_i, m_i on chip.

O is stored in the input dtype, as FA1 does; ℓ and m in fp32 scratch buffers. Within a program,
the store of O_i and the load of the same O_i one outer step later may be done by different
threads, so a barrier separates them (Triton orders shared memory itself, not global memory).

ℓ and m are also what the backward needs (:mod:`.kernel_bwd`, Algorithm 4 in the same schedule):
:class:`FlashAttentionV1` saves q, k, v, O, ℓ and m, and recomputes P from them tile by tile.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from flashedu import runtime
from flashedu.validate import check_qkv
from flashedu.ops.v1.kernel_bwd import attention_backward

DTYPES = (torch.float16, torch.bfloat16, torch.float32)
HEAD_DIMS = (16, 32, 64, 128)
# No MMA for tl.dot on sm_75 with triton 3.9 (see flashedu/ops/v2/kernel.py).
MIN_CAPABILITY = (8, 0)


@triton.jit
def _v1_fwd_kernel(Q, K, V, O, Lsum, Mmax,
                   stride_qz, stride_qh, stride_qm, stride_qd,
                   stride_kz, stride_kh, stride_kn, stride_kd,
                   stride_vz, stride_vh, stride_vn, stride_vd,
                   H, N_Q, N_K, scale,
                   CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
    bh = tl.program_id(0)  # the whole (batch, head) is one program: Algorithm 1 is sequential
    z, h = (bh // H).to(tl.int64), (bh % H).to(tl.int64)
    Q += z * stride_qz + h * stride_qh
    K += z * stride_kz + h * stride_kh
    V += z * stride_vz + h * stride_vh
    O += bh.to(tl.int64) * N_Q * HEAD_DIM  # O, ℓ, m: allocated here, contiguous
    Lsum += bh.to(tl.int64) * N_Q
    Mmax += bh.to(tl.int64) * N_Q
    offs_d = tl.arange(0, HEAD_DIM)
    rows = tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)

    # Line 2: O = 0, ℓ = 0, m = -inf, in HBM.
    for start_m in range(0, N_Q, BLOCK_M):
        offs_m = start_m + rows
        ok = offs_m < N_Q
        tl.store(O + offs_m[:, None] * HEAD_DIM + offs_d[None, :],
                 tl.zeros([BLOCK_M, HEAD_DIM], dtype=O.dtype.element_ty), mask=ok[:, None])
        tl.store(Lsum + offs_m, tl.zeros([BLOCK_M], dtype=tl.float32), mask=ok)
        tl.store(Mmax + offs_m, tl.full([BLOCK_M], float("-inf"), dtype=tl.float32), mask=ok)
    tl.debug_barrier()

    # [v1-kernel-start]
    for start_n in range(0, N_K, BLOCK_N):  # outer loop: K_j, V_j (line 5)
        offs_n = start_n + cols
        col_ok = offs_n < N_K
        k = tl.load(K + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd,
                    mask=col_ok[:, None], other=0.0)  # [BLOCK_N, D]
        v = tl.load(V + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                    mask=col_ok[:, None], other=0.0)  # [BLOCK_N, D]
        # Causal: Q tiles that end before this K tile's first column see none of it.
        first_m = (start_n // BLOCK_M) * BLOCK_M if CAUSAL else 0
        for start_m in range(first_m, N_Q, BLOCK_M):  # inner: Q_i, O_i, ℓ_i, m_i (line 7)
            offs_m = start_m + rows
            row_ok = offs_m < N_Q
            q = tl.load(Q + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
                        mask=row_ok[:, None], other=0.0)  # [BLOCK_M, D]
            o_ptrs = O + offs_m[:, None] * HEAD_DIM + offs_d[None, :]
            o = tl.load(o_ptrs, mask=row_ok[:, None], other=0.0).to(tl.float32)  # [M, D]
            l_i = tl.load(Lsum + offs_m, mask=row_ok, other=0.0)  # [BLOCK_M]
            m_i = tl.load(Mmax + offs_m, mask=row_ok, other=float("-inf"))  # [BLOCK_M]

            # Line 9: S_ij = scale · Q_i K_jᵀ, [BLOCK_M, BLOCK_N], on the tensor cores.
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale
            keep = col_ok[None, :]
            if CAUSAL:
                keep = keep & (offs_m[:, None] >= offs_n[None, :])
            s = tl.where(keep, s, float("-inf"))
            m_t = tl.max(s, 1)  # m̃_ij; -inf on a row that sees nothing of this tile
            p = tl.exp(s - tl.where(m_t == float("-inf"), 0.0, m_t)[:, None])  # P̃_ij
            l_t = tl.sum(p, 1)  # ℓ̃_ij
            m_new = tl.maximum(m_i, m_t)
            m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
            a = tl.where(m_i == float("-inf"), 0.0, tl.exp(m_i - m_ref))
            b = tl.where(m_t == float("-inf"), 0.0, tl.exp(m_t - m_ref))
            l_new = a * l_i + b * l_t
            # Line 12: un-normalise the old average (× ℓ_i), add the new tile, re-normalise.
            pv = tl.dot(p.to(v.dtype), v, input_precision=PRECISION)  # [BLOCK_M, D]
            l_div = tl.where(l_new == 0.0, 1.0, l_new)  # a row that saw no key: 0 / 1
            o = ((l_i * a)[:, None] * o + b[:, None] * pv) / l_div[:, None]
            # Line 13: write O_i, ℓ_i, m_i back to HBM.
            tl.store(o_ptrs, o.to(O.dtype.element_ty), mask=row_ok[:, None])
            tl.store(Lsum + offs_m, l_new, mask=row_ok)
            tl.store(Mmax + offs_m, m_new, mask=row_ok)
            tl.debug_barrier()
    # [v1-kernel-end]


def attention_forward(q, k, v, *, causal: bool, scale: float, block_m: int, block_n: int):
    """o ``[B, H, N_Q, D]`` (q's dtype), ℓ and m ``[B, H, N_Q]`` (fp32) from validated inputs with
    unit stride in D."""
    B, H, N_Q, D = q.shape
    N_K = k.shape[2]
    o = torch.empty(B, H, N_Q, D, device=q.device, dtype=q.dtype)
    lsum = torch.empty(B, H, N_Q, device=q.device, dtype=torch.float32)  # ℓ, HBM scratch
    mmax = torch.empty(B, H, N_Q, device=q.device, dtype=torch.float32)  # m, HBM scratch
    _v1_fwd_kernel[(B * H,)](
        q, k, v, o, lsum, mmax, *q.stride(), *k.stride(), *v.stride(), H, N_Q, N_K, scale,
        CAUSAL=causal, HEAD_DIM=D, BLOCK_M=block_m, BLOCK_N=block_n,
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=4, num_stages=1)  # stages 1: no prefetch may run ahead of line 13's stores
    return o, lsum, mmax


def _unit_stride(t: torch.Tensor) -> torch.Tensor:
    # Other strides are passed to the kernels as they are; a strided D would break vector loads.
    return t if t.stride(-1) == 1 else t.contiguous()


class FlashAttentionV1(torch.autograd.Function):
    """Forward saves q, k, v, O, ℓ and m (FA1's statistics, not FA2's L); backward recomputes P."""

    @staticmethod
    def forward(ctx, q, k, v, causal, scale, block_m, block_n):
        q, k, v = (_unit_stride(t) for t in (q, k, v))
        o, lsum, mmax = attention_forward(q, k, v, causal=causal, scale=scale,
                                          block_m=block_m, block_n=block_n)
        ctx.save_for_backward(q, k, v, o, lsum, mmax)
        ctx.causal, ctx.scale, ctx.block_m, ctx.block_n = causal, scale, block_m, block_n
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lsum, mmax = ctx.saved_tensors
        dq, dk, dv = attention_backward(do, q, k, v, o, lsum, mmax, causal=ctx.causal,
                                        scale=ctx.scale, block_m=ctx.block_m, block_n=ctx.block_n)
        return dq, dk, dv, None, None, None, None


def _check(q, k, v, causal, scale, block_m, block_n) -> tuple[float, int, int]:
    scale = check_qkv(q, k, v, causal=causal, scale=scale, dtypes=DTYPES, head_dims=HEAD_DIMS,
                      name="v1_triton")
    rt = runtime.require_triton("v1_triton", q, min_capability=MIN_CAPABILITY)
    default = 64 if rt.compiled else 32
    block_m, block_n = block_m or default, block_n or default
    for name, b in (("block_m", block_m), ("block_n", block_n)):
        if isinstance(b, bool) or not isinstance(b, int) or b < 16 or b & (b - 1):
            raise ValueError(f"v1_triton: {name} must be a power of two >= 16, got {b}")
    if causal and block_m != block_n:
        raise ValueError(f"v1_triton: causal needs block_m == block_n, got {block_m} and {block_n}")
    return scale, block_m, block_n


def flash_attention_v1(q, k, v, *, causal: bool = False, scale: float | None = None,
                       block_m: int | None = None, block_n: int | None = None) -> torch.Tensor:
    """FlashAttention-1 (Algorithm 1's loop order forward, Algorithm 4's backward) in Triton on
    ``[B, H, N, D]`` inputs.

    D in {16, 32, 64, 128}; fp16 or bf16 on a GPU, fp32 or fp16 under the interpreter.
    Differentiable with respect to q, k and v: the backward (:mod:`.kernel_bwd`) keeps v1's
    schedule and reads the ℓ and m this forward stored. Block sizes (both passes) default to
    64 × 64 on a GPU (32 × 32 under the interpreter). Returns o shaped and typed like q
    (contiguous).
    """
    scale, block_m, block_n = _check(q, k, v, causal, scale, block_m, block_n)
    return FlashAttentionV1.apply(q, k, v, causal, scale, block_m, block_n)


def flash_attention_v1_stats(q, k, v, *, causal: bool = False, scale: float | None = None,
                             block_m: int | None = None, block_n: int | None = None):
    """Forward only: ``(o, ℓ, m)`` with ℓ, m ``[B, H, N_Q]`` in fp32, what the backward reads."""
    scale, block_m, block_n = _check(q, k, v, causal, scale, block_m, block_n)
    q, k, v = (_unit_stride(t) for t in (q, k, v))
    return attention_forward(q, k, v, causal=causal, scale=scale, block_m=block_m, block_n=block_n)
