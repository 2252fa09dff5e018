"""flashedu: FlashAttention from first principles.

    import flashedu
    print(flashedu.describe())            # what runs where on this machine
    impl = flashedu.get("standard_triton")
    o = impl.fn(q, k, v, causal=True)     # q, k, v: [B, H, N, D]
"""
from flashedu import runtime

# Decide interpreter vs compiled before any flashedu module imports triton.
runtime.current()

from flashedu._registry import ALGORITHMS, BACKENDS, Impl, get, register, registry  # noqa: E402
from flashedu import ops  # noqa: E402,F401  (registers every implementation)

__version__ = "0.1.0"


def describe() -> str:
    """One line: the GPU or CPU, and how Triton kernels run on it."""
    return runtime.describe()


__all__ = ["ALGORITHMS", "BACKENDS", "Impl", "describe", "get", "register", "registry", "runtime"]
