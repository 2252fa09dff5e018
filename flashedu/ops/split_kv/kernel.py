"""Split-KV decoding (flash-decoding) in Triton: two kernels.

    kernel 1  _split_kernel   one program per (packed Q block, split, batch · K/V head): folds the
                              K/V tiles of its split into (m, ℓ, o) and stores that partial state
    kernel 2  _merge_kernel   one program per query row: ⊕ over the splits, one division, store O

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
def _split_kernel(Q, K, V, OP, MP, LP,
                  stride_qz, stride_qh, stride_qm, stride_qd,
                  stride_kz, stride_kh, stride_kn, stride_kd,
                  stride_vz, stride_vh, stride_vn, stride_vd,
                  B, H_KV, N_Q, N_K, split_len, qk_scale,
                  GROUP: tl.constexpr, CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
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
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # [BLOCK_M, BLOCK_N]
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

    # Partial state of split `split`, rows of [S, B, H, N_Q]; m back to natural log units.
    H = H_KV * GROUP
    idx = ((split * B + z) * H + h) * N_Q + qi  # [BLOCK_M], int64
    tl.store(MP + idx, m_i * 0.6931471805599453, mask=row_ok)
    tl.store(LP + idx, l_i, mask=row_ok)
    tl.store(OP + idx[:, None] * HEAD_DIM + offs_d[None, :], acc, mask=row_ok[:, None])
    # [split-kv-split-end]


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
    if key is not None and _bound.lookup(_split_kernel, key) is not None:
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
    op, mp, lp, ranges = _partials(q, k, v, key, causal=causal, scale=scale, group=group,
                                   num_splits=num_splits, block_n=block_n)
    return State(mp[..., None], lp[..., None], op), list(ranges)


def _partials(q, k, v, key, *, causal, scale, group, num_splits, block_n):
    """Launch pass 1 for checked inputs with call key ``key``: (o [S, B, H, N_q, D], m,
    ℓ [S, B, H, N_q], ranges), fp32."""
    B, H, N_Q, D = q.shape
    # Everything that follows from the shapes alone, worked out at a shape's first call: an
    # eager decode step is short enough that this arithmetic shows in its time.
    S, ranges, split_len, block_m, bn, warps, stages, grid = _launch_plan(
        q.shape, k.shape, q.element_size(), num_splits, block_n, q.device.index)
    op = torch.empty(S, B, H, N_Q, D, device=q.device, dtype=torch.float32)
    mp = torch.empty(S, B, H, N_Q, device=q.device, dtype=torch.float32)
    lp = torch.empty_like(mp)
    # One binding per call key (flashedu.ops._bound): a decode step is short enough that
    # Triton's own per-call Python would be most of it.
    _bound.run(_split_kernel, key, grid,
               (q, k, v, op, mp, lp, *_bound.strides(key), B, k.shape[1], N_Q, k.shape[2],
                split_len, scale * LOG2E),
               dict(GROUP=group, CAUSAL=causal, HEAD_DIM=D, BLOCK_M=block_m, BLOCK_N=bn,
                    PRECISION="ieee" if q.dtype == torch.float32 else "tf32"),
               num_warps=warps, num_stages=stages)
    return op, mp, lp, ranges


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


def split_kv_attention_triton(q, k, v, *, causal: bool = False, scale: float | None = None,
                              num_splits: int | None = None, block_n: int | None = None) -> torch.Tensor:
    """Split-KV (flash-decoding) attention in Triton, forward only.

    q ``[B, H, N_q, D]``, k and v ``[B, H_kv, N_k, D]`` with H a multiple of H_kv (grouped-query
    attention); any N_q (decode: 1), any N_k; causal needs N_q == N_k. ``num_splits`` defaults
    to FA2's heuristic for this GPU's SM count; splits fall on multiples of 128 keys (16 under
    the interpreter). fp16/bf16 on a GPU, fp32/fp16 under the interpreter. Returns o like q.
    """
    key = _call_key(q, k, v, causal, num_splits, block_n)
    scale, group = _checked(q, k, v, causal, scale, key, num_splits, block_n)
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    # Everything allocated first, then the two launches back to back: a decode step's GPU time
    # is a few µs, and any Python between the passes leaves the GPU idle for that long.
    op, mp, lp, _ = _partials(q, k, v, key, causal=causal, scale=scale, group=group,
                              num_splits=num_splits, block_n=block_n)
    _merge(op, mp, lp, out)
    return out
