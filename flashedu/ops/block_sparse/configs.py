"""Which kernel tiles a block-sparse launch may use, and picking the fastest on a GPU.

The kernels' tiles must divide the mask's blocks, so a config table is filtered by the mask
before anything else; :func:`~flashedu.ops._triton.to_configs` then drops what does
not fit this GPU's shared memory and registers. Triton's autotuner cannot choose among them:
each config needs its own CSR layout (another argument), so the choice is made here, timed once
per shape and kept for the process (:func:`~flashedu.ops._triton.choose`).
"""
from __future__ import annotations

import triton

from flashedu.ops._triton import to_configs


def candidates(table: dict, mask, *, head_dim: int, elem_bytes: int, resident: int,
               resident_tiles: int = 2, acc_tiles: int = 1) -> list[triton.Config]:
    """This arch's configs that fit and whose tiles divide the mask's blocks."""
    out = [c for c in to_configs(table, head_dim, elem_bytes, resident, resident_tiles, acc_tiles)
           if mask.block_r % c.kwargs["BLOCK_M"] == 0 and mask.block_c % c.kwargs["BLOCK_N"] == 0]
    if not out:
        raise ValueError(f"block_mask: blocks {mask.block_r}×{mask.block_c} have no kernel tile that divides "
                         f"them here (tiles are powers of two ≥ 16 up to 128; use multiples of 16)")
    return out
