"""FlashAttention-3's forward in Gluon, for Hopper (sm_90): FA3's Algorithm 1 and 2 as code.

Gluon is the Triton project's lower-level language: the same compiler, but the kernel names the
things Triton decides for you (register layouts, shared-memory buffers, the copy engine's
barriers, which warps do what). That is what FA3's three ideas need:

* **Warp specialisation.** One *producer* warp only issues TMA copies of K and V tiles into a ring
  of shared-memory stages; each arrival completes a ``ready`` barrier. Two *consumer* warpgroups
  (4 warps each) wait on ``ready``, compute, and arrive on ``empty`` to hand a stage back.
* **Ping-pong.** The two consumer warpgroups each own 64 query rows of the CTA's 128. A ring
  of ``turn`` barriers makes them take turns issuing their GEMMs, so one warpgroup's softmax
  runs while the other's GEMMs occupy the tensor cores. ``CONSUMERS=3`` adds a third
  warpgroup (192 query rows, FA3's tile at D = 64); the turn passes round all three.
* **Intra-warpgroup pipelining** (FA3's Algorithm 2). Each iteration issues GEMM0 of tile j+1
  (S = Q Kᵀ) and GEMM1 of tile j (O += P V) together, waits only for the first, and computes
  softmax(j+1) while GEMM1(j) still runs.

Each idea has a switch (:class:`GluonConfig`), so chapter 6 measures FA3's Table 2 ablation. With
``warp_specialize=False`` the kernel is one block of 8 warps that issues its own copies (the copy
of tile j+STAGES goes out as soon as tile j is consumed); ping-pong needs two consumer warpgroups,
so it is off there too.

A *persistent* build (``PERSISTENT``) launches one program per SM, each looping over work items
(a query tile of one batch·head): the producer runs ahead into the next item's Q and K/V while the
consumers finish the last tiles and the epilogue of this one, which a one-item program leaves
exposed. The K/V ring and every barrier phase run on across items.

An *FP8* build (e4m3 Q, K, V descriptors; fp16 O) runs FA3's FP8 recipe in the same
schedule: V comes transposed, as e4m3 wgmma reads both operands with the reduction dimension
contiguous; per-tile descales enter each score tile's scale (Q, K) and O's rescale (V); P is
P·2⁸ in e4m3 (see :func:`_fp8_tiles` and :mod:`flashedu.ops.fp8.gluon`).

A *stamps* build (``STAMP_ITERS > 0``) reads each SM's cycle counter at every GEMM issue, wait and
softmax of one program's first iterations, per warpgroup: chapter 6's measured timeline.

Tensors are seen as ``[B·H, N, D]`` through 3-D tensor descriptors with boxes ``[1, rows, D]``:
rows past N arrive as zeros and are dropped on the store, so any N works without masked loads.
"""
from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma,
                                                               warpgroup_mma, warpgroup_mma_wait)

# triton 3.6 (the GPU machine's) names the copies async_copy_*; 3.7+ renamed them.
_tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared
_tma_store = getattr(tma, "async_store", None) or tma.async_copy_shared_to_global
_cta_barrier = getattr(gl, "barrier", None) or gl.thread_barrier

LN2 = gl.constexpr(0.6931471805599453)
N_STAMPS = gl.constexpr(8)  # clock readings per (warpgroup, iteration) row of the stamps buffer


# ----------------------------------------------------------------------------------------------
# The timeline (only in a stamps build)
# ----------------------------------------------------------------------------------------------
@gluon.jit
def _stamp(stamps_ptr, on, WG: gl.constexpr, row, event: gl.constexpr, STAMP_ITERS: gl.constexpr):
    """Store this SM's cycle counter at stamps[WG, row, event] (row 0 is the header)."""
    if STAMP_ITERS > 0:
        if on & (row <= STAMP_ITERS):
            t = gl.inline_asm_elementwise("mov.u64 $0, %clock64;", "=l", [], dtype=gl.int64,
                                          is_pure=False, pack=1)
            gl.store(stamps_ptr + (WG * (STAMP_ITERS + 1) + row) * N_STAMPS + event, t)


@gluon.jit
def _stamp_globaltimer(stamps_ptr, on, WG: gl.constexpr, event: gl.constexpr,
                       STAMP_ITERS: gl.constexpr):
    """The header's wall clock (ns), to turn the cycle counts into time."""
    if STAMP_ITERS > 0:
        if on:
            t = gl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l", [], dtype=gl.int64,
                                          is_pure=False, pack=1)
            gl.store(stamps_ptr + (WG * (STAMP_ITERS + 1)) * N_STAMPS + event, t)


# Events of one iteration row (the header row holds: 0 clock at start, 1 globaltimer at start,
# 2 clock at end, 3 globaltimer at end).
EV_TURN = gl.constexpr(0)      # asks for its turn (ping-pong)
EV_ISSUED = gl.constexpr(1)    # GEMM0(j+1) and GEMM1(j) issued
EV_S_READY = gl.constexpr(2)   # S(j+1) back from the tensor cores
EV_SOFTMAX = gl.constexpr(3)   # softmax(j+1) done
EV_O_READY = gl.constexpr(4)   # GEMM1(j) done, O rescaled next


