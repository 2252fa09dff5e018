"""Split-KV decoding (flash-decoding) in Triton: two passes, in one launch or two.

    pass 1  _split_kernel   one program per (packed Q block, split, batch · K/V head): folds the
                            K/V tiles of its split into (m, ℓ, o) and stores that partial state
    pass 2  _merge_kernel   one program per query row: ⊕ over the splits, one division, store O

Pass 2 can run inside pass 1's launch: each program counts itself in on its row block's ticket
(an atomic counter), and the program that draws the last ticket merges the row block's splits,
whose states are in memory by then. A short decode step is a few µs of GPU time and twice that
of host time, so an eager call on a short cache does that; a long cache, or a CUDA graph, takes
the second launch, whose merge is spread over one program per row (faster on the GPU).

Grouped-query attention packs the G = H / H_kv query heads that share a K/V head into the rows of
one Q tile (row r: query r // G of head h_kv·G + r % G), so each K/V tile is read once per group,
not G times. At decode (one query row) that is what makes a tile of ≥ 16 rows for tl.dot at all.

The partial states are fp32 with m in natural-log units, laid out [S, B, H, N_q, ·], so
``State(m[s], l[s], o[s])`` is exactly :class:`flashedu.softmax.state.State` of split s: the
kernel's merge and chapter 2's ⊕ can be checked against each other.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from flashedu import runtime
from flashedu.ops import _bound
from flashedu.ops._triton import fits
from flashedu.softmax.state import State
from flashedu.ops.split_kv.plan import check_gqa, resolve_splits, split_ranges
from flashedu.validate import quick_scale

DTYPES = (torch.float16, torch.bfloat16, torch.float32)
HEAD_DIMS = (16, 32, 64, 128, 256)
LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
MIN_CAPABILITY = (8, 0)


@triton.jit
def _split_kernel(Q, K, V, PART, O, TICKETS,
                  stride_qz, stride_qh, stride_qm, stride_qd,
                  stride_kz, stride_kh, stride_kn, stride_kd,
                  stride_vz, stride_vh, stride_vn, stride_vd,
                  B, H_KV, N_Q, N_K, split_len, qk_scale,
                  GROUP: tl.constexpr, CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
                  ONE_LAUNCH: tl.constexpr, UNROLL: tl.constexpr):
    pid_m, split, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    z, h_kv = (bh // H_KV).to(tl.int64), (bh % H_KV).to(tl.int64)
    R = N_Q * GROUP
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # packed rows
    row_ok = rows < R
    qi = rows // GROUP  # query position of each packed row
    h = h_kv * GROUP + rows % GROUP  # its query head
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + z * stride_qz + h[:, None] * stride_qh + qi[:, None] * stride_qm + offs_d[None, :] * stride_qd,
                mask=row_ok[:, None], other=0.0)  # [BLOCK_M, D]
    K += z * stride_kz + h_kv * stride_kh
    V += z * stride_vz + h_kv * stride_vh

    # [split-kv-split-start]
    lo = split * split_len  # this program's keys: lo..hi, one split of the cache
    hi = tl.minimum(N_K, lo + split_len)
    offset = N_K - N_Q  # the last query sees the last key
    if CAUSAL:
        # Keys after the block's last query are never loaded.
        last_q = (tl.minimum(R, pid_m * BLOCK_M + BLOCK_M) - 1) // GROUP
        hi = tl.minimum(hi, last_q + offset + 1)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # log2 units
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        key_ok = offs_n < hi
        k = tl.load(K + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd,
                    mask=key_ok[:, None], other=0.0)  # [BLOCK_N, D]
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # [BLOCK_M, N]
        keep = key_ok[None, :]
        if CAUSAL:
            keep = keep & (offs_n[None, :] <= qi[:, None] + offset)
        s = tl.where(keep, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        # A row with every key masked so far keeps m = -inf: subtract 0 (exp2 gives 0).
        m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(s - m_sub[:, None])
        alpha = tl.math.exp2(m_i - m_sub)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(V + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                    mask=key_ok[:, None], other=0.0)  # [BLOCK_N, D]
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=PRECISION)
        m_i = m_new

    # Partial state of split `split`, rows of [S, B, H, N_Q]; m back to natural log
    # units. PART holds o [S, B, H, N_Q, D], then m, then ℓ [S, B, H, N_Q].
    H = H_KV * GROUP
    S = tl.num_programs(1)
    per_split = (B * H).to(tl.int64) * N_Q  # rows of one split's state
    OP = PART
    MP = OP + S * per_split * HEAD_DIM
    LP = MP + S * per_split
    row = (z * H + h) * N_Q + qi  # [BLOCK_M], int64: the row of [B, H, N_Q]
    idx = split * per_split + row
    tl.store(MP + idx, m_i * 0.6931471805599453, mask=row_ok)
    tl.store(LP + idx, l_i, mask=row_ok)
    tl.store(OP + idx[:, None] * HEAD_DIM + offs_d[None, :], acc, mask=row_ok[:, None])
    # [split-kv-split-end]

    # [split-kv-last-start]
    if ONE_LAUNCH and S == 1:  # one split: its state is the answer, nothing to merge
        o = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
        tl.store(O + row[:, None] * HEAD_DIM + offs_d[None, :],
                 o.to(O.dtype.element_ty), mask=row_ok[:, None])
    elif ONE_LAUNCH:
        # Count this split in on the row block's ticket. The last of its S splits
        # to finish merges them all: by then every state is in memory.
        tl.debug_barrier()  # every thread's stores are issued before it counts in
        ticket = TICKETS + bh * tl.num_programs(0) + pid_m
        if tl.atomic_add(ticket, 1, sem="acq_rel") == S - 1:
            # Two sweeps: the merged max m first (a [32, BLOCK_M] block of m_s a
            # step), then o = Σ_s e^(m_s - m) o_s. With m known no split's term
            # waits on another's, so UNROLL splits' loads are in flight together;
            # one at a time, the merge would take S round trips to L2. (.cg: read
            # from L2, where the other SMs' stores are, never from a stale L1.)
            m = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # natural log
            offs_32 = tl.arange(0, 32)
            for s0 in range(0, S, 32):
                ok = ((s0 + offs_32) < S)[:, None] & row_ok[None, :]  # [32, BLOCK_M]
                part = (s0 + offs_32)[:, None] * per_split + row[None, :]
                m_s = tl.load(MP + part, mask=ok, other=float("-inf"),
                              cache_modifier=".cg")
                m = tl.maximum(m, tl.max(m_s, 0))
            m = tl.where(m == float("-inf"), 0.0, m)  # no key at all: o = 0
            l = tl.zeros([BLOCK_M], dtype=tl.float32)
            o = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
            for s0 in range(0, S, UNROLL):
                for j in tl.static_range(UNROLL):
                    ok = row_ok & (row * 0 + (s0 + j) < S)  # [BLOCK_M]
                    part = (s0 + j) * per_split + row
                    w = tl.exp(tl.load(MP + part, mask=ok, other=float("-inf"),
                                       cache_modifier=".cg") - m)  # [BLOCK_M]
                    l += w * tl.load(LP + part, mask=ok, other=0.0,
                                     cache_modifier=".cg")
                    o_s = tl.load(OP + part[:, None] * HEAD_DIM + offs_d[None, :],
                                  mask=ok[:, None], other=0.0, cache_modifier=".cg")
                    o += w[:, None] * o_s  # [BLOCK_M, D]
            o = o / tl.where(l == 0.0, 1.0, l)[:, None]
            tl.store(O + row[:, None] * HEAD_DIM + offs_d[None, :],
                     o.to(O.dtype.element_ty), mask=row_ok[:, None])
            tl.atomic_xchg(ticket, 0)  # back to zero for the next launch
    # [split-kv-last-end]


@triton.jit
def _merge_kernel(OP, MP, LP, O, S, ROWS, HEAD_DIM: tl.constexpr, BLOCK_S: tl.constexpr):
    """o = finalize(⊕_s state_s) for one row: m = max m_s, w_s = e^(m_s - m), ℓ = Σ w_s ℓ_s."""
    # [split-kv-merge-start]
    row = tl.program_id(0).to(tl.int64)  # one program per query row
    offs_s = tl.arange(0, BLOCK_S)  # the splits, padded to a power of 2
    offs_d = tl.arange(0, HEAD_DIM)
    ok = offs_s < S
    idx = offs_s.to(tl.int64) * ROWS + row  # [BLOCK_S]
    m_s = tl.load(MP + idx, mask=ok, other=float("-inf"))
    l_s = tl.load(LP + idx, mask=ok, other=0.0)
    o_s = tl.load(OP + idx[:, None] * HEAD_DIM + offs_d[None, :],
                  mask=ok[:, None], other=0.0)  # [BLOCK_S, D]
    m = tl.max(m_s, 0)
    w = tl.exp(m_s - tl.where(m == float("-inf"), 0.0, m))  # 0 for empty splits
    l = tl.sum(w * l_s, 0)
    o = tl.sum(w[:, None] * o_s, 0) / tl.where(l == 0.0, 1.0, l)  # [D]
    tl.store(O + row * HEAD_DIM + offs_d, o.to(O.dtype.element_ty))
    # [split-kv-merge-end]


@functools.lru_cache(maxsize=None)
def _sm_count(device: int) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def _config(head_dim: int, elem_bytes: int):
    """(BLOCK_N, num_warps, num_stages, split alignment in keys) for this machine."""
    if not runtime.current().compiled:
        return 16, 4, 1, 16  # the interpreter: small tiles, so small tests still get several splits
    # Decoding is memory-bound: the more K/V bytes in flight per SM, the faster the cache is
    # read. 128-key tiles three deep where shared memory holds them (D = 128: 192 KB), else 64
    # (measured on the H200 against 64 and 32: docs/notes/v2-tuning.md, session 11).
    block_n = 128 if fits(16, 128, 3, head_dim, elem_bytes, resident_tiles=1) else 64
    return block_n, 4, 3, 128


def _check(q, k, v, causal, scale, num_splits=None, block_n=None):
    scale, group = check_gqa(q, k, v, causal=causal, scale=scale, dtypes=DTYPES, head_dims=HEAD_DIMS,
                             name="split_kv_triton")
    for name, x in (("num_splits", num_splits), ("block_n", block_n)):
        if x is not None and (isinstance(x, bool) or not isinstance(x, int) or x < 1):
            raise ValueError(f"split_kv_triton: {name} must be a positive int, got {x!r}")
    runtime.require_triton("split_kv_triton", q, min_capability=MIN_CAPABILITY)
    return scale, group


def _call_key(q, k, v, causal, num_splits, block_n) -> tuple | None:
    """The split kernel's binding key (:func:`flashedu.ops._bound.call_key` with the split
    options), or None where q, k, v are not tensors or the options not ints (the full checks
    then say what is wrong)."""
    if not (isinstance(q, torch.Tensor) and isinstance(k, torch.Tensor)
            and isinstance(v, torch.Tensor)):
        return None
    if not all(x is None or isinstance(x, int) for x in (num_splits, block_n)):
        return None
    return _bound.call_key(q, k, v, causal, num_splits, block_n)


def _checked(q, k, v, causal, scale, key, num_splits, block_n) -> tuple[float, int]:
    """(scale, group): the full checks, or, for a call whose key a checked call bound before,
    only the scale's (host time: a decode step is short, and its checks were a fifth of the
    Python)."""
    if key is not None and (_bound.lookup(_split_kernel, (key, True)) is not None
                            or _bound.lookup(_split_kernel, (key, False)) is not None):
        quick = quick_scale(scale, q.shape[3])
        if quick is not None:
            return quick, q.shape[1] // k.shape[1]
    return _check(q, k, v, causal, scale, num_splits, block_n)


def split_kv_partials(q, k, v, *, causal: bool = False, scale: float | None = None,
                      num_splits: int | None = None, block_n: int | None = None):
    """Pass 1 alone: ``(state, ranges)`` with ``state`` a :class:`~flashedu.softmax.state.State`
    of fp32 tensors shaped ``[S, B, H, N_q, ·]`` (split s: ``State(m[s], l[s], o[s])``, o
    unnormalised) and ``ranges`` the key range of each split."""
    key = _call_key(q, k, v, causal, num_splits, block_n)
    scale, group = _checked(q, k, v, causal, scale, key, num_splits, block_n)
    part, ranges = _launch(q, k, v, None, key, causal=causal, scale=scale, group=group,
                           num_splits=num_splits, block_n=block_n)
    S, (B, H, N, D) = len(ranges), q.shape
    o, m, l = _views(part, S, B, H, N, D)
    return State(m[..., None], l[..., None], o), list(ranges)


def _views(part: torch.Tensor, S: int, B: int, H: int, N: int, D: int):
    """(o [S, B, H, N, D], m, ℓ [S, B, H, N]): the partial states in pass 1's one buffer."""
    n = S * B * H * N
    return (part[:n * D].view(S, B, H, N, D), part[n * D:n * (D + 1)].view(S, B, H, N),
            part[n * (D + 1):].view(S, B, H, N))


