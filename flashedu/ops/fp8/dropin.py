"""FP8 attention called like every other entry: ``fn(q, k, v, *, causal=False, scale=None)`` on
fp16 or bf16 ``[B, H, N, D]`` (fp32 too), quantised inside by the fused Triton pass
(:mod:`.quant_kernel`: FA3's rotation and block scales), then ``fp8_triton``. o comes back in
q's dtype. Forward only.

The rotation's random signs are drawn once per head dim from a fixed seed, so a call is
deterministic; any signs give the same attention up to FP8 rounding, since (QM)(KM)ᵀ = QKᵀ.
"""
from __future__ import annotations

import functools

import torch

from flashedu import runtime
from flashedu.ops.fp8.hadamard import random_signs
from flashedu.ops.fp8.kernel import HEAD_DIMS, MIN_CAPABILITY, flash_attention_fp8
from flashedu.ops.fp8.quant_kernel import prepare_fp8_triton
from flashedu.validate import check_qkv

DTYPES = (torch.float16, torch.bfloat16, torch.float32)
SIGNS_SEED = 0


@functools.lru_cache(maxsize=None)
def rotation_signs(d: int) -> torch.Tensor:
    """The random ±1 diagonal of the rotation, fixed per head dim (fp32, on the CPU)."""
    return random_signs(d, generator=torch.Generator().manual_seed(SIGNS_SEED))


def fp8_attention_triton(q, k, v, *, causal: bool = False, scale: float | None = None,
                         block_m: int = 128, block_n: int = 128) -> torch.Tensor:
    """Attention through FP8: quantise (one Triton pass per tensor), attend in e4m3 with fp32
    sums. ``block_m`` / ``block_n``: the rows per scale of Q and of K, V."""
    scale = check_qkv(q, k, v, causal=causal, scale=scale, dtypes=DTYPES, head_dims=HEAD_DIMS,
                      name="fp8_e2e_triton")
    runtime.require_triton("fp8_e2e_triton", q, min_capability=MIN_CAPABILITY)
    signs = rotation_signs(q.shape[-1])
    q8, k8, v8, kw = prepare_fp8_triton(q, k, v, signs=signs, block_m=block_m, block_n=block_n)
    return flash_attention_fp8(q8, k8, v8, causal=causal, scale=scale, out_dtype=q.dtype, **kw)


__all__ = ["DTYPES", "fp8_attention_triton", "rotation_signs"]
