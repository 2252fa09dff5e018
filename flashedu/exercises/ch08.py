"""Chapter 8's checkers: counting what a benchmark divides by."""
from __future__ import annotations

import math

import torch

from flashedu.exercises._base import FAILED, attempt, report

PASS_NAMES = ("fwd", "bwd", "fwdbwd")


def check_attention_flops(fn, *, cases: int = 30, seed: int = 0) -> bool:
    """``fn(pass_, B, H, N, D, causal)`` must return the matmul FLOPs of one pass ("fwd",
    "bwd" or "fwdbwd") as the FlashAttention papers count them."""
    from flashedu.bench.flops import attention_flops

    g = torch.Generator().manual_seed(seed)
    failures = []
    for c in range(cases):
        pass_ = PASS_NAMES[c % 3]
        causal = bool(c % 2)
        B, H = (int(x) for x in torch.randint(1, 33, (2,), generator=g))
        N = int(torch.randint(1, 65, (1,), generator=g)) * 256
        D = (32, 64, 128, 256)[c % 4]
        want = attention_flops(pass_, B=B, H=H, N=N, D=D, causal=causal)
        try:
            got = fn(pass_, B, H, N, D, causal)
        except Exception as exc:
            failures.append(f"{pass_}, B={B}, H={H}, N={N}, D={D}, causal={causal}: raised "
                            f"{type(exc).__name__}: {exc}")
            continue
        if not isinstance(got, (int, float)) or not math.isclose(got, want, rel_tol=1e-9):
            failures.append(f"{pass_}, B={B}, H={H}, N={N}, D={D}, causal={causal}: got {got!r}, "
                            f"expected {want:.6g}")
    return report("attention FLOPs", failures, cases)


def check_naive_memory(fn, *, cases: int = 20, seed: int = 0) -> bool:
    """``fn(B, H, N)`` must return the bytes the benchmark budgets for naive torch attention's
    forward + backward: 16 bytes per score of the B·H·N×N score matrices (S in fp16, its fp32
    copy and softmax, P in fp16)."""
    from flashedu.bench.cases import make_case
    from flashedu.bench.providers import SCORE_BYTES

    g = torch.Generator().manual_seed(seed)
    failures = []
    for _ in range(cases):
        B, H = (int(x) for x in torch.randint(1, 65, (2,), generator=g))
        N = int(torch.randint(1, 129, (1,), generator=g)) * 128
        case = make_case(dtype="fp16", D=64, causal=False, N=N, tokens=B * N, hidden=64 * H)
        want = case.B * case.H * N * N * SCORE_BYTES["standard_torch"][1]
        got = attempt(failures, f"B={B}, H={H}, N={N}", lambda: fn(B, H, N))
        if got is FAILED:
            continue
        if got != want:
            failures.append(f"B={B}, H={H}, N={N}: got {got!r}, expected {want}")
    return report("naive attention memory", failures, cases)
