"""Softmax three ways, and the running mean that explains the difference between v1 and v2.

All functions take a tensor and normalise its last dim; loops run over the columns of the row,
the way a kernel streams them, so the number of passes over the input is visible in the code.
"""
from __future__ import annotations

import math

import torch

from flashedu.softmax.state import finite_or_zero, nonzero_or_one


def naive_softmax(x: torch.Tensor) -> torch.Tensor:
    """exp(x) / sum exp(x): one pass for the sum, one to normalise; overflows for large logits
    (fp16's exp overflows above ln(65504) ≈ 11.09)."""
    e = torch.exp(x)
    return e / e.sum(dim=-1, keepdim=True)


def safe_softmax(x: torch.Tensor) -> torch.Tensor:
    """Three passes over the row: the max, the sum of exp(x - max), then normalise.

    Subtracting the max makes every exponent <= 0, so nothing overflows. A fully masked row
    (all -inf) gives zeros rather than NaN.
    """
    m = finite_or_zero(x.amax(dim=-1, keepdim=True))  # pass 1
    l = torch.exp(x - m).sum(dim=-1, keepdim=True)  # pass 2
    return torch.exp(x - m) / nonzero_or_one(l)  # pass 3


def _online_pass(x: torch.Tensor, block: int):
    """The first pass of online softmax: a running max m and a running sum l (ℓ) of exp(x - m),
    rescaled by exp(m_old - m_new) whenever the max grows (Milakov & Gimelshein, 2018)."""
    shape = x.shape[:-1] + (1,)
    m = torch.full(shape, -math.inf, dtype=x.dtype, device=x.device)
    l = torch.zeros(shape, dtype=x.dtype, device=x.device)
    for start in range(0, x.shape[-1], block):
        xb = x[..., start:start + block]
        m_new = torch.maximum(m, xb.amax(dim=-1, keepdim=True))
        m_safe = finite_or_zero(m_new)
        l = l * torch.exp(m - m_safe) + torch.exp(xb - m_safe).sum(dim=-1, keepdim=True)
        m = m_new
        yield start, m, l


def online_softmax(x: torch.Tensor, block: int = 1) -> torch.Tensor:
    """Two passes: (m, l) in one streaming pass over ``block`` columns at a time, then normalise."""
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    for _, m, l in _online_pass(x, block):
        pass
    return torch.exp(x - finite_or_zero(m)) / nonzero_or_one(l)


def online_softmax_trace(x: torch.Tensor) -> list[tuple[int, float, float]]:
    """(position, running max, running sum) after each element of a 1-d row: what the chapter's
    animation draws."""
    if x.dim() != 1:
        raise ValueError(f"x must be a 1-d row, got shape {tuple(x.shape)}")
    return [(start, m.item(), l.item()) for start, m, l in _online_pass(x.double(), 1)]


def running_mean_average(xs) -> list[float]:
    """v1's way: keep the mean so far; each new number rescales it by n/(n+1) (renormalise every
    step)."""
    means, mean = [], 0.0
    for n, x in enumerate(xs):
        mean = mean * n / (n + 1) + x / (n + 1)
        means.append(mean)
    return means


def running_mean_sum(xs) -> tuple[list[float], float]:
    """v2's way: keep the sum and the count; divide once at the end. Returns the running sums and
    the mean."""
    sums, total = [], 0.0
    for x in xs:
        total += x
        sums.append(total)
    return sums, total / max(len(sums), 1)
