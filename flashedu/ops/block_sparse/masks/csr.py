"""The layout a kernel reads a block mask in: per block row, a count and a list (CSR).

A program of the forward owns one Q block i and must visit the K/V blocks of row i. With the
[Tr, Tc] bitmap it would loop over all Tc bits and branch on each, so a row with 3 tiles out
of 512 still costs 512 iterations of loop overhead and a bitmap read per tile. With compressed
sparse rows it loops over exactly the listed tiles::

    ptr   = [0, 2, 5, ...]           row i's entries are ptr[i] .. ptr[i+1]-1 (count = difference)
    index = [0, 1,  0, 1, 2, ...]    the K/V block j of each entry
    tile  = [-1, -1, -1, 3, -1, ...] which token-mask tile a partial entry loads (-1: full tile)

The kernels' layout also orders each row's list: the entries that need no mask first
(``clean`` of them), then the ones that do (partial, on the causal diagonal, or the short tile
at the end of the sequence). The kernel then runs two loops, a mask-free one and a masked one,
as v2's kernel does; the order of the tiles does not change the result, because chapter 2's
merge ⊕ is associative and commutative. The first ``run`` clean entries of a row are
consecutive blocks ``first, first+1, ...``; when that is all of them (a dense row, a band, the
causal part left of the diagonal) the forward walks them by pointer arithmetic, as dense v2
does, and otherwise reads the index list. The backward's dK/dV kernel owns a K/V block and needs
the transpose: per K/V block, the list of Q blocks (``by="col"``).

Rows of every head are stacked: row r = h · rows + i, so one ``ptr`` serves all heads.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from flashedu.ops.block_sparse.masks.mask import BlockSparseMask


@dataclass(frozen=True)
class CSR:
    """Compressed sparse rows of a [heads, rows, cols] bool grid (int32 tensors)."""

    ptr: torch.Tensor  # [heads · rows + 1] offsets into index
    index: torch.Tensor  # [nnz] column (inner block) of each entry
    tile: torch.Tensor  # [nnz] token-mask tile of each entry, -1 for a full tile
    clean: torch.Tensor  # [heads · rows] leading entries of each row that need no mask
    run: torch.Tensor  # [heads · rows] leading clean entries that are consecutive blocks
    first: torch.Tensor  # [heads · rows] the block of a row's first entry (0 for an empty row)
    heads: int
    rows: int
    cols: int

    @property
    def counts(self) -> torch.Tensor:
        """[heads, rows]: tiles listed per row."""
        return (self.ptr[1:] - self.ptr[:-1]).reshape(self.heads, self.rows)

    @property
    def nnz(self) -> int:
        return self.index.numel()

    def row(self, h: int, i: int) -> list[int]:
        """The inner blocks listed for row i of head h, in visiting order."""
        r = h * self.rows + i
        return self.index[int(self.ptr[r]):int(self.ptr[r + 1])].tolist()

    def to(self, device) -> "CSR":
        return CSR(*(t.to(device) for t in (self.ptr, self.index, self.tile, self.clean, self.run, self.first)),
                   self.heads, self.rows, self.cols)


def to_csr(blocks: torch.Tensor, *, clean: torch.Tensor | None = None,
           tile: torch.Tensor | None = None) -> CSR:
    """CSR of ``blocks`` [heads, rows, cols] (or [rows, cols]). ``clean`` (same shape) puts the
    tiles that need no mask first in each row; ``tile`` gives each tile's token-mask tile id."""
    if not isinstance(blocks, torch.Tensor) or blocks.dtype != torch.bool:
        raise TypeError(f"blocks must be a bool tensor, got {getattr(blocks, 'dtype', type(blocks).__name__)}")
    if blocks.dim() == 2:
        blocks = blocks[None]
    if blocks.dim() != 3:
        raise ValueError(f"blocks must have shape [heads, rows, cols], got {tuple(blocks.shape)}")
    Hm, R, C = blocks.shape
    clean = torch.zeros_like(blocks) if clean is None else clean.reshape(Hm, R, C)
    tile = torch.full((Hm, R, C), -1, dtype=torch.int32) if tile is None else tile.reshape(Hm, R, C)
    cols = torch.arange(C).expand(Hm, R, C)
    # Sort key: listed clean tiles, then listed masked tiles, each by column; unlisted last.
    key = torch.where(blocks, cols + C * (~clean).long(), torch.full_like(cols, 2 * C))
    order = key.argsort(dim=-1, stable=True)  # [Hm, R, C]
    listed = torch.gather(blocks, -1, order)  # True for the first count entries of each row
    counts = blocks.sum(-1).reshape(-1)
    ptr = torch.zeros(Hm * R + 1, dtype=torch.int32)
    ptr[1:] = counts.cumsum(0)
    n_clean = (blocks & clean).sum(-1)  # [Hm, R]
    # Leading clean entries whose block is the first one's plus their position.
    steps = (order == order[..., :1] + torch.arange(C)) & (torch.arange(C) < n_clean[..., None])
    run = steps.int().cumprod(-1).sum(-1)
    first = torch.where(counts.reshape(Hm, R) > 0, order[..., 0], 0)
    return CSR(ptr=ptr, index=order[listed].to(torch.int32),
               tile=torch.gather(tile.to(torch.int32), -1, order)[listed],
               clean=n_clean.reshape(-1).to(torch.int32), run=run.reshape(-1).to(torch.int32),
               first=first.reshape(-1).to(torch.int32), heads=Hm, rows=R, cols=C)


