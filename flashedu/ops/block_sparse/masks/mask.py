"""A block mask: which (Q block, K/V block) tiles of the score matrix are computed at all.

Block-sparse FlashAttention (seed 002) cuts the N × N_k score matrix into Tr × Tc tiles of
Br × Bc scores and computes only the tiles a mask lists. A tile that is not listed is skipped:
its K_j, V_j are never loaded, which is where the IO saving comes from. A listed tile is either

* **full**: every score in it is kept (the paper's block-sparse attention has only these), or
* **partial**: a token mask says which of its scores are kept; the kernel loads that Br × Bc
  tile of the token mask and masks scores to -inf.

:class:`BlockSparseMask` holds the [Hm, Tr, Tc] boolean grid (Hm = 1: shared by every head,
Hm = H: one grid per head) and, optionally, the dense [Hm, N, N_k] token mask behind it.
Causal attention is not baked in: ``effective_blocks(causal=True)`` drops the tiles above the
diagonal, and the kernels mask the diagonal tiles themselves, as v2 does.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from flashedu.iomodel.blocks import n_tiles


def _positive(name: str, x) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or x < 1:
        raise ValueError(f"{name} must be a positive int, got {x!r}")
    return x


def _as_heads(t: torch.Tensor, name: str) -> torch.Tensor:
    """[R, C] -> [1, R, C]; [Hm, R, C] stays; anything else is an error naming ``name``."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor, got {t.dtype}")
    if t.dim() == 2:
        t = t[None]
    if t.dim() != 3:
        raise ValueError(f"{name} must have shape [rows, cols] or [heads, rows, cols], got {tuple(t.shape)}")
    return t.detach().to("cpu")


def causal_blocks(N: int, N_k: int, block_r: int, block_c: int) -> torch.Tensor:
    """[Tr, Tc] bool: tiles holding at least one (query, key) pair with key ≤ query."""
    Tr, Tc = n_tiles(N, block_r), n_tiles(N_k, block_c)
    last_row = torch.clamp(torch.arange(1, Tr + 1) * block_r, max=N) - 1  # [Tr]
    first_col = torch.arange(Tc) * block_c  # [Tc]
    return first_col[None, :] <= last_row[:, None]


def expand(blocks: torch.Tensor, N: int, N_k: int, block_r: int, block_c: int) -> torch.Tensor:
    """[Hm, Tr, Tc] block grid -> [Hm, N, N_k] token mask (every score of a listed tile kept)."""
    blocks = _as_heads(blocks, "blocks")
    full = blocks.repeat_interleave(block_r, dim=1).repeat_interleave(block_c, dim=2)
    return full[:, :N, :N_k]


def tile_view(token: torch.Tensor, block_r: int, block_c: int, *, pad: bool) -> torch.Tensor:
    """[Hm, N, N_k] -> [Hm, Tr, Tc, Br, Bc], the scores past N or N_k filled with ``pad``."""
    Hm, N, N_k = token.shape
    Tr, Tc = n_tiles(N, block_r), n_tiles(N_k, block_c)
    padded = torch.full((Hm, Tr * block_r, Tc * block_c), pad, dtype=torch.bool)
    padded[:, :N, :N_k] = token
    return padded.reshape(Hm, Tr, block_r, Tc, block_c).permute(0, 1, 3, 2, 4)


