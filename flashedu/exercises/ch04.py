"""Chapter 4's checkers."""
from __future__ import annotations

import torch

from flashedu.exercises._base import FAILED, attempt, report


def check_v2_traffic(fn, *, cases: int = 20, seed: int = 0) -> bool:
    """``fn(N, d, Br, Bc)`` must return v2's HBM (reads, writes) in elements for N a multiple of
    both blocks, as recorded by the memory model."""
    from flashedu.iomodel import formula

    g = torch.Generator().manual_seed(seed)
    failures = []
    for c in range(cases):
        br, bc = (16, 32, 64, 128)[c % 4], (16, 32, 64)[c % 3]
        N = int(torch.randint(1, 16, (1,), generator=g)) * max(br, bc)
        d = (16, 32, 64, 128)[c % 4]
        f = formula("v2", N=N, d=d, block_r=br, block_c=bc)
        want = (f.exact.reads, f.exact.writes)
        got = attempt(failures, f"N={N}, d={d}, Br={br}, Bc={bc}", lambda: tuple(fn(N, d, br, bc)))
        if got is FAILED:
            continue
        if got != want:
            failures.append(f"N={N}, d={d}, Br={br}, Bc={bc}: got {got}, the model recorded {want}")
    return report("v2 traffic", failures, cases)


def check_programs(fn, *, cases: int = 20, seed: int = 0) -> bool:
    """``fn(algorithm, batch, heads, N, block_r)`` must return how many programs (thread blocks)
    the kernel launches: v1 one per (batch, head), v2 one per (batch, head, Q block)."""
    from flashedu.iomodel.parallel import programs

    g = torch.Generator().manual_seed(seed)
    failures = []
    for c in range(cases):
        algorithm = ("v1", "v2")[c % 2]
        batch, heads = (int(x) for x in torch.randint(1, 17, (2,), generator=g))
        N = int(torch.randint(1, 20000, (1,), generator=g))
        block_r = (64, 128)[c % 2]
        want = programs(algorithm, batch=batch, heads=heads, N=N, block_r=block_r)
        got = attempt(failures, f"{algorithm}, B={batch}, H={heads}, N={N}", lambda: fn(algorithm, batch, heads, N, block_r))
        if got is FAILED:
            continue
        if got != want:
            failures.append(f"{algorithm}, B={batch}, H={heads}, N={N}, Br={block_r}: got {got}, expected {want}")
    return report("programs launched", failures, cases)
