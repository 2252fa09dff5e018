"""Interop with torch's FlexAttention ``BlockMask`` (torch.nn.attention.flex_attention).

FlexAttention stores the same thing as :mod:`.csr`, padded per row instead of packed:
``kv_num_blocks`` [B, H, Tr] (the counts) and ``kv_indices`` [B, H, Tr, Tc] (each row's list,
padded), once for partial tiles, which run its ``mask_mod``, and once for full tiles
(``full_kv_*``), which skip it. Both directions are supported where torch provides them:

* :func:`to_flex` - ``BlockMask.from_kv_blocks`` with our lists (full and partial split);
* :func:`from_flex` - ``BlockMask.to_dense()`` for the tiles, and the ``mask_mod`` evaluated
  (``create_mask``) for the token mask of the partial tiles.

:func:`flex_available` says whether this torch has FlexAttention at all; callers skip cleanly
when it does not.
"""
from __future__ import annotations

import torch

from flashedu.ops.block_sparse.masks.mask import BlockSparseMask, expand


def flex_available() -> str | None:
    """None when torch's FlexAttention ``BlockMask`` can be built here, else why not."""
    try:
        from torch.nn.attention.flex_attention import BlockMask  # noqa: F401
    except ImportError as exc:
        return f"torch {torch.__version__} has no FlexAttention ({exc})"
    if not hasattr(BlockMask, "from_kv_blocks") or not hasattr(BlockMask, "to_dense"):
        return f"torch {torch.__version__}'s BlockMask lacks from_kv_blocks/to_dense"
    return None


def _padded_lists(grid: torch.Tensor):
    """[Hm, R, C] bool -> (counts [1, Hm, R], indices [1, Hm, R, C]) int32, listed first."""
    C = grid.shape[-1]
    order = torch.where(grid, torch.arange(C), C + torch.arange(C)).argsort(dim=-1)
    return grid.sum(-1).to(torch.int32)[None], order.to(torch.int32)[None]


def to_flex(mask: BlockSparseMask, *, causal: bool = False, device="cpu"):
    """A FlexAttention ``BlockMask`` computing what ``mask`` (with ``causal``) computes.

    Tiles that are partial or cross the causal diagonal go to ``kv_*``, the others are full
    tiles (``full_kv_*``); ``mask_mod`` states the whole mask (tile grid, token mask, causal)."""
    why = flex_available()
    if why:
        raise RuntimeError(why)
    from torch.nn.attention.flex_attention import BlockMask

    blocks = mask.effective_blocks(causal)
    partial = mask.partial() & blocks
    if causal:
        r0 = torch.arange(mask.Tr)[:, None] * mask.block_r
        c1 = torch.clamp(torch.arange(1, mask.Tc + 1) * mask.block_c, max=mask.N_k)[None, :]
        partial = partial | (blocks & (c1 - 1 > r0))
    full = blocks & ~partial
    kv_n, kv_i = _padded_lists(partial)
    full_n, full_i = _padded_lists(full)
    # Full tiles skip mask_mod in the fused kernels, but torch's eager (unfused) path applies
    # mask_mod alone to every score: so it must say everything, tiles included. It reads the
    # small tile grid, and the dense token mask only when the mask has one.
    grid = mask.blocks.to(device)  # [Hm, Tr, Tc]
    token = None if mask.token_mask is None else mask.token_mask.to(device)  # [Hm, N, N_k]
    shared, br, bc = mask.heads == 1, mask.block_r, mask.block_c

    def mask_mod(b, h, q_idx, kv_idx):
        hh = 0 if shared else h
        keep = grid[hh, q_idx // br, kv_idx // bc]
        if token is not None:
            keep = keep & token[hh, q_idx, kv_idx]
        if causal:
            keep = keep & (q_idx >= kv_idx)
        return keep

    args = [t.to(device) for t in (kv_n, kv_i, full_n, full_i)]
    return BlockMask.from_kv_blocks(*args, BLOCK_SIZE=(mask.block_r, mask.block_c), mask_mod=mask_mod,
                                    seq_lengths=(mask.N, mask.N_k))


def from_flex(block_mask) -> BlockSparseMask:
    """A :class:`BlockSparseMask` from a FlexAttention ``BlockMask`` (batch 1, or every batch
    element equal). Partial tiles get their token mask by evaluating the ``mask_mod``."""
    why = flex_available()
    if why:
        raise RuntimeError(why)
    from torch.nn.attention.flex_attention import BlockMask, create_mask

    if not isinstance(block_mask, BlockMask):
        raise TypeError(f"block_mask must be a torch BlockMask, got {type(block_mask).__name__}")
    dense = block_mask.to_dense().bool().cpu()  # [B, H, Tr, Tc]
    if not bool((dense == dense[:1]).all()):
        raise ValueError("block_mask differs across the batch; flashedu masks are per head only")
    br, bc = (int(x) for x in block_mask.BLOCK_SIZE)
    N, N_k = (int(x) for x in block_mask.seq_lengths)
    blocks = dense[0][:, :-(-N // br), :-(-N_k // bc)]  # [H, Tr, Tc]
    token = None
    if int(block_mask.kv_num_blocks.sum()) > 0 and block_mask.mask_mod is not None:
        full = torch.zeros_like(blocks)
        if block_mask.full_kv_num_blocks is not None:
            fn, fi = block_mask.full_kv_num_blocks[0].cpu(), block_mask.full_kv_indices[0].cpu()
            listed = torch.arange(fi.shape[-1]) < fn[..., None].long()  # [H, Tr, Tc_pad]
            h, i, slot = torch.nonzero(listed, as_tuple=True)
            full[h, i, fi[h, i, slot].long()] = True
        H = blocks.shape[0]
        evaluated = create_mask(block_mask.mask_mod, 1, H, N, N_k, device="cpu")[0].bool()  # [H, N, N_k]
        # Full tiles keep every score; partial tiles keep what mask_mod keeps.
        token = expand(full, N, N_k, br, bc) | (expand(blocks & ~full, N, N_k, br, bc) & evaluated)
    return BlockSparseMask(blocks, br, bc, N, N_k, token)


__all__ = ["flex_available", "from_flex", "to_flex"]