@dataclass(frozen=True, eq=False)
class BlockSparseMask:
    """Which tiles to compute. Build one with :func:`from_blocks`, :func:`from_token_mask` or a
    pattern of :mod:`flashedu.ops.block_sparse.masks.patterns`; the constructor only validates."""

    blocks: torch.Tensor  # [Hm, Tr, Tc] bool, True = compute this tile
    block_r: int
    block_c: int
    N: int  # query length
    N_k: int  # key length
    token_mask: torch.Tensor | None = None  # [Hm, N, N_k] bool, or None: listed tiles are full
    _cache: dict = field(default_factory=dict, repr=False, compare=False)  # kernel layouts

    def __post_init__(self):
        for name in ("block_r", "block_c", "N", "N_k"):
            _positive(name, getattr(self, name))
        blocks = _as_heads(self.blocks, "blocks")
        want = (n_tiles(self.N, self.block_r), n_tiles(self.N_k, self.block_c))
        if tuple(blocks.shape[1:]) != want:
            raise ValueError(f"blocks must have shape [heads, {want[0]}, {want[1]}] for N={self.N}, "
                             f"N_k={self.N_k}, block_r={self.block_r}, block_c={self.block_c}; "
                             f"got {tuple(blocks.shape)}")
        object.__setattr__(self, "blocks", blocks)
        if self.token_mask is not None:
            token = _as_heads(self.token_mask, "token_mask")
            if tuple(token.shape[1:]) != (self.N, self.N_k) or token.shape[0] != blocks.shape[0]:
                raise ValueError(f"token_mask must have shape [{blocks.shape[0]}, {self.N}, {self.N_k}] "
                                 f"(one per block grid), got {tuple(token.shape)}")
            object.__setattr__(self, "token_mask", token)

    @property
    def heads(self) -> int:
        """Hm: 1 when every head shares the mask, else the number of heads."""
        return self.blocks.shape[0]

    @property
    def Tr(self) -> int:
        return self.blocks.shape[1]

    @property
    def Tc(self) -> int:
        return self.blocks.shape[2]

    def effective_blocks(self, causal: bool = False) -> torch.Tensor:
        """[Hm, Tr, Tc]: the tiles a kernel visits (with ``causal``, none above the diagonal)."""
        if not causal:
            return self.blocks
        if self.N != self.N_k:
            raise ValueError(f"causal=True needs N == N_k, got N={self.N}, N_k={self.N_k}")
        return self.blocks & causal_blocks(self.N, self.N_k, self.block_r, self.block_c)

    def density(self, causal: bool = False) -> float:
        """Fraction of the Tr·Tc tiles computed (per head, averaged over heads)."""
        return self.effective_blocks(causal).float().mean().item()

    def nnz(self, causal: bool = False) -> int:
        """Tiles computed, summed over the mask's heads."""
        return int(self.effective_blocks(causal).sum())

    def dense(self, causal: bool = False) -> torch.Tensor:
        """[Hm, N, N_k] bool: the token mask this block mask means, the one attention applies."""
        token = expand(self.blocks, self.N, self.N_k, self.block_r, self.block_c)
        if self.token_mask is not None:
            token = token & self.token_mask
        if causal:
            if self.N != self.N_k:
                raise ValueError(f"causal=True needs N == N_k, got N={self.N}, N_k={self.N_k}")
            token = token & torch.ones(self.N, self.N, dtype=torch.bool).tril()
        return token

    def partial(self) -> torch.Tensor:
        """[Hm, Tr, Tc] bool: listed tiles whose token mask drops some score (in range).
        Positions past N or N_k do not make a tile partial: the kernels mask those anyway."""
        if self.token_mask is None:
            return torch.zeros_like(self.blocks)
        tiles = tile_view(self.token_mask, self.block_r, self.block_c, pad=True)
        return self.blocks & ~tiles.flatten(-2).all(-1)

    def token_tiles(self) -> torch.Tensor:
        """[Hm, Tr, Tc, Br, Bc] bool: the token mask cut into tiles (True past N and N_k)."""
        token = self.token_mask if self.token_mask is not None else torch.ones(
            self.heads, self.N, self.N_k, dtype=torch.bool)
        return tile_view(token, self.block_r, self.block_c, pad=True)

    def refine(self, block_r: int, block_c: int) -> "BlockSparseMask":
        """The same mask at smaller tiles that divide these (a kernel's own block sizes)."""
        if block_r == self.block_r and block_c == self.block_c:
            return self
        key = ("refined", block_r, block_c)
        if key in self._cache:  # kept, so the refined mask's kernel layouts are cached too
            return self._cache[key]
        for name, new, old in (("block_r", block_r, self.block_r), ("block_c", block_c, self.block_c)):
            if _positive(name, new) > old or old % new:
                raise ValueError(f"{name}={new} must divide the mask's {old}")
        fine = self.blocks.repeat_interleave(self.block_r // block_r, 1).repeat_interleave(self.block_c // block_c, 2)
        fine = fine[:, :n_tiles(self.N, block_r), :n_tiles(self.N_k, block_c)]
        if self.token_mask is not None:
            # A sub-tile of a partial tile may hold no kept score at all: then it is not computed.
            fine = fine & tile_view(self.token_mask, block_r, block_c, pad=False).flatten(-2).any(-1)
        self._cache[key] = BlockSparseMask(fine, block_r, block_c, self.N, self.N_k, self.token_mask)
        return self._cache[key]

    def __repr__(self) -> str:
        kind = "per-head" if self.heads > 1 else "shared"
        tok = ", with token mask" if self.token_mask is not None else ""
        return (f"BlockSparseMask(N={self.N}, N_k={self.N_k}, blocks {self.block_r}×{self.block_c}, "
                f"{self.Tr}×{self.Tc} tiles, {kind}, density {self.density():.1%}{tok})")


def from_blocks(blocks: torch.Tensor, *, block_r: int, block_c: int | None = None, N: int | None = None,
                N_k: int | None = None) -> BlockSparseMask:
    """A mask from a bool grid [Tr, Tc] or [H, Tr, Tc]; N and N_k default to Tr·Br and Tc·Bc."""
    block_c = block_r if block_c is None else block_c
    blocks = _as_heads(blocks, "blocks")
    N = blocks.shape[1] * _positive("block_r", block_r) if N is None else N
    N_k = blocks.shape[2] * _positive("block_c", block_c) if N_k is None else N_k
    return BlockSparseMask(blocks, block_r, block_c, N, N_k)


def from_token_mask(token_mask: torch.Tensor, *, block_r: int, block_c: int | None = None) -> BlockSparseMask:
    """A mask from a dense bool token mask [N, N_k] or [H, N, N_k] (True = attend).

    A tile with no kept score is skipped; a tile with every score kept is full; the others are
    partial and carry their piece of the token mask to the kernel."""
    block_c = block_r if block_c is None else block_c
    token = _as_heads(token_mask, "token_mask")
    _, N, N_k = token.shape
    blocks = tile_view(token, _positive("block_r", block_r), _positive("block_c", block_c),
                       pad=False).flatten(-2).any(-1)
    return BlockSparseMask(blocks, block_r, block_c, N, N_k, token)


def dense_mask(N: int, N_k: int | None = None, *, block_r: int, block_c: int | None = None) -> BlockSparseMask:
    """Every tile listed: block-sparse attention with this mask is ordinary attention."""
    block_c = block_r if block_c is None else block_c
    N_k = N if N_k is None else N_k
    Tr, Tc = n_tiles(_positive("N", N), _positive("block_r", block_r)), n_tiles(_positive("N_k", N_k), _positive("block_c", block_c))
    return BlockSparseMask(torch.ones(1, Tr, Tc, dtype=torch.bool), block_r, block_c, N, N_k)
