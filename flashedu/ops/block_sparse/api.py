"""Running the block-sparse reference: mask checks, one chip per mask head, the autograd
Function, the public function and the shape-only simulation behind ``iomodel.simulate``.

A mask shared by all heads runs on one chip, as every other reference does (its counts are
multiplied by batch × heads). A per-head mask sends each head down its own list of tiles, so
each head runs on a chip of its own and the reports are summed (the trace kept is head 0's).
"""
from __future__ import annotations

from dataclasses import replace
from functools import partial

import torch
from torch.autograd.function import once_differentiable

from flashedu.ops.block_sparse.masks.mask import BlockSparseMask, dense_mask
from flashedu.iomodel.blocks import default_block_sizes, resolve_blocks
from flashedu.iomodel.chip import Chip
from flashedu.iomodel.report import Report, TensorTraffic, build_report
from flashedu.iomodel.run import check_sram
from flashedu.validate import check_qkv
from flashedu.ops.v2.reference_bwd import backward_block_sizes
from flashedu.ops.block_sparse.reference import block_sparse_backward, block_sparse_forward


def resolve_mask(block_mask, *, N: int, N_k: int, heads: int, d: int, dtype: torch.dtype,
                 sram_bytes: int, backward: bool = False) -> BlockSparseMask:
    """``block_mask`` checked against the problem: None means every tile (at v2's default block
    sizes, or the backward's), a FlexAttention BlockMask is converted."""
    if block_mask is None:
        pick = backward_block_sizes if backward else partial(default_block_sizes, "v2")
        br, bc = pick(d=d, sram_bytes=sram_bytes, dtype=dtype)
        return dense_mask(N, N_k, block_r=br, block_c=bc)
    if not isinstance(block_mask, BlockSparseMask):
        try:
            from torch.nn.attention.flex_attention import BlockMask
        except ImportError:
            BlockMask = ()
        if BlockMask and isinstance(block_mask, BlockMask):
            from flashedu.ops.block_sparse.masks.flex import from_flex
            block_mask = from_flex(block_mask)
        else:
            raise TypeError("block_mask must be a flashedu.ops.block_sparse.masks.BlockSparseMask (or a torch "
                            f"FlexAttention BlockMask), got {type(block_mask).__name__}")
    if (block_mask.N, block_mask.N_k) != (N, N_k):
        raise ValueError(f"block_mask is for N={block_mask.N}, N_k={block_mask.N_k}; "
                         f"q and k have N={N}, N_k={N_k}")
    if block_mask.heads not in (1, heads):
        raise ValueError(f"block_mask has {block_mask.heads} heads; q has {heads} (use 1 to share)")
    return block_mask


def _head(mask: BlockSparseMask, h: int) -> BlockSparseMask:
    """The one-head mask of head h (the mask itself when shared)."""
    if mask.heads == 1:
        return mask
    tok = None if mask.token_mask is None else mask.token_mask[h:h + 1]
    return BlockSparseMask(mask.blocks[h:h + 1], mask.block_r, mask.block_c, mask.N, mask.N_k, tok)


def merge_reports(reports: list[Report]) -> Report:
    """Sum the reports of heads run on separate chips (head 0's trace is kept)."""
    if len(reports) == 1:
        return reports[0]
    per: dict[str, TensorTraffic] = {}
    for r in reports:
        for n, t in r.per_tensor.items():
            old = per.get(n, TensorTraffic(n, t.itemsize, 0, 0))
            per[n] = TensorTraffic(n, t.itemsize, old.read_elements + t.read_elements,
                                   old.write_elements + t.write_elements)
    total = {f: sum(getattr(r, f) for r in reports) for f in
             ("read_elements", "write_elements", "read_bytes", "write_bytes", "flops", "exps",
              "tiles_computed", "tiles_skipped", "heads")}
    return replace(reports[0], per_tensor=per, sram_peak_bytes=max(r.sram_peak_bytes for r in reports),
                   **total)


