"""Lab 3's grader: FlashAttention-2's forward as a Triton kernel.

The reader's host wrapper ``fn(q, k, v, o, L, *, causal, scale)`` gets contiguous q, k, v
[B, H, N, D] and must fill the outputs the grader allocated: o [B, H, N, D] and
L = m + log ℓ [B, H, N] (fp32, natural log). Everything sits in NaN-guarded buffers: o and L
start as NaN (a tile never stored shows), reading past the last row of q, k or v reads NaN, and
a store past the end of o or L is seen. fp32 under the interpreter, fp16 on a GPU, where the
grader also times the kernel against the book's ``v2_triton``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from flashedu import runtime
from flashedu.labs.attention_evidence import Attempt, diagnose
from flashedu.labs.cases import raised
from flashedu.labs.evidence import (attention, bad_rows, close, guard_written, guarded, keep_causal,
                                    masked_scores, max_error, spans, unwritten)
from flashedu.labs.report import CaseResult

NAME = "v2_forward"
BLOCKS = (16, 32, 64, 128)  # the tile sizes a kernel may use: a diagnosis tries each
MESSAGES = {"no divide": "O is the unnormalised accumulator Σ e^(s − m) v: divide it by ℓ once, "
                         "after the loop"}


@dataclass(frozen=True)
class Case:
    name: str
    q: torch.Tensor  # [B, H, N, D] fp64, cast to the kernel's dtype when it runs
    k: torch.Tensor
    v: torch.Tensor
    causal: bool
    huge: bool = False

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(self.q.shape)


def cases(g: torch.Generator) -> list[Case]:
    def case(name, B, H, N, D, causal, spread=1.0):
        q, k, v = (torch.randn(B, H, N, D, generator=g, dtype=torch.float64) for _ in range(3))
        # spread 50 at D = 16: scale·q·k has a spread of 50² · √16 / √16 = 2500, maxima near ±1e4
        return Case(name, q * spread, k * spread, v, causal, huge=spread != 1.0)

    cs = [case("N = 1", 1, 1, 1, 16, False), case("N = 7, causal", 1, 2, 7, 32, True),
          case("N a multiple, causal", 1, 1, 64, 64, True), case("N = 129", 1, 1, 129, 64, False),
          case("N = 129, causal", 1, 1, 129, 16, True), case("d = 128, causal", 2, 1, 100, 128, True),
          case("logits ±1e4", 1, 1, 48, 16, False, spread=50.0),
          case("N = 1000", 1, 1, 1000, 16, False)]
    if runtime.current().compiled:  # a GPU: full-size tiles, many programs
        cs.append(case("N = 4099, causal", 2, 4, 4099, 128, True))
    return cs


def _dtype():
    return torch.float16 if runtime.current().compiled else torch.float32


def _tol(dtype) -> float:
    return {torch.float32: 2e-5, torch.float16: 4e-3}[dtype]


def _l_diagnosis(got_L, want_L, tol, scale) -> str:
    if close(got_L, want_L * scale, 100 * tol) and not close(want_L * scale, want_L, 100 * tol):
        return (f"L is {scale:.3g}× the truth (the softmax scale): the scores are scaled twice; "
                "S = scale · QKᵀ once (fold log2 e in once too, if you use exp2)")
    if close(got_L, want_L / math.log(2), 100 * tol):
        return ("O is right but L is in base 2: L = (m₂ + log2 ℓ) · ln 2 converts the kernel's "
                "base-2 logsumexp to the natural log the backward reads")
    rows = torch.nonzero(bad_rows(got_L[..., None], want_L[..., None], 100 * tol).any(0).any(0)).flatten()
    return (f"O is right but L = m + log ℓ is wrong in rows {spans(rows)} (max error "
            f"{max_error(got_L, want_L):.2g}): store m_i + log ℓ_i after the loop, in natural log")


def run(fn, case: Case) -> CaseResult:
    B, H, N, D = case.shape
    dtype, device = _dtype(), runtime.current().device
    causal = case.causal
    meta = dict(name=case.name, shape=f"[{B}, {H}, {N}, {D}]", causal=causal,
                dtype=str(dtype).removeprefix("torch."))
    q64, k64, v64 = case.q, case.k, case.v
    (q, _), (k, _), (v, _) = (guarded(t.shape, dtype=dtype, device=device, data=t) for t in (q64, k64, v64))
    o, o_buf = guarded((B, H, N, D), dtype=dtype, device=device)
    L, L_buf = guarded((B, H, N), dtype=torch.float32, device=device)
    scale = 1 / math.sqrt(D)
    try:
        fn(q, k, v, o, L, causal=causal, scale=scale)
    except Exception as exc:  # noqa: BLE001  (the reader's error is this case's verdict)
        return raised(exc, **meta)
    # The truth from the inputs as the kernel saw them (rounded to its dtype).
    qd, kd, vd = (t.detach().to("cpu", torch.float64) for t in (q, k, v))
    keep = keep_causal(N, N) if causal else None
    want = attention(qd, kd, vd, scale=scale, keep=keep)
    s = masked_scores(qd, kd, scale=scale, keep=keep)
    want_L = torch.logsumexp(s, dim=-1)
    got, got_L = o.detach().to("cpu", torch.float64), L.detach().to("cpu", torch.float64)
    tol = _tol(dtype) * (50 if case.huge else 1)  # a logit of 1e4 carries ~1e-3 of rounding
    err = max_error(got, want)
    if guard_written(o, o_buf) or guard_written(L, L_buf):
        which = "o" if guard_written(o, o_buf) else "L"
        return CaseResult(**meta, max_error=err, passed=False,
                          diagnosis=f"the kernel stores past the end of {which} (row N = {N} onward): mask "
                                    "the stores with offs_m < N")
    if err <= tol:
        if max_error(got_L, want_L) <= 100 * _tol(dtype) * (50 if case.huge else 1):
            return CaseResult(**meta, max_error=err, passed=True)
        return CaseResult(**meta, max_error=err, passed=False, diagnosis=_l_diagnosis(got_L, want_L, _tol(dtype), scale))
    attempt = Attempt(qd, kd, vd, scale, causal, keep, BLOCKS, BLOCKS, tol, huge=case.huge,
                      guarded=True, messages=MESSAGES, match=2.0 if dtype == torch.float16 else 50.0)
    never = unwritten(o).cpu()
    return CaseResult(**meta, max_error=err, passed=False, diagnosis=diagnose(got, want, attempt, never))


def notes(fn) -> list[str]:
    """On a GPU: the reader's kernel timed against the book's v2_triton (B=4, H=16, N=4096,
    D=128, fp16, causal), as a ratio. Nothing under the interpreter (its times mean nothing)."""
    if not runtime.current().compiled:
        return ["Timing against v2_triton runs on a GPU only (the interpreter's times say nothing "
                "about a kernel's speed)."]
    from flashedu._registry import get
    from flashedu.labs.timing import time_beside

    B, H, N, D = 4, 16, 4096, 128
    q, k, v = (torch.randn(B, H, N, D, device="cuda", dtype=torch.float16) for _ in range(3))
    o = torch.empty_like(q)
    L = torch.empty(B, H, N, device="cuda", dtype=torch.float32)
    scale = 1 / math.sqrt(D)

    def mine_call():
        fn(q, k, v, o, L, causal=True, scale=scale)

    def book_call():
        get("v2_triton").fn(q, k, v, causal=True, scale=scale)

    mine, book = time_beside(mine_call, book_call)
    return [f"On this GPU (B={B}, H={H}, N={N}, D={D}, fp16, causal): your kernel {mine:.3f} ms, "
            f"the book's v2_triton {book:.3f} ms: {mine / book:.2f}× its time."]
