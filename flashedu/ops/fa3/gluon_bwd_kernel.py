"""FlashAttention's backward in Gluon, for Hopper (sm_90): FA2's loop order on wgmma, with Q and
dO streamed by TMA and dQ added up in fp32 by atomics, as FA2's and FA3's own backwards do.

One program per K/V tile j of BN = 128 rows; K_j and V_j stay in shared memory while the Q tiles
it sees (BM = 64 rows each; causal: from the diagonal on) stream through a ring of STAGES
shared-memory stages. Per Q tile i:

    Sᵀ = K_j Q_iᵀ,  dPᵀ = V_j dO_iᵀ          [BN, BM]: both operands from shared memory
    Pᵀ = exp2(Sᵀ·c − L_i),  dSᵀ = Pᵀ ∘ (dPᵀ − Δ_i)
    dV_j += Pᵀ dO_i,  dK_j += dSᵀ Q_i          Pᵀ and dSᵀ straight from registers
    dQ_i += dS_i K_j                            dSᵀ through shared memory; fp32 atomic adds

Computing Sᵀ rather than S (FA3's "swap AB" for the score GEMMs) puts the K/V rows in the M
dimension, so Pᵀ and dSᵀ come out of the tensor cores already in the rows the dV and dK GEMMs
need as their A operand: five GEMMs per tile pair, against seven for two passes (chapter 4's
backward). The block's 8 warps are two warpgroups: each owns 64 of the tile's 128 K/V rows in
the first four GEMMs, and half of dQ_i's columns in the fifth.

This is step 1 of FA3's backward (gluon-fa3.md, session 17): one block that issues its own
copies. Warp specialisation (a producer warp for the copies, one for dQ's adds) comes next.
"""
from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma,
                                                               warpgroup_mma, warpgroup_mma_wait)

# triton 3.6 (the GPU machine's) names the copy async_copy_global_to_shared; 3.7+ renamed it.
_tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared
_cta_barrier = getattr(gl, "barrier", None) or gl.thread_barrier

LOG2E = gl.constexpr(1.4426950408889634)
WARPS = gl.constexpr(8)  # two warpgroups; the host launches with num_warps=WARPS


@gluon.jit
def _load_q_do(q_desc, do_desc, q_ring, do_ring, ready, bh, i, n, pred):
    """Copy Q tile i and dO tile i into ring stage n % STAGES (the n-th tile of this program)."""
    STAGES: gl.constexpr = q_ring.type.shape[0]
    BM: gl.constexpr = q_desc.block_type.shape[1]
    stage = n % STAGES
    mbarrier.expect(ready.index(stage), q_desc.block_type.nbytes + do_desc.block_type.nbytes,
                    pred=pred)
    _tma_load(q_desc, [bh, i * BM, 0], ready.index(stage), q_ring.index(stage), pred=pred)
    _tma_load(do_desc, [bh, i * BM, 0], ready.index(stage), do_ring.index(stage), pred=pred)


@gluon.jit
def _opaque_zero():
    """0, which the compiler cannot see is 0 (an inline `mov` it may not move or merge)."""
    return gl.inline_asm_elementwise("mov.u32 $0, 0;", "=r", [], dtype=gl.int32, is_pure=False,
                                     pack=1)


