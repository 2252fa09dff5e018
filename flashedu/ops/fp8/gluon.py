"""FlashAttention-3's FP8 forward through the Gluon kernel (:mod:`flashedu.ops.fa3.gluon_kernel`):
the same producer warp, ping-ponged consumer warpgroups and intra-warpgroup pipeline as the fp16
kernel, with e4m3 wgmma and the FP8 recipe of :mod:`flashedu.ops.fp8.kernel` (per-tile
descales folded into the scores' scale, P·2⁸ cast to e4m3, V read K-major, O kept in units of
the last V tile's descale).

Registered as ``fp8_gluon`` (backend "gluon": it runs compiled on sm_90 only, and its
``why_not`` says so elsewhere). It matches
:func:`flashedu.ops.fp8.reference.fp8_attention_reference` on an H200 (tests/test_fp8.py) and
beats ``fp8_triton`` at D = 128 (about 801 vs 760 TFLOP/s at N = 16k) but not at D = 64
(0.84-0.97x), so the drop-in ``fp8_e2e_triton``
(:func:`flashedu.ops.fp8.dropin.attention_kernel`) attends with it at D = 128 only.
"""
from __future__ import annotations

import torch

from flashedu import runtime
from flashedu.ops.fa3 import gluon as fa3_gluon
from flashedu.ops.fp8.quant import transposed
from flashedu.ops.fp8.reference import check_fp8_inputs

NAME = "fp8_gluon"
HEAD_DIMS = (64, 128)


def flash_attention_fp8_gluon(q, k, v, *, causal: bool = False, scale: float | None = None,
                              q_descale=None, k_descale=None, v_descale=None, q_block: int = 128,
                              kv_block: int = 128,
                              config: fa3_gluon.GluonConfig | None = None) -> torch.Tensor:
    """Attention of float8_e4m3fn ``q, k, v`` [B, H, N, D] with per-tile fp32 descales, called
    as :func:`flashedu.ops.fp8.kernel.flash_attention_fp8` is (what
    :func:`flashedu.ops.fp8.prepare_fp8` returns), on a Hopper GPU; D in {64, 128}. V stored
    K-major is read in place; any other V is copied into that layout. Returns o fp16."""
    scale, dq, dk, dv = check_fp8_inputs(q, k, v, causal=causal, scale=scale, q_descale=q_descale,
                                         k_descale=k_descale, v_descale=v_descale, q_block=q_block,
                                         kv_block=kv_block, name=NAME)
    if q.shape[-1] not in HEAD_DIMS:
        raise ValueError(f"{NAME}: head dim D={q.shape[-1]} is not supported; "
                         f"supported: {HEAD_DIMS}")
    reason = runtime.current().why_not_gluon(device=q.device.type, dtype=q.dtype)
    if reason:
        raise RuntimeError(f"{NAME} cannot run here: {reason}")
    o, _ = fa3_gluon.gluon_fp8_forward(q, k, transposed(v), causal=causal, scale=scale,
                                       q_descale=dq, k_descale=dk, v_descale=dv,
                                       q_block=q_block, kv_block=kv_block, config=config)
    return o


__all__ = ["HEAD_DIMS", "NAME", "flash_attention_fp8_gluon"]
