"""Checkers for the chapters' exercises: each runs hidden random cases against the reader's
function and says what is wrong, or that every case passed. They return True/False (and print),
so a notebook can ``assert check_x(my_fn)``."""
from __future__ import annotations

import math

import torch

from .softmax.state import State, empty_state, merge, state_of_block


def _report(name: str, failures: list[str], n_cases: int) -> bool:
    if failures:
        print(f"✗ {name}: {len(failures)} of {n_cases} cases wrong. First: {failures[0]}")
        return False
    print(f"✓ {name}: all {n_cases} cases pass.")
    return True


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
        try:
            got = _as_state(fn(a, b))
        except Exception as exc:  # the reader's code raised: say so, as a failure
            failures.append(f"case {c}: raised {type(exc).__name__}: {exc}")
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
    return _report("merge", failures, cases)


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
        try:
            got = fn(x.clone())
        except Exception as exc:
            failures.append(f"case {c}: raised {type(exc).__name__}: {exc}")
            continue
        if not isinstance(got, torch.Tensor) or got.shape != want.shape:
            failures.append(f"case {c}: expected a tensor of shape {tuple(want.shape)}")
        elif torch.isnan(got).any():
            kind = "a fully masked row" if c % 4 == 2 else "huge logits" if c % 4 == 1 else "ordinary logits"
            failures.append(f"case {c}: NaN in the output ({kind})")
        elif not torch.allclose(got, want, atol=1e-9):
            failures.append(f"case {c}: differs from softmax by {(got - want).abs().max().item():.3g}")
    return _report("softmax", failures, cases)


def check_s_and_p_bytes(fn, *, cases: int = 12, seed: int = 0) -> bool:
    """``fn(N, heads, itemsize)`` must return the bytes that standard attention writes to HBM for
    S and P together (one batch), checked against the memory model's recording."""
    from .iomodel import simulate

    g = torch.Generator().manual_seed(seed)
    dtypes = {2: torch.float16, 4: torch.float32}
    failures = []
    for c in range(cases):
        N = int(torch.randint(1, 600, (1,), generator=g))
        heads = int(torch.randint(1, 17, (1,), generator=g))
        itemsize = (2, 4)[c % 2]
        r = simulate("standard", N=N, d=16, heads=heads, dtype=dtypes[itemsize])
        want = r.per_tensor["S"].write_bytes + r.per_tensor["P"].write_bytes
        try:
            got = fn(N, heads, itemsize)
        except Exception as exc:
            failures.append(f"N={N}, heads={heads}, itemsize={itemsize}: raised {type(exc).__name__}: {exc}")
            continue
        if got != want:
            failures.append(f"N={N}, heads={heads}, itemsize={itemsize}: got {got}, the model recorded {want}")
    return _report("bytes of S and P", failures, cases)


def check_fa1_blocks(fn, *, cases: int = 30, seed: int = 0) -> bool:
    """``fn(M, d)`` must return FlashAttention's (Br, Bc) for an SRAM of M elements
    (Algorithm 1, line 1)."""
    from .iomodel import fa1_block_sizes

    g = torch.Generator().manual_seed(seed)
    failures = []
    for c in range(cases):
        M = int(torch.randint(256, 300_000, (1,), generator=g))
        d = (16, 32, 64, 128, 256)[c % 5]
        want = fa1_block_sizes(M, d)
        try:
            got = tuple(fn(M, d))
        except Exception as exc:
            failures.append(f"M={M}, d={d}: raised {type(exc).__name__}: {exc}")
            continue
        if got != want:
            failures.append(f"M={M}, d={d}: got (Br, Bc) = {got}, expected {want}")
    return _report("FlashAttention block sizes", failures, cases)


def check_v1_traffic(fn, *, cases: int = 20, seed: int = 0) -> bool:
    """``fn(N, d, Br, Bc)`` must return v1's exact HBM (reads, writes) in elements, for N a
    multiple of both blocks: seed 001's terms plus the ones it drops (the chapter's note)."""
    from .iomodel import formula

    g = torch.Generator().manual_seed(seed)
    failures = []
    for c in range(cases):
        br, bc = (16, 32, 64)[c % 3], (16, 32, 64, 128)[c % 4]
        N = int(torch.randint(1, 20, (1,), generator=g)) * max(br, bc) * (2 if br != bc else 1)
        d = (16, 32, 64)[c % 3]
        f = formula("v1", N=N, d=d, block_r=br, block_c=bc)
        want = (f.exact.reads, f.exact.writes)
        try:
            got = tuple(fn(N, d, br, bc))
        except Exception as exc:
            failures.append(f"N={N}, d={d}, Br={br}, Bc={bc}: raised {type(exc).__name__}: {exc}")
            continue
        if got != want:
            hint = " (that is the seed's formula: add what it drops)" if got == (f.seed.reads, f.seed.writes) else ""
            failures.append(f"N={N}, d={d}, Br={br}, Bc={bc}: got {got}, the model recorded {want}{hint}")
    return _report("v1 traffic", failures, cases)


def check_v2_traffic(fn, *, cases: int = 20, seed: int = 0) -> bool:
    """``fn(N, d, Br, Bc)`` must return v2's HBM (reads, writes) in elements for N a multiple of
    both blocks, as recorded by the memory model."""
    from .iomodel import formula

    g = torch.Generator().manual_seed(seed)
    failures = []
    for c in range(cases):
        br, bc = (16, 32, 64, 128)[c % 4], (16, 32, 64)[c % 3]
        N = int(torch.randint(1, 16, (1,), generator=g)) * max(br, bc)
        d = (16, 32, 64, 128)[c % 4]
        f = formula("v2", N=N, d=d, block_r=br, block_c=bc)
        want = (f.exact.reads, f.exact.writes)
        try:
            got = tuple(fn(N, d, br, bc))
        except Exception as exc:
            failures.append(f"N={N}, d={d}, Br={br}, Bc={bc}: raised {type(exc).__name__}: {exc}")
            continue
        if got != want:
            failures.append(f"N={N}, d={d}, Br={br}, Bc={bc}: got {got}, the model recorded {want}")
    return _report("v2 traffic", failures, cases)


def check_programs(fn, *, cases: int = 20, seed: int = 0) -> bool:
    """``fn(algorithm, batch, heads, N, block_r)`` must return how many programs (thread blocks)
    the kernel launches: v1 one per (batch, head), v2 one per (batch, head, Q block)."""
    from .iomodel.parallel import programs

    g = torch.Generator().manual_seed(seed)
    failures = []
    for c in range(cases):
        algorithm = ("v1", "v2")[c % 2]
        batch, heads = (int(x) for x in torch.randint(1, 17, (2,), generator=g))
        N = int(torch.randint(1, 20000, (1,), generator=g))
        block_r = (64, 128)[c % 2]
        want = programs(algorithm, batch=batch, heads=heads, N=N, block_r=block_r)
        try:
            got = fn(algorithm, batch, heads, N, block_r)
        except Exception as exc:
            failures.append(f"{algorithm}, B={batch}, H={heads}, N={N}: raised {type(exc).__name__}: {exc}")
            continue
        if got != want:
            failures.append(f"{algorithm}, B={batch}, H={heads}, N={N}, Br={block_r}: got {got}, expected {want}")
    return _report("programs launched", failures, cases)
