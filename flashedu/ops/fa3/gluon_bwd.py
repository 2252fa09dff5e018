"""Host side of the Gluon backward (:mod:`flashedu.ops.fa3.gluon_bwd_kernel`): the launch (Δ
and dQ's fp32 buffer as v2's atomic-dQ backward makes them) and its compile-only report for
sm_90.

Not wired into any registered entry yet: ``fa3_gluon``'s backward is chapter 4's Triton one until
this kernel has passed the fp64 oracle on a GPU and been timed beside it (gluon-fa3.md,
session 17; ``tests/test_fa3_gluon_bwd.py``, ``python -m flashedu.bench.ablate_v2_bwd``).
"""
from __future__ import annotations

import functools

import torch
import triton

from flashedu.ops._triton import LOG2E
from flashedu.ops.fa3.gluon_host import DTYPE_NAMES, compile_report, descriptor
from flashedu.ops.fa3.kernel import tma_ready
from flashedu.ops.v2.kernel_bwd_atomic import atomic_buffers

BLOCK_M = 64   # Q rows per loop step: one warpgroup's M in dQ's GEMM
BLOCK_N = 128  # K/V rows per program: 64 per warpgroup
HEAD_DIMS = (64, 128)  # D = 256: K, V, the Q and dO rings and dSᵀ need 272 KB of shared memory
STAGES = 2  # Q/dO ring depth (d = 128: 176 KB of the 227 KB of shared memory; 3 fits too)


def gluon_backward(do, q, k, v, o, lse, *, causal: bool, scale: float, stages: int | None = None):
    """dq, dk, dv (q's dtype) for o and L [B, H, N_Q] (natural log) of the forward, as
    :func:`flashedu.ops.v2.kernel_bwd.attention_backward` returns them: fp16/bf16 on sm_90, D in
    :data:`HEAD_DIMS`, N_Q = N_K when causal."""
    B, H, N_Q, D = q.shape
    N_K = k.shape[2]
    if D not in HEAD_DIMS:
        raise ValueError(f"gluon_backward: head dim must be one of {HEAD_DIMS}, got {D}")
    from flashedu.ops.fa3.gluon_bwd_kernel import WARPS, fa3_bwd_kernel
    q, k, v, do = (tma_ready(t) for t in (q, k, v, do))
    delta, dq_acc, dk, dv = atomic_buffers(do, q, k, o)
    fa3_bwd_kernel[(triton.cdiv(N_K, BLOCK_N), B * H)](
        descriptor(q, BLOCK_M), descriptor(k, BLOCK_N), descriptor(v, BLOCK_N),
        descriptor(do, BLOCK_M), lse, delta, dq_acc, dk, dv, N_Q, N_K, scale * LOG2E, scale,
        CAUSAL=causal, STAGES=stages or STAGES, num_warps=int(WARPS))
    return (dq_acc * scale).to(q.dtype), dk, dv


@functools.lru_cache(maxsize=None)
def hopper_bwd_resources(head_dim: int = 128, dtype: torch.dtype = torch.float16, *,
                         causal: bool = False, stages: int | None = None) -> dict:
    """Compile the backward for sm_90 on any machine and read what the chip would give it (the
    report of :func:`flashedu.ops.fa3.gluon.hopper_resources`)."""
    return compile_report(dict(kernel="bwd", head_dim=head_dim, dtype=DTYPE_NAMES[dtype],
                               causal=causal, stages=stages or STAGES,
                               block_m=BLOCK_M, block_n=BLOCK_N),
                          "the Gluon backward")


__all__ = ["BLOCK_M", "BLOCK_N", "HEAD_DIMS", "gluon_backward", "hopper_bwd_resources"]
