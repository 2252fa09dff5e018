"""Which tokens each rank of a ring holds, and how much causal work each (rank, step) pair does.

A sequence of N tokens is split over P ranks. Every rank keeps its own queries; the K/V shards
travel: at step t rank r holds the K/V shard of rank (r − t) mod P. Three layouts:

* ``"contiguous"``: rank r holds tokens [r·N/P, (r+1)·N/P). Causal attention is then lopsided:
  rank 0's queries see only its own keys, rank P−1's see everything, so at step t only the ranks
  r ≥ t have work and the others wait (load imbalance).
* ``"zigzag"``: the sequence is cut into 2P chunks and rank r holds chunks r and 2P−1−r, one
  early and one late; every rank then does the same causal work at every step after the first.
* ``"striped"``: rank r holds tokens r, r+P, r+2P, …; also balanced.

A shard is a tuple of :class:`Segment` (arithmetic runs of positions); the kernels use the runs,
the dense references use the positions.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

LAYOUTS = ("contiguous", "zigzag", "striped")


@dataclass(frozen=True)
class Segment:
    """Token positions ``range(start, stop, step)``."""

    start: int
    stop: int
    step: int = 1

    def __len__(self) -> int:
        return len(range(self.start, self.stop, self.step))

    def positions(self) -> torch.Tensor:
        return torch.arange(self.start, self.stop, self.step)


def _bounds(n: int, parts: int) -> list[int]:
    # torch.tensor_split's rule: the first n % parts chunks get one token more.
    base, extra = divmod(n, parts)
    out = [0]
    for i in range(parts):
        out.append(out[-1] + base + (1 if i < extra else 0))
    return out


def check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    return layout


def shard_segments(n: int, world: int, rank: int, layout: str = "contiguous") -> tuple[Segment, ...]:
    """The segments of positions ``rank`` holds out of ``n`` tokens over ``world`` ranks."""
    check_layout(layout)
    if not 0 <= rank < world:
        raise ValueError(f"rank must be in [0, {world}), got {rank}")
    if layout == "contiguous":
        b = _bounds(n, world)
        return (Segment(b[rank], b[rank + 1]),)
    if layout == "zigzag":
        b = _bounds(n, 2 * world)
        late = 2 * world - 1 - rank
        return (Segment(b[rank], b[rank + 1]), Segment(b[late], b[late + 1]))
    return (Segment(rank, n, world),)


def positions(n: int, world: int, rank: int, layout: str = "contiguous") -> torch.Tensor:
    """Token positions of ``rank``'s shard, in the order its rows are stored. [n_rank] int64"""
    segs = shard_segments(n, world, rank, layout)
    return torch.cat([s.positions() for s in segs]) if segs else torch.zeros(0, dtype=torch.long)


def shard(x: torch.Tensor, world: int, rank: int, layout: str = "contiguous", dim: int = 2) -> torch.Tensor:
    """Rank ``rank``'s rows of ``x`` along ``dim`` (the sequence dim of [B, H, N, D])."""
    return x.index_select(dim, positions(x.shape[dim], world, rank, layout).to(x.device))


def unshard(shards: list[torch.Tensor], layout: str = "contiguous", dim: int = 2) -> torch.Tensor:
    """Put every rank's rows back in sequence order: the inverse of :func:`shard`."""
    world = len(shards)
    n = sum(s.shape[dim] for s in shards)
    order = torch.cat([positions(n, world, r, layout) for r in range(world)])
    out = torch.cat(shards, dim=dim)
    return out.index_select(dim, torch.argsort(order).to(out.device))


def holder(rank: int, step: int, world: int) -> int:
    """Whose K/V shard ``rank`` holds at ring step ``step``."""
    return (rank - step) % world


def causal_pairs(q_pos: torch.Tensor, k_pos: torch.Tensor) -> int:
    """How many (query, key) pairs with key position ≤ query position: the causal work."""
    ks = torch.sort(k_pos).values
    return int(torch.searchsorted(ks, q_pos, right=True).sum())


def work_matrix(n: int, world: int, layout: str = "contiguous", *, causal: bool = True) -> torch.Tensor:
    """[world ranks, world steps]: (query, key) pairs each rank attends at each step."""
    pos = [positions(n, world, r, layout) for r in range(world)]
    out = torch.zeros(world, world, dtype=torch.long)
    for r in range(world):
        for t in range(world):
            kp = pos[holder(r, t, world)]
            out[r, t] = causal_pairs(pos[r], kp) if causal else len(pos[r]) * len(kp)
    return out


def step_efficiency(work: torch.Tensor) -> float:
    """Useful work over the time the ring takes when every step lasts as long as its busiest
    rank: 1.0 is perfectly balanced."""
    per_step = work.max(dim=0).values.sum()
    return float(work.sum() / (work.shape[0] * per_step)) if per_step > 0 else 1.0
