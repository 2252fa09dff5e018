"""FlashAttention's forward and backward references as one differentiable function.

``forward`` runs Algorithm 1 (:func:`~flashedu.ops.v1.reference.v1_forward`) and keeps O and the
row statistics ℓ and m; ``backward`` runs Algorithm 4 (:func:`~flashedu.ops.v1.reference_bwd.v1_backward`)
on a chip of its own, so each pass records its own traffic. :func:`v1_attention`, the registered
reference, routes here when an input requires grad.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from flashedu.iomodel.run import run_backward, run_reference
from flashedu.ops.v1.reference import v1_forward


class V1Attention(torch.autograd.Function):
    """o, report = V1Attention.apply(q, k, v, causal, scale, block_r, block_c, sram_bytes)."""

    @staticmethod
    def forward(ctx, q, k, v, causal, scale, block_r, block_c, sram_bytes):
        o, report, chip = run_reference("v1", v1_forward, q, k, v, causal=causal, scale=scale,
                                        block_r=block_r, block_c=block_c, sram_bytes=sram_bytes)
        # ℓ and m [B, H, N, 1] are all the backward keeps of the forward's softmax: P is recomputed.
        ctx.save_for_backward(q, k, v, o, chip.data("l"), chip.data("m"))
        # Block sizes left as None take the backward's own defaults (its tiles are more).
        ctx.config = dict(causal=causal, scale=scale, block_r=block_r, block_c=block_c,
                          sram_bytes=sram_bytes)
        return o, report

    @staticmethod
    @once_differentiable
    def backward(ctx, do, _report):
        q, k, v, o, l, m = ctx.saved_tensors
        (dq, dk, dv), _ = run_backward("v1", q, k, v, o, do, {"l": l, "m": m}, **ctx.config)
        return dq, dk, dv, None, None, None, None, None


def v1_attention_backward(q, k, v, o, l, m, do, *, causal: bool = False, scale: float | None = None,
                          block_r: int | None = None, block_c: int | None = None,
                          sram_bytes: int | None = None, return_report: bool = False):
    """FlashAttention's backward (Algorithm 4, no dropout) through the memory model.

    q, k, v, o, do ``[B, H, N, D]`` (k, v may be longer); l, m ``[B, H, N]``: the forward's
    row sums and maxima. Block sizes default to Algorithm 4's Bc = ⌈M/4d⌉, Br = min(Bc, d), with
    M halved until the backward's tiles fit ``sram_bytes`` (default 228 KiB). Returns
    (dq, dk, dv) in q's dtype, and the backward's report as a fourth item with
    ``return_report=True``.
    """
    grads, report = run_backward("v1", q, k, v, o, do, {"l": l, "m": m}, causal=causal, scale=scale,
                                 block_r=block_r, block_c=block_c, sram_bytes=sram_bytes)
    return (*grads, report) if return_report else grads


def v1_attention(q, k, v, *, causal: bool = False, scale: float | None = None,
                 block_r: int | None = None, block_c: int | None = None,
                 sram_bytes: int | None = None, return_report: bool = False):
    """FlashAttention's Algorithm 1 on ``[B, H, N, D]`` inputs, through the memory model.

    With no block sizes, ``Bc = ⌈M/4d⌉, Br = min(Bc, d)`` where M is half of ``sram_bytes``
    (default 228 KiB) in elements (see :mod:`flashedu.iomodel.blocks` for why half).
    Returns o ``[B, H, N, D]`` in q's dtype, or ``(o, report)`` with ``return_report=True``.
    Differentiable: when an input requires grad, the backward is Algorithm 4
    (:mod:`flashedu.ops.v1.reference_bwd`), recomputing P from ℓ and m.
    """
    if torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in (q, k, v)):
        o, report = V1Attention.apply(q, k, v, causal, scale, block_r, block_c, sram_bytes)
    else:
        o, report, _ = run_reference("v1", v1_forward, q, k, v, causal=causal, scale=scale,
                                     block_r=block_r, block_c=block_c, sram_bytes=sram_bytes)
    return (o, report) if return_report else o