def _launch(q, k, v, out, key, *, causal, scale, group, num_splits, block_n):
    """Launch pass 1 for checked inputs with call key ``key``; with ``out`` given, the last
    split of each row block also merges into it (pass 2 in the same launch). Returns (the
    partial states' buffer, fp32, see :func:`_views`; the splits' key ranges)."""
    B, H, N_Q, D = q.shape
    # Everything that follows from the shapes alone, worked out at a shape's first call: an
    # eager decode step is short enough that this arithmetic shows in its time.
    S, ranges, split_len, block_m, bn, warps, stages, grid = _launch_plan(
        q.shape, k.shape, q.element_size(), num_splits, block_n, q.device.index)
    part = torch.empty(S * B * H * N_Q * (D + 2), device=q.device, dtype=torch.float32)
    one_launch = out is not None
    # One binding per call key (flashedu.ops._bound): a decode step is short enough that
    # Triton's own per-call Python would be most of it.
    _bound.run(_split_kernel, (key, one_launch), grid,
               (q, k, v, part, out if one_launch else part, _tickets(q.device, grid[0] * grid[2]),
                *_bound.strides(key), B, k.shape[1], N_Q, k.shape[2], split_len, scale * LOG2E),
               dict(GROUP=group, CAUSAL=causal, HEAD_DIM=D, BLOCK_M=block_m, BLOCK_N=bn,
                    PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
                    ONE_LAUNCH=one_launch, UNROLL=MERGE_UNROLL),
               num_warps=warps, num_stages=stages)
    return part, ranges


