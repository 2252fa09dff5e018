"""Chapter 6's checkers."""
from __future__ import annotations

import torch

from flashedu.exercises._base import FAILED, attempt, report


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
    from flashedu.ops.fp8 import hadamard_matrix

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
    from flashedu.ops.fp8 import quantize

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


def check_descale_fold(fn, *, cases: int = 12, seed: int = 0) -> bool:
    """``fn(acc, u, alpha, pv, s_v)`` must return ``(acc_new, u_new)``: the running output kept in
    units of one V descale (the true sum is acc·u), updated for a tile whose rows are rescaled by
    ``alpha`` [rows] and whose product ``pv`` [rows, d] carries descale ``s_v``. The tensor core
    adds ``pv`` as it is, so acc_new must be (a per-row rescale of acc) + pv, and over a run of
    tiles acc·u must equal Σ_j (Π_{i>j} α_i) · s_vj · pv_j."""
    g = torch.Generator().manual_seed(seed)
    failures = []
    for c in range(cases):
        rows, d, tiles = 1 + c % 5, 4 + c % 3, 2 + c % 4
        acc, u = torch.zeros(rows, d, dtype=torch.float64), 1.0
        want = torch.zeros(rows, d, dtype=torch.float64)
        for t in range(tiles):
            alpha = torch.rand(rows, generator=g, dtype=torch.float64) + 0.05
            pv = torch.randn(rows, d, generator=g, dtype=torch.float64)
            s_v = float(torch.rand(1, generator=g)) * 10 + 0.01
            want = want * alpha[:, None] + s_v * pv
            got = attempt(failures, f"case {c}, tile {t}", lambda: fn(acc.clone(), u, alpha.clone(), pv.clone(), s_v))
            if got is FAILED:
                break
            new_acc, new_u = got
            if not torch.allclose(new_acc - pv, acc * (alpha * (u / s_v))[:, None], rtol=1e-9, atol=1e-12):
                failures.append(f"case {c}, tile {t}: acc_new - pv is not acc rescaled by α·u/s_v per row "
                                "(the tensor core adds pv unscaled)")
                break
            acc, u = new_acc, float(new_u)
        else:
            if not torch.allclose(acc * u, want, rtol=1e-9, atol=1e-12):
                failures.append(f"case {c}: acc·u differs from the true sum by {(acc * u - want).abs().max().item():.2e}")
    return report("descale fold", failures, cases)


def check_timeline_stats(fn, *, cases: int = 12, seed: int = 0) -> bool:
    """``fn(iterations)`` takes one warpgroup's stamped loop iterations (dicts with the times in
    ns of "turn", "issued", "s_ready", "softmax_done", "o_ready", as in a recorded
    ``fa3_timeline`` run) and must return ``(period, softmax_share)``: the median time from one
    iteration's "turn" to the next's, and the median softmax ("s_ready" to "softmax_done") over
    that period."""
    from statistics import median

    g = torch.Generator().manual_seed(seed)
    failures = []
    for c in range(cases):
        n = 3 + c % 6
        t, its = float(torch.randint(0, 5000, (1,), generator=g)), []
        for _ in range(n):
            issue, wait_s, soft, wait_o, rest = (float(x) for x in
                                                 torch.randint(10, 900, (5,), generator=g))
            it = {"turn": t, "issued": t + issue, "s_ready": t + issue + wait_s}
            it["softmax_done"] = it["s_ready"] + soft
            it["o_ready"] = it["softmax_done"] + wait_o
            its.append(it)
            t = it["o_ready"] + rest
        period = median(b["turn"] - a["turn"] for a, b in zip(its, its[1:]))
        share = median(i["softmax_done"] - i["s_ready"] for i in its) / period
        got = attempt(failures, f"{n} iterations",
                      lambda: tuple(map(float, fn([dict(i) for i in its]))))
        if got is FAILED:
            continue
        if len(got) != 2 or abs(got[0] - period) > 1e-6 * period or abs(got[1] - share) > 1e-6:
            failures.append(f"{n} iterations: got {got}, expected ({period:.1f}, {share:.4f}) "
                            "(medians: of turn-to-turn gaps, and of softmax lengths over it)")
    return report("timeline statistics", failures, cases)
