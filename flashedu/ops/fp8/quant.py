"""FP8 (e4m3) quantisation as the FP8 kernel sees it: values in float8_e4m3fn, one fp32 scale per
tile of rows, x ≈ x8 · scale.

The scale maps a tile's largest |x| onto e4m3's largest finite value, 448, so nothing saturates
and the tile uses the format's full range. Per-tensor quantisation is the same with one tile
that covers everything; block quantisation (FA3) gives every Br×d tile of Q and every Bc×d tile
of K and V its own scale, so one outlier only coarsens its own tile.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

E4M3 = torch.float8_e4m3fn
E4M3_MAX = 448.0


@dataclass
class Quantized:
    """``x8`` [B, H, N, D] in e4m3 and ``scale`` [B, H, ceil(N / block)] fp32: x ≈ x8 · scale."""

    x8: torch.Tensor
    scale: torch.Tensor
    block: int

    def dequantize(self) -> torch.Tensor:
        """x8 · scale in fp32, [B, H, N, D]."""
        rows = self.scale.repeat_interleave(self.block, dim=-1)[..., : self.x8.shape[-2]]
        return self.x8.float() * rows[..., None]


def quantize(x: torch.Tensor, *, block: int = 128, per_tensor: bool = False) -> Quantized:
    """Quantise ``x`` [B, H, N, D] to e4m3 with one scale per ``block`` rows (per (b, h)), or one
    scale for the whole tensor when ``per_tensor`` (still stored per block, all equal, so the
    kernel reads both the same way)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"x must have shape [B, H, N, D], got {tuple(x.shape)}")
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise ValueError(f"block must be a positive int, got {block!r}")
    B, H, N, D = x.shape
    n_blocks = -(-N // block)
    # Tiles as a view [B, H, tiles, block, D] (zero rows pad the last tile when block ∤ N).
    xf = x.float() if N == n_blocks * block else torch.nn.functional.pad(x.float(), (0, 0, 0, n_blocks * block - N))
    tiles = xf.view(B, H, n_blocks, block, D)
    if per_tensor:
        amax = xf.abs().amax().expand(B, H, n_blocks)
    else:
        amax = tiles.abs().amax(dim=(-2, -1))
    # An all-zero tile keeps scale 1 rather than dividing by zero.
    scale = torch.where(amax > 0, amax / E4M3_MAX, torch.ones_like(amax)).contiguous()
    x8 = (tiles / scale[..., None, None]).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3)
    return Quantized(x8.view(B, H, n_blocks * block, D)[:, :, :N], scale, block)


def round_e4m3(x: torch.Tensor) -> torch.Tensor:
    """x rounded to the nearest e4m3 value (no scale), back in x's dtype: what casting P does."""
    return x.clamp(-E4M3_MAX, E4M3_MAX).to(E4M3).to(x.dtype)


def k_major(x: torch.Tensor) -> torch.Tensor:
    """``x`` [B, H, N, D] with the same values, stored transposed: a [B, H, N, D] view of a
    contiguous [B, H, D, N_pad] tensor (N padded with zeros to a multiple of 16). This is the
    layout the FP8 kernel reads V in (its second product's operand must be "K-major"); a V
    quantised straight into it saves the kernel a transposing copy of V on every call."""
    B, H, N, D = x.shape
    n_pad = -(-N // 16) * 16
    t = torch.zeros(B, H, D, n_pad, device=x.device, dtype=x.dtype)
    t[..., :N] = x.transpose(-1, -2)
    return t[..., :N].transpose(-1, -2)


def transposed(v: torch.Tensor) -> torch.Tensor:
    """Vᵀ [B, H, D, N padded to 16] over ``v`` [B, H, N, D] stored as :func:`k_major` stores it
    (16-byte aligned); any other ``v`` is first copied into that layout. What the FP8 kernels'
    second product reads."""
    B, H, N, D = v.shape
    n_pad = -(-N // 16) * 16
    if not is_k_major(v) or v.data_ptr() % 16:
        v = k_major(v)
    return torch.as_strided(v, (B, H, D, n_pad), (H * D * n_pad, D * n_pad, n_pad, 1))


def is_k_major(x: torch.Tensor) -> bool:
    """Whether ``x`` [B, H, N, D] is laid out as :func:`k_major` lays it out."""
    B, H, N, D = x.shape
    n_pad = -(-N // 16) * 16
    return x.stride() == (H * D * n_pad, D * n_pad, 1, n_pad) and x.storage_offset() == 0

