"""Tile arithmetic shared by the tiled references (numeric runs only).

Every helper keeps fully masked rows finite: a row whose scores are all -inf has running max
-inf, and ``exp(-inf - (-inf))`` would be NaN, so the rescale factor is defined as 0 there.
"""
from __future__ import annotations

import torch

from flashedu.softmax.state import finite_or_zero, nonzero_or_one  # noqa: F401  (re-exported)
from flashedu.iomodel.blocks import causal_tile_mask, partly_masked


def scores(Qi: torch.Tensor, Kj: torch.Tensor, scale: float, *, causal: bool,
           r0: int, r1: int, c0: int, c1: int) -> torch.Tensor:
    """S_ij = scale · Q_i K_jᵀ, with keys after the query set to -inf when causal. [B, H, Br, Bc]"""
    S = (Qi @ Kj.transpose(-1, -2)) * scale
    if causal and partly_masked(r0, c1):
        S = S.masked_fill(~causal_tile_mask(r0, r1, c0, c1, S.device), float("-inf"))
    return S


def exp_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """exp(a - b), and 0 where a = -inf (then b may be -inf too, and a - b would be NaN)."""
    return torch.where(a > float("-inf"), torch.exp(a - b), torch.zeros_like(a))