# ----------------------------------------------------------------------------------------------
# The producer warp (warp-specialised build)
# ----------------------------------------------------------------------------------------------
@gluon.jit
def _load_tile(desc, ring, ready, empty, bh, i, c, pred, WAIT_EMPTY: gl.constexpr,
               TRANSPOSED: gl.constexpr):
    """Copy tile i of K or V into its ring stage, once the consumers have handed it back. The
    ring's position is c + i: c counts the tiles of the program's earlier work items.
    TRANSPOSED: the tensor is stored [B·H, D, N] (FP8's V, read K-major), its tile [D, BN]."""
    STAGES: gl.constexpr = ring.type.shape[0]
    BN: gl.constexpr = desc.block_type.shape[2 if TRANSPOSED else 1]
    n = c + i
    stage = n % STAGES
    if WAIT_EMPTY:
        # A fresh barrier counts as having completed the phase before 0, so the first pass
        # through the ring does not wait.
        mbarrier.wait(empty.index(stage), ((n // STAGES) & 1) ^ 1, pred=pred)
    mbarrier.expect(ready.index(stage), desc.block_type.nbytes, pred=pred)
    if TRANSPOSED:
        _tma_load(desc, [bh, 0, i * BN], ready.index(stage), ring.index(stage), pred=pred)
    else:
        _tma_load(desc, [bh, i * BN, 0], ready.index(stage), ring.index(stage), pred=pred)


@gluon.jit
def _producer_item(q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, k_ready, k_empty,
                   v_ready, v_empty, bh, q_row, n_blocks, c, t, NQ: gl.constexpr,
                   PERSISTENT: gl.constexpr):
    """Q and the K/V tiles of one work item (the program's t-th; c K/V tiles came before)."""
    # [producer-start]
    BM: gl.constexpr = q_desc.block_type.shape[1]
    FP8: gl.constexpr = q_desc.dtype.is_fp8()  # V arrives transposed (K-major)
    QB: gl.constexpr = (q_bar.type.shape[0] + 2 * NQ - 1) // (2 * NQ)  # see _consumer_item
    for wg in gl.static_range(NQ):  # each consumer warpgroup's 64 query rows
        b = wg
        if PERSISTENT:
            # Q buffer t % QB of that warpgroup, once its last reader (item t - QB) has run
            # its last GEMM0: with two, the next item's Q arrives while this one runs.
            b = (t % QB) * NQ + wg
            mbarrier.wait(q_bar.index(QB * NQ + b), ((t // QB) & 1) ^ 1)
        mbarrier.expect(q_bar.index(b), q_desc.block_type.nbytes)
        _tma_load(q_desc, [bh, q_row + wg * BM, 0], q_bar.index(b), q_smem.index(b))
    # K runs one tile ahead of V, as the consumers use them: GEMM0(j+1) first.
    _load_tile(k_desc, k_smem, k_ready, k_empty, bh, 0, c, True, True, False)
    for j in range(n_blocks):
        more = j + 1 < n_blocks
        _load_tile(k_desc, k_smem, k_ready, k_empty, bh, j + 1, c, more, True, False)
        _load_tile(v_desc, v_smem, v_ready, v_empty, bh, j, c, True, True, FP8)
    # [producer-end]


@gluon.jit
def _producer(NQ: gl.constexpr, PERSISTENT: gl.constexpr, CAUSAL: gl.constexpr, q_desc, k_desc,
              v_desc, q_smem, k_smem, v_smem, q_bar, k_ready, k_empty, v_ready, v_empty, work):
    if PERSISTENT:
        BM: gl.constexpr = q_desc.block_type.shape[1]
        BN: gl.constexpr = k_desc.block_type.shape[1]
        c = 0  # K/V tiles loaded so far: the ring's position
        t = 0  # work items so far: Q's phase
        start, end, step = _work_items(work, CAUSAL)
        for item in range(start, end, step):
            bh, q_row, n_blocks = _work_item(item, work, CAUSAL, NQ * BM, BN)
            _producer_item(q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, k_ready,
                           k_empty, v_ready, v_empty, bh, q_row, n_blocks, c, t, NQ, True)
            c += n_blocks
            t += 1
    else:
        bh, q_row, n_blocks = work
        _producer_item(q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, k_ready, k_empty,
                       v_ready, v_empty, bh, q_row, n_blocks, 0, 0, NQ, False)


@gluon.jit
def _work_items(work, CAUSAL: gl.constexpr):
    """This persistent program's work items, as range bounds: every P-th item (P programs),
    or, causal, its own stretch of the host's schedule table: P + 1 offsets, then the items
    (:func:`flashedu.ops.fa3.gluon.causal_schedule`). Every partition reads the same, so they
    agree on every trip count."""
    n_m, n_items, N_K, schedule = work
    start = gl.program_id(0)
    end = n_items
    step = gl.num_programs(0)
    if CAUSAL:
        start = gl.load(schedule + gl.program_id(0))
        end = gl.load(schedule + gl.program_id(0) + 1)
        step = 1
    return start, end, step


@gluon.jit
def _work_item(item, work, CAUSAL: gl.constexpr, BM: gl.constexpr, BN: gl.constexpr):
    """A persistent program's work item → (batch·head, first query row, K/V tiles).
    ``work`` is (query tiles per head, work items, N_K, the causal schedule).

    Not causal (every item equally long): the query tile runs fastest, so the items in flight at
    once share a few heads' K and V in L2. Causal (item lengths 1..n_m tiles): the host's
    table, one int32 per item, ``bh · n_m + m``: a table read costs one load per item, where
    working it out here cost the consumers registers across the item loop."""
    n_m, n_items, N_K, schedule = work
    if CAUSAL:
        code = gl.load(schedule + gl.num_programs(0) + 1 + item)
        bh = code // n_m
        m = code - bh * n_m
    else:
        m = item % n_m
        bh = item // n_m
    q_row = m * BM
    hi = N_K
    if CAUSAL:
        hi = gl.minimum(q_row + BM, N_K)
    return bh, q_row, (hi + BN - 1) // BN


# ----------------------------------------------------------------------------------------------
# A consumer warpgroup (or, without warp specialisation, the whole 8-warp block)
# ----------------------------------------------------------------------------------------------
# How a softmax step treats the mask: test at run time (one loop for every tile; the default
# until SPLIT_MASK is timed), never (tiles left of the diagonal and short of N), always.
MASK_AT_RUN_TIME = gl.constexpr(0)
MASK_NEVER = gl.constexpr(1)
MASK_ALWAYS = gl.constexpr(2)


@gluon.jit
def _mask(s, j, r0, N_K, CAUSAL: gl.constexpr, s_layout: gl.constexpr, TILE_N: gl.constexpr):
    """Score tile j (K/V tiles of TILE_N keys; S may hold the first keys of one only) with the
    columns past N_K (and, causal, right of the diagonal) at -inf."""
    BM: gl.constexpr = s.type.shape[0]
    BN: gl.constexpr = s.type.shape[1]
    cols = j * TILE_N + gl.arange(0, BN, gl.SliceLayout(0, s_layout))
    rows = r0 + gl.arange(0, BM, gl.SliceLayout(1, s_layout))
    if CAUSAL:
        keep = (cols[None, :] < N_K) & (rows[:, None] >= cols[None, :])
    else:  # `rows >= 0` (always true) only broadcasts the column test to the tile's shape
        keep = (cols[None, :] < N_K) & (rows[:, None] >= 0)
    return gl.where(keep, s, float("-inf"))


@gluon.jit
def _softmax(s, m_i, l_i, j, first_masked, r0, N_K, qk_scale,
             CAUSAL: gl.constexpr, MASK: gl.constexpr, s_layout: gl.constexpr,
             FP8: gl.constexpr, TILE_N: gl.constexpr):
    """Fold score tile j (of TILE_N keys; S may hold its first half) into the running
    (m, ℓ); return P(j) and the rescale α. FP8: P·2⁸, which keeps small probabilities
    normal e4m3 numbers (ℓ sums the same, so the factor cancels)."""
    if MASK == MASK_ALWAYS:
        s = _mask(s, j, r0, N_K, CAUSAL, s_layout, TILE_N)
    elif MASK == MASK_AT_RUN_TIME:
        # Only the last tile and the diagonal need it, but the compiler turns this
        # test into selects on every score of every tile: a third of the loop.
        if j >= first_masked:
            s = _mask(s, j, r0, N_K, CAUSAL, s_layout, TILE_N)
    # Base-2 units: qk_scale is the softmax scale times log2(e).
    m_new = gl.maximum(m_i, gl.max(s, axis=1) * qk_scale)
    if FP8:
        p = gl.exp2(s * qk_scale - (m_new - 8.0)[:, None])  # [BM, BN]
    else:
        p = gl.exp2(s * qk_scale - m_new[:, None])  # [BM, BN]
    alpha = gl.exp2(m_i - m_new)
    l_i = l_i * alpha + gl.sum(p, axis=1)
    return p, alpha, m_new, l_i


@gluon.jit
def _release(desc, ring, ready, empty, bh, i, c, n_blocks, SELF_LOAD: gl.constexpr):
    """Hand tile i's stage (ring position c + i) back: to the producer (warp-specialised), or
    refill it with tile i + STAGES ourselves (once every warp of the block is done reading it)."""
    if SELF_LOAD:
        STAGES: gl.constexpr = ring.type.shape[0]
        _cta_barrier()
        _load_tile(desc, ring, ready, empty, bh, i + STAGES, c, i + STAGES < n_blocks, False,
                   False)
    else:
        mbarrier.arrive(empty.index((c + i) % ring.type.shape[0]), count=1)


@gluon.jit
def _fp8_tiles(tiles, qk_scale, j):
    """FP8: the scale of score tile j+1 (qk_scale holds the softmax scale, log2 e and this
    warpgroup's Q descale; K(j+1)'s descale joins it), and the factor that moves O from V(j)'s
    descale to V(j+1)'s. O is kept in units of the last V tile's descale, so that GEMM1 adds
    e4m3 products straight into it (flashedu.ops.fp8.kernel's FOLD_V)."""
    k_descale, v_descale, shift = tiles  # shift: log2 of K/V tiles per quantisation block
    scale = qk_scale * gl.load(k_descale + ((j + 1) >> shift))
    v_ratio = gl.load(v_descale + (j >> shift)) / gl.load(v_descale + ((j + 1) >> shift))
    return scale, v_ratio


@gluon.jit
def _iteration(j, c, turns, state, q, s_zero, ring, turn, bh, n_blocks, first_masked, r0, N_K,
               qk_scale, tiles, stamps, WG: gl.constexpr, SELF_LOAD: gl.constexpr,
               PINGPONG: gl.constexpr, INTRA: gl.constexpr, CAUSAL: gl.constexpr,
               MASK: gl.constexpr,
               STAMP_ITERS: gl.constexpr, s_layout: gl.constexpr, o_layout: gl.constexpr,
               p_layout: gl.constexpr):
    """One turn of a consumer's loop: GEMM0(j+1) and GEMM1(j) issued together, softmax(j+1),
    O rescaled. ``state`` is the loop's (P(j), m, ℓ, O); returns it for j+1. Tile j sits at
    ring position c + j; ``turns`` counts this warpgroup's turns before the work item's;
    ``tiles`` holds FP8's per-tile descales (see :func:`_fp8_tiles`)."""
    p, m_i, l_i, acc = state
    k_desc, v_desc, k_smem, v_smem, k_ready, k_empty, v_ready, v_empty = ring
    stamps_ptr, stamp_on = stamps
    BN: gl.constexpr = k_smem.type.shape[2]
    D: gl.constexpr = k_smem.type.shape[3]
    STAGES: gl.constexpr = k_smem.type.shape[0]
    KEYS: gl.constexpr = s_zero.type.shape[1]  # keys of S(j+1): BN, or the first BN/2
    dtype: gl.constexpr = k_desc.dtype
    FP8: gl.constexpr = dtype.is_fp8()
    scale = qk_scale
    if FP8:  # per-tile descales: K's into the scale, V's into O's rescale
        scale, v_ratio = _fp8_tiles(tiles, qk_scale, j)
    # [iteration-start]
    # Here: P(j) in registers, O holding tiles < j.
    p16 = gl.convert_layout(p.to(dtype), p_layout)
    nxt = j + 1
    kn = c + nxt  # ring positions of K(j+1) and V(j)
    vn = c + j
    mbarrier.wait(k_ready.index(kn % STAGES), (kn // STAGES) & 1)
    mbarrier.wait(v_ready.index(vn % STAGES), (vn // STAGES) & 1)
    _stamp(stamps_ptr, stamp_on, WG, j + 1, EV_TURN, STAMP_ITERS)
    if PINGPONG:  # wait for the warpgroup before this one to have issued its GEMMs
        mbarrier.wait(turn.index(WG), ((turns + j) & 1) ^ (WG == 0))
    k_next = k_smem.index(kn % STAGES).reshape([BN, D])
    if KEYS < BN:  # the diagonal tile's left half (_half_diagonal_tiles)
        k_next = k_next.slice(0, KEYS)
        m_i = gl.convert_layout(m_i, gl.SliceLayout(1, s_layout))
        l_i = gl.convert_layout(l_i, gl.SliceLayout(1, s_layout))
    if FP8:  # Vᵀ stored [D, BN]: e4m3 wgmma reads B with the keys contiguous
        v_this = v_smem.index(vn % STAGES).reshape([D, BN]).permute((1, 0))
    else:
        v_this = v_smem.index(vn % STAGES).reshape([BN, D])
    # GEMM0(j+1): S = Q K(j+1)ᵀ, and GEMM1(j): O += P(j) V(j); both return at once.
    s_tok = warpgroup_mma(q, k_next.permute((1, 0)), s_zero, use_acc=False,
                          is_async=True)
    o_tok = warpgroup_mma(p16, v_this, acc, is_async=True)
    if PINGPONG:  # the next warpgroup's turn now
        mbarrier.arrive(turn.index((WG + 1) % turn.type.shape[0]), count=1)
    _stamp(stamps_ptr, stamp_on, WG, j + 1, EV_ISSUED, STAMP_ITERS)
    if INTRA:
        # Retire GEMM0(j+1) only (groups retire in issue order); GEMM1(j)
        # keeps running under softmax(j+1).
        s = warpgroup_mma_wait(1, deps=(s_tok,))
        _release(k_desc, k_smem, k_ready, k_empty, bh, nxt, c, n_blocks, SELF_LOAD)
        _stamp(stamps_ptr, stamp_on, WG, j + 1, EV_S_READY, STAMP_ITERS)
        p, alpha, m_i, l_i = _softmax(s, m_i, l_i, nxt, first_masked, r0, N_K,
                                      scale, CAUSAL, MASK, s_layout, FP8, BN)
        _stamp(stamps_ptr, stamp_on, WG, j + 1, EV_SOFTMAX, STAMP_ITERS)
        acc = warpgroup_mma_wait(0, deps=(o_tok,))
    else:
        s, acc = warpgroup_mma_wait(0, deps=(s_tok, o_tok))
        _release(k_desc, k_smem, k_ready, k_empty, bh, nxt, c, n_blocks, SELF_LOAD)
        _stamp(stamps_ptr, stamp_on, WG, j + 1, EV_S_READY, STAMP_ITERS)
        p, alpha, m_i, l_i = _softmax(s, m_i, l_i, nxt, first_masked, r0, N_K,
                                      scale, CAUSAL, MASK, s_layout, FP8, BN)
        _stamp(stamps_ptr, stamp_on, WG, j + 1, EV_SOFTMAX, STAMP_ITERS)
    # Only now is V(j) free: handed back earlier, TMA could overwrite it.
    _release(v_desc, v_smem, v_ready, v_empty, bh, j, c, n_blocks, SELF_LOAD)
    _stamp(stamps_ptr, stamp_on, WG, j + 1, EV_O_READY, STAMP_ITERS)
    alpha = gl.convert_layout(alpha, gl.SliceLayout(1, o_layout))
    if FP8:
        alpha = alpha * v_ratio
    acc = acc * alpha[:, None]
    # [iteration-end]
    return p, m_i, l_i, acc


@gluon.jit
def _first_tile(q, s_zero, m_i, l_i, ring, bh, c, n_blocks, first_masked, r0, N_K, scale,
                CAUSAL: gl.constexpr, SELF_LOAD: gl.constexpr, s_layout: gl.constexpr):
    """S(0) = Q K(0)ᵀ over the first keys of tile 0 that ``s_zero`` is wide, and its softmax:
    P(0), m, ℓ (fp16/bf16; the prologue of :func:`_half_diagonal_tiles`)."""
    k_desc, v_desc, k_smem, v_smem, k_ready, k_empty, v_ready, v_empty = ring
    STAGES: gl.constexpr = k_smem.type.shape[0]
    BN: gl.constexpr = k_smem.type.shape[2]
    D: gl.constexpr = k_smem.type.shape[3]
    mbarrier.wait(k_ready.index(c % STAGES), (c // STAGES) & 1)
    k_first = k_smem.index(c % STAGES).reshape([BN, D]).slice(0, s_zero.type.shape[1])
    s = warpgroup_mma(q, k_first.permute((1, 0)), s_zero, use_acc=False, is_async=True)
    s = warpgroup_mma_wait(0, deps=(s,))
    _release(k_desc, k_smem, k_ready, k_empty, bh, 0, c, n_blocks, SELF_LOAD)
    p, alpha, m_i, l_i = _softmax(s, m_i, l_i, 0, first_masked, r0, N_K, scale, CAUSAL,
                                  MASK_AT_RUN_TIME, s_layout, False, BN)
    return p, m_i, l_i


@gluon.jit
def _half_diagonal_tiles(q, acc, c, turns, ring, turn, bh, n_blocks, first_masked, r0, N_K,
                         qk_scale, tiles, stamps, SELF_LOAD: gl.constexpr,
                         PINGPONG: gl.constexpr, INTRA: gl.constexpr,
                         STAMP_ITERS: gl.constexpr, s_layout: gl.constexpr,
                         o_layout: gl.constexpr, p_layout: gl.constexpr):
    """Warpgroup 0 of a causal program of two (HALF_DIAGONAL): its 64 rows end halfway into
    the item's last K/V tile, the diagonal one, whose right half they may not see. So of that
    tile it computes the left half only, 64 keys: half its GEMMs and exponentials. The tiles
    before it go as in the loop. Returns (P of the half tile, m, ℓ, O) for the epilogue."""
    BM: gl.constexpr = q.type.shape[0]
    BN: gl.constexpr = ring[2].type.shape[2]
    half_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                          instr_shape=[16, BN // 2, 16])
    s_zero = gl.zeros([BM, BN], gl.float32, s_layout)
    h_zero = gl.zeros([BM, BN // 2], gl.float32, half_layout)
    m_i = gl.full([BM], float("-inf"), gl.float32, gl.SliceLayout(1, half_layout))
    l_i = gl.zeros([BM], gl.float32, gl.SliceLayout(1, half_layout))
    if n_blocks == 1:  # the diagonal tile is the item's only one
        p, m_i, l_i = _first_tile(q, h_zero, m_i, l_i, ring, bh, c, n_blocks, first_masked,
                                  r0, N_K, qk_scale, True, SELF_LOAD, half_layout)
    else:
        m_w = gl.full([BM], float("-inf"), gl.float32, gl.SliceLayout(1, s_layout))
        l_w = gl.zeros([BM], gl.float32, gl.SliceLayout(1, s_layout))
        p_w, m_w, l_w = _first_tile(q, s_zero, m_w, l_w, ring, bh, c, n_blocks, first_masked,
                                    r0, N_K, qk_scale, True, SELF_LOAD, s_layout)
        state = (p_w, m_w, l_w, acc)
        for j in range(n_blocks - 2):
            state = _iteration(j, c, turns, state, q, s_zero, ring, turn, bh, n_blocks,
                               first_masked, r0, N_K, qk_scale, tiles, stamps, 0,
                               SELF_LOAD, PINGPONG, INTRA, True, MASK_AT_RUN_TIME,
                               STAMP_ITERS, s_layout, o_layout, p_layout)
        # the last turn of the loop computes S of the diagonal tile's left half
        p, m_i, l_i, acc = _iteration(n_blocks - 2, c, turns, state, q, h_zero, ring, turn,
                                      bh, n_blocks, first_masked, r0, N_K, qk_scale, tiles,
                                      stamps, 0, SELF_LOAD, PINGPONG, INTRA, True,
                                      MASK_ALWAYS, STAMP_ITERS, half_layout, o_layout,
                                      p_layout)
    return p, m_i, l_i, acc


@gluon.jit
def _consumer_item(WG: gl.constexpr, SELF_LOAD: gl.constexpr, PINGPONG: gl.constexpr,
                   INTRA: gl.constexpr, CAUSAL: gl.constexpr, SPLIT_MASK: gl.constexpr,
                   PERSISTENT: gl.constexpr, STAMP_ITERS: gl.constexpr,
                   HALF_DIAGONAL: gl.constexpr, k_desc, v_desc, o_desc,
                   lse_ptr, stamps_ptr, q_smem, o_smem, k_smem, v_smem, q_bar, k_ready,
                   k_empty, v_ready, v_empty, turn, bh, q_row, n_blocks, c, t, N_Q, N_K,
                   qk_scale, descales, stamp_on,
                   s_layout: gl.constexpr, o_layout: gl.constexpr, p_layout: gl.constexpr):
    """One work item (the program's t-th; its K/V tiles start at ring position c): this
    warpgroup's 64 rows of O and L."""
    BM: gl.constexpr = q_smem.type.shape[2]
    D: gl.constexpr = q_smem.type.shape[3]
    BN: gl.constexpr = k_smem.type.shape[2]
    STAGES: gl.constexpr = k_smem.type.shape[0]
    NQ: gl.constexpr = turn.type.shape[0]      # consumer warpgroups (Q tiles) per program
    dtype: gl.constexpr = k_desc.dtype
    FP8: gl.constexpr = dtype.is_fp8()
    r0 = q_row + WG * BM                       # this warpgroup's first query row
    first_masked = N_K // BN                   # tiles from here on need the mask
    if CAUSAL:
        first_masked = gl.minimum(first_masked, r0 // BN)
    turns = c - t                              # turns taken before: n_blocks - 1 per item
    qb = WG                                    # this item's Q buffer, and its phase
    q_phase = t & 1
    # Q buffers per warpgroup: a persistent q_bar holds a "loaded" and a "free" barrier for
    # each (2·QB·NQ), a one-item kernel's a "loaded" one (NQ)
    QB: gl.constexpr = (q_bar.type.shape[0] + 2 * NQ - 1) // (2 * NQ)
    if PERSISTENT:
        qb = (t % QB) * NQ + WG
        q_phase = (t // QB) & 1
    q = q_smem.index(qb).reshape([BM, D])
    s_zero = gl.zeros([BM, BN], gl.float32, s_layout)
    m_i = gl.full([BM], float("-inf"), gl.float32, gl.SliceLayout(1, s_layout))
    l_i = gl.zeros([BM], gl.float32, gl.SliceLayout(1, s_layout))
    acc = gl.zeros([BM, D], gl.float32, o_layout)
    _stamp(stamps_ptr, stamp_on, WG, 0, 0, STAMP_ITERS)
    _stamp_globaltimer(stamps_ptr, stamp_on, WG, 1, STAMP_ITERS)
    q_descale, k_descale, v_descale, n_qt, n_kt, q_block, kv_shift = descales
    scale0 = qk_scale
    if FP8:  # this warpgroup's Q descale joins the scale; K's and V's come per tile
        bh64 = bh.to(gl.int64)
        # (a warpgroup wholly past N_Q, whose rows are never stored, reads the last descale)
        q_tile = gl.minimum(r0 // q_block, n_qt - 1)
        qk_scale = qk_scale * gl.load(q_descale + bh64 * n_qt + q_tile)
        k_descale += bh64 * n_kt
        v_descale += bh64 * n_kt
        scale0 = qk_scale * gl.load(k_descale)
    tiles = (k_descale, v_descale, kv_shift)

    # [consumer-start]
    mbarrier.wait(q_bar.index(qb), q_phase)
    ring = (k_desc, v_desc, k_smem, v_smem, k_ready, k_empty, v_ready, v_empty)
    stamps = (stamps_ptr, stamp_on)
    # Causal, two consumers: warpgroup 0's rows end halfway into the last K/V tile
    HALF: gl.constexpr = HALF_DIAGONAL and CAUSAL and WG == 0 and NQ == 2 and not FP8
    if HALF:
        p, m_i, l_i, acc = _half_diagonal_tiles(q, acc, c, turns, ring, turn, bh, n_blocks,
                                                first_masked, r0, N_K, qk_scale, tiles,
                                                stamps, SELF_LOAD, PINGPONG, INTRA,
                                                STAMP_ITERS, s_layout, o_layout, p_layout)
    if not HALF:
        # Prologue: S(0) = Q K(0)ᵀ and its softmax.
        mbarrier.wait(k_ready.index(c % STAGES), (c // STAGES) & 1)
        k_first = k_smem.index(c % STAGES).reshape([BN, D])
        s = warpgroup_mma(q, k_first.permute((1, 0)), s_zero, use_acc=False, is_async=True)
        s = warpgroup_mma_wait(0, deps=(s,))
        _release(k_desc, k_smem, k_ready, k_empty, bh, 0, c, n_blocks, SELF_LOAD)
        p, alpha, m_i, l_i = _softmax(s, m_i, l_i, 0, first_masked, r0, N_K, scale0,
                                      CAUSAL, MASK_AT_RUN_TIME, s_layout, FP8, BN)

        state = (p, m_i, l_i, acc)  # P(j), m, ℓ, O
        if SPLIT_MASK:
            # Tiles 1 .. first_masked-1 need no mask: a loop without it, then one with it.
            n_free = gl.maximum(gl.minimum(first_masked - 1, n_blocks - 1), 0)
            for j in range(0, n_free):
                state = _iteration(j, c, turns, state, q, s_zero, ring, turn, bh, n_blocks,
                                   first_masked, r0, N_K, qk_scale, tiles, stamps, WG,
                                   SELF_LOAD, PINGPONG, INTRA, CAUSAL, MASK_NEVER,
                                   STAMP_ITERS, s_layout, o_layout, p_layout)
            for j in range(n_free, n_blocks - 1):
                state = _iteration(j, c, turns, state, q, s_zero, ring, turn, bh, n_blocks,
                                   first_masked, r0, N_K, qk_scale, tiles, stamps, WG,
                                   SELF_LOAD, PINGPONG, INTRA, CAUSAL, MASK_ALWAYS,
                                   STAMP_ITERS, s_layout, o_layout, p_layout)
        else:
            for j in range(n_blocks - 1):
                state = _iteration(j, c, turns, state, q, s_zero, ring, turn, bh, n_blocks,
                                   first_masked, r0, N_K, qk_scale, tiles, stamps, WG,
                                   SELF_LOAD, PINGPONG, INTRA, CAUSAL, MASK_AT_RUN_TIME,
                                   STAMP_ITERS, s_layout, o_layout, p_layout)
        p, m_i, l_i, acc = state
    if PERSISTENT:
        # The last GEMM0 has retired: Q may be overwritten by the next item's.
        mbarrier.arrive(q_bar.index(QB * NQ + qb), count=1)

    # Epilogue: GEMM1 of the last tile, then O / ℓ.
    last = n_blocks - 1
    lv = c + last  # its ring position
    p16 = gl.convert_layout(p.to(dtype), p_layout)
    mbarrier.wait(v_ready.index(lv % STAGES), (lv // STAGES) & 1)
    if FP8:
        v_last = v_smem.index(lv % STAGES).reshape([D, BN]).permute((1, 0))
    else:
        v_last = v_smem.index(lv % STAGES).reshape([BN, D])
    if HALF:  # P covers the tile's first half of the keys
        v_last = v_last.slice(0, BN // 2)
    o_tok = warpgroup_mma(p16, v_last, acc, is_async=True)
    acc = warpgroup_mma_wait(0, deps=(o_tok,))
    _release(v_desc, v_smem, v_ready, v_empty, bh, last, c, n_blocks, SELF_LOAD)
    if FP8:  # O was kept in units of the last V tile's descale
        acc = acc * gl.load(v_descale + (last >> kv_shift))
    l_o = gl.convert_layout(l_i, gl.SliceLayout(1, o_layout))
    o = acc / gl.where(l_o == 0.0, 1.0, l_o)[:, None]          # [BM, D]
    # [consumer-end]

    # O goes out through shared memory and the copy engine; rows past N_Q are dropped by the
    # descriptor. One work item: through this warpgroup's Q buffer (Q is no longer read).
    # Persistent: Q already holds the next item's, so O has buffers of its own (o_smem: after
    # Q's), free again once the previous item's copy has read them. FP8: O (fp16) has
    # buffers of its own either way.
    if PERSISTENT:
        o_buf = o_smem.index(WG if FP8 else QB * NQ + WG)
        tma.store_wait(0)
    else:
        o_buf = o_smem.index(WG)
    o_buf.reshape([BM, D]).store(o.to(o_desc.dtype))
    fence_async_shared()
    _tma_store(o_desc, [bh, r0, 0], o_buf)
    # L = ln Σ exp(s·scale) = (m + log2 ℓ)·ln 2: what chapter 4's backward reads (FP8's ℓ
    # sums P·2⁸).
    rows = r0 + gl.arange(0, BM, gl.SliceLayout(1, o_layout))
    log_l = gl.log2(l_o) - 8.0 if FP8 else gl.log2(l_o)
    lse = (gl.convert_layout(m_i, gl.SliceLayout(1, o_layout)) + log_l) * LN2
    gl.store(lse_ptr + bh.to(gl.int64) * N_Q + rows, lse, mask=rows < N_Q)
    _stamp(stamps_ptr, stamp_on, WG, 0, 2, STAMP_ITERS)
    _stamp_globaltimer(stamps_ptr, stamp_on, WG, 3, STAMP_ITERS)
    if not PERSISTENT:
        tma.store_wait(0)


@gluon.jit
def _consumer(WG: gl.constexpr, WARPS: gl.constexpr, SELF_LOAD: gl.constexpr,
              PINGPONG: gl.constexpr, INTRA: gl.constexpr, CAUSAL: gl.constexpr,
              SPLIT_MASK: gl.constexpr, PERSISTENT: gl.constexpr, STAMP_ITERS: gl.constexpr,
              HALF_DIAGONAL: gl.constexpr,
              k_desc, v_desc, o_desc, lse_ptr, stamps_ptr, q_smem, o_smem, k_smem, v_smem,
              q_bar, k_ready, k_empty, v_ready, v_empty, turn, work, N_Q, N_K, qk_scale,
              descales, stamp_on):
    BM: gl.constexpr = q_smem.type.shape[2]
    D: gl.constexpr = q_smem.type.shape[3]
    BN: gl.constexpr = k_smem.type.shape[2]
    NQ: gl.constexpr = turn.type.shape[0]
    # wgmma's register layouts: S and O accumulators, and P as the A operand of GEMM1. One
    # wgmma reduces over 32 bytes of K: 16 fp16 values, 32 e4m3.
    FP8: gl.constexpr = k_desc.dtype.is_fp8()
    K_STEP: gl.constexpr = 32 if FP8 else 16
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[WARPS, 1],
                                                       instr_shape=[16, BN, K_STEP])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[WARPS, 1],
                                                       instr_shape=[16, D, K_STEP])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout,
                                                 k_width=4 if FP8 else 2)
    if PERSISTENT:
        c = 0  # K/V tiles consumed so far: the ring's position
        t = 0  # work items so far: Q's phase
        start, end, step = _work_items(work, CAUSAL)
        for item in range(start, end, step):
            bh, q_row, n_blocks = _work_item(item, work, CAUSAL, NQ * BM, BN)
            _consumer_item(WG, SELF_LOAD, PINGPONG, INTRA, CAUSAL, SPLIT_MASK, True,
                           STAMP_ITERS, HALF_DIAGONAL, k_desc, v_desc, o_desc, lse_ptr,
                           stamps_ptr, q_smem, o_smem, k_smem, v_smem, q_bar, k_ready, k_empty,
                           v_ready, v_empty, turn, bh, q_row, n_blocks, c, t, N_Q, N_K,
                           qk_scale, descales, stamp_on, s_layout, o_layout, p_layout)
            c += n_blocks
            t += 1
        tma.store_wait(0)
    else:
        bh, q_row, n_blocks = work
        _consumer_item(WG, SELF_LOAD, PINGPONG, INTRA, CAUSAL, SPLIT_MASK, False, STAMP_ITERS,
                       HALF_DIAGONAL, k_desc, v_desc, o_desc, lse_ptr, stamps_ptr, q_smem,
                       o_smem, k_smem, v_smem, q_bar, k_ready, k_empty, v_ready, v_empty, turn,
                       bh, q_row, n_blocks, 0, 0, N_Q, N_K, qk_scale, descales, stamp_on,
                       s_layout, o_layout, p_layout)


# ----------------------------------------------------------------------------------------------
# The kernel
# ----------------------------------------------------------------------------------------------
@gluon.jit
def fa3_fwd_kernel(q_desc, k_desc, v_desc, o_desc, lse_ptr, stamps_ptr, schedule_ptr, N_Q, N_K,
                   qk_scale, stamp_pid, BH, q_descale, k_descale, v_descale, n_qt, n_kt, q_block,
                   kv_shift, CAUSAL: gl.constexpr, STAGES: gl.constexpr,
                   WARP_SPEC: gl.constexpr, PINGPONG: gl.constexpr, INTRA: gl.constexpr,
                   SPLIT_MASK: gl.constexpr, PERSISTENT: gl.constexpr,
                   CONSUMERS: gl.constexpr, CONSUMER_REGS: gl.constexpr,
                   Q_BUFFERS: gl.constexpr, HALF_DIAGONAL: gl.constexpr,
                   STAMP_ITERS: gl.constexpr):
    """One program: 64·CONSUMERS query rows of one (batch, head) (128 without warp
    specialisation), against all (or, causal, the visible) K/V tiles. Grid: (cdiv(N_Q, rows),
    B·H). Persistent: one program per SM (at most one per work item), each taking every
    num_programs-th of the cdiv(N_Q, rows)·B·H work items.

    FP8 (e4m3 q, k, v; fp16 o): V comes transposed, [B·H, D, N_K] (v_desc's box [1, D, BN]),
    and each tile of Q, K and V has a descale ([B·H, n_qt] and [B·H, n_kt] fp32, one per q_block
    rows and per 2^kv_shift K/V tiles), as flashedu.ops.fp8.prepare_fp8 writes them."""
    gl.static_assert(not PERSISTENT or (WARP_SPEC and STAMP_ITERS == 0),
                     "persistent: warp-specialised, not stamped")
    FP8: gl.constexpr = q_desc.dtype.is_fp8()
    gl.static_assert(not FP8 or WARP_SPEC, "FP8: warp-specialised")
    BM: gl.constexpr = q_desc.block_type.shape[1]   # rows per consumer (64), or the block's (128)
    D: gl.constexpr = q_desc.block_type.shape[2]
    BN: gl.constexpr = k_desc.block_type.shape[1]
    NQ: gl.constexpr = CONSUMERS if WARP_SPEC else 1  # Q tiles: one per consumer warpgroup
    if PERSISTENT:
        n_m = (N_Q + NQ * BM - 1) // (NQ * BM)
        work = (n_m, n_m * BH, N_K, schedule_ptr)    # what _work_item reads
        stamp_on = False
    else:
        pid_m = gl.program_id(0)
        if CAUSAL:  # the longest rows (most tiles) start first
            pid_m = gl.num_programs(0) - 1 - pid_m
        bh = gl.program_id(1)
        q_row = pid_m * (NQ * BM)
        hi = N_K
        if CAUSAL:
            hi = gl.minimum(q_row + NQ * BM, N_K)
        n_blocks = (hi + BN - 1) // BN
        work = (bh, q_row, n_blocks)
        stamp_on = (pid_m == stamp_pid) & (bh == 0)

    # Persistent: Q is refilled while O still waits to go out, so O gets buffers of its own
    # after Q's (Q_BUFFERS of those per warpgroup: [(Q_BUFFERS + 1)·NQ, 1, BM, D]), and each Q
    # buffer a second barrier: Q free again. FP8: O (fp16) cannot share e4m3 Q's buffers, so
    # it has its own [NQ, 1, BM, D].
    QN: gl.constexpr = Q_BUFFERS * NQ if PERSISTENT else NQ  # Q buffers
    QO: gl.constexpr = QN if FP8 or not PERSISTENT else QN + NQ
    q_smem = gl.allocate_shared_memory(q_desc.dtype, [QO] + q_desc.block_type.shape,
                                       q_desc.layout)
    if FP8:
        o_smem = gl.allocate_shared_memory(o_desc.dtype, [NQ] + o_desc.block_type.shape,
                                           o_desc.layout)
    else:
        o_smem = q_smem
    k_smem = gl.allocate_shared_memory(k_desc.dtype, [STAGES] + k_desc.block_type.shape,
                                       k_desc.layout)
    v_smem = gl.allocate_shared_memory(v_desc.dtype, [STAGES] + v_desc.block_type.shape,
                                       v_desc.layout)
    QBARS: gl.constexpr = 2 * QN if PERSISTENT else NQ  # loaded (and, persistent, free)
    q_bar = gl.allocate_shared_memory(gl.int64, [QBARS, 1], mbarrier.MBarrierLayout())
    k_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    k_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    turn = gl.allocate_shared_memory(gl.int64, [NQ, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(QBARS):
        mbarrier.init(q_bar.index(i), count=1)
    for i in gl.static_range(STAGES):
        mbarrier.init(k_ready.index(i), count=1)
        mbarrier.init(v_ready.index(i), count=1)
        mbarrier.init(k_empty.index(i), count=NQ)  # every consumer hands a stage back
        mbarrier.init(v_empty.index(i), count=NQ)
    for i in gl.static_range(NQ):
        mbarrier.init(turn.index(i), count=1)

    descales = (q_descale, k_descale, v_descale, n_qt, n_kt, q_block, kv_shift)  # FP8 only
    # [partitions-start]
    if WARP_SPEC:
        # A tuple assigned to a name turns its constexprs into run-time values, so the
        # switches go in as literals: each partition compiles its own branches only.
        cargs = (k_desc, v_desc, o_desc, lse_ptr, stamps_ptr, q_smem, o_smem, k_smem,
                 v_smem, q_bar, k_ready, k_empty, v_ready, v_empty, turn, work, N_Q,
                 N_K, qk_scale, descales, stamp_on)
        pargs = (q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, k_ready,
                 k_empty, v_ready, v_empty, work)
        # Each consumer warpgroup is _consumer with its index (and its 4 warps, and no
        # copies of its own) as literals: constexprs, so each compiles its own code.
        if CONSUMERS == 3:  # D ≤ 64: 192 query rows, FA3's tile there
            gl.warp_specialize([
                # the kernel's own 4 warps, then 4 more, twice
                (_consumer, (0, 4, False, PINGPONG, INTRA, CAUSAL, SPLIT_MASK,
                             PERSISTENT, STAMP_ITERS, HALF_DIAGONAL) + cargs),
                (_consumer, (1, 4, False, PINGPONG, INTRA, CAUSAL, SPLIT_MASK,
                             PERSISTENT, STAMP_ITERS, HALF_DIAGONAL) + cargs),
                (_consumer, (2, 4, False, PINGPONG, INTRA, CAUSAL, SPLIT_MASK,
                             PERSISTENT, STAMP_ITERS, HALF_DIAGONAL) + cargs),
                (_producer, (NQ, PERSISTENT, CAUSAL) + pargs),  # 1 warp
            ], [4, 4, 1], [CONSUMER_REGS, CONSUMER_REGS, 24])
        else:
            gl.warp_specialize([
                # the kernel's own 4 warps, then 4 more
                (_consumer, (0, 4, False, PINGPONG, INTRA, CAUSAL, SPLIT_MASK,
                             PERSISTENT, STAMP_ITERS, HALF_DIAGONAL) + cargs),
                (_consumer, (1, 4, False, PINGPONG, INTRA, CAUSAL, SPLIT_MASK,
                             PERSISTENT, STAMP_ITERS, HALF_DIAGONAL) + cargs),
                (_producer, (NQ, PERSISTENT, CAUSAL) + pargs),  # 1 warp
            ], [4, 1], [CONSUMER_REGS, 24])
    else:
        # No producer: the block issues its own copies, STAGES tiles ahead.
        mbarrier.expect(q_bar.index(0), q_desc.block_type.nbytes)
        _tma_load(q_desc, [bh, q_row, 0], q_bar.index(0), q_smem.index(0))
        for i in gl.static_range(STAGES):
            _load_tile(k_desc, k_smem, k_ready, k_empty, bh, i, 0, i < n_blocks,
                       False, False)
            _load_tile(v_desc, v_smem, v_ready, v_empty, bh, i, 0, i < n_blocks,
                       False, False)
        _consumer(0, 8, True, False, INTRA, CAUSAL, SPLIT_MASK, False, STAMP_ITERS, False,
                  k_desc, v_desc, o_desc, lse_ptr, stamps_ptr, q_smem, o_smem, k_smem,
                  v_smem, q_bar, k_ready, k_empty, v_ready, v_empty, turn, work,
                  N_Q, N_K, qk_scale, descales, stamp_on)
    # [partitions-end]
