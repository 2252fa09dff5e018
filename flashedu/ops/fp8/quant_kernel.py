"""FA3's FP8 preparation in one Triton pass per tensor: rotate, find each tile's largest entry,
scale, cast to e4m3 (chapter 6; :func:`~flashedu.ops.fp8.recipes.prepare_fp8` is the same recipe
in PyTorch, several passes over HBM).

One program per tile of rows of one (batch, head). It loads the tile once, rotates it by
``tl.dot`` with the ±1 Hadamard matrix whose rows carry the random signs (Q and K only; the
1/√d of the orthonormal transform is applied to the fp32 product), takes the tile's amax,
writes the e4m3 values and the tile's descale amax / 448. V is written K-major (transposed,
keys padded with zeros to a multiple of 16), the layout the FP8 kernel reads it in. Every byte
is read once and written once: the pass is bound by HBM bandwidth.
"""
from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

from flashedu import runtime
from flashedu.ops import _bound
from flashedu.ops.fp8.e4m3_grid import round_to_e4m3_grid
from flashedu.ops.fp8.hadamard import hadamard_matrix
from flashedu.ops.fp8.quant import E4M3, E4M3_MAX


@triton.jit
def _quantize_kernel(X, X8, S, M, N, N_PAD, n_tiles, stride_xb, stride_xh, stride_xn, H,
                     inv_sqrt_d, D: tl.constexpr, BLOCK: tl.constexpr, ROTATE: tl.constexpr,
                     K_MAJOR: tl.constexpr, ROWS_OUT: tl.constexpr, PRE_ROUND: tl.constexpr,
                     TILES: tl.constexpr):
    # [quantize-kernel-start]
    bh = tl.program_id(1)  # which (batch, head)
    b, h = bh // H, bh % H
    offs_d = tl.arange(0, D)
    if ROTATE:
        # diag(signs)·H as ±1 [D, D]; the product is x·diag(s)·H, scaled by 1/√d after
        m = tl.load(M + offs_d[:, None] * D + offs_d[None, :])
    base = bh.to(tl.int64) * ROWS_OUT * D
    # TILES tiles of rows per program, one after the other (the next one's load in flight
    # while this one is rotated and stored); the matrix above is loaded once for all of them.
    for i in tl.range(0, TILES, num_stages=2):
        t = tl.program_id(0) * TILES + i  # which tile of rows
        offs_r = t * BLOCK + tl.arange(0, BLOCK)
        ok = offs_r < N
        x = tl.load(X + b.to(tl.int64) * stride_xb + h.to(tl.int64) * stride_xh
                    + offs_r[:, None] * stride_xn + offs_d[None, :],
                    mask=ok[:, None], other=0.0)  # [BLOCK, D]; rows past N are 0
        if ROTATE:
            y = tl.dot(x.to(m.dtype), m, input_precision="ieee") * inv_sqrt_d
        else:
            y = x.to(tl.float32)
        amax = tl.max(tl.max(tl.abs(y), axis=1), axis=0)
        # Correctly rounded divisions (a GPU's fp32 `/` is approximate): torch's bits.
        scale = tl.where(amax > 0, tl.math.div_rn(amax, 448.0), 1.0)  # all-zero tile: 1
        y = tl.clamp(tl.math.div_rn(y, scale), -448.0, 448.0)
        if PRE_ROUND:  # the interpreter's cast drops a carry (see round_to_e4m3_grid)
            y = round_to_e4m3_grid(y)
        y8 = y.to(tl.float8e4nv)
        if K_MAJOR:  # [D, N_PAD] per head: keys along a row; the padding gets zeros
            # Transposed in registers first, so neighbouring threads write neighbouring keys
            # (y8 as it is would put one byte every N_PAD bytes per thread).
            tl.store(X8 + base + offs_d[:, None] * N_PAD + offs_r[None, :], tl.trans(y8),
                     mask=(offs_r < N_PAD)[None, :])
        else:
            tl.store(X8 + base + offs_r[:, None] * D + offs_d[None, :], y8,
                     mask=ok[:, None])
        tl.store(S + bh.to(tl.int64) * n_tiles + t, scale, mask=t < n_tiles)
    # [quantize-kernel-end]


