"""Diagnoses shared by the labs whose answer is an attention output (v1, v2's forward,
block-sparse): NaN patterns first (rows never written, rows with no key, loads past the end,
overflow), then the outputs of the usual mistakes recomputed in fp64 (scale applied twice, the
causal bound off by one, the rescale missing, the divide missing or in the loop), and last the
rows and columns that are wrong.

A mistake is named only when the reader's output *equals* that mistake's output on these
inputs, or when the wrong rows are exactly the rows the mistake would spoil.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from flashedu.labs.evidence import (attention, bad_rows, close, grows_after_first_block, keep_causal,
                                    masked_scores, max_error, online, spans)

RESCALE = "the running sum is not rescaled by e^(m_old − m_new) when the max grows"


@dataclass
class Attempt:
    """What a diagnosis needs to know about one case. q, k, v [B, H, N, D]; ``keep`` the
    [N, N_k] mask of visible keys (None: all); ``blocks_r``/``blocks_c``: the block sizes the
    reader used, or the candidates when the grader cannot know them (a Triton kernel's)."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    scale: float
    causal: bool
    keep: torch.Tensor | None
    blocks_r: tuple[int, ...]
    blocks_c: tuple[int, ...]
    tol: float
    huge: bool = False
    guarded: bool = False  # inputs sit in NaN-guarded buffers (a Triton lab)
    block_keep: torch.Tensor | None = None  # [N, N_k] the block-sparse part of keep, if any
    # How close an output must be to a mistake's to be named after it: fp16 outputs (a GPU)
    # carry their own rounding, so the match there is as tight as the pass tolerance allows.
    match: float = 50.0
    messages: dict = field(default_factory=dict)  # per-lab wording of a mistake


def _message(a: Attempt, key: str, default: str) -> str:
    return a.messages.get(key, default)


def _tiles_of(rows: set, N: int, br: int) -> str | None:
    """A sentence about rows that were never stored, if they are whole Q tiles of ``br`` rows."""
    tail = set(range((N // br) * br, N))
    if N % br and N > br and rows == tail:
        return (f"rows {spans(tail)}, the last, short Q tile (N = {N} is not a multiple of Br = {br}), "
                "still hold the NaN the grader filled O with: that tile is never stored; loop over "
                "⌈N/Br⌉ tiles, the last one ending at N")
    tiles = {r // br for r in rows}
    if rows and all(set(range(t * br, min(N, (t + 1) * br))) <= rows for t in tiles) and len(rows) < N:
        return (f"rows {spans(rows)} (whole Q tiles of {br} rows) still hold the NaN the grader filled "
                "O with: those tiles are never stored")
    return None


def _nan_diagnosis(got: torch.Tensor, a: Attempt, never: torch.Tensor | None) -> str | None:
    """``never``: bool like ``got``, the elements still holding the grader's poison."""
    nan = torch.isnan(got).any(-1)  # [B, H, N]
    if not nan.any():
        if not torch.isfinite(got).all():
            return "inf in the output: e^s overflows; subtract the running max before exp"
        return None
    N = nan.shape[-1]
    if never is not None and never.any():
        rows = set(torch.nonzero(never.any(-1).any(0).any(0)).flatten().tolist())
        for br in a.blocks_r:
            if (why := _tiles_of(rows, N, br)):
                return why
        return (f"rows {spans(rows)} of O are never stored (they still hold the NaN the grader "
                "filled O with)")
    nan_rows = set(torch.nonzero(nan.any(0).any(0)).flatten().tolist())
    if a.keep is not None:
        empty = set(torch.nonzero(~a.keep.any(-1)).flatten().tolist())
        if empty and nan_rows == empty:
            return (f"rows {spans(empty)} see no key at all and come out NaN; they must be 0: ℓ = 0 "
                    "there, so divide by 1 where ℓ = 0, and use 0 for e^(m_old − m_new) while m = −inf")
    if a.causal and nan_rows == {0}:
        return ("row 0 comes out NaN: query 0 sees key 0 only, so with a strict bound (key < query) "
                "it sees no key at all; the causal bound is off by one: keep key ≤ query")
    if a.guarded and any(N % b for b in a.blocks_c):
        return (f"NaN with N = {N}, which is not a multiple of the block: a K or V load reads past the "
                "last key (the grader's buffers hold NaN there); mask those loads with offs_n < N "
                "(other=0.0)")
    if a.huge:
        return ("NaN with logits near ±1e4: e^s overflows; subtract the running max m before exp, "
                "and guard e^(m_old − m_new) while m = −inf")
    return f"NaN in rows {spans(nan_rows)}"


def _hypotheses(a: Attempt):
    """(key, message, output, block or None) of each mistake, in the order they are tried."""
    N, N_k = a.q.shape[2], a.k.shape[2]
    yield ("scale twice", "the scores are scaled twice (scale² · QKᵀ): apply the softmax scale once",
           lambda: attention(a.q, a.k, a.v, scale=a.scale ** 2, keep=a.keep), None)
    yield ("no scale", "the scores are not scaled: S = scale · QKᵀ with scale = 1/√d",
           lambda: attention(a.q, a.k, a.v, scale=1.0, keep=a.keep), None)
    if a.causal:
        # a.keep holds the causal mask and any other (block-sparse); the block part is kept.
        extra = None if a.block_keep is None else a.block_keep
        both = (lambda m: m if extra is None else m & extra)
        yield ("causal strict", "the causal bound is off by one: each query drops its own key "
               "(key < query); a query sees keys ≤ its own position",
               lambda: attention(a.q, a.k, a.v, scale=a.scale, keep=both(keep_causal(N, N_k, -1))), None)
        yield ("causal +1", "the causal bound is off by one: each query also sees the next key "
               "(key ≤ query + 1); a query sees keys ≤ its own position",
               lambda: attention(a.q, a.k, a.v, scale=a.scale, keep=both(keep_causal(N, N_k, 1))), None)
        yield ("no causal mask", "the causal mask is not applied: keys after the query are attended to",
               lambda: attention(a.q, a.k, a.v, scale=a.scale, keep=extra), None)
    s = masked_scores(a.q, a.k, scale=a.scale, keep=a.keep)
    v = a.v.to(torch.float64)
    for bc in a.blocks_c:
        yield ("no rescale", RESCALE, lambda bc=bc: online(s, v, block=bc, rescale=False), bc)
        yield ("no divide", "the output is the unnormalised sum Σ e^(s − m) v: the final divide by ℓ "
               "is missing", lambda bc=bc: online(s, v, block=bc, divide="none"), bc)
        yield ("divide in loop", "O is divided by ℓ inside the loop and again after it: keep the "
               "accumulator an unnormalised sum (rescaled by e^(m_old − m_new)) and divide once, "
               "after the loop", lambda bc=bc: online(s, v, block=bc, divide="loop"), bc)


def diagnose(got: torch.Tensor, want: torch.Tensor, a: Attempt, never: torch.Tensor | None = None) -> str:
    """Why ``got`` [B, H, N, D] differs from ``want``: the most specific sentence the evidence
    supports. ``never`` marks the elements of got still holding the grader's poison."""
    nan = _nan_diagnosis(got, a, never)
    if nan:
        return nan
    for key, message, output, bc in _hypotheses(a):
        alt = output()
        if close(got, alt, a.match * a.tol) and not close(alt, want, a.tol):
            if key == "no rescale":
                return _rescale_evidence(got, want, a, (bc,)) or _message(a, key, message)
            return _message(a, key, message)
    return _rescale_evidence(got, want, a, a.blocks_c) or _where(got, want, a)


def _rescale_evidence(got, want, a: Attempt, blocks) -> str | None:
    """The rescale sentence when the wrong rows are (some of) those whose max grows after the
    first block, and no row whose max is in the first block is wrong."""
    s = masked_scores(a.q, a.k, scale=a.scale, keep=a.keep)
    wrong = bad_rows(got, want, a.tol)
    for bc in blocks:
        grow = grows_after_first_block(s, bc)
        if wrong.any() and not (wrong & ~grow).any() and (~grow).any():
            return (f"rows whose max changes after the first block of {bc} keys are wrong "
                    f"({int(wrong.sum())} of the {int(grow.sum())} such rows); the {int((~grow).sum())} "
                    f"rows whose max is in the first block are right: {_message(a, 'no rescale', RESCALE)}")
    return None


def _where(got, want, a: Attempt) -> str:
    wrong = bad_rows(got, want, a.tol).any(0).any(0)  # [N]
    cols = bad_rows(got.transpose(-1, -2), want.transpose(-1, -2), a.tol).any(0).any(0)  # [D]
    N = wrong.numel()
    where = f"rows {spans(torch.nonzero(wrong).flatten())} of {N}"
    for br in a.blocks_r:
        if N % br and set(torch.nonzero(wrong).flatten().tolist()) <= set(range((N // br) * br, N)):
            return (f"only the last, short Q tile is wrong ({where}; N is not a multiple of "
                    f"Br = {br}): check its end, min(N, (i + 1)·Br), and its masks")
    return f"{where} are wrong, in head-dim columns {spans(torch.nonzero(cols).flatten())} (max error {max_error(got, want):.2g})"
