"""Row softmax in Triton, streamed over column chunks: the safe version makes three passes over
the row in HBM, the online version two. One program per row: chapter 2's first Triton kernel."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from flashedu import runtime


@triton.jit
def _softmax_rows_kernel(x_ptr, y_ptr, n_cols, stride_x, stride_y,
                         ONLINE: tl.constexpr, BLOCK: tl.constexpr):
    # [softmax-kernel-start]
    row = tl.program_id(0)                 # this program's row: one program per row
    x_row = x_ptr + row * stride_x         # where the row starts in memory
    cols = tl.arange(0, BLOCK)             # [BLOCK] offsets 0, 1, ..., BLOCK - 1
    m = tl.full((), float("-inf"), tl.float32)  # running max (a scalar)
    l = tl.zeros((), tl.float32)           # running sum of exp(x - m): ℓ
    if ONLINE:
        # Pass 1: max and sum together; the sum is rescaled whenever the max grows.
        for start in range(0, n_cols, BLOCK):
            ok = start + cols < n_cols     # the last block may run past the row's end
            x = tl.load(x_row + start + cols, mask=ok, other=float("-inf")).to(tl.float32)
            m_new = tl.maximum(m, tl.max(x, axis=0))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # all masked: no NaN
            l = l * tl.exp(m - m_safe) + tl.sum(tl.exp(x - m_safe), axis=0)
            m = m_new
    else:
        # Pass 1: the max. Pass 2: the sum of exp(x - max).
        for start in range(0, n_cols, BLOCK):
            ok = start + cols < n_cols
            x = tl.load(x_row + start + cols, mask=ok, other=float("-inf")).to(tl.float32)
            m = tl.maximum(m, tl.max(x, axis=0))
        m_safe = tl.where(m == float("-inf"), 0.0, m)
        for start in range(0, n_cols, BLOCK):
            ok = start + cols < n_cols
            x = tl.load(x_row + start + cols, mask=ok, other=float("-inf")).to(tl.float32)
            l += tl.sum(tl.exp(x - m_safe), axis=0)
    # Last pass: normalise and write. A fully masked row (l = 0) gives zeros.
    m_safe = tl.where(m == float("-inf"), 0.0, m)
    inv = tl.where(l > 0.0, 1.0 / tl.where(l > 0.0, l, 1.0), 0.0)
    for start in range(0, n_cols, BLOCK):
        ok = start + cols < n_cols
        x = tl.load(x_row + start + cols, mask=ok, other=float("-inf")).to(tl.float32)
        y = tl.exp(x - m_safe) * inv
        y_ptrs = y_ptr + row * stride_y + start + cols
        tl.store(y_ptrs, y.to(y_ptr.dtype.element_ty), mask=ok)
    # [softmax-kernel-end]


def softmax_triton(x: torch.Tensor, *, online: bool = True, block: int | None = None) -> torch.Tensor:
    """Softmax over the last dim of ``x``; ``online=False`` uses the three-pass safe softmax."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 1 or x.shape[-1] < 1:
        raise ValueError(f"x must have a non-empty last dim, got shape {tuple(x.shape)}")
    runtime.require_triton("softmax_triton", x)
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    y = torch.empty_like(rows)
    if block is None:
        block = min(1024 if runtime.current().compiled else 64, triton.next_power_of_2(rows.shape[1]))
    _softmax_rows_kernel[(rows.shape[0],)](rows, y, rows.shape[1], rows.stride(0), y.stride(0),
                                           ONLINE=online, BLOCK=block)
    return y.view(x.shape)
