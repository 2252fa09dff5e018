"""Chapter 1's checkers."""
from __future__ import annotations

import torch

from flashedu.exercises._base import FAILED, attempt, report


def check_s_and_p_bytes(fn, *, cases: int = 12, seed: int = 0) -> bool:
    """``fn(N, heads, itemsize)`` must return the bytes that standard attention writes to HBM for
    S and P together (one batch), checked against the memory model's recording."""
    from flashedu.iomodel import simulate

    g = torch.Generator().manual_seed(seed)
    dtypes = {2: torch.float16, 4: torch.float32}
    failures = []
    for c in range(cases):
        N = int(torch.randint(1, 600, (1,), generator=g))
        heads = int(torch.randint(1, 17, (1,), generator=g))
        itemsize = (2, 4)[c % 2]
        r = simulate("standard", N=N, d=16, heads=heads, dtype=dtypes[itemsize])
        want = r.per_tensor["S"].write_bytes + r.per_tensor["P"].write_bytes
        got = attempt(failures, f"N={N}, heads={heads}, itemsize={itemsize}", lambda: fn(N, heads, itemsize))
        if got is FAILED:
            continue
        if got != want:
            failures.append(f"N={N}, heads={heads}, itemsize={itemsize}: got {got}, the model recorded {want}")
    return report("bytes of S and P", failures, cases)
