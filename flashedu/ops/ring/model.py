"""When does the ring's communication hide under its compute? A model of one ring step.

At every step each rank sends one K/V shard (2 · B · H_kv · n · d elements, n = N / P tokens per
rank) while it attends its n queries to the shard in hand (4 · B · H · n² · d FLOPs, half of it
when causal with a balanced layout). Transfer and compute run at the same time, so the step
takes max(comm, compute) and the transfer is free when

    compute ≥ comm   ⇔   n ≥ n* = H_kv · bytes · F / (2 · c · H · BW)

with F the attention kernel's FLOP rate, BW the link's one-way bandwidth and c = 1 (full) or ½
(causal). Compute grows as n², traffic as n: long enough shards always hide the ring.
"""
from __future__ import annotations

from dataclasses import dataclass

from flashedu.hardware import gpu as get_gpu
from flashedu.hardware import link as get_link

# FA2-class kernels run at about half of the tensor cores' peak at D = 128 (chapter 4).
DEFAULT_EFFICIENCY = 0.5


@dataclass(frozen=True)
class RingStep:
    """One ring step on one rank (seconds, bytes, FLOPs)."""

    tokens_per_rank: int
    comm_bytes: float
    flops: float
    comm_s: float
    compute_s: float

    @property
    def step_s(self) -> float:
        return max(self.comm_s, self.compute_s)

    @property
    def hidden(self) -> bool:
        """The transfer takes no longer than the compute it overlaps."""
        return self.comm_s <= self.compute_s


def _rate(gpu, efficiency):
    if not 0 < efficiency <= 1:
        raise ValueError(f"efficiency must be in (0, 1], got {efficiency!r}")
    return get_gpu(gpu).fp16_flops * efficiency


def ring_step(tokens_per_rank: int, *, d: int = 128, heads: int = 32, kv_heads: int | None = None,
              batch: int = 1, causal: bool = False, gpu="H100", link="NVLink 4", bytes_per_element: int = 2,
              efficiency: float = DEFAULT_EFFICIENCY) -> RingStep:
    """Traffic and time of one step with ``tokens_per_rank`` tokens on each rank."""
    kv_heads = heads if kv_heads is None else kv_heads
    n = tokens_per_rank
    comm = 2.0 * batch * kv_heads * n * d * bytes_per_element
    flops = 4.0 * batch * heads * n * n * d * (0.5 if causal else 1.0)
    return RingStep(n, comm, flops, comm / get_link(link).bandwidth, flops / _rate(gpu, efficiency))


def overlap_threshold(*, heads: int = 32, kv_heads: int | None = None, causal: bool = False, gpu="H100",
                      link="NVLink 4", bytes_per_element: int = 2, efficiency: float = DEFAULT_EFFICIENCY) -> float:
    """n*: tokens per rank above which a step's compute outlasts its transfer."""
    kv_heads = heads if kv_heads is None else kv_heads
    c = 0.5 if causal else 1.0
    return kv_heads * bytes_per_element * _rate(gpu, efficiency) / (2 * c * heads * get_link(link).bandwidth)
