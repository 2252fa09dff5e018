"""Which shapes are timed: the FlashAttention papers' sweep, and a quick one.

The papers hold the work per step fixed: B·N = 16k tokens, hidden size 2048 split into
H = 2048 / D heads. Longer sequences then mean smaller batches, so every point of a sweep has
the same number of tokens and (non-causal) the FLOPs grow only with N.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from flashedu.runtime import FP8_DTYPES
from flashedu.bench.flops import PASSES

TOKENS = 16384  # B · N
HIDDEN = 2048  # H · D
FULL_NS = (512, 1024, 2048, 4096, 8192, 16384)
QUICK_NS = (1024, 4096)
# float32 is for toy runs (tests, the interpreter): the papers' sweep is fp16, bf16 and FP8.
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "fp8": None, "float32": torch.float32}
ALIASES = {"fp16": "float16", "half": "float16", "bf16": "bfloat16", "float8": "fp8", "fp32": "float32"}


@dataclass(frozen=True)
class Case:
    """One timed shape: q, k, v are ``[B, H, N, D]`` in ``dtype`` (a name from :data:`DTYPES`)."""

    dtype: str
    D: int
    causal: bool
    N: int
    B: int
    H: int

    def key(self) -> tuple:
        return (self.dtype, self.D, self.causal, self.N)

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.dtype} D{self.D} {'causal' if self.causal else 'full'} N={self.N} (B={self.B}, H={self.H})"


def dtype_name(name: str) -> str:
    """The canonical name of a dtype given as "fp16", "bfloat16", "fp8", ..."""
    if not isinstance(name, str):
        raise TypeError(f"dtype must be a str, got {type(name).__name__}")
    name = ALIASES.get(name.lower(), name.lower())
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {tuple(DTYPES)} (or {tuple(ALIASES)}), got {name!r}")
    return name


def make_case(*, dtype: str, D: int, causal: bool, N: int, tokens: int = TOKENS, hidden: int = HIDDEN) -> Case:
    """The case at sequence length N and head dim D with B = tokens / N, H = hidden / D."""
    for arg, x in (("D", D), ("N", N), ("tokens", tokens), ("hidden", hidden)):
        if isinstance(x, bool) or not isinstance(x, int) or x < 1:
            raise ValueError(f"{arg} must be a positive int, got {x!r}")
    if tokens % N:
        raise ValueError(f"N must divide tokens={tokens}, got N={N}")
    if hidden % D:
        raise ValueError(f"D must divide hidden={hidden}, got D={D}")
    return Case(dtype_name(dtype), D, bool(causal), N, tokens // N, hidden // D)


def sweep(*, Ds=(64, 128, 256), Ns=FULL_NS, dtypes=("float16", "bfloat16"), causal=(False, True),
          tokens: int = TOKENS, hidden: int = HIDDEN) -> list[Case]:
    """Every combination, ordered so that one (dtype, D, causal) is timed over all N in a row
    (the autotuner and compiler caches are warm for the next N)."""
    return [make_case(dtype=dt, D=D, causal=c, N=N, tokens=tokens, hidden=hidden)
            for dt in dtypes for D in Ds for c in causal for N in Ns]


def preset(name: str, *, fp8: bool = False) -> dict:
    """Keyword arguments of :func:`sweep` plus ``passes`` for the "full" or "quick" sweep;
    ``fp8`` adds the FP8 dtype (when an FP8 implementation is registered)."""
    if name == "full":
        dtypes = ("float16", "bfloat16") + (("fp8",) if fp8 else ())
        return dict(Ds=(64, 128, 256), Ns=FULL_NS, dtypes=dtypes, causal=(False, True), passes=PASSES)
    if name == "quick":
        # A Colab T4 in a few minutes: two head dims, two lengths, forward and backward.
        return dict(Ds=(64, 128), Ns=QUICK_NS, dtypes=("float16",), causal=(False, True),
                    passes=("fwd", "bwd"))
    raise ValueError(f"preset must be 'full' or 'quick', got {name!r}")


def torch_dtype(case: Case, impl_dtypes=()) -> torch.dtype:
    """The dtype q, k, v are made in for one implementation: the case's dtype, or for "fp8" the
    implementation's own FP8 dtype when it takes FP8 inputs, else fp16 (it quantises inside)."""
    if case.dtype != "fp8":
        return DTYPES[case.dtype]
    return next((d for d in impl_dtypes if d in FP8_DTYPES), torch.float16)
