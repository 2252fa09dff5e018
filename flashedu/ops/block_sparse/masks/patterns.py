"""Block-sparse patterns from the literature, as :class:`~flashedu.ops.block_sparse.masks.BlockSparseMask`.

Every builder works on tile indices (i for Q blocks, j for K/V blocks) and returns a mask whose
listed tiles are full, as in the FlashAttention paper's block-sparse attention; only
:func:`sliding_window` and :func:`with_causal` work on tokens, so their edge tiles are partial.

* :func:`local` - a band of width w around the diagonal (Sparse Transformer's local heads);
* :func:`strided` - every s-th diagonal (dilated / strided heads);
* :func:`global_local` - local plus g global blocks that see and are seen by everything
  (Longformer); :func:`bigbird` adds r random blocks per row (BigBird);
* :func:`butterfly` - tile (i, j) when i XOR j is 0 or a power of two: the flat butterfly of
  Pixelated Butterfly, the pattern the FlashAttention paper trains with;
* :func:`random_blocks` - exactly round(density · Tr · Tc) tiles, uniformly at random.
"""
from __future__ import annotations

import torch

from flashedu.iomodel.blocks import n_tiles
from flashedu.ops.block_sparse.masks.mask import BlockSparseMask, causal_blocks, from_token_mask, _positive


def _grid(N: int, N_k: int | None, block_r: int, block_c: int | None):
    block_c = block_r if block_c is None else block_c
    N_k = N if N_k is None else N_k
    Tr = n_tiles(_positive("N", N), _positive("block_r", block_r))
    Tc = n_tiles(_positive("N_k", N_k), _positive("block_c", block_c))
    i = torch.arange(Tr)[:, None]  # [Tr, 1]
    j = torch.arange(Tc)[None, :]  # [1, Tc]
    return i, j, N_k, block_c


def _mask(grid: torch.Tensor, N, N_k, block_r, block_c) -> BlockSparseMask:
    return BlockSparseMask(grid.reshape(-1, *grid.shape[-2:]), block_r, block_c, N, N_k)


def local(N: int, *, block: int, width: int = 1, N_k: int | None = None,
          block_c: int | None = None) -> BlockSparseMask:
    """Tiles within ``width`` blocks of the diagonal: |i - j| ≤ width."""
    if isinstance(width, bool) or not isinstance(width, int) or width < 0:
        raise ValueError(f"width must be a non-negative int, got {width!r}")
    i, j, N_k, bc = _grid(N, N_k, block, block_c)
    return _mask((i - j).abs() <= width, N, N_k, block, bc)


def strided(N: int, *, block: int, stride: int, N_k: int | None = None,
            block_c: int | None = None) -> BlockSparseMask:
    """Dilated: tiles on every ``stride``-th diagonal, (i - j) mod stride == 0."""
    _positive("stride", stride)
    i, j, N_k, bc = _grid(N, N_k, block, block_c)
    return _mask((i - j) % stride == 0, N, N_k, block, bc)


def global_local(N: int, *, block: int, width: int = 1, n_global: int = 1, N_k: int | None = None,
                 block_c: int | None = None) -> BlockSparseMask:
    """Longformer-like: the local band plus the first ``n_global`` block rows and columns
    (global tokens attend to every token and every token attends to them)."""
    if isinstance(n_global, bool) or not isinstance(n_global, int) or n_global < 0:
        raise ValueError(f"n_global must be a non-negative int, got {n_global!r}")
    i, j, N_k, bc = _grid(N, N_k, block, block_c)
    band = local(N, block=block, width=width, N_k=N_k, block_c=bc).blocks[0]
    return _mask(band | (i < n_global) | (j < n_global), N, N_k, block, bc)


def bigbird(N: int, *, block: int, width: int = 1, n_global: int = 1, n_random: int = 1,
            seed: int = 0, N_k: int | None = None, block_c: int | None = None) -> BlockSparseMask:
    """BigBird-like: :func:`global_local` plus ``n_random`` random tiles in every block row."""
    base = global_local(N, block=block, width=width, n_global=n_global, N_k=N_k, block_c=block_c).blocks[0]
    g = torch.Generator().manual_seed(seed)
    extra = torch.zeros_like(base)
    for i in range(base.shape[0]):
        free = torch.nonzero(~base[i]).flatten()
        pick = free[torch.randperm(len(free), generator=g)[:n_random]]
        extra[i, pick] = True
    bc = block if block_c is None else block_c
    return _mask(base | extra, N, N if N_k is None else N_k, block, bc)


def butterfly(N: int, *, block: int, N_k: int | None = None, block_c: int | None = None) -> BlockSparseMask:
    """Flat butterfly: tile (i, j) when i XOR j is 0 or a power of two, i.e. the union of the
    log₂ T butterfly factors; each block row has 1 + log₂ T tiles when T is a power of two."""
    i, j, N_k, bc = _grid(N, N_k, block, block_c)
    x = i ^ j
    return _mask((x & (x - 1)) == 0, N, N_k, block, bc)


def random_blocks(N: int, *, block: int, density: float, seed: int = 0, heads: int = 1,
                  N_k: int | None = None, block_c: int | None = None) -> BlockSparseMask:
    """Exactly round(density · Tr · Tc) tiles per head, chosen uniformly (rows may be empty)."""
    if not isinstance(density, (int, float)) or isinstance(density, bool) or not 0 <= density <= 1:
        raise ValueError(f"density must be a number in [0, 1], got {density!r}")
    _positive("heads", heads)
    i, j, N_k, bc = _grid(N, N_k, block, block_c)
    Tr, Tc = i.shape[0], j.shape[1]
    g = torch.Generator().manual_seed(seed)
    grid = torch.zeros(heads, Tr * Tc, dtype=torch.bool)
    k = round(density * Tr * Tc)
    for h in range(heads):
        grid[h, torch.randperm(Tr * Tc, generator=g)[:k]] = True
    return BlockSparseMask(grid.reshape(heads, Tr, Tc), block, bc, N, N_k)


def sliding_window(N: int, *, window: int, block: int, block_c: int | None = None) -> BlockSparseMask:
    """Token-level sliding window, |query − key| ≤ ``window``: the tiles the band crosses are
    partial, the ones inside it full, the rest skipped."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 0:
        raise ValueError(f"window must be a non-negative int, got {window!r}")
    pos = torch.arange(_positive("N", N))
    return from_token_mask((pos[:, None] - pos[None, :]).abs() <= window, block_r=block, block_c=block_c)


def with_causal(mask: BlockSparseMask) -> BlockSparseMask:
    """The causal mask baked into ``mask``: tiles above the diagonal dropped, the diagonal tiles
    made partial. The kernels' ``causal=True`` does the same without loading mask tiles; this
    form is for pictures and for FlexAttention, which has no causal flag."""
    token = mask.dense(causal=True)
    blocks = mask.blocks & causal_blocks(mask.N, mask.N_k, mask.block_r, mask.block_c)
    return BlockSparseMask(blocks, mask.block_r, mask.block_c, mask.N, mask.N_k, token)


PATTERNS = {"local": local, "strided": strided, "global_local": global_local, "bigbird": bigbird,
            "butterfly": butterfly, "random": random_blocks}
