"""Incoherent processing: rotate Q and K by M = D·H before quantising them.

H is the d×d Walsh–Hadamard matrix scaled by 1/√d (symmetric, orthogonal, entries ±1/√d) and D
a diagonal of random signs. M is orthogonal, so (QM)(KM)ᵀ = Q M Mᵀ Kᵀ = QKᵀ: attention does
not change. What changes is the spread of each row: an outlier in one coordinate is shared out
over all d coordinates (each gets ±x/√d), so a row's largest entry, the one its FP8 scale must
cover, shrinks towards the typical one. The transform costs O(d log d) per row (butterflies),
not the O(d²) of a matrix product.
"""
from __future__ import annotations

import math

import torch


def _check_dim(d: int, name: str = "x") -> None:
    if d < 1 or d & (d - 1):
        raise ValueError(f"{name}: the last dim must be a power of two for the Hadamard transform, got {d}")


def fwht(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal fast Walsh–Hadamard transform of the last dim: ``x @ H`` with H = H_d/√d.

    log2(d) butterfly stages of (a + b, a − b); d must be a power of two. Same dtype as x."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    d = x.shape[-1]
    _check_dim(d)
    lead = x.shape[:-1]
    y = x.reshape(-1, d)
    h = 1
    while h < d:
        # [rows, d/(2h), 2, h]: pairs (a, b) h apart become (a + b, a - b).
        y = y.view(-1, d // (2 * h), 2, h)
        a, b = y[:, :, 0, :], y[:, :, 1, :]
        y = torch.stack((a + b, a - b), dim=2)
        h *= 2
    return (y.reshape(*lead, d) / math.sqrt(d)).to(x.dtype)


def hadamard_matrix(d: int, *, dtype=torch.float64) -> torch.Tensor:
    """The orthonormal d×d Hadamard matrix H_d/√d (Sylvester's construction), for checks."""
    _check_dim(d, "d")
    return fwht(torch.eye(d, dtype=dtype))


def random_signs(d: int, *, generator: torch.Generator | None = None, dtype=torch.float32) -> torch.Tensor:
    """The diagonal of D: d independent random ±1."""
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise ValueError(f"d must be a positive int, got {d!r}")
    return (torch.randint(0, 2, (d,), generator=generator) * 2 - 1).to(dtype)


def rotation(d: int, signs: torch.Tensor | None = None, *, generator: torch.Generator | None = None,
             dtype=torch.float64) -> torch.Tensor:
    """M = D·H as a dense matrix (what :func:`rotate` applies in O(d log d))."""
    signs = random_signs(d, generator=generator) if signs is None else signs
    return signs.to(dtype)[:, None] * hadamard_matrix(d, dtype=dtype)


def rotate(x: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    """``x @ M`` for M = diag(signs)·H, by the fast transform: flip signs, then FWHT.

    On a GPU, one matmul with the dense M instead: log2(d) butterfly passes are log2(d) trips
    through HBM for the whole tensor, where the d² multiply-adds per row of one matmul are cheap
    next to reading x once. Same product; the sums run in another order (fp32 rounding)."""
    if not isinstance(signs, torch.Tensor) or signs.shape != (x.shape[-1],):
        raise ValueError(f"signs must be a tensor of shape ({x.shape[-1]},), got "
                         f"{getattr(signs, 'shape', type(signs).__name__)}")
    if x.is_cuda:
        return x @ rotation(x.shape[-1], signs, dtype=x.dtype).to(x.device)
    return fwht(x * signs.to(device=x.device, dtype=x.dtype))