MERGE_UNROLL = 4  # splits whose loads the one-launch merge has in flight at once


_TICKETS: dict = {}  # (device, stream) -> int32 counters, zero between launches


def _tickets(device: torch.device, n: int) -> torch.Tensor:
    """At least ``n`` zeroed int32 counters for launches on the current stream. Each launch
    leaves them at zero again (the merging program resets its row block's), so they are made
    once; one set per stream, so that launches running at the same time never share one."""
    # the raw stream handle: torch.cuda.current_stream() builds a Python object per call
    where = ((device.index, torch._C._cuda_getCurrentRawStream(device.index))
             if device.type == "cuda" else (None, None))
    t = _TICKETS.get(where)
    if t is None or t.numel() < n:
        t = _TICKETS[where] = torch.zeros(max(n, 1024), device=device, dtype=torch.int32)
    return t


@functools.lru_cache(maxsize=1024)
def _launch_plan(q_shape, k_shape, elem_bytes: int, num_splits, block_n, device: int | None):
    """(S, ranges, split_len, BLOCK_M, BLOCK_N, warps, stages, grid) for one call shape."""
    B, H, N_Q, D = q_shape
    H_kv, N_K = k_shape[1], k_shape[2]
    bn, warps, stages, align = _config(D, elem_bytes)
    bn = bn if block_n is None else block_n
    if align % bn:
        raise ValueError(f"block_n must divide the split alignment {align}, got {block_n!r}")
    R = N_Q * (H // H_kv)
    block_m = max(16, min(64, triton.next_power_of_2(R)))
    sms = _sm_count(device or 0) if runtime.current().compiled else 132
    S, ranges, split_len = _split_plan(num_splits, B * H_kv * triton.cdiv(R, block_m), N_K, align, sms)
    return S, ranges, split_len, block_m, bn, warps, stages, (triton.cdiv(R, block_m), S, B * H_kv)


@functools.lru_cache(maxsize=1024)
def _split_plan(num_splits, programs: int, n_k: int, align: int, sms: int):
    """(splits, their key ranges, keys per split), the same for every call of one shape."""
    S = resolve_splits(num_splits, programs=programs, n_k=n_k, block_n=align, sms=sms)
    ranges = tuple(split_ranges(n_k, S, align))
    return S, ranges, max(align, ranges[0][1] - ranges[0][0])


def merge_partials(state: State, *, dtype: torch.dtype) -> torch.Tensor:
    """Pass 2: ⊕ over the leading split dim of ``state`` (fp32 ``[S, B, H, N, ·]``) and divide
    by ℓ; returns o ``[B, H, N, D]`` in ``dtype``."""
    S, B, H, N, D = state.o.shape
    m, l, o = (t.contiguous() for t in (state.m, state.l, state.o))
    out = torch.empty(B, H, N, D, device=o.device, dtype=dtype)
    _merge(o, m, l, out)
    return out


def _merge(o, m, l, out) -> None:
    """Launch pass 2: o, m, ℓ contiguous fp32 partials ``[S, B, H, N, ·]`` into ``out``."""
    S, B, H, N, D = o.shape
    rows = B * H * N
    key = (S, rows, D, out.dtype, o.device.index)
    bound = _bound.lookup(_merge_kernel, key)
    if bound is not None:  # skips working out BLOCK_S again
        bound(o, m, l, out, S, rows)
        return
    _bound.run(_merge_kernel, key, (rows,), (o, m, l, out, S, rows),
               dict(HEAD_DIM=D, BLOCK_S=triton.next_power_of_2(S)), num_warps=4, num_stages=3)


# An eager call merges in the split launch where the cache is at most this large: there the
# GPU's time is shorter than the host's, and a second launch would double the host's (measured
# on the H200: host 18 µs one launch, 35 two; GPU +1…+4.5 µs for the merging programs' tail;
# docs/notes/v2-tuning.md, session 16). Longer caches, and calls captured into a CUDA graph
# (which replays no host time), take two launches: the one-launch build's main loop also ran
# 1-4% slower on long caches (B = 16, one split: 1962 µs against 1886 at 128k keys).
ONE_LAUNCH_MAX_BYTES = 64 * 2**20


def split_kv_attention_triton(q, k, v, *, causal: bool = False, scale: float | None = None,
                              num_splits: int | None = None, block_n: int | None = None,
                              one_launch: bool | None = None) -> torch.Tensor:
    """Split-KV (flash-decoding) attention in Triton, forward only.

    q ``[B, H, N_q, D]``, k and v ``[B, H_kv, N_k, D]`` with H a multiple of H_kv (grouped-query
    attention); any N_q (decode: 1), any N_k; causal needs N_q == N_k. ``num_splits`` defaults
    to FA2's heuristic for this GPU's SM count; splits fall on multiples of 128 keys (16 under
    the interpreter). ``one_launch`` True merges the splits in pass 1's launch (the last split
    of each row block to finish does it), False runs the merge as a second kernel; None (the
    default) merges in the launch where the host's time would be the longer one: eager calls
    on caches of at most ``ONE_LAUNCH_MAX_BYTES``. (In one launch, a single split writes o
    itself.) fp16/bf16 on a GPU, fp32/fp16 under the
    interpreter. Returns o like q.
    """
    if one_launch is not None and not isinstance(one_launch, bool):
        raise TypeError(f"split_kv_triton: one_launch must be a bool or None, got {one_launch!r}")
    key = _call_key(q, k, v, causal, num_splits, block_n)
    scale, group = _checked(q, k, v, causal, scale, key, num_splits, block_n)
    if one_launch is None:  # one launch where the host's time is the longer
        one_launch = (2 * k.numel() * k.element_size() <= ONE_LAUNCH_MAX_BYTES
                      and not (k.is_cuda and torch.cuda.is_current_stream_capturing()))
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    if one_launch:
        _launch(q, k, v, out, key, causal=causal, scale=scale, group=group,
                num_splits=num_splits, block_n=block_n)
        return out
    part, ranges = _launch(q, k, v, None, key, causal=causal, scale=scale, group=group,
                           num_splits=num_splits, block_n=block_n)
    B, H, N, D = q.shape
    _merge(*_views(part, len(ranges), B, H, N, D), out)
    return out
