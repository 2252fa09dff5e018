"""Block sizes, tile ranges and the causal tile test shared by every tiled algorithm.

Default block sizes
-------------------
* **v1** follows FlashAttention's Algorithm 1: ``Bc = ⌈M/(4d)⌉, Br = min(Bc, d)``
  (:func:`fa1_block_sizes`). The paper's constant 4 budgets M for the four operand tiles
  Q_i, O_i, K_j, V_j only (its analysis is Θ(·)); S_ij and the row statistics ℓ_i, m_i are also on
  chip, and with M = all of the SRAM the tiles overflow it. flashedu therefore gives the paper's
  four tiles half the SRAM, ``M = sram_bytes // (2 · bytes per element)``, and the rest holds
  S_ij and the statistics. (For fp16 this is M = sram_bytes / 4.)
* **v2** and **standard**: square blocks, the largest power of two ≤ 128 whose tiles fit. FA2's
  kernels use 64–128-row tiles; beyond 128 the accumulators no longer fit in registers on real
  GPUs, so bigger tiles stop paying.

On-chip element sizes: tiles copied from HBM keep their HBM dtype; accumulators (S_ij, O_i in v2)
and row statistics are fp32 (fp64 when the inputs are fp64), as in every FlashAttention kernel.
"""
from __future__ import annotations

import math

import torch

# An H100's shared memory per SM (228 KiB), the default SRAM of every simulation.
DEFAULT_SRAM_BYTES = 228 * 1024
MAX_SQUARE_BLOCK = 128


def itemsize_of(dtype: torch.dtype) -> int:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    return torch.empty((), dtype=dtype, device="meta").element_size()


def acc_itemsize(dtype: torch.dtype) -> int:
    """Bytes of an on-chip accumulator or row statistic: fp32, or fp64 for fp64 inputs."""
    return 8 if dtype == torch.float64 else 4


def n_tiles(n: int, block: int) -> int:
    """⌈n / block⌉: the last tile is short when block does not divide n."""
    return -(-n // block)


def fa1_block_sizes(M: int, d: int) -> tuple[int, int]:
    """FlashAttention Algorithm 1, line 1: ``Bc = ⌈M/(4d)⌉``, ``Br = min(Bc, d)``. Returns (Br, Bc)."""
    if M < 1 or d < 1:
        raise ValueError(f"M and d must be positive, got M={M}, d={d}")
    bc = math.ceil(M / (4 * d))
    return min(bc, d), bc


def sram_footprint(algorithm: str, *, block_r: int, block_c: int, d: int, itemsize: int,
                   acc: int) -> int:
    """Bytes one program keeps on chip at its peak (the buffers its reference allocates)."""
    br, bc, e = block_r, block_c, itemsize
    if algorithm == "v2":  # Q_i, K_j, V_j; O_i accumulator; S_ij; m_i, ℓ_i
        return (br + 2 * bc) * d * e + br * d * acc + br * bc * acc + 2 * br * acc
    if algorithm == "v1":  # K_j, V_j; Q_i, O_i; ℓ_i, m_i; S_ij
        return 2 * bc * d * e + 2 * br * d * e + 2 * br * acc + br * bc * acc
    if algorithm == "standard":  # the larger of step 1 (Q_i, K_j, S_ij) and step 3 (P_ij, V_j, O_i)
        return max((br + bc) * d * e + br * bc * acc, br * bc * e + bc * d * e + br * d * acc)
    raise ValueError(f"algorithm must be 'standard', 'v1' or 'v2', got {algorithm!r}")


def default_block_sizes(algorithm: str, *, d: int, sram_bytes: int, dtype: torch.dtype) -> tuple[int, int]:
    """(Br, Bc) when none are given; see the module docstring for the rule per algorithm."""
    e, acc = itemsize_of(dtype), acc_itemsize(dtype)
    if algorithm == "v1":
        return fa1_block_sizes(max(1, sram_bytes // (2 * e)), d)
    block = MAX_SQUARE_BLOCK
    while block >= 1:
        if sram_footprint(algorithm, block_r=block, block_c=block, d=d, itemsize=e, acc=acc) <= sram_bytes:
            return block, block
        block //= 2
    raise ValueError(f"sram_bytes={sram_bytes} is too small for even 1×1 tiles of {algorithm} at d={d}")


def check_blocks(block_r, block_c) -> None:
    for name, b in (("block_r", block_r), ("block_c", block_c)):
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise ValueError(f"{name} must be a positive int, got {b!r}")


def resolve_blocks(algorithm: str, *, d: int, sram_bytes: int, dtype: torch.dtype,
                   block_r=None, block_c=None) -> tuple[int, int]:
    """The block sizes to use: the given ones, or the default for whichever is None."""
    if block_r is None or block_c is None:
        dr, dc = default_block_sizes(algorithm, d=d, sram_bytes=sram_bytes, dtype=dtype)
        block_r = dr if block_r is None else block_r
        block_c = dc if block_c is None else block_c
    check_blocks(block_r, block_c)
    return block_r, block_c


def fully_masked(r0: int, r1: int, c0: int) -> bool:
    """Causal: every key of tile columns [c0, …) lies after every query of rows [r0, r1)."""
    return c0 > r1 - 1


def partly_masked(r0: int, c1: int) -> bool:
    """Causal: some key of columns [·, c1) lies after some query of rows [r0, ·)."""
    return c1 - 1 > r0


def causal_tile_mask(r0: int, r1: int, c0: int, c1: int, device) -> torch.Tensor:
    """[r1-r0, c1-c0] bool, True where query row may attend key column (column ≤ row)."""
    rows = torch.arange(r0, r1, device=device)[:, None]
    cols = torch.arange(c0, c1, device=device)[None, :]
    return cols <= rows
