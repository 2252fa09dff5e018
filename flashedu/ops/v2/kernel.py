"""FlashAttention-2 in Triton: the forward kernel, the autograd Function, the public function.

One program per (Q tile, batch·head). Q_i stays on chip, K/V tiles stream past, and O_i, ℓ_i,
m_i live in registers until one division at the end; the only extra output is L = m + log ℓ
(fp32, natural log) for the backward (:mod:`.kernel_bwd`), stored only when a backward will run.

Two choices that are about speed, not the algorithm:

* base-2 exponentials with log2(e) folded into the scale: ``exp2(s·scale·log2e − m)`` is one FMA
  and one MUFU op, where ``exp`` costs an extra multiply per score;
* the K/V loop is split into a mask-free part and a masked part. Causal: tiles left of the
  diagonal run without masks, the diagonal band is masked, tiles right of it are never visited.
  Non-causal: full tiles without masks, then one masked tail tile when N_K is not a multiple of
  BLOCK_N. Masks cost a compare and a select per score, the FA2 paper's "non-matmul FLOPs".
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from flashedu import runtime
from flashedu.validate import check_qkv, quick_scale
from flashedu.ops import _bound
from flashedu.ops._triton import LOG2E, arch_key, launch, should_tune
from flashedu.ops.v2.kernel_bwd import attention_backward

DTYPES = (torch.float16, torch.bfloat16, torch.float32)
HEAD_DIMS = (16, 32, 64, 128, 256)


@triton.jit
def _fwd_inner_pipelined(acc, l_i, m_i, q, K, V, stride_kn, stride_kd, stride_vn, stride_vd,
                         offs_d, lo, hi, qk_scale, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
    """The mask-free loop with S of the next tile issued before P·V of this one (FA3's
    intra-warpgroup pipelining, Algorithm 2, written in Triton): the softmax of tile j+1 then
    needs only the first product, so it can run while P·V of tile j is on the tensor cores.
    Needs hi - lo a multiple of BLOCK_N; the last step recomputes S of the last tile instead of
    reading past hi."""
    if hi > lo:
        offs_n = lo + tl.arange(0, BLOCK_N)
        k = tl.load(K + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION)  # S of tile lo
        for start_n in range(lo, hi, BLOCK_N):
            start_n = tl.multiple_of(start_n, BLOCK_N)
            m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
            p = tl.math.exp2(s * qk_scale - m_new[:, None])
            alpha = tl.math.exp2(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, 1)
            nxt = tl.multiple_of(tl.minimum(start_n + BLOCK_N, hi - BLOCK_N), BLOCK_N)
            offs_n = nxt + tl.arange(0, BLOCK_N)
            k = tl.load(K + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd)
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION)  # S of the next tile
            acc = acc * alpha[:, None]
            offs_v = start_n + tl.arange(0, BLOCK_N)
            v = tl.load(V + offs_v[:, None] * stride_vn + offs_d[None, :] * stride_vd)
            acc = tl.dot(p.to(v.dtype), v, acc, input_precision=PRECISION)
            m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _fwd_inner(acc, l_i, m_i, q, K, V, stride_kn, stride_kd, stride_vn, stride_vd,
               offs_m, offs_d, lo, hi, N_K, qk_scale,
               BLOCK_N: tl.constexpr, MASKED: tl.constexpr, CAUSAL: tl.constexpr,
               PRECISION: tl.constexpr, PIPELINE: tl.constexpr = False):
    """Fold the K/V tiles at columns lo..hi (step BLOCK_N) into the running (acc, ℓ, m)."""
    if PIPELINE and not MASKED:  # an ablation, off in every shipped config (v2-tuning.md)
        return _fwd_inner_pipelined(acc, l_i, m_i, q, K, V, stride_kn, stride_kd, stride_vn,
                                    stride_vd, offs_d, lo, hi, qk_scale, BLOCK_N, PRECISION)
    # [v2-inner-start]
    for start_n in range(lo, hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)  # lets the compiler vectorise the loads
        offs_n = start_n + tl.arange(0, BLOCK_N)
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
            s = tl.where(keep, s * qk_scale, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            # A row with every score masked so far keeps m = -inf: subtract 0 (exp2 gives 0).
            m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
            p = tl.math.exp2(s - m_sub[:, None])
        else:
            # scale > 0, so the max of the scaled row is the scaled max: one multiply a row.
            m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
            m_sub = m_new
            p = tl.math.exp2(s * qk_scale - m_sub[:, None])
        alpha = tl.math.exp2(m_i - m_sub)  # rescales what was summed under the old max
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        if MASKED:
            v = tl.load(v_ptrs, mask=(offs_n < N_K)[:, None], other=0.0)  # [BLOCK_N, D]
        else:
            v = tl.load(v_ptrs)
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=PRECISION)  # [BLOCK_M, D]
        m_i = m_new
    # [v2-inner-end]
    return acc, l_i, m_i


@triton.jit
def _fwd_kernel(Q, K, V, O, L,
                stride_qz, stride_qh, stride_qm, stride_qd,
                stride_kz, stride_kh, stride_kn, stride_kd,
                stride_vz, stride_vh, stride_vn, stride_vd,
                H, N_Q, N_K, qk_scale,
                CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
                PIPELINE: tl.constexpr = False, STORE_LSE: tl.constexpr = True):
    tl.static_assert(BLOCK_M % BLOCK_N == 0)
    # [v2-kernel-start]
    n_m = tl.cdiv(N_Q, BLOCK_M)
    # Causal: the longest rows first, so the last wave is made of short programs.
    pid_m = n_m - 1 - tl.program_id(0) if CAUSAL else tl.program_id(0)
    bh = tl.program_id(1)  # which (batch, head)
    z, h = (bh // H).to(tl.int64), (bh % H).to(tl.int64)
    Q += z * stride_qz + h * stride_qh
    K += z * stride_kz + h * stride_kh
    V += z * stride_vz + h * stride_vh
    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)  # this program's query rows
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < N_Q
    q = tl.load(Q + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
                mask=row_ok[:, None], other=0.0)  # Q_i [BLOCK_M, D]: loaded once, kept

    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)  # O_i, unnormalised
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)  # ℓ_i
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # m_i, in log2 units
    if CAUSAL:
        # Left of the diagonal block: every score is kept, no mask.
        acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, K, V, stride_kn, stride_kd,
                                   stride_vn, stride_vd, offs_m, offs_d, 0, start_m,
                                   N_K, qk_scale, BLOCK_N, False, False, PRECISION, PIPELINE)
        # The diagonal block, masked; blocks right of it are never visited.
        diag_end = tl.minimum(start_m + BLOCK_M, N_K)
        acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, K, V, stride_kn, stride_kd,
                                   stride_vn, stride_vd, offs_m, offs_d, start_m, diag_end,
                                   N_K, qk_scale, BLOCK_N, True, True, PRECISION)
    else:
        # Every full K/V tile without a mask, then the partial last one with it.
        full_end = (N_K // BLOCK_N) * BLOCK_N
        acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, K, V, stride_kn, stride_kd,
                                   stride_vn, stride_vd, offs_m, offs_d, 0, full_end,
                                   N_K, qk_scale, BLOCK_N, False, False, PRECISION, PIPELINE)
        acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, K, V, stride_kn, stride_kd,
                                   stride_vn, stride_vd, offs_m, offs_d, full_end, N_K,
                                   N_K, qk_scale, BLOCK_N, True, False, PRECISION)

    # One division per row; a row that saw no key (ℓ = 0) gets O = 0 and L = -inf.
    o = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    # O and L are allocated here, contiguous: [B, H, N_Q, D] and [B, H, N_Q].
    O += bh.to(tl.int64) * N_Q * HEAD_DIM
    tl.store(O + offs_m[:, None] * HEAD_DIM + offs_d[None, :], o.to(O.dtype.element_ty),
             mask=row_ok[:, None])
    if STORE_LSE:  # only when a backward will read it
        # L = m + log ℓ, back in natural-log units
        lse = (m_i + tl.math.log2(l_i)) * 0.6931471805599453
        tl.store(L + bh.to(tl.int64) * N_Q + offs_m, lse, mask=row_ok)
    # [v2-kernel-end]


# (BLOCK_M, BLOCK_N, num_warps, num_stages) per architecture; the autotuner picks among them on
# large problems, small ones take the first that fits. Shared memory: Q plus `stages` K/V pairs.
FWD_CONFIGS = {
    "sm90": [(128, 128, 8, 3), (128, 64, 8, 3), (128, 64, 4, 3), (128, 64, 8, 4), (128, 128, 8, 2),
             (128, 128, 8, 4), (64, 64, 4, 3), (64, 32, 8, 2)],
    "sm80": [(128, 64, 8, 3), (128, 32, 4, 3), (64, 64, 4, 3), (64, 32, 8, 2)],
    "sm86": [(128, 32, 4, 3), (64, 64, 4, 2), (128, 64, 8, 2), (64, 32, 8, 2)],
    "interpreter": [(32, 32, 4, 1)],
}


def attention_forward(q, k, v, *, causal: bool, scale: float, config: triton.Config | None = None,
                      store_lse: bool = True):
    """o ``[B, H, N_Q, D]`` (q's dtype) and L ``[B, H, N_Q]`` (fp32) from validated inputs with
    unit stride in D; ``config`` forces one kernel config (tuning), else this arch's choice.
    ``store_lse=False`` (no backward will read L): the kernel skips it and L is None."""
    B, H, N_Q, D = q.shape
    N_K = k.shape[2]
    key = _call_key(q, k, v, causal, store_lse)
    o = torch.empty(B, H, N_Q, D, device=q.device, dtype=q.dtype)
    lse = torch.empty(B, H, N_Q, device=q.device, dtype=torch.float32) if store_lse else None
    args = _kernel_args(q, k, v, o, lse, key, scale)
    bound = None if config is not None else _bound.lookup(_fwd_kernel, key)
    if bound is not None:  # a call shape seen before: straight to the launcher
        bound(*args)
        return o, lse
    consts = dict(CAUSAL=causal, HEAD_DIM=D, STORE_LSE=store_lse,
                  PRECISION="ieee" if q.dtype == torch.float32 else "tf32")
    launch(_fwd_kernel, lambda meta: (triton.cdiv(N_Q, meta["BLOCK_M"]), B * H), args, consts,
           table=FWD_CONFIGS, head_dim=D, elem_bytes=q.element_size(), resident=0, resident_tiles=1,
           tune=should_tune(B, H, N_Q, N_K), config=config, name="v2_triton", bind_key=key)
    return o, lse


def _call_key(q, k, v, causal, store_lse) -> tuple:
    """The binding's key (:func:`flashedu.ops._bound.call_key`): two calls with one key get the
    same verdict from :func:`_check` and the same compiled kernel."""
    return _bound.call_key(q, k, v, causal, store_lse)


def _kernel_args(q, k, v, o, lse, key, scale) -> tuple:
    """_fwd_kernel's run-time arguments; without L, o stands in for its pointer (never used)."""
    H, N_Q = q.shape[1], q.shape[2]
    return (q, k, v, o, o if lse is None else lse, *_bound.strides(key), H, N_Q,
            k.shape[2], scale * LOG2E)


def _forward_seen(q, k, v, causal, scale):
    """o for a forward with no backward to follow whose call key a checked call bound before;
    None where anything differs (then the full checks run, and say what is wrong)."""
    key = _call_key(q, k, v, causal, False)
    bound = _bound.lookup(_fwd_kernel, key)
    if bound is None:
        return None
    B, H, N_Q, D = q.shape
    scale = quick_scale(scale, D)
    if scale is None:
        return None
    o = torch.empty(B, H, N_Q, D, device=q.device, dtype=q.dtype)
    bound(*_kernel_args(q, k, v, o, None, key, scale))
    return o


def _unit_stride(t: torch.Tensor) -> torch.Tensor:
    # Other strides are passed to the kernels as they are; a strided D would break vector loads.
    return t if t.stride(-1) == 1 else t.contiguous()


def _v2_kernel(q, k, v, *, causal: bool, scale: float):
    """This chapter's forward for :class:`FlashAttentionV2`: (q, k, v as used, o, L)."""
    q, k, v = (_unit_stride(t) for t in (q, k, v))
    return (q, k, v, *attention_forward(q, k, v, causal=causal, scale=scale))


class FlashAttentionV2(torch.autograd.Function):
    """Forward saves q, k, v, o and L only; backward recomputes P tile by tile.

    ``forward_kernel(q, k, v, *, causal, scale) -> (q, k, v, o, L)`` (the inputs as the kernel
    used them, and its outputs) is this chapter's by default; chapter 6's TMA and Gluon forwards
    pass theirs and share this backward, which needs nothing else. ``backward_kernel(do, q, k,
    v, o, L, *, causal, scale) -> (dq, dk, dv)`` is this chapter's by default too."""

    @staticmethod
    def forward(ctx, q, k, v, causal, scale, forward_kernel=None, backward_kernel=None):
        q, k, v, o, lse = (forward_kernel or _v2_kernel)(q, k, v, causal=causal, scale=scale)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.causal, ctx.scale = causal, scale
        ctx.backward_kernel = backward_kernel or attention_backward
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = ctx.backward_kernel(do, q, k, v, o, lse, causal=ctx.causal, scale=ctx.scale)
        return dq, dk, dv, None, None, None, None


def _check(q, k, v, causal, scale) -> float:
    scale = check_qkv(q, k, v, causal=causal, scale=scale, dtypes=DTYPES, head_dims=HEAD_DIMS,
                      name="v2_triton")
    runtime.require_triton("v2_triton", q, min_capability=MIN_CAPABILITY)
    return scale


def flash_attention_v2(q, k, v, *, causal: bool = False, scale: float | None = None) -> torch.Tensor:
    """FlashAttention-2, forward and backward in Triton, on ``[B, H, N, D]`` inputs.

    q ``[B, H, N_Q, D]``, k and v ``[B, H, N_K, D]`` (N_K may differ from N_Q unless causal),
    D in {16, 32, 64, 128, 256} (256 where the GPU's shared memory allows), fp16 or bf16 on a
    GPU, fp32 or fp16 under the interpreter. ``scale`` defaults to 1/sqrt(D). Differentiable
    with respect to q, k and v. Returns o shaped and typed like q (contiguous).
    """
    tensors = (isinstance(q, torch.Tensor) and isinstance(k, torch.Tensor)
               and isinstance(v, torch.Tensor))
    grad = tensors and torch.is_grad_enabled() and (q.requires_grad or k.requires_grad
                                                    or v.requires_grad)
    if tensors and not grad:
        # Host time (issue 20): a call like one checked and launched before would pass the
        # same checks, so it goes straight to that launch.
        o = _forward_seen(q, k, v, causal, scale)
        if o is not None:
            return o
    scale = _check(q, k, v, causal, scale)
    if grad:
        return FlashAttentionV2.apply(q, k, v, causal, scale)
    # No graph to record, so no autograd and no L: nothing will run a backward.
    q, k, v = _unit_stride(q), _unit_stride(k), _unit_stride(v)
    return attention_forward(q, k, v, causal=causal, scale=scale, store_lse=False)[0]


def flash_attention_v2_lse(q, k, v, *, causal: bool = False, scale: float | None = None):
    """Forward only: ``(o, L)`` with L = m + log ℓ ``[B, H, N_Q]`` in fp32, what the backward reads."""
    scale = _check(q, k, v, causal, scale)
    q, k, v = (_unit_stride(t) for t in (q, k, v))
    return attention_forward(q, k, v, causal=causal, scale=scale)


# On sm_75 (a T4) triton 3.9 compiles tl.dot to FMA loops with no MMA and kilobytes of spills
# (checked by compiling for sm_75 on a CPU): a T4 is refused through why_not instead.
MIN_CAPABILITY = (8, 0)

__all__ = ["flash_attention_v2", "flash_attention_v2_lse", "FlashAttentionV2", "attention_forward",
           "FWD_CONFIGS", "MIN_CAPABILITY", "arch_key"]
