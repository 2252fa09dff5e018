"""The softmax state of a query row over some set of keys, and the merge operator ⊕.

For logits s_j and values v_j over a set of keys J, the state is

    m = max_j s_j,    ℓ = Σ_j exp(s_j - m),    o = Σ_j exp(s_j - m) v_j      (o unnormalised)

and attention over J is o / ℓ. Two states over disjoint key sets J₁, J₂ merge into the state over
J₁ ∪ J₂ without seeing a single logit again:

    m = max(m₁, m₂),   ℓ = ℓ₁ e^{m₁-m} + ℓ₂ e^{m₂-m},   o = o₁ e^{m₁-m} + o₂ e^{m₂-m}.

⊕ is associative and commutative with identity (−∞, 0, 0), so key blocks can be visited in any
order and grouping: one after another inside a kernel (v2), by different programs (split-KV), or on
different GPUs (ring attention).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import reduce

import torch


@dataclass(frozen=True)
class State:
    m: torch.Tensor  # [..., R, 1]  running max of each row's logits
    l: torch.Tensor  # [..., R, 1]  sum of exp(logit - m)
    o: torch.Tensor  # [..., R, D]  sum of exp(logit - m) · v, not yet divided by l


def finite_or_zero(m: torch.Tensor) -> torch.Tensor:
    """A row max to subtract before exp. exp(-inf - (-inf)) is NaN; a state over no keys (or
    only masked ones) has m = -inf and must contribute exp(-inf) = 0, so shift by 0 instead."""
    return torch.where(torch.isfinite(m), m, torch.zeros_like(m))


def nonzero_or_one(l: torch.Tensor) -> torch.Tensor:
    """A denominator: ℓ = 0 (no unmasked key; its numerator is 0 too) becomes 1, so the row is 0."""
    return torch.where(l > 0, l, torch.ones_like(l))


def empty_state(shape, d: int, *, dtype=torch.float32, device=None) -> State:
    """The identity of ⊕: the state over no keys."""
    return State(torch.full((*shape, 1), -math.inf, dtype=dtype, device=device),
                 torch.zeros((*shape, 1), dtype=dtype, device=device),
                 torch.zeros((*shape, d), dtype=dtype, device=device))


def state_of_block(s: torch.Tensor, v: torch.Tensor) -> State:
    """State of the logits ``s`` [..., R, n] of R query rows against n keys with values
    ``v`` [..., n, D]; the rows share the values, as query rows do in attention. Masked logits
    are -inf."""
    m = s.amax(dim=-1, keepdim=True)
    p = torch.exp(s - finite_or_zero(m))
    return State(m, p.sum(dim=-1, keepdim=True), p @ v)


def merge(a: State, b: State) -> State:
    """a ⊕ b: the state over the union of the two (disjoint) key sets."""
    m = torch.maximum(a.m, b.m)
    ms = finite_or_zero(m)
    alpha, beta = torch.exp(a.m - ms), torch.exp(b.m - ms)
    return State(m, a.l * alpha + b.l * beta, a.o * alpha + b.o * beta)


def merge_all(states) -> State:
    """Left fold of ⊕ over an iterable of states (order and grouping do not matter)."""
    return reduce(merge, states)


def finalize(state: State) -> torch.Tensor:
    """o / ℓ; a row that saw no unmasked key (ℓ = 0) gives 0, not NaN."""
    return state.o / nonzero_or_one(state.l)
