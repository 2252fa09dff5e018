"""One helper both FP8 kernels need under the Triton interpreter (see its docstring)."""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def round_to_e4m3_grid(x):
    """Round x to 3 mantissa bits (nearest, ties to even; the bits of |x| carry the same way for
    either sign) in fp32, so that the cast to e4m3 after it is exact.
    Only under the interpreter: its fp32 → e4m3 cast loses the carry when a value rounds up to
    a power of two (31.9 → 16 instead of 32); the GPU's cast is correct."""
    bits = x.to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFFF + ((bits >> 20) & 1)) & 0xFFF00000
    normal = bits.to(tl.float32, bitcast=True)
    # Below 2^-6 e4m3 is subnormal: a fixed step of 2^-9. Adding 1.5·2^14 (whose fp32 step is
    # 2^-9) and taking it away again rounds to that step, ties to even.
    sub = (x + 24576.0) - 24576.0
    return tl.where(tl.abs(x) < 0.015625, sub, normal)
