"""Chapter 3's checkers."""
from __future__ import annotations

import torch

from flashedu.exercises._base import FAILED, attempt, report


def check_fa1_blocks(fn, *, cases: int = 30, seed: int = 0) -> bool:
    """``fn(M, d)`` must return FlashAttention's (Br, Bc) for an SRAM of M elements
    (Algorithm 1, line 1)."""
    from flashedu.iomodel import fa1_block_sizes

    g = torch.Generator().manual_seed(seed)
    failures = []
    for c in range(cases):
        M = int(torch.randint(256, 300_000, (1,), generator=g))
        d = (16, 32, 64, 128, 256)[c % 5]
        want = fa1_block_sizes(M, d)
        got = attempt(failures, f"M={M}, d={d}", lambda: tuple(fn(M, d)))
        if got is FAILED:
            continue
        if got != want:
            failures.append(f"M={M}, d={d}: got (Br, Bc) = {got}, expected {want}")
    return report("FlashAttention block sizes", failures, cases)


def check_v1_traffic(fn, *, cases: int = 20, seed: int = 0) -> bool:
    """``fn(N, d, Br, Bc)`` must return v1's exact HBM (reads, writes) in elements, for N a
    multiple of both blocks: seed 001's terms plus the ones it drops (the chapter's note)."""
    from flashedu.iomodel import formula

    g = torch.Generator().manual_seed(seed)
    failures = []
    for c in range(cases):
        br, bc = (16, 32, 64)[c % 3], (16, 32, 64, 128)[c % 4]
        N = int(torch.randint(1, 20, (1,), generator=g)) * max(br, bc) * (2 if br != bc else 1)
        d = (16, 32, 64)[c % 3]
        f = formula("v1", N=N, d=d, block_r=br, block_c=bc)
        want = (f.exact.reads, f.exact.writes)
        got = attempt(failures, f"N={N}, d={d}, Br={br}, Bc={bc}", lambda: tuple(fn(N, d, br, bc)))
        if got is FAILED:
            continue
        if got != want:
            hint = " (that is the seed's formula: add what it drops)" if got == (f.seed.reads, f.seed.writes) else ""
            failures.append(f"N={N}, d={d}, Br={br}, Bc={bc}: got {got}, the model recorded {want}{hint}")
    return report("v1 traffic", failures, cases)