def _split(mask, *tensors):
    """Per mask head: (one-head mask, the tensors' slices for the heads it covers)."""
    if mask.heads == 1:
        return [(mask, tensors)]
    return [(_head(mask, h), tuple(t[:, h:h + 1] for t in tensors)) for h in range(mask.heads)]


def _largest_divisor(block: int, limit: int) -> int:
    return next(b for b in range(min(block, limit), 0, -1) if block % b == 0)


def backward_mask(mask: BlockSparseMask, *, d: int, dtype: torch.dtype, sram_bytes: int) -> BlockSparseMask:
    """The mask at tiles the backward's larger set of buffers fits: the forward's tiles when they
    fit, else the largest that divide them (so the refined mask lists the same scores)."""
    br, bc = backward_block_sizes(d=d, sram_bytes=sram_bytes, dtype=dtype)
    return mask.refine(_largest_divisor(mask.block_r, br), _largest_divisor(mask.block_c, bc))


def run_forward(q, k, v, mask: BlockSparseMask, *, causal: bool, scale: float, sram_bytes: int):
    """(o, L [B, H, N, 1], report) of the forward, numerically."""
    outs, lses, reports = [], [], []
    B, H, N, D = q.shape
    for m, (qh, kh, vh) in _split(mask, q, k, v):
        chip = Chip.from_qkv(qh, kh, vh, sram_bytes=sram_bytes)
        block_sparse_forward(chip, N=N, N_k=k.shape[2], d=D, scale=scale, causal=causal,
                             block_r=m.block_r, block_c=m.block_c, mask=m)
        reports.append(build_report(chip, algorithm="block_sparse", N=N, N_k=k.shape[2], d=D,
                                    causal=causal, block_r=m.block_r, block_c=m.block_c))
        outs.append(chip.data("O"))
        lses.append(chip.data("L"))
    return torch.cat(outs, 1).to(q.dtype), torch.cat(lses, 1), merge_reports(reports)


def run_backward(q, k, v, o, L, do, mask: BlockSparseMask, *, causal: bool, scale: float, sram_bytes: int):
    """((dq, dk, dv), report) of the backward, numerically; L is the forward's [B, H, N, 1]."""
    grads, reports = [], []
    B, H, N, D = q.shape
    mask = backward_mask(mask, d=D, dtype=q.dtype, sram_bytes=sram_bytes)
    for m, (qh, kh, vh, oh, Lh, doh) in _split(mask, q, k, v, o, L, do):
        chip = Chip.from_qkv(qh.detach(), kh.detach(), vh.detach(), sram_bytes=sram_bytes)
        for name, t in (("O", oh), ("L", Lh), ("dO", doh)):
            chip.tensor(name, N, 1 if name == "L" else D, data=t.detach().to(chip.work_dtype), stat=name == "L")
        block_sparse_backward(chip, N=N, N_k=k.shape[2], d=D, scale=scale, causal=causal,
                              block_r=m.block_r, block_c=m.block_c, mask=m)
        reports.append(build_report(chip, algorithm="block_sparse", N=N, N_k=k.shape[2], d=D, causal=causal,
                                    block_r=m.block_r, block_c=m.block_c, backward=True))
        grads.append([chip.data(n) for n in ("dQ", "dK", "dV")])
    return tuple(torch.cat(g, 1).to(q.dtype) for g in zip(*grads)), merge_reports(reports)


class BlockSparseAttention(torch.autograd.Function):
    """o, report = BlockSparseAttention.apply(q, k, v, mask, causal, scale, sram_bytes)."""

    @staticmethod
    def forward(ctx, q, k, v, mask, causal, scale, sram_bytes):
        o, L, report = run_forward(q, k, v, mask, causal=causal, scale=scale, sram_bytes=sram_bytes)
        ctx.save_for_backward(q, k, v, o, L)
        ctx.config = dict(mask=mask, causal=causal, scale=scale, sram_bytes=sram_bytes)
        return o, report

    @staticmethod
    @once_differentiable
    def backward(ctx, do, _report):
        q, k, v, o, L = ctx.saved_tensors
        c = ctx.config
        (dq, dk, dv), _ = run_backward(q, k, v, o, L, do, c["mask"], causal=c["causal"],
                                       scale=c["scale"], sram_bytes=c["sram_bytes"])
        return dq, dk, dv, None, None, None, None


