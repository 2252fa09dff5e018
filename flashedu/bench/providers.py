"""Who is timed in a case: every registered Triton implementation that supports it (from the
registry, never a hand list), torch SDPA's backends as peers, and the naive torch attention."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from flashedu import registry
from flashedu._registry import get
from flashedu.bench.cases import Case, torch_dtype
from flashedu.bench.peers import SDPA_BACKENDS, sdpa_peer

# Peak bytes per score (B·H·N² of them) of the providers that materialise N×N tensors, for the
# forward alone and with the saved tensors of a backward. standard_torch keeps S (2 B), its fp32
# copy and softmax (4 + 4 B) and P (2 B); with autograd ~16 B, which matches the 64 GiB measured
# for N = 16k, B = 1, H = 16 (flashedu/recorded/data/memory). The math backend of SDPA is the same
# computation. standard_triton writes S and P in the input dtype and has no backward.
SCORE_BYTES = {"standard_torch": (12, 16), "sdpa_math": (12, 16), "standard_triton": (4, 4)}
# Leave this share of free memory alone (allocator fragmentation, the reference, the workspace).
MEMORY_HEADROOM = 0.85


@dataclass(frozen=True)
class Provider:
    """One timed function ``fn(q, k, v, *, causal) -> o`` and what the table says about it."""

    name: str
    fn: Callable[..., torch.Tensor]
    kind: str  # "triton" (registered), "sdpa" (a torch SDPA backend), "torch" (naive)
    algorithm: str
    backward: bool
    dtype: torch.dtype  # what q, k, v are made in for this provider

    def bytes_needed(self, case: Case, with_grad: bool) -> int | None:
        """A peak-memory estimate for providers whose memory grows with N², else None."""
        per_score = SCORE_BYTES.get(self.name)
        if per_score is None:
            return None
        return int(case.B * case.H * case.N * case.N * per_score[int(with_grad)])


def registered(case: Case, *, device: str = "cuda") -> list[Provider]:
    """Registered Triton implementations that support ``case`` here. FP8 cases take the
    implementations whose algorithm is "fp8" (called with e4m3 q, k, v and no descales, i.e.
    scale 1); the fp16/bf16 cases take all the others except block-sparse ones."""
    out = []
    for impl in registry(backend="triton"):
        if (impl.algorithm == "fp8") != (case.dtype == "fp8"):
            continue
        if case.causal and not impl.causal:
            continue
        if impl.block_sparse:
            continue  # needs a block mask: a dense case is not its benchmark (time vs density is)
        dtype = torch_dtype(case, impl.dtypes)
        if impl.why_not(device=device, dtype=dtype, head_dim=case.D) is not None:
            continue
        out.append(Provider(impl.name, impl.fn, "triton", impl.algorithm, impl.backward, dtype))
    return out


def peers(case: Case) -> list[Provider]:
    """torch's SDPA backends (flash, efficient, cuDNN, math) and the naive three-op attention.
    Their own refusals (a head dim, a GPU too old) are recorded by the harness, not predicted."""
    if case.dtype == "fp8":
        return []  # SDPA has no FP8 path; the fp16 rows of the same run are the comparison
    dtype = torch_dtype(case)
    out = [Provider(name, sdpa_peer(name), "sdpa", "v2" if name != "sdpa_math" else "standard", True, dtype)
           for name in SDPA_BACKENDS]
    naive = get("standard_torch")
    out.append(Provider(naive.name, naive.fn, "torch", naive.algorithm, naive.backward, dtype))
    return out


def providers(case: Case, *, device: str = "cuda", only: tuple[str, ...] | None = None) -> list[Provider]:
    """Everything timed in ``case``; ``only`` keeps the named providers."""
    out = registered(case, device=device) + peers(case)
    if only is not None:
        if isinstance(only, str):
            raise TypeError("only must be a sequence of provider names, not a str")
        out = [p for p in out if p.name in only]
    return out


def free_bytes(device: str) -> int | None:
    """Free device memory now, or None where it cannot be known (the CPU)."""
    if torch.device(device).type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info()
    return free


def fits(provider: Provider, case: Case, *, with_grad: bool, free: int | None) -> bool:
    """False when ``provider``'s N² buffers would not fit in ``free`` bytes."""
    need = provider.bytes_needed(case, with_grad)
    return need is None or free is None or need <= MEMORY_HEADROOM * free
