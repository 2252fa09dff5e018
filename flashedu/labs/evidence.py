"""What every grader measures on a wrong output, so a diagnosis can say *which* rows are wrong
and *why*: the fp64 truth, NaN-guarded buffers, row ranges in words, the rows whose running max
grows after the first block, and outputs of well-known mistakes to compare against."""
from __future__ import annotations

import contextlib
import math

import torch

from flashedu.softmax.state import finalize, finite_or_zero, nonzero_or_one, state_of_block


def spans(rows) -> str:
    """[0, 1, 2, 5, 7, 8] -> "0–2, 5, 7–8" (at most 6 ranges shown)."""
    rows = sorted(int(r) for r in rows)
    out, start = [], None
    for a, b in zip(rows, rows[1:] + [None]):
        start = a if start is None else start
        if b != a + 1:
            out.append(str(a) if a == start else f"{start}–{a}")
            start = None
    return ", ".join(out[:6]) + (f", … ({len(out) - 6} more ranges)" if len(out) > 6 else "")


def max_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """Largest |got − want|, inf where got is NaN or infinite and want is not."""
    d = (got.to(torch.float64) - want.to(torch.float64)).abs()
    return float(torch.nan_to_num(d, nan=math.inf).max()) if d.numel() else 0.0


def bad_rows(got: torch.Tensor, want: torch.Tensor, tol: float) -> torch.Tensor:
    """bool [..., R]: rows (over the last dim) with an element off by more than tol, or NaN."""
    d = torch.nan_to_num((got.to(torch.float64) - want.to(torch.float64)).abs(), nan=math.inf)
    return (d > tol).any(dim=-1)


def close(got: torch.Tensor, want: torch.Tensor, tol: float) -> bool:
    return got.shape == want.shape and max_error(got, want) <= tol


def keep_causal(N: int, N_k: int, shift: int = 0) -> torch.Tensor:
    """[N, N_k] bool: key c visible to query r when c ≤ r + shift (shift 0: the causal mask)."""
    return torch.arange(N_k)[None, :] <= torch.arange(N)[:, None] + shift


def masked_scores(q, k, *, scale: float, keep=None) -> torch.Tensor:
    """scale · q kᵀ in fp64, −inf where ``keep`` (broadcast to [..., N, N_k]) is False."""
    s = (q.to(torch.float64) @ k.to(torch.float64).transpose(-1, -2)) * scale
    return s if keep is None else s.masked_fill(~keep, -math.inf)


def attention(q, k, v, *, scale: float, keep=None) -> torch.Tensor:
    """Attention in fp64; a row that sees no key gives 0 (chapter 2's convention)."""
    s = masked_scores(q, k, scale=scale, keep=keep)
    return finalize(state_of_block(s, v.to(torch.float64)))


def grows_after_first_block(s: torch.Tensor, block: int) -> torch.Tensor:
    """bool [..., R]: rows of scores ``s`` [..., R, N] whose running max rises after the first
    block of ``block`` columns; only those rows need the rescale e^(m_old − m_new)."""
    first = s[..., :block].amax(dim=-1)
    return (s.amax(dim=-1) > first) & torch.isfinite(s.amax(dim=-1))


