"""Lab 4's grader: the dK/dV kernel of FlashAttention-2's backward in Triton.

The reader's host wrapper ``fn(q, k, v, do, L, Dl, dk, dv, *, causal, scale)`` gets contiguous
q, k, v, dO [B, H, N, D], the forward's L = m + log ℓ and D = rowsum(dO ∘ O) [B, H, N] (fp32)
and must fill dk, dv [B, H, N, D], which the grader allocated as NaN. dQ is not asked for.
Graded against autograd through attention in fp64; the buffers are NaN-guarded as in lab 3.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from flashedu import runtime
from flashedu.labs.cases import raised
from flashedu.labs.evidence import (bad_rows, close, guard_written, guarded, keep_causal, masked_scores,
                                    max_error, spans, unwritten)
from flashedu.labs.report import CaseResult

NAME = "v2_backward"
BLOCKS = (16, 32, 64, 128)


@dataclass(frozen=True)
class Case:
    name: str
    q: torch.Tensor  # [B, H, N, D] fp64
    k: torch.Tensor
    v: torch.Tensor
    do: torch.Tensor
    causal: bool


def cases(g: torch.Generator) -> list[Case]:
    def case(name, B, H, N, D, causal):
        return Case(name, *(torch.randn(B, H, N, D, generator=g, dtype=torch.float64) for _ in range(4)),
                    causal)

    cs = [case("N = 1", 1, 1, 1, 16, False), case("N = 7, causal", 1, 2, 7, 32, True),
          case("N a multiple, causal", 1, 1, 64, 64, True), case("N = 129", 1, 1, 129, 16, False),
          case("N = 129, causal", 1, 1, 129, 64, True), case("d = 128, causal", 2, 1, 80, 128, True),
          case("N = 300", 1, 1, 300, 16, False)]
    if runtime.current().compiled:
        cs.append(case("N = 4099, causal", 2, 4, 4099, 128, True))
    return cs


def truth(q, k, v, do, *, scale, causal):
    """dK, dV by autograd through attention in fp64 (softmax over the causal mask)."""
    q, k, v = (t.detach().to(torch.float64).requires_grad_() for t in (q, k, v))
    N = q.shape[2]
    s = masked_scores(q, k, scale=scale, keep=keep_causal(N, N) if causal else None)
    o = torch.softmax(s, dim=-1) @ v
    return torch.autograd.grad(o, (k, v), do.to(torch.float64))


def by_formula(q, k, v, do, L, Dl, *, scale, keep, dk_scale=1.0, log_base2=False, subtract_d=True):
    """dK, dV from the backward's formulas with the given L and D, in fp64; the switches are the
    usual mistakes: ``keep`` another mask, ``dk_scale`` the scale on dK, ``log_base2`` L used as
    if it were in log2 units, ``subtract_d=False`` dS = P ∘ dP."""
    s = masked_scores(q, k, scale=scale, keep=keep)  # [B, H, N, N]
    # exp2(S · log2 e − L) = exp(S − L · ln 2): what L read in the wrong base gives
    p = torch.exp(s - L[..., None] * (math.log(2) if log_base2 else 1.0))
    dv = p.transpose(-1, -2) @ do
    dp = do @ v.transpose(-1, -2)
    ds = p * (dp - Dl[..., None]) if subtract_d else p * dp
    return dk_scale * scale * ds.transpose(-1, -2) @ q, dv


def _diagnose(got_dk, got_dv, want_dk, want_dv, case, L, Dl, scale, tol, never) -> str:
    q, k, v, do = (t.to(torch.float64) for t in (case.q, case.k, case.v, case.do))
    N = q.shape[2]
    nan = torch.isnan(got_dk).any(-1) | torch.isnan(got_dv).any(-1)  # [B, H, N]
    if nan.any():
        rows = set(torch.nonzero(never.any(-1).any(0).any(0)).flatten().tolist()) if never.any() else set()
        if rows:
            for b in BLOCKS:
                tail = set(range((N // b) * b, N))
                if N % b and N > b and rows == tail:
                    return (f"rows {spans(tail)} of dK and dV, the last, short K/V tile (N = {N} is not a "
                            f"multiple of {b}), still hold the grader's NaN: that tile is never stored")
            return f"rows {spans(rows)} of dK or dV are never stored (they still hold the grader's NaN)"
        if any(N % b for b in BLOCKS):
            return (f"NaN with N = {N}, which is not a multiple of the block: a load of Q, dO, L or D "
                    "reads past row N (the grader's buffers hold NaN there); mask it with offs_m < N "
                    "(other=0.0)")
        return f"NaN in dK or dV, rows {spans(torch.nonzero(nan.any(0).any(0)).flatten())}"
    keep = keep_causal(N, N) if case.causal else None
    hypotheses = [
        ("dK is {r} the truth (scale² instead of scale): the softmax scale is applied twice to dK; "
         "dK = scale · dSᵀ Q, once", dict(dk_scale=scale)),
        ("dK is {r} the truth: the softmax scale is missing from dK (dK = scale · dSᵀ Q)",
         dict(dk_scale=1 / scale)),
        ("P is recomputed with L read as a base-2 logsumexp: L is in natural log, so "
         "P = exp2((S − L) · log2 e), not exp2(S · log2 e − L)", dict(log_base2=True)),
        ("dS = P ∘ dP: D_i is not subtracted (dS = P ∘ (dP − D_i))", dict(subtract_d=False)),
    ]
    if case.causal:
        hypotheses += [
            ("the causal bound is off by one: key j must be kept for queries i ≥ j (offs_m ≥ offs_n)",
             dict(keep=keep_causal(N, N, -1))),
            ("the causal bound is off by one: a query must not reach the next key (keep i ≥ j)",
             dict(keep=keep_causal(N, N, 1))),
            ("the causal mask is not applied to the recomputed P: P must be 0 where key > query",
             dict(keep=None)),
        ]
    for message, switches in hypotheses:
        kw = dict(scale=scale, keep=keep)
        kw.update(switches)
        alt_dk, alt_dv = by_formula(q, k, v, do, L, Dl, **kw)
        if close(got_dk, alt_dk, 50 * tol) and close(got_dv, alt_dv, 50 * tol) and \
                not (close(alt_dk, want_dk, tol) and close(alt_dv, want_dv, tol)):
            return message.format(r=f"{switches.get('dk_scale', 1):.3g}×")
    dk_bad, dv_bad = bad_rows(got_dk, want_dk, tol), bad_rows(got_dv, want_dv, tol)
    which = "dK and dV" if dk_bad.any() and dv_bad.any() else ("dK" if dk_bad.any() else "dV")
    rows = torch.nonzero((dk_bad | dv_bad).any(0).any(0)).flatten()
    for b in BLOCKS:
        if N % b and N > b and set(rows.tolist()) <= set(range((N // b) * b, N)):
            return (f"only {which} of the last, short K/V tile is wrong (rows {spans(rows)}; N = {N} is "
                    f"not a multiple of {b}): check its masks")
    extra = ""
    if which == "dK":
        extra = "; dV is right, so P is right: look at dP, dS = P ∘ (dP − D) and dK = scale · dSᵀ Q"
    return f"{which} wrong in key rows {spans(rows)} (max error {max(max_error(got_dk, want_dk), max_error(got_dv, want_dv)):.2g}){extra}"


def run(fn, case: Case) -> CaseResult:
    B, H, N, D = case.q.shape
    compiled = runtime.current().compiled
    dtype, device = (torch.float16 if compiled else torch.float32), runtime.current().device
    meta = dict(name=case.name, shape=f"[{B}, {H}, {N}, {D}]", causal=case.causal,
                dtype=str(dtype).removeprefix("torch."))
    scale = 1 / math.sqrt(D)
    ins = [guarded(t.shape, dtype=dtype, device=device, data=t) for t in (case.q, case.k, case.v, case.do)]
    (q, _), (k, _), (v, _), (do, _) = ins
    qd, kd, vd, dod = (t.to("cpu", torch.float64) for t in (q, k, v, do))
    keep = keep_causal(N, N) if case.causal else None
    s = masked_scores(qd, kd, scale=scale, keep=keep)
    L64 = torch.logsumexp(s, dim=-1)  # [B, H, N]
    o = torch.softmax(s, dim=-1) @ vd
    D64 = (dod * o).sum(-1)  # D_i = rowsum(dO ∘ O)
    (L, _), (Dl, _) = (guarded(t.shape, dtype=torch.float32, device=device, data=t) for t in (L64, D64))
    dk, dk_buf = guarded((B, H, N, D), dtype=dtype, device=device)
    dv, dv_buf = guarded((B, H, N, D), dtype=dtype, device=device)
    try:
        fn(q, k, v, do, L, Dl, dk, dv, causal=case.causal, scale=scale)
    except Exception as exc:  # noqa: BLE001  (the reader's error is this case's verdict)
        return raised(exc, **meta)
    want_dk, want_dv = truth(qd, kd, vd, dod, scale=scale, causal=case.causal)
    never = (unwritten(dk) | unwritten(dv)).cpu()
    got_dk, got_dv = dk.to("cpu", torch.float64), dv.to("cpu", torch.float64)
    # Gradients sum over N rows: allow for that in fp32 (fp16 on a GPU).
    tol = (4e-3 if compiled else 2e-5) * max(1.0, math.sqrt(N) / 4)
    err = max(max_error(got_dk, want_dk), max_error(got_dv, want_dv))
    for name, t, buf in (("dk", dk, dk_buf), ("dv", dv, dv_buf)):
        if guard_written(t, buf):
            return CaseResult(**meta, max_error=err, passed=False,
                              diagnosis=f"the kernel stores past the end of {name} (row N = {N} onward): "
                                        "mask the stores with offs_n < N")
    if err <= tol:
        return CaseResult(**meta, max_error=err, passed=True)
    why = _diagnose(got_dk, got_dv, want_dk, want_dv, case, L.to("cpu", torch.float64),
                    Dl.to("cpu", torch.float64), scale, tol, never)
    return CaseResult(**meta, max_error=err, passed=False, diagnosis=why)


def notes(fn) -> list[str]:
    """On a GPU: the reader's dK/dV kernel timed against the book's own dK/dV kernel (kernel 2 of
    ``v2_triton``'s backward; B=4, H=16, N=4096, D=128, fp16, causal), as a ratio."""
    if not runtime.current().compiled:
        return ["Timing against v2_triton's dK/dV kernel runs on a GPU only (the interpreter's "
                "times say nothing about a kernel's speed)."]
    from flashedu.labs.timing import time_beside
    from flashedu.ops.v2.kernel import flash_attention_v2_lse
    from flashedu.ops.v2.kernel_bwd import attention_dkdv

    B, H, N, D = 4, 16, 4096, 128
    q, k, v, do = (torch.randn(B, H, N, D, device="cuda", dtype=torch.float16) for _ in range(4))
    scale = 1 / math.sqrt(D)
    o, L = flash_attention_v2_lse(q, k, v, causal=True, scale=scale)
    Dl = (do.float() * o.float()).sum(-1)  # [B, H, N]
    dk, dv = torch.empty_like(k), torch.empty_like(v)

    def mine_call():
        fn(q, k, v, do, L, Dl, dk, dv, causal=True, scale=scale)

    def book_call():
        attention_dkdv(do, q, k, v, L, Dl, causal=True, scale=scale)

    mine, book = time_beside(mine_call, book_call)
    return [f"On this GPU (B={B}, H={H}, N={N}, D={D}, fp16, causal): your dK/dV kernel "
            f"{mine:.3f} ms, the book's {book:.3f} ms: {mine / book:.2f}× its time."]