def block_sparse_attention(q, k, v, *, causal: bool = False, scale: float | None = None, block_mask=None,
                           sram_bytes: int | None = None, return_report: bool = False):
    """Block-sparse FlashAttention on ``[B, H, N, D]`` inputs, tile by tile through the memory model.

    ``block_mask``: a :class:`~flashedu.ops.block_sparse.masks.BlockSparseMask` (shared or one per head), a
    FlexAttention ``BlockMask``, or None for every tile (then this is v2). Its block sizes are
    the tiles. Partial tiles apply the token mask; a row with no kept key gives 0 (and zero
    gradients). Returns o, or ``(o, report)`` with ``return_report=True``. Differentiable.
    """
    scale = check_qkv(q, k, v, causal=causal, scale=scale, name="block_sparse_reference")
    sram_bytes = check_sram(sram_bytes)
    B, H, N, D = q.shape
    mask = resolve_mask(block_mask, N=N, N_k=k.shape[2], heads=H, d=D, dtype=q.dtype, sram_bytes=sram_bytes)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        o, report = BlockSparseAttention.apply(q, k, v, mask, causal, scale, sram_bytes)
    else:
        o, _, report = run_forward(q, k, v, mask, causal=causal, scale=scale, sram_bytes=sram_bytes)
    return (o, report) if return_report else o


def simulate_block_sparse(*, N: int, N_k: int, d: int, block_mask, causal: bool, backward: bool,
                          dtype: torch.dtype, sram_bytes: int, batch: int, heads: int,
                          block_r: int | None = None, block_c: int | None = None) -> Report:
    """Shape-only run (what ``iomodel.simulate("block_sparse", ...)`` returns). The mask's blocks
    are the tiles: block_r, block_c may only repeat them, or without a mask choose a dense one's."""
    if block_mask is not None and (block_r, block_c) != (None, None) and \
            (block_r, block_c) != (block_mask.block_r, block_mask.block_c):
        raise ValueError(f"block_r, block_c ({block_r}, {block_c}) differ from block_mask's "
                         f"({block_mask.block_r}, {block_mask.block_c}); the mask's blocks are the tiles")
    if block_mask is None and (block_r, block_c) != (None, None):
        br, bc = resolve_blocks("v2", d=d, sram_bytes=sram_bytes, dtype=dtype, block_r=block_r, block_c=block_c)
        block_mask = dense_mask(N, N_k, block_r=br, block_c=bc)
    mask = resolve_mask(block_mask, N=N, N_k=N_k, heads=heads, d=d, dtype=dtype, sram_bytes=sram_bytes,
                        backward=backward)
    run = block_sparse_backward if backward else block_sparse_forward
    if backward:
        mask = backward_mask(mask, d=d, dtype=dtype, sram_bytes=sram_bytes)
    per_chip = heads if mask.heads == 1 else 1
    reports = []
    for h in range(mask.heads):
        m = _head(mask, h)
        chip = Chip(sram_bytes=sram_bytes, dtype=dtype, numeric=False, batch=batch, heads=per_chip)
        for name, rows in (("Q", N), ("K", N_k), ("V", N_k)):
            chip.tensor(name, rows, d)
        if backward:
            for name in ("O", "L", "dO"):
                chip.tensor(name, N, 1 if name == "L" else d, stat=name == "L")
        run(chip, N=N, N_k=N_k, d=d, scale=1.0, causal=causal, block_r=m.block_r, block_c=m.block_c, mask=m)
        reports.append(build_report(chip, algorithm="block_sparse", N=N, N_k=N_k, d=d, causal=causal,
                                    block_r=m.block_r, block_c=m.block_c, backward=backward))
    return merge_reports(reports)