def online_stats(s: torch.Tensor, *, block: int, rescale: bool = True, last_block: bool = True):
    """Pass 1 of online softmax over ``s`` [..., R, N] in fp64: (m, ℓ) [..., R, 1], optionally
    without the rescale of ℓ or without the short last block (see :func:`online`)."""
    N = s.shape[-1]
    stop = N if last_block else (N // block) * block
    m = torch.full(s.shape[:-1] + (1,), -math.inf, dtype=torch.float64)
    l = torch.zeros_like(m)
    for c0 in range(0, stop, block):
        m_new = torch.maximum(m, s[..., c0:c0 + block].amax(dim=-1, keepdim=True))
        alpha = torch.exp(m - finite_or_zero(m_new)) if rescale else torch.ones_like(m)
        l = torch.where(m > -math.inf, alpha, torch.zeros_like(m)) * l \
            + torch.exp(s[..., c0:c0 + block] - finite_or_zero(m_new)).sum(dim=-1, keepdim=True)
        m = m_new
    return m, l


def online_softmax(s: torch.Tensor, **mistakes) -> torch.Tensor:
    """exp(s − m) / ℓ with (m, ℓ) from :func:`online_stats` (its mistakes switched on)."""
    m, l = online_stats(s, **mistakes)
    return torch.exp(s - finite_or_zero(m)) / nonzero_or_one(l)


def online(s: torch.Tensor, v: torch.Tensor | None, *, block: int, rescale: bool = True,
           divide: str = "end", last_block: bool = True) -> torch.Tensor:
    """Softmax (``v`` None) or attention over the scores ``s`` [..., R, N] block by block in fp64,
    with one of the usual mistakes switched on, to compare a wrong output against:
    ``rescale=False`` (the running sum is not multiplied by e^(m_old − m_new)); ``divide``
    "end" (right), "none" (no final divide), "loop" (O divided by ℓ inside the loop as well);
    ``last_block=False`` (the short block at the end is dropped)."""
    N = s.shape[-1]
    stop = N if last_block else (N // block) * block
    m = torch.full(s.shape[:-1] + (1,), -math.inf, dtype=torch.float64)
    l = torch.zeros_like(m)
    vals = torch.eye(N, dtype=torch.float64) if v is None else v.to(torch.float64)
    o = torch.zeros(s.shape[:-1] + (vals.shape[-1],), dtype=torch.float64)
    for c0 in range(0, stop, block):
        sb = s[..., c0:c0 + block]
        m_new = torch.maximum(m, sb.amax(dim=-1, keepdim=True))
        p = torch.exp(sb - finite_or_zero(m_new))
        alpha = torch.where(m > -math.inf, torch.exp(m - finite_or_zero(m_new)), torch.zeros_like(m))
        if not rescale:
            alpha = torch.where(m > -math.inf, torch.ones_like(m), torch.zeros_like(m))
        l = alpha * l + p.sum(dim=-1, keepdim=True)
        o = alpha * o + p @ vals[..., c0:c0 + block, :]
        if divide == "loop":
            o = o / nonzero_or_one(l)
        m = m_new
    return o if divide == "none" else o / nonzero_or_one(l)


# NaNs with a payload of their own (the low mantissa bits), so an output element that still
# holds the grader's poison (never written) can be told from a NaN the reader's code computed
# (exp(−inf − (−inf)), 0 · inf, or a load past the end), which carries another payload.
_UNWRITTEN = {torch.float64: (torch.int64, 0x7FF8_0000_0000_DEAD), torch.float32: (torch.int32, 0x7FC0_DEAD),
              torch.float16: (torch.int16, 0x7E5A)}


def poison(shape, *, dtype, device="cpu") -> torch.Tensor:
    """A tensor of NaN carrying the "never written" payload."""
    itype, bits = _UNWRITTEN[dtype]
    return torch.full(shape, bits, dtype=itype, device=device).view(dtype)


def unwritten(t: torch.Tensor) -> torch.Tensor:
    """bool, like ``t``: elements that still hold :func:`poison`'s NaN (never stored to)."""
    itype, bits = _UNWRITTEN[t.dtype]
    return t.contiguous().view(itype) == bits


@contextlib.contextmanager
def poisoned_empty():
    """While active, ``torch.empty`` and ``torch.empty_like`` of a float dtype return the poison
    NaN: a function that allocates its own output and forgets rows of it shows them as "never
    written" (the hook the tests' ``poison`` fixture uses, for the reader's code)."""
    empty, empty_like = torch.empty, torch.empty_like

    def fill(t):
        return t.copy_(poison(t.shape, dtype=t.dtype, device=t.device)) if t.dtype in _UNWRITTEN else t

    torch.empty = lambda *a, **k: fill(empty(*a, **k))
    torch.empty_like = lambda *a, **k: fill(empty_like(*a, **k))
    try:
        yield
    finally:
        torch.empty, torch.empty_like = empty, empty_like


def guarded(shape, *, dtype, device, data: torch.Tensor | None = None, guard: int = 1 << 14):
    """A contiguous tensor of ``shape`` (the poison NaN, or a copy of ``data``) inside a larger
    buffer whose ``guard`` elements past the end are NaN: a kernel that loads past the last row
    reads NaN, and one that stores past it overwrites the guard. Returns (tensor, buffer)."""
    n = math.prod(shape)
    buf = torch.full((n + guard,), math.nan, dtype=dtype, device=device)
    t = buf[:n].view(shape)
    t.copy_(poison(shape, dtype=dtype, device=device) if data is None else data)
    return t, buf


def guard_written(t: torch.Tensor, buf: torch.Tensor) -> bool:
    """Whether anything was stored past the end of ``t`` in its guarded buffer."""
    return not bool(torch.isnan(buf[t.numel():]).all())
