"""FlashAttention-2's forward with Hopper's copy engine: tensor descriptors (TMA) and a software
pipeline of ``num_stages`` K/V buffers, optionally warp-specialised (chapter 6).

The algorithm is chapter 4's kernel (:mod:`flashedu.ops.v2.kernel`); what changes is how
K and V reach shared memory. A tensor descriptor names a whole [1, BLOCK_N, D] box of a
[B·H, N, D] tensor, and one thread asks the TMA unit to copy it: no per-thread addresses, and
rows past N come back as zeros, so the loads need no masks (the scores still do). ``tl.range``'s
``num_stages`` keeps that many copies in flight; ``warp_specialize`` asks Triton to give the
copies to a producer warp group, FA3's producer/consumer split.

Warp specialisation is used only where it is known to compile: the installed Triton must have the
keyword, and only the mask-free loop of a non-causal pass gets it (triton 3.6 crashed on a
causal loop). The backward pass is chapter 4's, fed the L this forward stores.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from flashedu import runtime
from flashedu.validate import check_qkv
from flashedu.ops._triton import LOG2E, arch_key, fits
from flashedu.ops.v2.kernel import FlashAttentionV2

DTYPES = (torch.float16, torch.bfloat16, torch.float32)
HEAD_DIMS = (16, 32, 64, 128, 256)
MIN_CAPABILITY = (9, 0)  # TMA arrived with Hopper
HAS_WARP_SPECIALIZE = "warp_specialize" in inspect.signature(tl.range.__init__).parameters


@triton.jit
def _tma_inner(acc, l_i, m_i, q, desc_k, desc_v, bh, offs_m, lo, hi, N_K, qk_scale,
               BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, MASKED: tl.constexpr, CAUSAL: tl.constexpr,
               PRECISION: tl.constexpr, NUM_STAGES: tl.constexpr, WARP_SPEC: tl.constexpr):
    """Fold K/V tiles lo..hi into (acc, ℓ, m), the copies pipelined NUM_STAGES deep."""
    # [tma-inner-start]
    # NUM_STAGES copies in flight; WARP_SPEC: a producer warp group issues them.
    for start_n in tl.range(lo, hi, BLOCK_N, num_stages=NUM_STAGES,
                            warp_specialize=WARP_SPEC):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        # One TMA copy of the [1, BLOCK_N, D] box at (bh, start_n, 0); rows ≥ N_K arrive as 0.
        k = desc_k.load([bh, start_n, 0]).reshape(BLOCK_N, HEAD_DIM)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION)  # [BLOCK_M, BLOCK_N]
        if MASKED:
            offs_n = start_n + tl.arange(0, BLOCK_N)
            keep = (offs_n < N_K)[None, :]
            if CAUSAL:
                keep = keep & (offs_m[:, None] >= offs_n[None, :])
            s = tl.where(keep, s * qk_scale, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
            p = tl.math.exp2(s - m_sub[:, None])
        else:
            m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
            m_sub = m_new
            p = tl.math.exp2(s * qk_scale - m_sub[:, None])
        alpha = tl.math.exp2(m_i - m_sub)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        v = desc_v.load([bh, start_n, 0]).reshape(BLOCK_N, HEAD_DIM)
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=PRECISION)  # [BLOCK_M, D]
        m_i = m_new
    # [tma-inner-end]
    return acc, l_i, m_i


@triton.jit
def _tma_fwd_kernel(desc_q, desc_k, desc_v, desc_o, L, N_Q, N_K, qk_scale,
                    CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
                    BLOCK_N: tl.constexpr, PRECISION: tl.constexpr, NUM_STAGES: tl.constexpr,
                    WARP_SPEC: tl.constexpr):
    tl.static_assert(BLOCK_M % BLOCK_N == 0)
    n_m = tl.cdiv(N_Q, BLOCK_M)
    pid_m = n_m - 1 - tl.program_id(0) if CAUSAL else tl.program_id(0)
    bh = tl.program_id(1)
    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    q = desc_q.load([bh, start_m, 0]).reshape(BLOCK_M, HEAD_DIM)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    if CAUSAL:
        acc, l_i, m_i = _tma_inner(acc, l_i, m_i, q, desc_k, desc_v, bh, offs_m, 0, start_m, N_K,
                                   qk_scale, BLOCK_N, HEAD_DIM, False, False, PRECISION, NUM_STAGES, False)
        acc, l_i, m_i = _tma_inner(acc, l_i, m_i, q, desc_k, desc_v, bh, offs_m, start_m,
                                   tl.minimum(start_m + BLOCK_M, N_K), N_K, qk_scale, BLOCK_N, HEAD_DIM,
                                   True, True, PRECISION, NUM_STAGES, False)
    else:
        full_end = (N_K // BLOCK_N) * BLOCK_N
        acc, l_i, m_i = _tma_inner(acc, l_i, m_i, q, desc_k, desc_v, bh, offs_m, 0, full_end, N_K,
                                   qk_scale, BLOCK_N, HEAD_DIM, False, False, PRECISION, NUM_STAGES, WARP_SPEC)
        acc, l_i, m_i = _tma_inner(acc, l_i, m_i, q, desc_k, desc_v, bh, offs_m, full_end, N_K, N_K,
                                   qk_scale, BLOCK_N, HEAD_DIM, True, False, PRECISION, NUM_STAGES, False)
    o = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    lse = (m_i + tl.math.log2(l_i)) * 0.6931471805599453
    # The store is a TMA copy too: rows past N_Q are dropped by the copy engine.
    desc_o.store([bh, start_m, 0], o.to(q.dtype).reshape(1, BLOCK_M, HEAD_DIM))
    tl.store(L + bh.to(tl.int64) * N_Q + offs_m, lse, mask=offs_m < N_Q)


@dataclass(frozen=True)
class TMAConfig:
    """One launch configuration: tile sizes, warps, pipeline depth, warp specialisation."""

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    warp_specialize: bool = False


# Per arch and head dim (None: any); the first that fits shared memory is used.
CONFIGS = {
    "sm90": [TMAConfig(128, 128, 8, 3), TMAConfig(128, 64, 8, 3), TMAConfig(128, 64, 8, 2),
             TMAConfig(64, 64, 4, 2)],
    "interpreter": [TMAConfig(32, 32, 4, 1)],
}


def pick_config(head_dim: int, elem_bytes: int) -> TMAConfig:
    """The first config of this arch that fits its shared memory (Q plus `stages` K/V pairs)."""
    for c in CONFIGS.get(arch_key(), CONFIGS["sm90"]):
        if fits(c.block_m, c.block_n, c.num_stages, head_dim, elem_bytes, resident_tiles=1):
            return c
    raise ValueError(f"v2_tma_triton: head dim D={head_dim} does not fit this GPU's shared memory")


def tma_ready(t: torch.Tensor) -> torch.Tensor:
    """``t`` contiguous with a 16-byte-aligned start, as a TMA descriptor needs (a contiguous
    slice can start mid-allocation: copy it then)."""
    if t.is_contiguous() and t.data_ptr() % 16 == 0:
        return t
    return t.clone(memory_format=torch.contiguous_format)


def _descriptor(t: torch.Tensor, rows: int):
    from triton.tools.tensor_descriptor import TensorDescriptor

    B, H, N, D = t.shape
    flat = t.view(B * H, N, D)  # t is contiguous: [B·H, N, D]
    # The whole tensor's shape and strides, and the box one load copies: [1, rows, D].
    return TensorDescriptor(flat, shape=[B * H, N, D], strides=list(flat.stride()),
                            block_shape=[1, rows, D])


def tma_forward(q, k, v, *, causal: bool, scale: float, config: TMAConfig | None = None):
    """o [B, H, N_Q, D] and L [B, H, N_Q] (fp32) from validated q, k, v (made TMA-ready here)."""
    q, k, v = (tma_ready(t) for t in (q, k, v))
    B, H, N_Q, D = q.shape
    N_K = k.shape[2]
    cfg = config or pick_config(D, q.element_size())
    ws = bool(cfg.warp_specialize and HAS_WARP_SPECIALIZE and not causal)
    o = torch.empty_like(q)
    lse = torch.empty(B, H, N_Q, device=q.device, dtype=torch.float32)
    grid = (triton.cdiv(N_Q, cfg.block_m), B * H)
    _tma_fwd_kernel[grid](
        _descriptor(q, cfg.block_m), _descriptor(k, cfg.block_n), _descriptor(v, cfg.block_n),
        _descriptor(o, cfg.block_m), lse, N_Q, N_K, scale * LOG2E,
        CAUSAL=causal, HEAD_DIM=D, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32", NUM_STAGES=cfg.num_stages,
        WARP_SPEC=ws, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    return o, lse


def _tma_kernel(q, k, v, *, causal: bool, scale: float):
    """The TMA forward for chapter 4's autograd (its backward needs only q, k, v, o and L)."""
    q, k, v = (tma_ready(t) for t in (q, k, v))
    return (q, k, v, *tma_forward(q, k, v, causal=causal, scale=scale))


def check(q, k, v, causal, scale) -> float:
    """Validate inputs and say why this kernel cannot run here, if it cannot."""
    scale = check_qkv(q, k, v, causal=causal, scale=scale, dtypes=DTYPES, head_dims=HEAD_DIMS,
                      name="v2_tma_triton")
    runtime.require_triton("v2_tma_triton", q, min_capability=MIN_CAPABILITY)
    return scale


def flash_attention_tma(q, k, v, *, causal: bool = False, scale: float | None = None) -> torch.Tensor:
    """FlashAttention-2 with TMA loads and a pipelined K/V loop, on ``[B, H, N, D]`` inputs.

    Hopper (sm_90) or newer, or the Triton interpreter on a CPU; fp16/bf16 (fp32 too), D in
    {16, 32, 64, 128, 256}; any N. Differentiable (chapter 4's backward). Returns o like q.
    """
    scale = check(q, k, v, causal, scale)
    return FlashAttentionV2.apply(q, k, v, causal, scale, _tma_kernel)


__all__ = ["CONFIGS", "DTYPES", "HAS_WARP_SPECIALIZE", "HEAD_DIMS", "MIN_CAPABILITY",
           "TMAConfig", "flash_attention_tma", "pick_config", "tma_forward", "tma_ready"]
