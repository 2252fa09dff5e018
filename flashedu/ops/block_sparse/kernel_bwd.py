"""Block-sparse FlashAttention backward in Triton: v2's three passes over the listed tiles.

    pass 1  Δ = rowsum(dO ∘ O)             v2's own preprocess kernel, unchanged
    pass 2  dK/dV      per K/V tile j       walks column j's list of Q tiles (the transposed CSR)
    pass 3  dQ         per Q tile i         walks row i's list of K/V tiles (the forward's CSR)

Passes 2 and 3 are one Triton kernel, ``_bwd``, launched once for both (``ONE_LAUNCH``, the
default: programs of both kinds in one grid) or once per pass.

Each list is ordered mask-free entries first, as in the forward. A K/V tile that no row lists
has an empty column list and writes dK_j = dV_j = 0; a query row that saw no key has L = -inf,
which v2's stats loader turns into P = 0, so its dQ is 0 too.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from flashedu import runtime
from flashedu.ops.block_sparse.masks.csr import kernel_layout
from flashedu.ops._triton import LOG2E, choose, should_tune
from flashedu.ops.v2.kernel_bwd import _bwd_preprocess, _load_rows_stats
from flashedu.ops.block_sparse.configs import candidates
from flashedu.ops.block_sparse.tile_bits import tile_bits

# Both walks read the next entry's block index one iteration early (the forward's prefetch,
# kernel.PREFETCH_INDEX); False reads each when it is needed (the ablation).
PREFETCH_INDEX = True
# Both passes in one launch (FlexAttention's layout), with each pass's picked tiles, where the
# two picks share a warp count and a pipeline depth: the dQ programs fill the SMs that the last
# wave of dK/dV programs leaves idle. Measured +1.5-5% at d = 128, N = 4k, every density
# (block-sparse-tuning.md, session 17); False gives two launches (the ablation).
ONE_LAUNCH = True


@triton.jit
def _dkdv_inner(dk, dv, k, v, Q, DO, L, Delta, Index, Tile, Tiles, stride_qm, stride_qd, stride_dm, stride_dd,
                offs_n, offs_d, start_n, lo, hi, N_Q, N_K, qk_scale,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, MASKED: tl.constexpr,
                CAUSAL: tl.constexpr, PRECISION: tl.constexpr, PREFETCH_INDEX: tl.constexpr):
    """dK_j, dV_j over the Q tiles of entries lo..hi, on transposed scores Sᵀ [BLOCK_N, BLOCK_M]."""
    offs_t = tl.arange(0, BLOCK_M)
    nxt = tl.load(Index + lo, mask=lo < hi, other=0)  # first entry's block (if prefetching)
    for e in range(lo, hi):
        if PREFETCH_INDEX:  # the next entry's block is read one iteration early, as forward
            blk = nxt
            nxt = tl.load(Index + e + 1, mask=e + 1 < hi, other=0)
        else:
            blk = tl.load(Index + e)
        start_m = tl.multiple_of(blk * BLOCK_M, BLOCK_M)
        offs_m = start_m + offs_t
        q_ptrs = Q + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd
        do_ptrs = DO + offs_m[:, None] * stride_dm + offs_d[None, :] * stride_dd
        if MASKED:
            q = tl.load(q_ptrs, mask=(offs_m < N_Q)[:, None], other=0.0)  # [BLOCK_M, D]
        else:
            q = tl.load(q_ptrs)
        lse, delta = _load_rows_stats(L, Delta, offs_m, N_Q, MASKED)
        sT = tl.dot(k, tl.trans(q), input_precision=PRECISION)  # [BLOCK_N, BLOCK_M]
        pT = tl.math.exp2(sT * qk_scale - lse[None, :])
        if MASKED:
            keep = (offs_n < N_K)[:, None] & (offs_m < N_Q)[None, :]
            if CAUSAL:
                keep = keep & (offs_m[None, :] >= offs_n[:, None])
            bits = tile_bits(Tiles, tl.load(Tile + e), offs_t[None, :], (offs_n - start_n)[:, None],
                              BLOCK_M, BLOCK_N)  # [BLOCK_N, BLOCK_M], the tile transposed
            pT = tl.where(keep & (bits != 0), pT, 0.0)
            do = tl.load(do_ptrs, mask=(offs_m < N_Q)[:, None], other=0.0)  # [BLOCK_M, D]
        else:
            do = tl.load(do_ptrs)
        dv = tl.dot(pT.to(do.dtype), do, dv, input_precision=PRECISION)  # [BLOCK_N, D]
        dpT = tl.dot(v, tl.trans(do), input_precision=PRECISION)  # [BLOCK_N, BLOCK_M]
        dsT = pT * (dpT - delta[None, :])
        dk = tl.dot(dsT.to(q.dtype), q, dk, input_precision=PRECISION)  # [BLOCK_N, D]
    return dk, dv


@triton.jit
def _dkdv_program(pid_n, Q, K, V, DO, L, Delta, DK, DV, Ptr, Clean, Index, Tile, Tiles,
                  stride_qz, stride_qh, stride_qm, stride_qd,
                  stride_kz, stride_kh, stride_kn, stride_kd,
                  stride_vz, stride_vh, stride_vn, stride_vd,
                  stride_dz, stride_dh, stride_dm, stride_dd,
                  H, N_Q, N_K, MASK_HEADS, scale, qk_scale,
                  CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
                  PREFETCH_INDEX: tl.constexpr):
    """K/V tile pid_n of batch·head program_id(1): K_j, V_j stay on chip while listed Q tiles
    stream by."""
    bh = tl.program_id(1)
    z, h = (bh // H).to(tl.int64), (bh % H).to(tl.int64)
    col = (bh % H) % MASK_HEADS * tl.cdiv(N_K, BLOCK_N) + pid_n  # this program's column list
    lo = tl.load(Ptr + col)
    hi = tl.load(Ptr + col + 1)
    mid = lo + tl.load(Clean + col)
    start_n = pid_n * BLOCK_N
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    col_ok = (offs_n < N_K)[:, None]
    k = tl.load(K + z * stride_kz + h * stride_kh + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd,
                mask=col_ok, other=0.0)  # [BLOCK_N, D]
    v = tl.load(V + z * stride_vz + h * stride_vh + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                mask=col_ok, other=0.0)  # [BLOCK_N, D]
    Q += z * stride_qz + h * stride_qh
    DO += z * stride_dz + h * stride_dh
    L += bh.to(tl.int64) * N_Q
    Delta += bh.to(tl.int64) * N_Q
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dk, dv = _dkdv_inner(dk, dv, k, v, Q, DO, L, Delta, Index, Tile, Tiles, stride_qm, stride_qd, stride_dm,
                         stride_dd, offs_n, offs_d, start_n, lo, mid, N_Q, N_K, qk_scale,
                         BLOCK_M, BLOCK_N, False, CAUSAL, PRECISION, PREFETCH_INDEX)
    dk, dv = _dkdv_inner(dk, dv, k, v, Q, DO, L, Delta, Index, Tile, Tiles, stride_qm, stride_qd, stride_dm,
                         stride_dd, offs_n, offs_d, start_n, mid, hi, N_Q, N_K, qk_scale,
                         BLOCK_M, BLOCK_N, True, CAUSAL, PRECISION, PREFETCH_INDEX)
    out = bh.to(tl.int64) * N_K * HEAD_DIM + offs_n[:, None] * HEAD_DIM + offs_d[None, :]
    tl.store(DV + out, dv.to(DV.dtype.element_ty), mask=col_ok)
    tl.store(DK + out, (dk * scale).to(DK.dtype.element_ty), mask=col_ok)


@triton.jit
def _dq_inner(dq, q, do, lse, delta, K, V, Index, Tile, Tiles, stride_kn, stride_kd, stride_vn, stride_vd,
              offs_m, offs_d, start_m, lo, hi, N_K, qk_scale,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, MASKED: tl.constexpr,
              CAUSAL: tl.constexpr, PRECISION: tl.constexpr, PREFETCH_INDEX: tl.constexpr):
    """dQ_i over the K/V tiles of entries lo..hi."""
    offs_t = tl.arange(0, BLOCK_N)
    nxt = tl.load(Index + lo, mask=lo < hi, other=0)
    for e in range(lo, hi):
        if PREFETCH_INDEX:
            blk = nxt
            nxt = tl.load(Index + e + 1, mask=e + 1 < hi, other=0)
        else:
            blk = tl.load(Index + e)
        start_n = tl.multiple_of(blk * BLOCK_N, BLOCK_N)
        offs_n = start_n + offs_t
        k_ptrs = K + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd
        v_ptrs = V + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd
        if MASKED:
            k = tl.load(k_ptrs, mask=(offs_n < N_K)[:, None], other=0.0)  # [BLOCK_N, D]
            v = tl.load(v_ptrs, mask=(offs_n < N_K)[:, None], other=0.0)  # [BLOCK_N, D]
        else:
            k = tl.load(k_ptrs)
            v = tl.load(v_ptrs)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION)  # [BLOCK_M, BLOCK_N]
        p = tl.math.exp2(s * qk_scale - lse[:, None])
        if MASKED:
            keep = (offs_n < N_K)[None, :]
            if CAUSAL:
                keep = keep & (offs_m[:, None] >= offs_n[None, :])
            bits = tile_bits(Tiles, tl.load(Tile + e), (offs_m - start_m)[:, None], offs_t[None, :],
                              BLOCK_M, BLOCK_N)  # [BLOCK_M, BLOCK_N]
            p = tl.where(keep & (bits != 0), p, 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)  # [BLOCK_M, BLOCK_N]
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=PRECISION)  # [BLOCK_M, D]
    return dq


@triton.jit
def _dq_program(pid, Q, K, V, DO, L, Delta, DQ, Ptr, Clean, Index, Tile, Tiles,
                stride_qz, stride_qh, stride_qm, stride_qd,
                stride_kz, stride_kh, stride_kn, stride_kd,
                stride_vz, stride_vh, stride_vn, stride_vd,
                stride_dz, stride_dh, stride_dm, stride_dd,
                H, N_Q, N_K, MASK_HEADS, scale, qk_scale,
                CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
                PREFETCH_INDEX: tl.constexpr):
    """Q tile pid (from the last, causal) of batch·head program_id(1): Q_i, dO_i, L_i, Δ_i stay
    on chip."""
    n_m = tl.cdiv(N_Q, BLOCK_M)
    pid_m = n_m - 1 - pid if CAUSAL else pid
    bh = tl.program_id(1)
    z, h = (bh // H).to(tl.int64), (bh % H).to(tl.int64)
    row = (bh % H) % MASK_HEADS * n_m + pid_m
    lo = tl.load(Ptr + row)
    hi = tl.load(Ptr + row + 1)
    mid = lo + tl.load(Clean + row)
    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = (offs_m < N_Q)[:, None]
    q = tl.load(Q + z * stride_qz + h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
                mask=row_ok, other=0.0)  # [BLOCK_M, D]
    do = tl.load(DO + z * stride_dz + h * stride_dh + offs_m[:, None] * stride_dm + offs_d[None, :] * stride_dd,
                 mask=row_ok, other=0.0)  # [BLOCK_M, D]
    lse, delta = _load_rows_stats(L + bh.to(tl.int64) * N_Q, Delta + bh.to(tl.int64) * N_Q, offs_m, N_Q, True)
    K += z * stride_kz + h * stride_kh
    V += z * stride_vz + h * stride_vh
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    dq = _dq_inner(dq, q, do, lse, delta, K, V, Index, Tile, Tiles, stride_kn, stride_kd, stride_vn, stride_vd,
                   offs_m, offs_d, start_m, lo, mid, N_K, qk_scale, BLOCK_M, BLOCK_N, False, CAUSAL, PRECISION,
                   PREFETCH_INDEX)
    dq = _dq_inner(dq, q, do, lse, delta, K, V, Index, Tile, Tiles, stride_kn, stride_kd, stride_vn, stride_vd,
                   offs_m, offs_d, start_m, mid, hi, N_K, qk_scale, BLOCK_M, BLOCK_N, True, CAUSAL, PRECISION,
                   PREFETCH_INDEX)
    out = bh.to(tl.int64) * N_Q * HEAD_DIM + offs_m[:, None] * HEAD_DIM + offs_d[None, :]
    tl.store(DQ + out, (dq * scale).to(DQ.dtype.element_ty), mask=row_ok)


@triton.jit
def _bwd(Q, K, V, DO, L, Delta, DK, DV, DQ,
         PtrC, CleanC, IndexC, TileC, TilesC, PtrR, CleanR, IndexR, TileR, TilesR,
         stride_qz, stride_qh, stride_qm, stride_qd,
         stride_kz, stride_kh, stride_kn, stride_kd,
         stride_vz, stride_vh, stride_vn, stride_vd,
         stride_dz, stride_dh, stride_dm, stride_dd,
         H, N_Q, N_K, MASK_HEADS, scale, qk_scale,
         CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr,
         BLOCK_M1: tl.constexpr, BLOCK_N1: tl.constexpr,
         BLOCK_M2: tl.constexpr, BLOCK_N2: tl.constexpr, PRECISION: tl.constexpr,
         PREFETCH_INDEX: tl.constexpr, DKDV_PASS: tl.constexpr, DQ_PASS: tl.constexpr):
    """The dK/dV pass (one program per K/V tile of BLOCK_M1 × BLOCK_N1, walking the column
    lists C), the dQ pass (one per Q tile of BLOCK_M2 × BLOCK_N2, the row lists R), or both in
    one grid, dK/dV programs first, as FlexAttention's backward: the last wave of dK/dV programs
    then shares the GPU with dQ programs instead of ending a launch alone."""
    # One pass alone compiles only its own program (a branch the compiler cannot rule out
    # would cost the other pass's registers too).
    pid = tl.program_id(0)
    n_kv = tl.cdiv(N_K, BLOCK_N1)
    if DKDV_PASS and DQ_PASS:
        is_dkdv = pid < n_kv
    else:
        is_dkdv = DKDV_PASS
    if is_dkdv:
        _dkdv_program(pid, Q, K, V, DO, L, Delta, DK, DV, PtrC, CleanC, IndexC, TileC, TilesC,
                      stride_qz, stride_qh, stride_qm, stride_qd,
                      stride_kz, stride_kh, stride_kn, stride_kd,
                      stride_vz, stride_vh, stride_vn, stride_vd,
                      stride_dz, stride_dh, stride_dm, stride_dd,
                      H, N_Q, N_K, MASK_HEADS, scale, qk_scale,
                      CAUSAL, HEAD_DIM, BLOCK_M1, BLOCK_N1, PRECISION, PREFETCH_INDEX)
    else:
        _dq_program(pid - n_kv if DKDV_PASS else pid, Q, K, V, DO, L, Delta, DQ,
                    PtrR, CleanR, IndexR, TileR, TilesR,
                    stride_qz, stride_qh, stride_qm, stride_qd,
                    stride_kz, stride_kh, stride_kn, stride_kd,
                    stride_vz, stride_vh, stride_vn, stride_vd,
                    stride_dz, stride_dh, stride_dm, stride_dd,
                    H, N_Q, N_K, MASK_HEADS, scale, qk_scale,
                    CAUSAL, HEAD_DIM, BLOCK_M2, BLOCK_N2, PRECISION, PREFETCH_INDEX)


# As v2's tables: dK/dV keeps a large K/V tile resident, dQ a large Q tile.
DKDV_CONFIGS = {
    "sm90": [(64, 128, 8, 3), (32, 128, 8, 4), (64, 64, 4, 3), (32, 32, 4, 2), (16, 16, 4, 2)],
    "sm80": [(32, 128, 8, 3), (64, 64, 4, 3), (32, 64, 4, 3), (32, 32, 4, 2), (16, 16, 4, 2)],
    "sm86": [(32, 64, 4, 3), (64, 64, 4, 2), (32, 32, 4, 2), (16, 16, 4, 2)],
    "interpreter": [(32, 32, 4, 1), (16, 16, 4, 1)],
}
DQ_CONFIGS = {
    "sm90": [(128, 64, 8, 3), (128, 32, 8, 4), (64, 64, 4, 3), (32, 32, 4, 2), (16, 16, 4, 2)],
    "sm80": [(128, 32, 8, 3), (64, 64, 4, 3), (64, 32, 4, 3), (32, 32, 4, 2), (16, 16, 4, 2)],
    "sm86": [(64, 32, 4, 3), (64, 64, 4, 2), (32, 32, 4, 2), (16, 16, 4, 2)],
    "interpreter": [(32, 32, 4, 1), (16, 16, 4, 1)],
}


def backward(do, q, k, v, o, lse, mask, *, causal: bool, scale: float):
    """dq, dk, dv (contiguous, q's dtype) for the block-sparse forward's o and L [B, H, N_Q]."""
    B, H, N_Q, D = q.shape
    N_K = k.shape[2]
    if do.stride(-1) != 1:
        do = do.contiguous()
    precision = "ieee" if q.dtype == torch.float32 else "tf32"
    delta = torch.empty(B, H, N_Q, device=q.device, dtype=torch.float32)  # [B, H, N_Q]
    pre_block = 64 if runtime.current().compiled else 32
    _bwd_preprocess[(triton.cdiv(N_Q, pre_block), B * H)](
        o, do, delta, *o.stride(), *do.stride(), H, N_Q, BLOCK_M=pre_block, HEAD_DIM=D)
    dq = torch.empty(B, H, N_Q, D, device=q.device, dtype=q.dtype)
    dk = torch.empty(B, H, N_K, D, device=q.device, dtype=q.dtype)
    dv = torch.empty(B, H, N_K, D, device=q.device, dtype=q.dtype)
    strides = (*q.stride(), *k.stride(), *v.stride(), *do.stride(), H, N_Q, N_K, mask.heads, scale, scale * LOG2E)
    tune = should_tune(B, H, N_Q, N_K)
    key = (B, H, N_Q, N_K, D, causal, q.dtype, mask.block_r, mask.block_c)

    def lists_for(which, cfg):
        """The CSR lists (``rows`` or ``cols``) of the mask refined to cfg's tiles, and the
        layout's token-mask tiles."""
        lay = kernel_layout(mask.refine(cfg.kwargs["BLOCK_M"], cfg.kwargs["BLOCK_N"]),
                            causal=causal, device=q.device)
        csr = getattr(lay, which)
        return csr.ptr, csr.clean, csr.index, csr.tile, lay.tiles

    def run(kv, qc):
        """Launch the dK/dV pass on config kv and the dQ pass on qc (None: not in this launch;
        its arguments then repeat the other pass's, never read)."""
        kv_cfg, q_cfg = kv or qc, qc or kv
        grid = (triton.cdiv(N_K, kv.kwargs["BLOCK_N"]) if kv else 0) + (
            triton.cdiv(N_Q, qc.kwargs["BLOCK_M"]) if qc else 0)
        _bwd[(grid, B * H)](
            q, k, v, do, lse, delta, dk, dv, dq, *lists_for("cols", kv_cfg),
            *lists_for("rows", q_cfg), *strides, CAUSAL=causal, HEAD_DIM=D,
            BLOCK_M1=kv_cfg.kwargs["BLOCK_M"], BLOCK_N1=kv_cfg.kwargs["BLOCK_N"],
            BLOCK_M2=q_cfg.kwargs["BLOCK_M"], BLOCK_N2=q_cfg.kwargs["BLOCK_N"],
            PRECISION=precision, PREFETCH_INDEX=PREFETCH_INDEX, DKDV_PASS=kv is not None,
            DQ_PASS=qc is not None, num_warps=kv_cfg.num_warps, num_stages=kv_cfg.num_stages)

    elem = q.element_size()
    picked = {}
    for name, table, resident, acc in (("dkdv", DKDV_CONFIGS, 1, 2), ("dq", DQ_CONFIGS, 0, 1)):
        configs = candidates(table, mask, head_dim=D, elem_bytes=elem, resident=resident, acc_tiles=acc)
        alone = (lambda c: run(c, None)) if name == "dkdv" else (lambda c: run(None, c))
        picked[name] = choose(name, configs, key, alone, tune=tune)
    kv, qc = picked["dkdv"], picked["dq"]
    # One launch takes one warp count and pipeline depth: both passes' picks must share them.
    if ONE_LAUNCH and (kv.num_warps, kv.num_stages) == (qc.num_warps, qc.num_stages):
        run(kv, qc)
    else:
        run(kv, None)
        run(None, qc)
    return dq, dk, dv
