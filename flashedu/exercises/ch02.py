"""Chapter 2's checkers."""
from __future__ import annotations

import math

import torch

from flashedu.softmax.state import State, empty_state, merge, state_of_block
from flashedu.exercises._base import FAILED, attempt, report


def _as_state(out) -> State:
    if isinstance(out, State):
        return out
    m, l, o = out
    return State(m, l, o)


def check_merge(fn, *, cases: int = 40, seed: int = 0) -> bool:
    """``fn(a, b)`` must return the state over both key sets (a State or an (m, l, o) tuple).
    Cases include a state over no keys and a fully masked row (m = -inf), which must not give NaN."""
    g = torch.Generator().manual_seed(seed)
    failures = []
    for c in range(cases):
        n1, n2 = (int(x) for x in torch.randint(1, 20, (2,), generator=g))
        s = torch.randn(3, n1 + n2, generator=g, dtype=torch.float64) * 4
        v = torch.randn(n1 + n2, 5, generator=g, dtype=torch.float64)
        if c % 10 == 4:
            s[1] = -math.inf  # a fully masked row: m = -inf in both states
        a, b = state_of_block(s[:, :n1], v[:n1]), state_of_block(s[:, n1:], v[n1:])
        if c % 10 == 9:
            b = empty_state((3,), 5, dtype=torch.float64)
        want = merge(a, b)
        got = attempt(failures, f"case {c}", lambda: _as_state(fn(a, b)))
        if got is FAILED:
            continue
        for field in ("m", "l", "o"):
            w, x = getattr(want, field), getattr(got, field)
            if x.shape != w.shape:
                failures.append(f"case {c}: {field} has shape {tuple(x.shape)}, expected {tuple(w.shape)}")
                break
            if torch.isnan(x).any():
                why = {9: " (b is the empty state, m = -inf)", 4: " (row 1 is fully masked, m = -inf in a and b)"}
                failures.append(f"case {c}: {field} contains NaN" + why.get(c % 10, ""))
                break
            if not torch.allclose(x, w, atol=1e-9, rtol=1e-9):
                failures.append(f"case {c}: {field} differs by {(x - w).abs().max().item():.3g}")
                break
    return report("merge", failures, cases)


def check_softmax(fn, *, cases: int = 40, seed: int = 0) -> bool:
    """``fn(x)`` must return softmax over the last dim of a 2-d float64 tensor, including rows of
    huge logits (±1e4) and fully masked rows (all -inf), which must give zeros."""
    g = torch.Generator().manual_seed(seed)
    failures = []
    for c in range(cases):
        rows, n = (int(x) for x in torch.randint(1, 40, (2,), generator=g))
        x = torch.randn(rows, n, generator=g, dtype=torch.float64) * (1e4 if c % 4 == 1 else 3)
        if c % 4 == 2:
            x[0] = -math.inf
        want = torch.softmax(x, -1).nan_to_num(0.0)
        got = attempt(failures, f"case {c}", lambda: fn(x.clone()))
        if got is FAILED:
            continue
        if not isinstance(got, torch.Tensor) or got.shape != want.shape:
            failures.append(f"case {c}: expected a tensor of shape {tuple(want.shape)}")
        elif torch.isnan(got).any():
            kind = "a fully masked row" if c % 4 == 2 else "huge logits" if c % 4 == 1 else "ordinary logits"
            failures.append(f"case {c}: NaN in the output ({kind})")
        elif not torch.allclose(got, want, atol=1e-9):
            failures.append(f"case {c}: differs from softmax by {(got - want).abs().max().item():.3g}")
    return report("softmax", failures, cases)
