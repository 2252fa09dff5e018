"""FP8 attention called like every other entry: ``fn(q, k, v, *, causal=False, scale=None)`` on
fp16 or bf16 ``[B, H, N, D]`` (fp32 too), quantised inside by the fused Triton pass
(:mod:`.quant_kernel`: FA3's rotation and block scales), then attended in e4m3 by the kernel
:func:`attention_kernel` names: ``fp8_gluon`` (:mod:`.gluon`) on Hopper at D = 128 with fp16
o, ``fp8_triton`` (:mod:`.kernel`) everywhere else. o comes back in q's dtype. Forward only.

The rotation's random signs are drawn once per head dim from a fixed seed, so a call is
deterministic; any signs give the same attention up to FP8 rounding, since (QM)(KM)ᵀ = QKᵀ.
"""
from __future__ import annotations

import functools

import torch

from flashedu import runtime
from flashedu.ops.fa3 import gluon as fa3_gluon
from flashedu.ops.fp8.gluon import NAME as GLUON, flash_attention_fp8_gluon
from flashedu.ops.fp8.hadamard import random_signs
from flashedu.ops.fp8.kernel import HEAD_DIMS, MIN_CAPABILITY, flash_attention_fp8
from flashedu.ops.fp8.quant import E4M3
from flashedu.ops.fp8.quant_kernel import prepare_fp8_triton
from flashedu.validate import check_qkv

DTYPES = (torch.float16, torch.bfloat16, torch.float32)
SIGNS_SEED = 0
TRITON = "fp8_triton"
# Where the Gluon kernel attends: the head dims it was faster at on an H200 (flashedu.bench.fp8).
GLUON_HEAD_DIMS = (128,)


@functools.lru_cache(maxsize=None)
def rotation_signs(d: int) -> torch.Tensor:
    """The random ±1 diagonal of the rotation, fixed per head dim (fp32, on the CPU)."""
    return random_signs(d, generator=torch.Generator().manual_seed(SIGNS_SEED))


def attention_kernel(q: torch.Tensor, *, block_m: int = 128, block_n: int = 128) -> str:
    """The registered name of the FP8 kernel the drop-in attends with for ``q`` [B, H, N, D]
    (its o has q's dtype) and scale blocks ``block_m`` / ``block_n``: "fp8_gluon" or
    "fp8_triton". Reads q's shape, dtype and device only, so a test, a bench row or the book can
    ask which kernel a call used."""
    # fp8_gluon beat fp8_triton at D = 128 (about 801 vs 760 TFLOP/s at N = 16k on an H200) but
    # lost at D = 64 (0.84-0.97x), so D = 128 only. It writes fp16 only: for a bf16 or fp32 o
    # fp8_triton writes q's dtype itself instead of a cast pass after Gluon.
    if q.shape[-1] not in GLUON_HEAD_DIMS or q.dtype != torch.float16:
        return TRITON
    # The Gluon kernel's warpgroups take 64 query rows and its K/V tiles are block_n wide; each
    # must lie in one scale block (gluon_fp8_forward refuses other blocks).
    tile = fa3_gluon.default_config(q.shape[-1]).block_n
    tiles = block_n // tile
    if block_m % 64 or block_n % tile or tiles & (tiles - 1):
        return TRITON
    # The check fa3_gluon makes: compiled on an sm_90 GPU with Gluon installed, q there.
    if runtime.current().why_not_gluon(device=q.device.type, dtype=E4M3):
        return TRITON
    return GLUON


def fp8_attention_triton(q, k, v, *, causal: bool = False, scale: float | None = None,
                         block_m: int = 128, block_n: int = 128) -> torch.Tensor:
    """Attention through FP8: quantise (one Triton pass per tensor), attend in e4m3 with fp32
    sums by the kernel :func:`attention_kernel` names. ``block_m`` / ``block_n``: the rows per
    scale of Q and of K, V."""
    scale = check_qkv(q, k, v, causal=causal, scale=scale, dtypes=DTYPES, head_dims=HEAD_DIMS,
                      name="fp8_e2e_triton")
    runtime.require_triton("fp8_e2e_triton", q, min_capability=MIN_CAPABILITY)
    signs = rotation_signs(q.shape[-1])
    q8, k8, v8, kw = prepare_fp8_triton(q, k, v, signs=signs, block_m=block_m, block_n=block_n)
    if attention_kernel(q, block_m=block_m, block_n=block_n) == GLUON:
        return flash_attention_fp8_gluon(q8, k8, v8, causal=causal, scale=scale, **kw)  # fp16 o
    return flash_attention_fp8(q8, k8, v8, causal=causal, scale=scale, out_dtype=q.dtype, **kw)


__all__ = ["DTYPES", "GLUON_HEAD_DIMS", "attention_kernel", "fp8_attention_triton",
           "rotation_signs"]
