"""Block-sparse FlashAttention in Triton: v2's forward kernel walking a CSR list of K/V tiles.

One program per (Q tile, batch·head), as in :mod:`flashedu.ops.v2.kernel`. The program
reads its row's entries from the layout of :func:`flashedu.ops.block_sparse.masks.kernel_layout`:
``ptr[row] .. ptr[row+1]`` are its tiles, the first ``clean[row]`` need no mask, and of those
the first ``run[row]`` are the consecutive blocks from ``first[row]``. When all of a row's
clean entries are that run (a dense row, a band, the causal part left of the diagonal) they go
through v2's own mask-free loop, pointers advanced by BLOCK_N, so a dense mask costs what dense
v2 costs; otherwise through a loop that reads each entry's K/V block index from the list, the
next entry's during this one's work, so the K load need not wait for it. The masked
entries come last. Masked tiles AND three conditions into one keep-mask: key in range,
causal, and the token-mask tile (one byte per score, loaded only for partial tiles). A row with
no kept key has ℓ = 0: O = 0 and L = -inf, and the backward gives it zero gradients.

Kernel tiles must divide the mask's blocks (the mask is refined to them on the host, once; the
layouts are cached on the mask). On a GPU the configs of this arch that divide the mask's
blocks are timed once per shape on large problems and the fastest kept.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from flashedu import runtime
from flashedu.ops.block_sparse.masks.csr import kernel_layout
from flashedu.validate import check_qkv
from flashedu.ops._triton import LOG2E, arch_key, choose, picked, should_tune
from flashedu.ops.v2.kernel import HEAD_DIMS, MIN_CAPABILITY
from flashedu.ops.v2.kernel import _fwd_inner as v2_inner
from flashedu.ops.block_sparse.configs import candidates
from flashedu.ops.block_sparse.kernel_bwd import backward
from flashedu.ops.block_sparse.tile_bits import tile_bits

DTYPES = (torch.float16, torch.bfloat16, torch.float32)
USE_RUN = True  # walk each row's consecutive run by pointers (False: by its index list; ablation)
PREFETCH_INDEX = True  # read the next entry's block index one iteration ahead (False: ablation)


@triton.jit
def _fwd_inner(acc, l_i, m_i, q, K, V, Index, Tile, Tiles, stride_kn, stride_kd, stride_vn, stride_vd,
               offs_m, offs_d, start_m, lo, hi, N_K, qk_scale,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, MASKED: tl.constexpr,
               CAUSAL: tl.constexpr, PRECISION: tl.constexpr, PREFETCH_INDEX: tl.constexpr):
    """Fold the listed K/V tiles of entries lo..hi into the running (acc, ℓ, m)."""
    offs_t = tl.arange(0, BLOCK_N)
    # [block-sparse-inner-start]
    nxt = tl.load(Index + lo, mask=lo < hi, other=0)  # first entry's block (if prefetching)
    for e in range(lo, hi):
        if PREFETCH_INDEX:  # the next entry's block is read one iteration early
            blk = nxt
            nxt = tl.load(Index + e + 1, mask=e + 1 < hi, other=0)
        else:
            blk = tl.load(Index + e)
        start_n = tl.multiple_of(blk * BLOCK_N, BLOCK_N)  # the entry's K/V block, in keys
        # From here on v2's loop body (load K_j, S = Q_i K_jᵀ, the online update, P V_j),
        # with the token-mask tile added to the masked loop's keep-mask.
        # [block-sparse-inner-end]
        offs_n = start_n + offs_t
        k_ptrs = K + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd
        v_ptrs = V + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd
        if MASKED:
            k = tl.load(k_ptrs, mask=(offs_n < N_K)[:, None], other=0.0)  # [BLOCK_N, D]
        else:
            k = tl.load(k_ptrs)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION)  # [BLOCK_M, BLOCK_N], unscaled
        if MASKED:
            keep = (offs_n < N_K)[None, :]
            if CAUSAL:
                keep = keep & (offs_m[:, None] >= offs_n[None, :])
            # Token-mask tile t (-1: none; the load is then masked off and reads "keep").
            bits = tile_bits(Tiles, tl.load(Tile + e), (offs_m - start_m)[:, None], offs_t[None, :],
                             BLOCK_M, BLOCK_N)  # [BLOCK_M, BLOCK_N]
            keep = keep & (bits != 0)
            s = tl.where(keep, s * qk_scale, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            # A row with every score masked so far keeps m = -inf: subtract 0, so exp2 gives 0.
            m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
            p = tl.math.exp2(s - m_sub[:, None])
        else:
            m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
            m_sub = m_new
            p = tl.math.exp2(s * qk_scale - m_sub[:, None])
        alpha = tl.math.exp2(m_i - m_sub)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        if MASKED:
            v = tl.load(v_ptrs, mask=(offs_n < N_K)[:, None], other=0.0)  # [BLOCK_N, D]
        else:
            v = tl.load(v_ptrs)
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=PRECISION)  # [BLOCK_M, D]
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _fwd_kernel(Q, K, V, O, L, Ptr, Clean, Run, First, Index, Tile, Tiles,
                stride_qz, stride_qh, stride_qm, stride_qd,
                stride_kz, stride_kh, stride_kn, stride_kd,
                stride_vz, stride_vh, stride_vn, stride_vd,
                H, N_Q, N_K, MASK_HEADS, qk_scale,
                CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
                USE_RUN: tl.constexpr, PREFETCH_INDEX: tl.constexpr):
    n_m = tl.cdiv(N_Q, BLOCK_M)
    pid_m = n_m - 1 - tl.program_id(0) if CAUSAL else tl.program_id(0)
    bh = tl.program_id(1)
    z, h = (bh // H).to(tl.int64), (bh % H).to(tl.int64)
    # [block-sparse-kernel-start]
    # This program's row of the CSR layout (one mask per head, or one shared: MASK_HEADS = 1).
    row = (bh % H) % MASK_HEADS * n_m + pid_m
    lo = tl.load(Ptr + row)  # its entries are Index[lo:hi], clean ones (no mask) first
    hi = tl.load(Ptr + row + 1)
    mid = lo + tl.load(Clean + row)
    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < N_Q
    Q += z * stride_qz + h * stride_qh
    K += z * stride_kz + h * stride_kh
    V += z * stride_vz + h * stride_vh
    q = tl.load(Q + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
                mask=row_ok[:, None], other=0.0)  # [BLOCK_M, D]

    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    # Clean entries that are one consecutive run (dense rows, bands, the causal part left of
    # the diagonal) go by pointers; others through the index list. One branch per row, not
    # two loops: a second pipelined loop costs its prologue even for a row of two tiles.
    if USE_RUN:
        if tl.load(Run + row) == mid - lo:  # clean entries are blocks first, first + 1, ...
            first = tl.load(First + row) * BLOCK_N
            run_end = first + (mid - lo) * BLOCK_N
            acc, l_i, m_i = v2_inner(acc, l_i, m_i, q, K, V, stride_kn, stride_kd,
                                     stride_vn, stride_vd, offs_m, offs_d, first, run_end,
                                     N_K, qk_scale, BLOCK_N, False, False, PRECISION)
            lo = mid
    # Clean entries by their index list, without masks; then the rest, masked.
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, K, V, Index, Tile, Tiles,
                               stride_kn, stride_kd, stride_vn, stride_vd, offs_m, offs_d,
                               start_m, lo, mid, N_K, qk_scale, BLOCK_M, BLOCK_N,
                               False, CAUSAL, PRECISION, PREFETCH_INDEX)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, K, V, Index, Tile, Tiles,
                               stride_kn, stride_kd, stride_vn, stride_vd, offs_m, offs_d,
                               start_m, mid, hi, N_K, qk_scale, BLOCK_M, BLOCK_N,
                               True, CAUSAL, PRECISION, PREFETCH_INDEX)
    # [block-sparse-kernel-end]

    o = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    lse = (m_i + tl.math.log2(l_i)) * 0.6931471805599453  # natural log; -inf for a row with no key
    o_ptrs = O + bh.to(tl.int64) * N_Q * HEAD_DIM + offs_m[:, None] * HEAD_DIM + offs_d[None, :]
    tl.store(o_ptrs, o.to(O.dtype.element_ty), mask=row_ok[:, None])
    tl.store(L + bh.to(tl.int64) * N_Q + offs_m, lse, mask=row_ok)


# (BLOCK_M, BLOCK_N, num_warps, num_stages); only those dividing the mask's blocks are used.
FWD_CONFIGS = {
    # Hopper: the fastest tiles of flashedu/bench/tune_block_sparse.py at every density (64 × 64 with 4
    # warps at d = 128, two programs an SM; 128 × 64 with 8 warps at d = 64), then smaller
    # tiles for masks with small blocks. The first is the untuned default.
    "sm90": [(64, 64, 4, 3), (128, 64, 8, 3), (128, 64, 8, 4), (128, 128, 8, 3), (64, 64, 4, 2),
             (64, 32, 8, 2), (32, 32, 4, 2), (16, 16, 4, 2)],
    "sm80": [(128, 64, 8, 3), (128, 32, 4, 3), (64, 64, 4, 3), (32, 32, 4, 2), (16, 16, 4, 2)],
    "sm86": [(128, 32, 4, 3), (64, 64, 4, 2), (64, 32, 8, 2), (32, 32, 4, 2), (16, 16, 4, 2)],
    "interpreter": [(32, 32, 4, 1), (16, 16, 4, 1)],
}


def launch(q, k, v, o, lse, lay, *, mask_heads: int, causal: bool, scale: float, cfg: triton.Config):
    """One launch of the kernel over a layout ``lay`` built at cfg's tiles (nothing else: the
    host cost of the kernel call alone, as flashedu/bench/tune_block_sparse.py times it)."""
    B, H, N_Q, D = q.shape
    bm, bn = cfg.kwargs["BLOCK_M"], cfg.kwargs["BLOCK_N"]
    _fwd_kernel[(triton.cdiv(N_Q, bm), B * H)](
        q, k, v, o, lse, lay.rows.ptr, lay.rows.clean, lay.rows.run, lay.rows.first, lay.rows.index,
        lay.rows.tile, lay.tiles,
        *q.stride(), *k.stride(), *v.stride(), H, N_Q, k.shape[2], mask_heads, scale * LOG2E,
        CAUSAL=causal, HEAD_DIM=D, BLOCK_M=bm, BLOCK_N=bn,
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32", USE_RUN=USE_RUN,
        PREFETCH_INDEX=PREFETCH_INDEX, num_warps=cfg.num_warps, num_stages=cfg.num_stages)


def forward(q, k, v, mask, *, causal: bool, scale: float, config: triton.Config | None = None):
    """o ``[B, H, N_Q, D]`` and L ``[B, H, N_Q]`` (fp32) for validated inputs and a checked mask."""
    B, H, N_Q, D = q.shape
    N_K = k.shape[2]
    o = torch.empty(B, H, N_Q, D, device=q.device, dtype=q.dtype)
    lse = torch.empty(B, H, N_Q, device=q.device, dtype=torch.float32)

    def run(cfg):
        lay = kernel_layout(mask.refine(cfg.kwargs["BLOCK_M"], cfg.kwargs["BLOCK_N"]), causal=causal,
                            device=q.device)
        launch(q, k, v, o, lse, lay, mask_heads=mask.heads, causal=causal, scale=scale, cfg=cfg)

    if config is None:
        configs = candidates(FWD_CONFIGS, mask, head_dim=D, elem_bytes=q.element_size(), resident=0,
                             resident_tiles=1)
        config = choose("fwd", configs, _tuning_key(q, k, mask, causal), run, tune=should_tune(B, H, N_Q, N_K))
    run(config)
    return o, lse


def _tuning_key(q, k, mask, causal):
    return (*q.shape, k.shape[2], causal, q.dtype, mask.block_r, mask.block_c)


def picked_config(q, k, mask, *, causal: bool = False) -> tuple | None:
    """(BLOCK_M, BLOCK_N, warps, stages) that the forward timed and kept for this problem, or
    None when it has not run tuned (small problems, no GPU)."""
    c = picked("fwd", _tuning_key(q, k, mask, causal))
    return None if c is None else (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages)


def _unit_stride(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


class BlockSparseFlashAttention(torch.autograd.Function):
    """Forward saves q, k, v, o, L and the mask; backward walks the same lists."""

    @staticmethod
    def forward(ctx, q, k, v, mask, causal, scale):
        q, k, v = (_unit_stride(t) for t in (q, k, v))
        o, lse = forward(q, k, v, mask, causal=causal, scale=scale)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.mask, ctx.causal, ctx.scale = mask, causal, scale
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = backward(do, q, k, v, o, lse, ctx.mask, causal=ctx.causal, scale=ctx.scale)
        return dq, dk, dv, None, None, None


def _check(q, k, v, causal, scale, block_mask):
    from flashedu.ops.block_sparse.api import resolve_mask
    from flashedu.ops.block_sparse.masks.mask import dense_mask

    scale = check_qkv(q, k, v, causal=causal, scale=scale, dtypes=DTYPES, head_dims=HEAD_DIMS,
                      name="block_sparse_triton")
    runtime.require_triton("block_sparse_triton", q, min_capability=MIN_CAPABILITY)
    B, H, N, D = q.shape
    if block_mask is None:  # every tile, at this arch's largest forward tile (any tile divides it)
        bm, bn = max((c[:2] for c in FWD_CONFIGS[arch_key()]), key=lambda t: t[0] * t[1])
        return scale, dense_mask(N, k.shape[2], block_r=bm, block_c=bn)
    return scale, resolve_mask(block_mask, N=N, N_k=k.shape[2], heads=H, d=D, dtype=q.dtype, sram_bytes=1)


def block_sparse_flash_attention(q, k, v, *, causal: bool = False, scale: float | None = None,
                                 block_mask=None) -> torch.Tensor:
    """Block-sparse FlashAttention, forward and backward in Triton, on ``[B, H, N, D]`` inputs.

    ``block_mask``: a :class:`~flashedu.ops.block_sparse.masks.BlockSparseMask` (shared by all heads or one
    per head; blocks multiples of 16), a FlexAttention ``BlockMask``, or None for every tile.
    Only listed tiles are loaded and computed; partial tiles apply their token mask; a query row
    with no kept key gives 0 and zero gradients. dtypes and head dims as ``v2_triton``.
    Differentiable with respect to q, k and v; returns o shaped and typed like q.
    """
    scale, mask = _check(q, k, v, causal, scale, block_mask)
    return BlockSparseFlashAttention.apply(q, k, v, mask, causal, scale)


def block_sparse_flash_attention_lse(q, k, v, *, causal: bool = False, scale: float | None = None,
                                     block_mask=None):
    """Forward only: ``(o, L)`` with L ``[B, H, N_Q]`` in fp32 (-inf for a row with no key)."""
    scale, mask = _check(q, k, v, causal, scale, block_mask)
    q, k, v = (_unit_stride(t) for t in (q, k, v))
    return forward(q, k, v, mask, causal=causal, scale=scale)


__all__ = ["BlockSparseFlashAttention", "DTYPES", "FWD_CONFIGS", "HEAD_DIMS", "MIN_CAPABILITY",
           "block_sparse_flash_attention", "block_sparse_flash_attention_lse", "forward", "launch",
           "picked_config"]
