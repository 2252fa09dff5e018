"""Input checks shared by every implementation: errors name the argument at fault."""
from __future__ import annotations

import math

import torch


def check_qkv(q, k, v, *, causal: bool = False, scale=None, dtypes=None, head_dims=None,
              name: str = "attention", kv_heads: int | None = None) -> float:
    """Validate ``[B, H, N, D]`` inputs and return the softmax scale to use. ``kv_heads``: the
    head count k and v must have when it is not q's (grouped-query attention, checked by the
    caller)."""
    for arg, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: {arg} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name}: {arg} must have shape [B, H, N, D] (4 dims), got {tuple(t.shape)}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"{name}: q, k, v must be on one device, got q on {q.device}, "
                         f"k on {k.device}, v on {v.device}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"{name}: q, k, v must share a dtype, got q {q.dtype}, k {k.dtype}, v {v.dtype}")
    if not q.dtype.is_floating_point:
        raise TypeError(f"{name}: q, k, v must be floating point, got {q.dtype}")
    B, H, N, D = q.shape
    ks, vs = k.shape, v.shape  # read once: an eager call's checks are part of its host time
    H_kv = H if kv_heads is None else kv_heads
    if ks[:2] != (B, H_kv) or vs[:2] != (B, H_kv):
        raise ValueError(f"{name}: batch and head dims of k {tuple(ks)} and v {tuple(vs)} "
                         f"must match q {tuple(q.shape)}")
    if ks[3] != D:
        raise ValueError(f"{name}: head dim of k ({ks[3]}) must equal head dim of q ({D})")
    if vs[2] != ks[2]:
        raise ValueError(f"{name}: k and v must have the same length, got {ks[2]} and {vs[2]}")
    if vs[3] != D:
        raise ValueError(f"{name}: head dim of v ({vs[3]}) must equal head dim of q ({D})")
    if min(B, H, D) < 1 or ks[2] < 1 or N < 1:
        raise ValueError(f"{name}: every dim must be at least 1, got q {tuple(q.shape)}, k {tuple(ks)}")
    if causal and ks[2] != N:
        raise ValueError(f"{name}: causal=True needs q and k of one length, got {N} and {ks[2]}")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))
                              or not math.isfinite(scale) or scale <= 0):
        raise ValueError(f"{name}: scale must be a positive finite number, got {scale!r}")
    # Last: a kernel's own limits, after every check that says the call itself is wrong.
    if dtypes is not None and q.dtype not in dtypes:
        names = ", ".join(str(d).removeprefix("torch.") for d in dtypes)
        raise TypeError(f"{name}: dtype of q, k, v must be one of {names}, got {q.dtype}")
    if head_dims is not None and D not in head_dims:
        raise ValueError(f"{name}: head dim D={D} is not supported; supported: {tuple(head_dims)}")
    return 1.0 / math.sqrt(D) if scale is None else float(scale)


def quick_scale(scale, head_dim: int) -> float | None:
    """What :func:`check_qkv` returns for ``scale`` when it is None or a positive finite float,
    for a call whose inputs passed the checks before (a fast path's only check); None for
    anything else, which the full checks then judge."""
    if scale is None:
        return 1.0 / math.sqrt(head_dim)
    if type(scale) is float and 0.0 < scale < math.inf:
        return scale
    return None
