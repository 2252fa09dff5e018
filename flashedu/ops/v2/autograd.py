"""FA2's forward and backward references as one differentiable function.

``forward`` runs Algorithm 1 (:func:`~flashedu.ops.v2.reference.v2_forward`) and keeps O and the
logsumexp L; ``backward`` runs Algorithm 2 (:func:`~flashedu.ops.v2.reference_bwd.v2_backward`) on a
chip of its own, so each pass records its own traffic. :func:`v2_attention` routes here when an
input requires grad.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from flashedu.iomodel.run import run_backward, run_reference
from flashedu.ops.v2.reference import v2_forward


class V2Attention(torch.autograd.Function):
    """o, report = V2Attention.apply(q, k, v, causal, scale, block_r, block_c, sram_bytes)."""

    @staticmethod
    def forward(ctx, q, k, v, causal, scale, block_r, block_c, sram_bytes):
        o, report, chip = run_reference("v2", v2_forward, q, k, v, causal=causal, scale=scale,
                                        block_r=block_r, block_c=block_c, sram_bytes=sram_bytes)
        # L [B, H, N, 1] is all the backward keeps of the forward's softmax: P is recomputed.
        ctx.save_for_backward(q, k, v, o, chip.data("L"))
        # Block sizes left as None take the backward's own defaults (its tiles are more).
        ctx.config = dict(causal=causal, scale=scale, block_r=block_r, block_c=block_c,
                          sram_bytes=sram_bytes)
        return o, report

    @staticmethod
    @once_differentiable
    def backward(ctx, do, _report):
        q, k, v, o, L = ctx.saved_tensors
        (dq, dk, dv), _ = run_backward("v2", q, k, v, o, do, {"L": L}, **ctx.config)
        return dq, dk, dv, None, None, None, None, None


def v2_attention_backward(q, k, v, o, L, do, *, causal: bool = False, scale: float | None = None,
                          block_r: int | None = None, block_c: int | None = None,
                          sram_bytes: int | None = None, return_report: bool = False):
    """FlashAttention-2's backward (Algorithm 2) through the memory model.

    q, k, v, o, do ``[B, H, N, D]`` (k, v may be longer); L ``[B, H, N]``, the logsumexp from
    :func:`~flashedu.ops.v2.autograd.v2_attention_lse`. Block sizes default to the largest
    square power of two ≤ 128 whose backward tiles fit ``sram_bytes`` (default 228 KiB).
    Returns (dq, dk, dv) in q's dtype, and the backward's report as a fourth item with
    ``return_report=True``.
    """
    grads, report = run_backward("v2", q, k, v, o, do, {"L": L}, causal=causal, scale=scale,
                                 block_r=block_r, block_c=block_c, sram_bytes=sram_bytes)
    return (*grads, report) if return_report else grads


def v2_attention(q, k, v, *, causal: bool = False, scale: float | None = None,
                 block_r: int | None = None, block_c: int | None = None,
                 sram_bytes: int | None = None, return_report: bool = False):
    """FlashAttention-2's forward on ``[B, H, N, D]`` inputs, tile by tile through the memory model.

    Block sizes default to the largest square power of two ≤ 128 that fits ``sram_bytes``
    (default: an H100's 228 KiB). Returns o ``[B, H, N, D]`` in q's dtype, or ``(o, report)``
    with ``return_report=True`` (:class:`flashedu.iomodel.Report`: traffic, SRAM peak, trace).
    Differentiable: when an input requires grad, the backward is Algorithm 2
    (:mod:`flashedu.ops.v2.reference_bwd`), recomputing P from L.
    """
    if torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in (q, k, v)):
        o, report = V2Attention.apply(q, k, v, causal, scale, block_r, block_c, sram_bytes)
    else:
        o, report, _ = run_reference("v2", v2_forward, q, k, v, causal=causal, scale=scale,
                                     block_r=block_r, block_c=block_c, sram_bytes=sram_bytes)
    return (o, report) if return_report else o


def v2_attention_lse(q, k, v, *, causal: bool = False, scale: float | None = None,
                     block_r: int | None = None, block_c: int | None = None,
                     sram_bytes: int | None = None):
    """Like :func:`v2_attention`, returning ``(o, L)`` with L = m + log ℓ ``[B, H, N]`` in fp32
    (fp64 for fp64 inputs): what the backward pass of chapter 4 reads."""
    o, _, chip = run_reference("v2", v2_forward, q, k, v, causal=causal, scale=scale,
                               block_r=block_r, block_c=block_c, sram_bytes=sram_bytes)
    return o, chip.data("L")[..., 0]
