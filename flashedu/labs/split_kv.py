"""Lab 6's grader: merge the partial states of split-KV decoding (Dao et al., flash-decoding).

``fn(o, m, l) -> out`` gets S partial states of R query rows: ``o`` [S, R, D] unnormalised
(Σ e^(s − m_s) v over split s's keys), ``m``, ``l`` [S, R]; it returns attention over all the
keys, [R, D]. Cases: one split, many splits, maxima spread far apart (e^m overflows fp64 beyond
709), empty splits (m = −inf, ℓ = 0, o = 0: the identity of ⊕), and a row no split saw (0).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from flashedu.labs.cases import raised, wrong_shape
from flashedu.labs.evidence import bad_rows, close, max_error, spans
from flashedu.labs.report import CaseResult
from flashedu.softmax.state import State, finalize, merge_all, nonzero_or_one

NAME = "split_kv"
TOL = 1e-9


@dataclass(frozen=True)
class Case:
    name: str
    o: torch.Tensor  # [S, R, D]
    m: torch.Tensor  # [S, R]
    l: torch.Tensor  # [S, R]
    empty_splits: bool = False
    empty_rows: tuple[int, ...] = ()
    spread: float = 1.0


def _states(g, S, R, D, spread):
    m = torch.randn(S, R, generator=g, dtype=torch.float64) * spread
    l = torch.rand(S, R, generator=g, dtype=torch.float64) * 5 + 1
    o = torch.randn(S, R, D, generator=g, dtype=torch.float64) * l[..., None]
    return o, m, l


def cases(g: torch.Generator) -> list[Case]:
    out = []
    for name, S, R, D, spread in (("one split", 1, 7, 16, 3.0), ("two splits", 2, 1, 64, 3.0),
                                  ("5 splits", 5, 33, 32, 3.0), ("16 splits", 16, 9, 128, 5.0),
                                  ("maxima ±1e4", 4, 17, 64, 1e4)):
        out.append(Case(name, *_states(g, S, R, D, spread), spread=spread))
    o, m, l = _states(g, 6, 12, 16, 3.0)
    m[1], l[1], o[1] = -math.inf, 0.0, 0.0  # a split over no keys
    m[4, ::3], l[4, ::3], o[4, ::3] = -math.inf, 0.0, 0.0
    out.append(Case("empty splits", o, m, l, empty_splits=True))
    o, m, l = _states(g, 3, 8, 16, 3.0)
    m[:, 5], l[:, 5], o[:, 5] = -math.inf, 0.0, 0.0  # row 5: no split saw a key
    out.append(Case("a row with no key", o, m, l, empty_splits=True, empty_rows=(5,)))
    return out


def truth(o, m, l) -> torch.Tensor:
    return finalize(merge_all(State(m[s, :, None], l[s, :, None], o[s]) for s in range(o.shape[0])))


def _diagnose(got: torch.Tensor, case: Case) -> str:
    o, m, l = case.o, case.m, case.l
    want = truth(o, m, l)
    nan = torch.isnan(got).any(-1)
    if nan.any():
        if case.empty_rows and set(torch.nonzero(nan).flatten().tolist()) == set(case.empty_rows):
            return (f"row {spans(case.empty_rows)}, which no split saw (m = −inf, ℓ = 0 in every split), "
                    "comes out NaN; it must be 0: divide by 1 where the merged ℓ is 0")
        if case.empty_splits:
            return ("NaN where a split is empty (m = −inf, ℓ = 0, o = 0): its weight e^(m_s − m) must be 0, "
                    "but exp(−inf − (−inf)) is NaN; take the weight as 0 when m_s = −inf")
        return (f"NaN in rows {spans(torch.nonzero(nan).flatten())} with maxima up to |m| = "
                f"{m[torch.isfinite(m)].abs().max().item():.3g}: e^(m_s) overflows; weigh each split "
                "by e^(m_s − m), m the largest m_s of the row")
    if not torch.isfinite(got).all():
        return "inf in the output: e^(m_s) overflows; weigh each split by e^(m_s − m) instead"
    w = torch.where(torch.isfinite(m), torch.exp(m - m.amax(0, keepdim=True)), torch.zeros_like(m))  # [S, R]
    L = (w * l).sum(0)[:, None]
    if close(got, (w[..., None] * o).sum(0), 1e-7):
        return ("the output is Σ_s e^(m_s − m) o_s without the divide by ℓ = Σ_s e^(m_s − m) ℓ_s: "
                "the splits' o are unnormalised sums, so divide once at the end")
    if close(got, o.sum(0) / nonzero_or_one(l.sum(0)[:, None]), 1e-7):
        return ("the splits are added without the weights e^(m_s − m): each o_s and ℓ_s was summed "
                "under its own max m_s, so rescale them to the common max before adding")
    if close(got, (w[..., None] * l[..., None] * o).sum(0) / nonzero_or_one(L), 1e-7):
        return ("the o_s are treated as normalised (multiplied by ℓ_s); here they are unnormalised "
                "sums already: weigh them by e^(m_s − m) only")
    if close(got, (w[..., None] * o).sum(0) / nonzero_or_one(l.sum(0)[:, None]), 1e-7):
        return "ℓ is summed without the weights e^(m_s − m): rescale ℓ_s like o_s"
    wrong = torch.nonzero(bad_rows(got, want, TOL)).flatten()
    return f"rows {spans(wrong)} are wrong (max error {max_error(got, want):.2g})"


def run(fn, case: Case) -> CaseResult:
    S, R, D = case.o.shape
    meta = dict(name=case.name, shape=f"S={S}, R={R}, D={D}", causal=None, dtype="float64")
    try:
        got = fn(case.o.clone(), case.m.clone(), case.l.clone())
    except Exception as exc:  # noqa: BLE001  (the reader's error is this case's verdict)
        return raised(exc, **meta)
    bad = wrong_shape(got, (R, D), **meta)
    if bad:
        return bad
    got = got.detach().to("cpu", torch.float64)
    want = truth(case.o, case.m, case.l)
    err = max_error(got, want)
    if err <= TOL:
        return CaseResult(**meta, max_error=err, passed=True)
    return CaseResult(**meta, max_error=err, passed=False, diagnosis=_diagnose(got, case))
