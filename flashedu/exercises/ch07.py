"""Chapter 7's checkers: merging split states, the zig-zag layout, the overlap threshold."""
from __future__ import annotations

import math

import torch

from flashedu.exercises._base import FAILED, attempt, report


def check_merge_splits(fn, *, cases: int = 12, seed: int = 0) -> bool:
    """``fn(m, l, o)`` gets S partial states of R rows, m and l ``[S, R]``, o ``[S, R, D]``
    (unnormalised; a split over no keys has m = -inf, l = 0, o = 0) and must return the
    attention output ``[R, D]`` over all the splits' keys."""
    from flashedu.softmax.state import State, finalize, merge_all

    g = torch.Generator().manual_seed(seed)
    failures = []
    for c in range(cases):
        S, R, D = 1 + c % 5, 1 + c % 3, (4, 8, 16)[c % 3]
        m = torch.randn(S, R, generator=g, dtype=torch.float64) * 20  # spreads that overflow exp()
        l = torch.rand(S, R, generator=g, dtype=torch.float64) * 5 + 1
        o = torch.randn(S, R, D, generator=g, dtype=torch.float64) * l[..., None]
        if S > 1 and c % 2:  # an empty split: the identity of ⊕
            m[0], l[0], o[0] = -math.inf, 0.0, 0.0
        want = finalize(merge_all(State(m[s, :, None], l[s, :, None], o[s]) for s in range(S)))
        got = attempt(failures, f"S={S}, R={R}, D={D}", lambda: torch.as_tensor(fn(m.clone(), l.clone(), o.clone()), dtype=torch.float64))
        if got is FAILED:
            continue
        if got.shape != want.shape or not torch.allclose(got, want, atol=1e-9, rtol=1e-9):
            failures.append(f"S={S}, R={R}, D={D}: wrong output (shape {tuple(got.shape)}, "
                            f"max error {(got - want).abs().max().item() if got.shape == want.shape else 'n/a'})")
    return report("merge of split states", failures, cases)


def check_zigzag(fn, *, cases: int = 15, seed: int = 0) -> bool:
    """``fn(N, P, rank)`` must return the token positions rank ``rank`` holds in the zig-zag
    layout of N tokens over P ranks (N a multiple of 2P): chunks ``rank`` and ``2P-1-rank`` of
    2P equal chunks, in increasing order."""
    from flashedu.ops.ring.layout import positions

    g = torch.Generator().manual_seed(seed)
    failures = []
    for c in range(cases):
        P = int(torch.randint(1, 9, (1,), generator=g))
        N = 2 * P * int(torch.randint(1, 6, (1,), generator=g))
        rank = c % P
        want = positions(N, P, rank, "zigzag").tolist()
        got = attempt(failures, f"N={N}, P={P}, rank={rank}", lambda: [int(x) for x in fn(N, P, rank)])
        if got is FAILED:
            continue
        if got != want:
            failures.append(f"N={N}, P={P}, rank={rank}: got {got}, expected {want}")
    return report("zig-zag positions", failures, cases)


def check_overlap_threshold(fn, *, cases: int = 12, seed: int = 0) -> bool:
    """``fn(heads, kv_heads, bytes_per_element, flops, bandwidth, causal)`` must return the
    tokens per rank n at which one ring step's compute (4·H·n²·d FLOPs at ``flops`` FLOP/s,
    half when causal) equals the time to send one K/V shard (2·H_kv·n·d elements at
    ``bandwidth`` bytes/s)."""
    g = torch.Generator().manual_seed(seed)
    failures = []
    for c in range(cases):
        heads = (8, 16, 32, 64)[c % 4]
        kv = heads // (1, 2, 4, 8)[int(torch.randint(0, 4, (1,), generator=g))]
        e = (1, 2, 4)[c % 3]
        flops = float(torch.randint(100, 2000, (1,), generator=g)) * 1e12
        bw = float(torch.randint(25, 900, (1,), generator=g)) * 1e9
        causal = bool(c % 2)
        want = kv * e * flops / (2 * (0.5 if causal else 1.0) * heads * bw)
        got = attempt(failures, f"case {c}", lambda: float(fn(heads, kv, e, flops, bw, causal)))
        if got is FAILED:
            continue
        if not math.isclose(got, want, rel_tol=1e-6):
            failures.append(f"H={heads}, H_kv={kv}, {e} B/element, {flops:.3g} FLOP/s, {bw:.3g} B/s, "
                            f"causal={causal}: got {got:.4g}, expected {want:.4g}")
    return report("overlap threshold", failures, cases)
