"""FLOPs of one attention pass as the FlashAttention papers count them, and TFLOP/s from a time.

Forward: two matmuls, QKᵀ and PV, each 2·N·N·D multiply-adds per head: 4·B·H·N²·D, half when
causal (the tiles above the diagonal are not work). Backward: five matmuls where the forward has
two, so 2.5× the forward. Softmax, masking and rescaling are not counted: the papers leave them
out, and so a kernel that wastes time on them shows a lower TFLOP/s, which is the point.
"""
from __future__ import annotations

PASSES = ("fwd", "bwd", "fwdbwd")
# How many forward passes' worth of matmul FLOPs each timed pass does.
PASS_MULTIPLIER = {"fwd": 1.0, "bwd": 2.5, "fwdbwd": 3.5}


def _positive_int(name: str, x) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or x < 1:
        raise ValueError(f"{name} must be a positive int, got {x!r}")
    return x


def attention_flops(pass_: str, *, B: int, H: int, N: int, D: int, causal: bool,
                    N_k: int | None = None) -> float:
    """Matmul FLOPs of one ``pass_`` ("fwd", "bwd" or "fwdbwd") at ``[B, H, N, D]`` with
    ``N_k`` keys (default ``N``): the forward is 4·B·H·N·N_k·D, halved when causal.

    >>> attention_flops("fwd", B=1, H=1, N=2, D=1, causal=False)
    16.0
    >>> attention_flops("bwd", B=1, H=1, N=2, D=1, causal=True)
    20.0
    """
    if pass_ not in PASS_MULTIPLIER:
        raise ValueError(f"pass_ must be one of {PASSES}, got {pass_!r}")
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    N_k = N if N_k is None else N_k
    for name, x in (("B", B), ("H", H), ("N", N), ("D", D), ("N_k", N_k)):
        _positive_int(name, x)
    fwd = 4.0 * B * H * N * N_k * D
    return PASS_MULTIPLIER[pass_] * (fwd / 2 if causal else fwd)


def tflops(flops: float, ms: float) -> float:
    """TFLOP/s of ``flops`` done in ``ms`` milliseconds."""
    if not ms > 0:
        raise ValueError(f"ms must be positive, got {ms!r}")
    return flops / (ms * 1e-3) / 1e12


def matmul_flops(m: int, n: int, k: int) -> float:
    """FLOPs of one ``[m, k] @ [k, n]`` product: a multiply and an add per term."""
    return 2.0 * _positive_int("m", m) * _positive_int("n", n) * _positive_int("k", k)