@functools.lru_cache(maxsize=None)
def _signed_hadamard(signs: tuple, dtype: torch.dtype, device: str) -> torch.Tensor:
    """diag(signs) · H_±1 [D, D] (entries ±1, exact in any float dtype)."""
    d = len(signs)
    h = hadamard_matrix(d) * math.sqrt(d)  # ±1
    s = torch.tensor(signs, dtype=torch.float64)
    return (s[:, None] * h).to(dtype=dtype, device=device).contiguous()


ROTATED_TILES = 4  # tiles of rows per program in the rotating (Q, K) passes


def quantize_tiles(x: torch.Tensor, *, block: int, signs: torch.Tensor | None = None,
                   k_major: bool = False, tiles: int | None = None,
                   num_warps: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` [B, H, N, D] (unit stride in D) -> (x8 in e4m3 [B, H, N, D], descale [B, H, tiles] fp32),
    one Triton pass: rotated by diag(signs)·H/√d when ``signs`` is given, one scale per ``block``
    rows, x8 stored K-major when ``k_major``. D a power of two (the Hadamard matrix).
    ``tiles``: tiles of rows per program, by default :data:`ROTATED_TILES` when rotating and 1
    otherwise; ``num_warps``: by default 8 for 128×128 tiles, else 4 (both tuning knobs: the
    result does not depend on them)."""
    B, H, N, D = x.shape
    if tiles is None:
        # Several tiles a program when rotating (the next tile's load overlaps this one's
        # product), one for V, whose K-major store slowed with more: tile counts and warps
        # measured in docs/notes/data/fp8-quantiser-tiles-48c39da.json (bench.tune_fp8_quant).
        tiles = ROTATED_TILES if signs is not None else 1
    if x.stride(-1) != 1:
        x = x.contiguous()
    n_tiles = triton.cdiv(N, block)
    n_pad = triton.cdiv(N, 16) * 16
    rows_out = n_pad if k_major else N
    store = torch.empty(B, H, D, rows_out, device=x.device, dtype=E4M3) if k_major else \
        torch.empty(B, H, N, D, device=x.device, dtype=E4M3)
    descale = torch.empty(B, H, n_tiles, device=x.device, dtype=torch.float32)
    # The ±1 matrix in x's dtype (fp32 under the interpreter, which has no bf16 product).
    m_dtype = torch.float32 if x.dtype == torch.float32 else x.dtype
    m = _signed_hadamard(tuple(signs.tolist()), m_dtype, str(x.device)) if signs is not None else descale
    _bound.run(_quantize_kernel,
               (x.shape, x.stride(), x.dtype, block, signs is not None, k_major, tiles, num_warps,
                x.device.index, _bound.aligned(x)),
               (triton.cdiv(n_tiles, tiles), B * H),
               (x, store, descale, m, N, n_pad, n_tiles, x.stride(0), x.stride(1), x.stride(2), H,
                1.0 / math.sqrt(D)),
               dict(D=D, BLOCK=block, ROTATE=signs is not None, K_MAJOR=k_major,
                    ROWS_OUT=rows_out, PRE_ROUND=not runtime.current().compiled, TILES=tiles),
               num_warps=num_warps or (8 if block * D >= 128 * 128 else 4), num_stages=3)
    x8 = store[..., :N].transpose(-1, -2) if k_major else store
    return x8, descale


def prepare_fp8_triton(q, k, v, *, signs: torch.Tensor, block_m: int = 128, block_n: int = 128):
    """FA3's recipe (rotation of Q and K, block scales) for the FP8 kernel, three Triton passes:
    (q8, k8, v8, kwargs) as :func:`~flashedu.ops.fp8.recipes.prepare_fp8` returns them for
    ``"fp8_fa3"`` with the same ``signs``."""
    q8, qs = quantize_tiles(q, block=block_m, signs=signs)
    k8, ks = quantize_tiles(k, block=block_n, signs=signs)
    v8, vs = quantize_tiles(v, block=block_n, k_major=True)
    kwargs = dict(q_descale=qs, k_descale=ks, v_descale=vs, q_block=block_m, kv_block=block_n)
    return q8, k8, v8, kwargs


__all__ = ["E4M3_MAX", "prepare_fp8_triton", "quantize_tiles"]