def from_csr(csr: CSR) -> torch.Tensor:
    """The [heads, rows, cols] bool grid back from its CSR."""
    grid = torch.zeros(csr.heads * csr.rows, csr.cols, dtype=torch.bool)
    row_of = torch.repeat_interleave(torch.arange(csr.heads * csr.rows), csr.counts.reshape(-1).long())
    grid[row_of, csr.index.long()] = True
    return grid.reshape(csr.heads, csr.rows, csr.cols)


@dataclass(frozen=True)
class KernelLayout:
    """What a block-sparse kernel reads from HBM: the row lists (forward, dQ), the column lists
    (dK/dV) and the token-mask tiles of the partial tiles, [n_partial, Br, Bc] int8."""

    rows: CSR
    cols: CSR
    tiles: torch.Tensor
    block_r: int
    block_c: int


def kernel_layout(mask: BlockSparseMask, *, causal: bool, device="cpu") -> KernelLayout:
    """Build (once per mask, causal flag and device: cached on the mask) the kernel's layout.

    A tile needs the masked loop when it is partial, crosses the causal diagonal, or is the
    short last tile: in the row lists the last K/V block (its scores past N_k must be -inf), in
    the column lists the last Q block (its rows past N must not add to dK, dV)."""
    key = ("layout", bool(causal), str(torch.device(device)))
    if key in mask._cache:
        return mask._cache[key]
    blocks = mask.effective_blocks(causal)
    br, bc = mask.block_r, mask.block_c
    Tr, Tc = mask.Tr, mask.Tc
    partial = mask.partial() & blocks
    tile_id = torch.where(partial, partial.reshape(-1).cumsum(0).reshape(partial.shape) - 1,
                          torch.full_like(partial, -1, dtype=torch.long)).to(torch.int32)
    tiles = mask.token_tiles()[partial].to(torch.int8)  # [n_partial, Br, Bc]
    r0 = torch.arange(Tr)[:, None] * br
    c1 = torch.clamp(torch.arange(1, Tc + 1) * bc, max=mask.N_k)[None, :]
    diagonal = (c1 - 1 > r0) if causal else torch.zeros(Tr, Tc, dtype=torch.bool)
    short_col = (torch.arange(1, Tc + 1) * bc > mask.N_k)[None, :].expand(Tr, Tc)
    short_row = (torch.arange(1, Tr + 1) * br > mask.N)[:, None].expand(Tr, Tc)
    row_clean = ~partial & ~diagonal & ~short_col
    col_clean = ~partial & ~diagonal & ~short_row
    layout = KernelLayout(
        rows=to_csr(blocks, clean=row_clean, tile=tile_id).to(device),
        cols=to_csr(blocks.transpose(1, 2), clean=col_clean.transpose(1, 2),
                    tile=tile_id.transpose(1, 2)).to(device),
        tiles=(tiles if tiles.numel() else torch.ones(1, br, bc, dtype=torch.int8)).to(device),
        block_r=br, block_c=bc)
    mask._cache[key] = layout
    return layout
