"""Chapter 6's checkers."""
from __future__ import annotations

import torch

from ._base import FAILED, attempt, report


def check_exp_share(fn, *, cases: int = 20, seed: int = 0) -> bool:
    """``fn(d, matmul_flops, exp_rate)`` must return how long a tile's exponentials take relative
    to its two GEMMs (one exp per score against 4·d FLOPs per score)."""
    g = torch.Generator().manual_seed(seed)
    failures = []
    for _ in range(cases):
        d = int(2 ** torch.randint(4, 9, (1,), generator=g))
        matmul = float(torch.randint(50, 2000, (1,), generator=g)) * 1e12
        exp = float(torch.randint(1, 20, (1,), generator=g)) * 1e12
        want = matmul / (4 * d * exp)
        got = attempt(failures, f"d={d}", lambda: float(fn(d, matmul, exp)))
        if got is FAILED:
            continue
        if abs(got - want) > 1e-9 * want:
            failures.append(f"d={d}, matmul {matmul:.3g} FLOP/s, exp {exp:.3g}/s: got {got:.4g}, expected {want:.4g}")
    return report("exp share", failures, cases)


def check_fwht(fn, *, cases: int = 12, seed: int = 0) -> bool:
    """``fn(x)`` must return x @ H for the orthonormal Hadamard matrix H (the last dim of x a
    power of two), on inputs of any leading shape."""
    from ..fp8 import hadamard_matrix

    g = torch.Generator().manual_seed(seed)
    failures = []
    for c in range(cases):
        d = 2 ** (c % 8)
        x = torch.randn(3, 1 + c % 4, d, generator=g, dtype=torch.float64)
        want = x @ hadamard_matrix(d)
        got = attempt(failures, f"d={d}", lambda: fn(x.clone()))
        if got is FAILED:
            continue
        if not isinstance(got, torch.Tensor) or got.shape != want.shape:
            failures.append(f"d={d}: expected a tensor of shape {tuple(want.shape)}, got "
                            f"{getattr(got, 'shape', type(got).__name__)}")
        elif not torch.allclose(got.double(), want, atol=1e-6):
            failures.append(f"d={d}: max error {(got.double() - want).abs().max().item():.2e} (is it scaled by 1/√d?)")
    return report("fast Walsh–Hadamard transform", failures, cases)


def check_block_scales(fn, *, cases: int = 12, seed: int = 0) -> bool:
    """``fn(x, block)`` must return the e4m3 scales of ``x`` [B, H, N, D]: for each (b, h) and
    each tile of ``block`` rows (the last one may be short), max |x| / 448, shape [B, H, tiles]."""
    from ..fp8 import quantize

    g = torch.Generator().manual_seed(seed)
    failures = []
    for c in range(cases):
        N = int(torch.randint(1, 300, (1,), generator=g))
        block = (16, 32, 64, 128)[c % 4]
        x = torch.randn(2, 3, N, 32, generator=g) * (1 + 50 * (torch.rand(2, 3, N, 32, generator=g) < 0.01))
        want = quantize(x, block=block).scale
        got = attempt(failures, f"N={N}, block={block}", lambda: fn(x.clone(), block))
        if got is FAILED:
            continue
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(want.shape):
            failures.append(f"N={N}, block={block}: expected shape {tuple(want.shape)}, got "
                            f"{tuple(getattr(got, 'shape', ()))}")
        elif not torch.allclose(got.float(), want, rtol=1e-6):
            failures.append(f"N={N}, block={block}: scales differ by up to {(got.float() - want).abs().max().item():.2e}")
    return report("block scales", failures, cases)
