"""Lab 1's grader: online softmax, ``fn(x, block) -> softmax(x, dim=-1)`` for a 2-d fp64 x,
one pass over column blocks for the running (m, ℓ), then a pass to normalise.

Cases: one column, N not a multiple of the block, N = 1000, logits near ±1e4, fully masked
rows (all −inf: 0, not NaN), rows whose first block is masked, and rows whose max sits in the
first block beside rows whose max comes later, so a missing rescale shows as a split by row.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from flashedu.labs.cases import raised, wrong_shape
from flashedu.labs.evidence import bad_rows, close, grows_after_first_block, max_error, online_softmax, spans
from flashedu.labs.report import CaseResult

NAME = "online_softmax"
TOL = 1e-9


@dataclass(frozen=True)
class Case:
    name: str
    x: torch.Tensor  # [R, N] fp64
    block: int
    huge: bool = False


def cases(g: torch.Generator) -> list[Case]:
    def logits(R, N, spread=3.0):
        x = torch.randn(R, N, generator=g, dtype=torch.float64) * spread
        x[::2, 0] += 10.0 * spread  # even rows: the max is in the first block
        return x

    masked = logits(12, 50)
    masked[1] = -math.inf  # a fully masked row
    masked[3, :16] = -math.inf  # the first block masked, later blocks not
    masked[5, 20:] = -math.inf  # a masked tail
    return [
        Case("one column", logits(4, 1), 4),
        Case("N < block", logits(6, 7), 16),
        Case("N = 7, block 4", logits(16, 7), 4),
        Case("N a multiple", logits(32, 128), 32),
        Case("N = 129", logits(48, 129), 32),
        Case("masked rows", masked, 16),
        Case("logits ±1e4", logits(16, 100, spread=1e4), 16, huge=True),
        Case("N = 1000", logits(32, 1000), 64),
    ]


def _diagnose(got: torch.Tensor, case: Case) -> str:
    x, b = case.x, case.block
    want = torch.softmax(x, -1).nan_to_num(0.0)
    all_masked = torch.isneginf(x).all(-1)
    first_masked = torch.isneginf(x[:, :b]).all(-1) & ~all_masked
    nan = torch.isnan(got).any(-1)
    if nan.any():
        if nan[all_masked].all() and all_masked.any() and not nan[~all_masked].any():
            return (f"row(s) {spans(torch.nonzero(all_masked).flatten())} are fully masked (every logit −inf) "
                    "and come out NaN; they must be 0: with m = −inf, use 0 instead of m before exp, "
                    "and divide by 1 where ℓ = 0")
        if first_masked.any() and nan[first_masked].all() and not nan[~first_masked & ~all_masked].any():
            return (f"row(s) {spans(torch.nonzero(first_masked).flatten())} have a fully masked first block "
                    "and come out NaN: while m_old = −inf the rescale e^(m_old − m_new) must be 0, "
                    "not exp(−inf − (−inf)) = NaN")
        if case.huge:
            return ("NaN or inf with logits near ±1e4: e^x overflows; subtract the running max m "
                    "before exp, and rescale ℓ by e^(m_old − m_new) when m grows")
        return f"NaN in rows {spans(torch.nonzero(nan).flatten())}"
    if not torch.isfinite(got).all():
        return "inf in the output: e^x overflows; subtract the running max before exp"
    s = x
    if close(got, online_softmax(s, block=b, rescale=False), 1e-7):
        grow = grows_after_first_block(s, b)
        wrong = bad_rows(got, want, TOL)
        return (f"rows whose max changes after the first block are wrong ({int(wrong.sum())} rows, "
                f"e.g. {spans(torch.nonzero(wrong).flatten()[:5])}; all {int((~grow).sum())} rows whose max "
                "is in the first block are right): the running sum is not rescaled by "
                "e^(m_old − m_new) when m grows")
    if close(got, online_softmax(s, block=b, last_block=False), 1e-7) and x.shape[1] % b:
        return (f"N = {x.shape[1]} is not a multiple of the block ({b}), and the last, short block "
                "is left out of m and ℓ: loop over ⌈N/block⌉ blocks, the last one ending at N")
    sums = got.sum(-1)
    ratio = got / want.where(want > 0, torch.ones_like(want))
    live = want > 1e-12
    if not close(sums[~all_masked], torch.ones_like(sums[~all_masked]), 1e-6):
        per_row = [ratio[r][live[r]] for r in range(len(ratio))]
        constant = all(p.numel() == 0 or (p.max() - p.min()) <= 1e-6 * p.abs().max() for p in per_row)
        if constant:
            r = int(torch.nonzero(bad_rows(got, want, TOL)).flatten()[0])
            return (f"each row is off by a constant factor (row {r} sums to "
                    f"{sums[r].item():.4g}, not 1): the final divide by ℓ is missing or uses "
                    "a ℓ that is not the whole row's sum")
    wrong = torch.nonzero(bad_rows(got, want, TOL)).flatten()
    cols = torch.nonzero(bad_rows(got.T, want.T, TOL)).flatten()
    return (f"rows {spans(wrong)} are wrong in columns {spans(cols)} "
            f"(max error {max_error(got, want):.2g})")


def run(fn, case: Case) -> CaseResult:
    R, N = case.x.shape
    meta = dict(name=case.name, shape=f"[{R}, {N}] block {case.block}", causal=None, dtype="float64")
    try:
        got = fn(case.x.clone(), case.block)
    except Exception as exc:  # noqa: BLE001  (the reader's error is this case's verdict)
        return raised(exc, **meta)
    bad = wrong_shape(got, case.x.shape, **meta)
    if bad:
        return bad
    got = got.detach().to("cpu", torch.float64)
    want = torch.softmax(case.x, -1).nan_to_num(0.0)
    err = max_error(got, want)
    if err <= TOL:
        return CaseResult(**meta, max_error=err, passed=True)
    return CaseResult(**meta, max_error=err, passed=False, diagnosis=_diagnose(got, case))