@gluon.jit
def _add_dq(dq_smem, dq_base, r0, N_Q):
    """Add dQ_i's share [BM, D], waiting in shared memory, to the fp32 buffer at rows r0.. by
    atomics a few rows at a time: an atomic add takes one 64-bit address per element, and the
    whole tile's addresses at once would cost 64 registers a thread."""
    BM: gl.constexpr = dq_smem.type.shape[0]
    D: gl.constexpr = dq_smem.type.shape[1]
    ROWS: gl.constexpr = 16
    # Four columns a thread, a warp across whole rows: [1, 32] threads at D = 128, [2, 16] at
    # D = 64. (A [1, 32] warp at D = 64 would hold every element twice; gl.atomic_add skips
    # the copy, but half the threads would idle.)
    COLS: gl.constexpr = D // 4
    layout: gl.constexpr = gl.BlockedLayout(size_per_thread=[1, 4],
                                            threads_per_warp=[32 // COLS, COLS],
                                            warps_per_cta=[WARPS, 1], order=[1, 0])
    # A scalar base per chunk plus int32 offsets: a pointer tensor that does not change with
    # the loop would be hoisted out of it, 64-bit, and spilled.
    rows = gl.arange(0, ROWS, gl.SliceLayout(1, layout))
    offs = rows[:, None] * D + gl.arange(0, D, gl.SliceLayout(0, layout))[None, :]
    for c in gl.static_range(BM // ROWS):
        part = dq_smem.slice(c * ROWS, ROWS, dim=0).load(layout)  # [ROWS, D]
        first = r0 + c * ROWS
        gl.atomic_add(dq_base + first * D + offs, part, mask=offs < (N_Q - first) * D,
                      sem="relaxed")


@gluon.jit
def _scores_issue(k, v, q_ring, do_ring, ready, t, st_zero):
    """Wait for the program's t-th Q and dO tiles and issue Sᵀ = K Qᵀ and dPᵀ = V dOᵀ
    [BN, BM] (both operands from shared memory); returns the two GEMMs' tokens."""
    STAGES: gl.constexpr = q_ring.type.shape[0]
    BM: gl.constexpr = q_ring.type.shape[2]
    D: gl.constexpr = q_ring.type.shape[3]
    stage = t % STAGES
    mbarrier.wait(ready.index(stage), (t // STAGES) & 1)
    q = q_ring.index(stage).reshape([BM, D])
    do = do_ring.index(stage).reshape([BM, D])
    s_tok = warpgroup_mma(k, q.permute((1, 0)), st_zero, use_acc=False, is_async=True)
    dp_tok = warpgroup_mma(v, do.permute((1, 0)), st_zero, use_acc=False, is_async=True)
    return s_tok, dp_tok


@gluon.jit
def _row_stats(lse_row, delta_row, i, N_Q, BM: gl.constexpr, st_layout: gl.constexpr):
    """L·log2(e) and Δ of Q tile i's queries, one per column of Sᵀ. Rows past N_Q (and a row
    that saw no key, L = -inf) get L = +inf: P = 0 there."""
    cols = gl.arange(0, BM, gl.SliceLayout(0, st_layout))
    lse = gl.load(lse_row + i * BM + cols, mask=cols < N_Q - i * BM, other=float("inf"))
    delta = gl.load(delta_row + i * BM + cols, mask=cols < N_Q - i * BM, other=0.0)
    return gl.where(lse == float("-inf"), float("inf"), lse) * LOG2E, delta


@gluon.jit
def _probs(s_t, lse, keys, i, qk_scale, MASKED: gl.constexpr):
    """Pᵀ = exp2(Sᵀ·c − L) [BN, BM]; MASKED keeps query ≥ key (the tile crosses the diagonal)."""
    BM: gl.constexpr = s_t.type.shape[1]
    p_t = gl.exp2(s_t * qk_scale - lse[None, :])
    if MASKED:
        cols = gl.arange(0, BM, gl.SliceLayout(0, s_t.type.layout))
        p_t = gl.where(cols[None, :] >= (keys - i * BM)[:, None], p_t, 0.0)
    # Keys past N_K are zero rows of K and V: their P is not 0, but every product they enter
    # is (dQ gets dS·0; their dK and dV rows are not stored).
    return p_t


@gluon.jit
def _grads(t, i, p_t, dp_t, delta, dk, dv, k, q_desc, do_desc, q_ring, do_ring, ds_smem,
           dq_smem, ready, bh, n_iter, dq_layout: gl.constexpr, a_layout: gl.constexpr):
    """dSᵀ = Pᵀ ∘ (dPᵀ − Δ); dV += Pᵀ dO_i, dK += dSᵀ Q_i, dQ_i's share dS K into dq_smem.
    Refills the ring stage tile t used with the tile STAGES ahead."""
    STAGES: gl.constexpr = q_ring.type.shape[0]
    BM: gl.constexpr = q_ring.type.shape[2]
    D: gl.constexpr = q_ring.type.shape[3]
    dtype: gl.constexpr = q_ring.dtype
    stage = t % STAGES
    q = q_ring.index(stage).reshape([BM, D])
    do = do_ring.index(stage).reshape([BM, D])
    ds16 = (p_t * (dp_t - delta[None, :])).to(dtype)  # dSᵀ [BN, BM]
    ds_smem.store(ds16)
    fence_async_shared()
    _cta_barrier()  # both warpgroups' rows of dSᵀ are in before dQ's GEMM reads them all
    dv_tok = warpgroup_mma(gl.convert_layout(p_t.to(dtype), a_layout), do, dv, is_async=True)
    dk_tok = warpgroup_mma(gl.convert_layout(ds16, a_layout), q, dk, is_async=True)
    dq_zero = gl.zeros([BM, D], gl.float32, dq_layout)
    dq_tok = warpgroup_mma(ds_smem.permute((1, 0)), k, dq_zero, use_acc=False, is_async=True)
    dv, dk, dq = warpgroup_mma_wait(0, deps=(dv_tok, dk_tok, dq_tok))
    # Q_i, dO_i and dSᵀ are read: refill the stage with the tile STAGES ahead.
    _cta_barrier()
    _load_q_do(q_desc, do_desc, q_ring, do_ring, ready, bh, i + STAGES, t + STAGES,
               t + STAGES < n_iter)
    dq_smem.store(dq)
    _cta_barrier()
    return dk, dv


@gluon.jit
def _tile(t, i0, dk, dv, k, v, q_desc, do_desc, q_ring, do_ring, ds_smem, dq_smem, ready, bh,
          keys, lse_row, delta_row, dq_base, N_Q, n_iter, qk_scale, MASKED: gl.constexpr,
          st_layout: gl.constexpr, dq_layout: gl.constexpr, a_layout: gl.constexpr):
    """The program's t-th Q tile (i = i0 + t): the five GEMMs, dK and dV accumulated, dQ_i's
    share added to the fp32 buffer. MASKED: the tile crosses the causal diagonal."""
    # [bwd-tile-start]
    # K_j and V_j as this step's operands, addressed through an index the compiler cannot
    # prove constant: otherwise it hoists their wgmma descriptors (one 64-bit value per
    # 16-wide step of the reduction, 24 of them) out of the loop and spills them.
    z = _opaque_zero()
    k = k.index(z).reshape([k.type.shape[2], k.type.shape[3]])
    v = v.index(z).reshape([v.type.shape[2], v.type.shape[3]])
    BM: gl.constexpr = q_ring.type.shape[2]
    BN: gl.constexpr = k.type.shape[0]
    i = i0 + t
    st_zero = gl.zeros([BN, BM], gl.float32, st_layout)
    s_tok, dp_tok = _scores_issue(k, v, q_ring, do_ring, ready, t, st_zero)
    # L and Δ read while the GEMMs run
    lse, delta = _row_stats(lse_row, delta_row, i, N_Q, BM, st_layout)
    s_t = warpgroup_mma_wait(1, deps=(s_tok,))
    p_t = _probs(s_t, lse, keys, i, qk_scale, MASKED)  # under dPᵀ's GEMM
    dp_t = warpgroup_mma_wait(0, deps=(dp_tok,))
    dk, dv = _grads(t, i, p_t, dp_t, delta, dk, dv, k, q_desc, do_desc, q_ring, do_ring,
                    ds_smem, dq_smem, ready, bh, n_iter, dq_layout, a_layout)
    _add_dq(dq_smem, dq_base, i * BM, N_Q)
    # [bwd-tile-end]
    return dk, dv


@gluon.jit
def fa3_bwd_kernel(q_desc, k_desc, v_desc, do_desc, lse_ptr, delta_ptr, dq_ptr, dk_ptr, dv_ptr,
                   N_Q, N_K, qk_scale, scale, CAUSAL: gl.constexpr, STAGES: gl.constexpr):
    """dK, dV of K/V tile program_id(0) of batch·head program_id(1), and its share of dQ.

    Tensors are seen as [B·H, N, D] through 3-D descriptors (boxes [1, BM, D] for Q and dO,
    [1, BN, D] for K and V): rows past N arrive as zeros. L (natural log, as the forward stores
    it) and Δ = rowsum(dO ∘ O) are fp32 [B·H, N_Q]; dq_ptr an fp32 [B·H, N_Q, D] buffer of
    zeros that collects dS K unscaled; dk_ptr, dv_ptr [B·H, N_K, D] in q's dtype. qk_scale is
    the softmax scale times log2(e)."""
    BM: gl.constexpr = q_desc.block_type.shape[1]
    D: gl.constexpr = q_desc.block_type.shape[2]
    BN: gl.constexpr = k_desc.block_type.shape[1]
    dtype: gl.constexpr = q_desc.dtype
    # Sᵀ, dPᵀ [BN, BM] and dK, dV [BN, D]: the warpgroups split the rows (M = 64 each)
    st_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[WARPS, 1],
                                                        instr_shape=[16, BM, 16])
    kv_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[WARPS, 1],
                                                        instr_shape=[16, D, 16])
    # dQ_i [BM, D]: 64 rows are one warpgroup's M, so the two split the columns instead
    dq_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0],
                                                        warps_per_cta=[WARPS // 2, 2],
                                                        instr_shape=[16, D // 2, 16])
    a_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=kv_layout, k_width=2)
    ds_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BN, BM], dtype)

    pid_n = gl.program_id(0)
    bh = gl.program_id(1)
    n0 = pid_n * BN
    k_smem = gl.allocate_shared_memory(dtype, [1] + k_desc.block_type.shape, k_desc.layout)
    v_smem = gl.allocate_shared_memory(dtype, [1] + v_desc.block_type.shape, v_desc.layout)
    q_ring = gl.allocate_shared_memory(dtype, [STAGES] + q_desc.block_type.shape, q_desc.layout)
    do_ring = gl.allocate_shared_memory(dtype, [STAGES] + do_desc.block_type.shape,
                                        do_desc.layout)
    ds_smem = gl.allocate_shared_memory(dtype, [BN, BM], ds_layout)
    dq_smem = gl.allocate_shared_memory(gl.float32, [BM, D],
                                        gl.SwizzledSharedLayout(1, 1, 1, order=[1, 0]))
    kv_bar = gl.allocate_shared_memory(gl.int64, [1, 1], mbarrier.MBarrierLayout())
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    mbarrier.init(kv_bar.index(0), count=1)
    for s in gl.static_range(STAGES):
        mbarrier.init(ready.index(s), count=1)
    fence_async_shared()

    mbarrier.expect(kv_bar.index(0), k_desc.block_type.nbytes + v_desc.block_type.nbytes)
    _tma_load(k_desc, [bh, n0, 0], kv_bar.index(0), k_smem.index(0))
    _tma_load(v_desc, [bh, n0, 0], kv_bar.index(0), v_smem.index(0))
    i0 = 0
    if CAUSAL:  # query rows before the tile's first key see none of it
        i0 = n0 // BM
    n_iter = (N_Q + BM - 1) // BM - i0
    for s in gl.static_range(STAGES):
        _load_q_do(q_desc, do_desc, q_ring, do_ring, ready, bh, i0 + s, s, s < n_iter)

    dk = gl.zeros([BN, D], gl.float32, kv_layout)
    dv = gl.zeros([BN, D], gl.float32, kv_layout)
    keys = n0 + gl.arange(0, BN, gl.SliceLayout(1, st_layout))  # the key of each row of Sᵀ
    bh64 = bh.to(gl.int64)
    lse_row = lse_ptr + bh64 * N_Q
    delta_row = delta_ptr + bh64 * N_Q
    dq_base = dq_ptr + bh64 * N_Q * D
    mbarrier.wait(kv_bar.index(0), 0)
    k = k_smem  # [1, 1, BN, D]: _tile indexes it
    v = v_smem
    # Causal: the first BN / BM Q tiles cross the diagonal and need the mask; the rest do not
    # (a loop of their own, so the mask costs no selects there).
    n_diag = 0
    if CAUSAL:
        n_diag = gl.minimum(BN // BM, n_iter)
        for t in range(0, n_diag):
            dk, dv = _tile(t, i0, dk, dv, k, v, q_desc, do_desc, q_ring, do_ring, ds_smem,
                           dq_smem, ready, bh, keys, lse_row, delta_row, dq_base, N_Q, n_iter,
                           qk_scale, True, st_layout, dq_layout, a_layout)
    for t in range(n_diag, n_iter):
        dk, dv = _tile(t, i0, dk, dv, k, v, q_desc, do_desc, q_ring, do_ring, ds_smem, dq_smem,
                       ready, bh, keys, lse_row, delta_row, dq_base, N_Q, n_iter, qk_scale,
                       False, st_layout, dq_layout, a_layout)

    rows = n0 + gl.arange(0, BN, gl.SliceLayout(1, kv_layout))
    cols = gl.arange(0, D, gl.SliceLayout(0, kv_layout))
    out = bh64 * N_K * D + rows[:, None] * D + cols[None, :]
    ok = (rows[:, None] < N_K) & (cols[None, :] >= 0)
    gl.store(dv_ptr + out, dv.to(dtype), mask=ok)
    gl.store(dk_ptr + out, (dk * scale).to(dtype), mask=ok)
    mbarrier.invalidate(kv_bar.index(0))
    for s in gl.static_range(STAGES):
        mbarrier.invalidate(ready.index(s))
