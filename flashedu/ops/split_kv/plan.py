"""How split-KV decoding divides the work: input checks with grouped-query heads, how many splits,
and which keys each split reads. Shared by the reference and the Triton kernels, so both split
the keys at the same places.
"""
from __future__ import annotations

import math

import torch

from flashedu.validate import check_qkv

# A split never gets fewer key tiles than this over the whole cache, nor more splits than this:
# the flash-attn library's flash-decoding path caps the split count at 128 for the same reason
# (the merge reads every split's state back).
MAX_SPLITS = 128
# How full the last wave of programs must be, as a share of the best eligible count's. The
# flash-attn library takes FLASH_ATTN_WAVE_FILL; on an H200 (batch 1, 8 K/V heads, 32k-128k
# keys) that picked 14 splits, 112 programs on 132 SMs, and 16 splits (128 programs) ran 1-3%
# faster: a memory-bound decode wants every SM streaming (v2-tuning.md, session 17).
FLASH_ATTN_WAVE_FILL = 0.85
WAVE_FILL = 0.95


def check_gqa(q, k, v, *, causal: bool, scale, dtypes=None, head_dims=None, name: str) -> tuple[float, int]:
    """Validate q ``[B, H, N_q, D]`` and k, v ``[B, H_kv, N_k, D]`` with ``H % H_kv == 0``
    (grouped-query attention: ``H / H_kv`` query heads share each K/V head). Returns
    ``(scale, group)`` with group = H / H_kv."""
    for arg, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: {arg} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name}: {arg} must have shape [B, H, N, D] (4 dims), got {tuple(t.shape)}")
    B, H = q.shape[:2]
    H_kv = k.shape[1]
    if k.shape[0] != B or v.shape[:2] != k.shape[:2] or H_kv < 1 or H % H_kv:
        raise ValueError(
            f"{name}: batch and head dims of k {tuple(k.shape)} and v {tuple(v.shape)} must match q "
            f"{tuple(q.shape)}, or (grouped-query attention) k and v must share H_kv heads with the "
            f"H = {H} heads of q a multiple of H_kv; got H_kv = {H_kv} for k and {v.shape[1]} for v")
    # The remaining checks (device, dtype, lengths, head dim, causal, scale) are the usual ones.
    scale = check_qkv(q, k, v, causal=causal, scale=scale, dtypes=dtypes, head_dims=head_dims,
                      name=name, kv_heads=H_kv)
    return scale, H // H_kv


def num_splits_heuristic(programs: int, n_blocks: int, sms: int, max_splits: int = MAX_SPLITS,
                         wave_fill: float = WAVE_FILL) -> int:
    """How many splits of the keys to launch, as the flash-attn library's flash-decoding chooses.

    ``programs`` is the number of programs without splitting (batch × K/V heads × row blocks),
    ``n_blocks`` the number of key tiles. If those programs nearly fill the ``sms`` already, do
    not split. Otherwise take the smallest split count whose last wave is nearly as full as
    the best count's (``wave_fill`` of it, :data:`WAVE_FILL` unless given); counts that give
    the same tiles per split as a smaller count are skipped (they add programs but no
    parallelism).
    """
    if programs >= 0.8 * sms:
        return 1
    limit = max(1, min(max_splits, sms, n_blocks))

    def efficiency(s):
        waves = programs * s / sms
        return waves / math.ceil(waves)

    def eligible(s):
        return s == 1 or math.ceil(n_blocks / s) != math.ceil(n_blocks / (s - 1))

    best = max(efficiency(s) for s in range(1, limit + 1) if eligible(s))
    return next(s for s in range(1, limit + 1) if eligible(s) and efficiency(s) >= wave_fill * best)


def split_ranges(n_k: int, num_splits: int, block_n: int) -> list[tuple[int, int]]:
    """Key range ``[start, stop)`` of each split: whole tiles of ``block_n`` keys, the same number
    for every split but the last. A split past the end of the keys is empty (start == stop) and
    contributes the identity of ⊕."""
    tiles = -(-n_k // block_n)
    per_split = -(-tiles // num_splits)
    return [(min(n_k, s * per_split * block_n), min(n_k, (s + 1) * per_split * block_n))
            for s in range(num_splits)]


def resolve_splits(num_splits, *, programs: int, n_k: int, block_n: int, sms: int) -> int:
    """The split count to use: ``num_splits`` if given (a positive int), else the heuristic."""
    if num_splits is None:
        return num_splits_heuristic(programs, -(-n_k // block_n), sms)
    if isinstance(num_splits, bool) or not isinstance(num_splits, int) or num_splits < 1:
        raise ValueError(f"num_splits must be a positive int, got {num_splits!r}")
    return num_splits
