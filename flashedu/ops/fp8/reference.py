"""The FP8 kernel's arithmetic in PyTorch: the oracle for ``fp8_triton`` and the engine of the
CPU simulations.

Inputs are e4m3 tensors with one fp32 descale per tile of rows. For each K/V tile j:

    S = (Q8 K8ⱼᵀ in fp32) · dq_i · dkⱼ · scale     e4m3 × e4m3 products are exact in fp32
    online softmax in fp32, base 2                  as chapter 4's kernel
    O += (256·P rounded to e4m3) V8ⱼ · dvⱼ / 256    P ∈ [0, 1] times 2⁸ keeps P ≥ 2⁻¹⁴ normal
    ℓ += Σ P                                        (the unrounded fp32 P, as the kernel)

and O / ℓ at the end, in fp16. Tiles of ``block_n`` keys, since P's rounding depends on the
running max at the time: the same tiles as the kernel give the same numbers.
"""
from __future__ import annotations

import math

import torch

from flashedu.validate import check_qkv
from flashedu.ops.fp8.quant import E4M3, round_e4m3

LOG2E = 1.4426950408889634
# P is multiplied by 2⁸ before its cast to e4m3 and V's descale divided by it: exact powers of
# two, so nothing is lost, and P down to 2⁻¹⁴ stays a normal e4m3 number (e4m3's smallest normal
# is 2⁻⁶). It barely changes the error, but subnormal casts are where the Triton interpreter and
# the GPU disagree.
P_SCALE = 256.0
FP8_DTYPES = (E4M3,)


def check_fp8_inputs(q, k, v, *, causal, scale, q_descale, k_descale, v_descale, q_block, kv_block,
                     name: str):
    """Validate like every implementation, then the FP8 specifics. Returns (scale, dq, dk, dv)
    with descales of ones where None was given, as contiguous fp32 [B, H, tiles]."""
    # Shapes and scale first, with the same messages as every implementation; the dtype after.
    scale = check_qkv(q, k, v, causal=causal, scale=scale, name=name)
    if q.dtype not in FP8_DTYPES:
        raise TypeError(f"{name}: q, k, v must be float8_e4m3fn, got {str(q.dtype).removeprefix('torch.')}; "
                        "q8, k8, v8, descales = flashedu.ops.fp8.prepare_fp8(q, k, v, 'fp8_fa3') makes "
                        "them (call fn(q8, k8, v8, **descales)), or flashedu.ops.fp8.fp8_attention(q, k, v) "
                        "quantises and runs in one call")
    for arg, val in (("q_block", q_block), ("kv_block", kv_block)):
        if isinstance(val, bool) or not isinstance(val, int) or val < 1:
            raise ValueError(f"{name}: {arg} must be a positive int, got {val!r}")
    B, H, N_Q, _ = q.shape
    N_K = k.shape[2]
    out = []
    for arg, t, n, blk in (("q_descale", q_descale, N_Q, q_block), ("k_descale", k_descale, N_K, kv_block),
                           ("v_descale", v_descale, N_K, kv_block)):
        want = (B, H, -(-n // blk))
        if t is None:
            t = torch.ones(want, device=q.device, dtype=torch.float32)
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: {arg} must be a torch.Tensor, got {type(t).__name__}")
        if tuple(t.shape) != want:
            raise ValueError(f"{name}: {arg} must have shape {want} (one scale per {blk} rows), "
                             f"got {tuple(t.shape)}")
        if t.device != q.device:
            raise ValueError(f"{name}: {arg} must be on {q.device}, got {t.device}")
        out.append(t.float().contiguous())
    return (scale, *out)


def fp8_attention_reference(q, k, v, *, causal: bool = False, scale: float | None = None,
                            q_descale=None, k_descale=None, v_descale=None, q_block: int = 128,
                            kv_block: int = 128, block_n: int = 128,
                            out_dtype: torch.dtype = torch.float16) -> torch.Tensor:
    """Attention of e4m3 ``q, k, v`` [B, H, N, D] with per-tile descales ([B, H, ceil(N/q_block)]
    for q, [B, H, ceil(N_K/kv_block)] for k and v; None: 1), computed as the FP8 kernel does.
    Returns o [B, H, N_Q, D] in ``out_dtype``."""
    scale, dq, dk, dv = check_fp8_inputs(q, k, v, causal=causal, scale=scale, q_descale=q_descale,
                                         k_descale=k_descale, v_descale=v_descale, q_block=q_block,
                                         kv_block=kv_block, name="fp8_reference")
    if isinstance(block_n, bool) or not isinstance(block_n, int) or block_n < 1 or kv_block % block_n:
        raise ValueError(f"fp8_reference: block_n must be a positive divisor of kv_block={kv_block}, got {block_n!r}")
    B, H, N_Q, D = q.shape
    N_K = k.shape[2]
    qf, kf, vf = q.float(), k.float(), v.float()
    dq_rows = dq.repeat_interleave(q_block, -1)[..., :N_Q, None]  # [B, H, N_Q, 1]
    rows = torch.arange(N_Q, device=q.device)[:, None]
    m = torch.full((B, H, N_Q), -math.inf, device=q.device)
    l = torch.zeros(B, H, N_Q, device=q.device)
    acc = torch.zeros(B, H, N_Q, D, device=q.device)
    c = scale * LOG2E
    for start in range(0, N_K, block_n):
        end = min(start + block_n, N_K)
        j = start // kv_block
        # Descales after the product, as the kernel: one multiply per score.
        s = (qf @ kf[:, :, start:end].transpose(-1, -2)) * (dq_rows * dk[:, :, j, None, None] * c)  # [B, H, N_Q, n]
        if causal:
            s = s.masked_fill(torch.arange(start, end, device=q.device)[None, :] > rows, -math.inf)
        m_new = torch.maximum(m, s.amax(-1))
        m_sub = torch.where(m_new == -math.inf, torch.zeros_like(m_new), m_new)
        p = torch.exp2(s - m_sub[..., None])
        alpha = torch.exp2(m - m_sub)
        l = l * alpha + p.sum(-1)
        pv = round_e4m3(p * P_SCALE) @ vf[:, :, start:end]
        acc = acc * alpha[..., None] + pv * (dv[:, :, j, None, None] / P_SCALE)
        m = m_new
    return (acc / torch.where(l == 0, torch.ones_like(l), l)[..., None]).to(out_dtype)
