"""The one list of attention implementations.

Every implementation registers itself once, at import, with what it is (algorithm, backend,
chapter) and what it supports. Tests, widgets and benchmarks iterate :func:`registry`; nothing
else keeps a list of kernels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

ALGORITHMS = ("standard", "online", "v1", "v2", "fa3", "block_sparse", "fp8", "split_kv", "ring")
BACKENDS = ("reference", "triton", "gluon", "torch")


@dataclass(frozen=True)
class Impl:
    """One registered attention implementation.

    ``fn(q, k, v, *, causal=False, scale=None, **extra) -> o`` with q, k, v shaped
    ``[B, H, N, D]`` (torch SDPA's convention) and o shaped like q.
    """

    name: str
    algorithm: str
    backend: str
    chapter: int
    fn: Callable[..., torch.Tensor]
    summary: str
    causal: bool = True
    backward: bool = False
    block_sparse: bool = False
    dtypes: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
    devices: tuple[str, ...] = ("cpu", "cuda")
    head_dims: tuple[int, ...] | None = None  # None: any head dim
    # Smallest CUDA compute capability the compiled kernel needs, per dtype where it differs.
    min_capability: tuple[int, int] = (0, 0)
    # Max abs error against an fp64 oracle on O(1) inputs, for an implementation whose error is
    # set by something coarser than its dtype (FP8: inputs rounded to 3 mantissa bits inside);
    # None: the input dtype's rounding sets it (the tests' tolerance per dtype).
    tolerance: float | None = None
    extra: dict = field(default_factory=dict)

    def supports(self, *, device: str, dtype: torch.dtype, head_dim: int | None = None) -> bool:
        return self.why_not(device=device, dtype=dtype, head_dim=head_dim) is None

    def why_not(self, *, device: str, dtype: torch.dtype, head_dim: int | None = None) -> str | None:
        """Why this implementation cannot run here, or None when it can."""
        from flashedu import runtime

        device = torch.device(device).type
        if device not in self.devices:
            return f"{self.name} runs on {', '.join(self.devices)}, not {device}"
        if dtype not in self.dtypes:
            names = ", ".join(str(d).removeprefix("torch.") for d in self.dtypes)
            return f"{self.name} supports dtypes {names}, not {str(dtype).removeprefix('torch.')}"
        if head_dim is not None and self.head_dims is not None and head_dim not in self.head_dims:
            return f"{self.name} supports head dims {self.head_dims}, not {head_dim}"
        if self.backend == "triton":
            return runtime.current().why_not_triton(device=device, dtype=dtype,
                                                    min_capability=self.min_capability)
        if self.backend == "gluon":
            return runtime.current().why_not_gluon(device=device, dtype=dtype)
        return None


_REGISTRY: dict[str, Impl] = {}


def register(impl: Impl) -> Impl:
    if impl.algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {impl.algorithm!r}")
    if impl.backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {impl.backend!r}")
    if impl.name in _REGISTRY:
        raise ValueError(f"an implementation named {impl.name!r} is already registered")
    _REGISTRY[impl.name] = impl
    return impl


def registry(**filters) -> list[Impl]:
    """All registered implementations, in chapter order; keyword filters match attributes,
    e.g. ``registry(backend="triton", algorithm="v2")``."""
    impls = sorted(_REGISTRY.values(), key=lambda i: (i.chapter, i.algorithm, i.backend, i.name))
    for key, value in filters.items():
        impls = [i for i in impls if getattr(i, key) == value]
    return impls


def get(name: str) -> Impl:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise KeyError(f"no implementation named {name!r}; registered: {known}") from None
