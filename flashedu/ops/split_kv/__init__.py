"""Split-KV (flash-decoding): the keys split across programs, partial states merged with ⊕ (chapter 7)."""
import torch

from flashedu._registry import Impl, register
from flashedu.ops.split_kv.reference import simulate_split_kv, split_kv_attention
from flashedu.ops.split_kv.kernel import HEAD_DIMS as _HEAD_DIMS, MIN_CAPABILITY as _MIN_CAPABILITY
from flashedu.ops.split_kv.kernel import merge_partials, split_kv_attention_triton, split_kv_partials

register(Impl(
    name="split_kv_reference", algorithm="split_kv", backend="reference", chapter=7,
    fn=split_kv_attention,
    summary="Flash-decoding: the keys split into ranges, one program per (Q block, split) stores a "
            "partial (m, ℓ, o), a second pass merges them with ⊕; grouped-query heads packed into "
            "one tile; traffic recorded by flashedu.iomodel.",
))

register(Impl(
    name="split_kv_triton", algorithm="split_kv", backend="triton", chapter=7,
    fn=split_kv_attention_triton,
    dtypes=(torch.float16, torch.bfloat16, torch.float32),
    head_dims=_HEAD_DIMS, min_capability=_MIN_CAPABILITY,
    summary="Flash-decoding in Triton: pass 1 folds each split's K/V tiles into an fp32 partial "
            "state (GQA query heads packed into the tile's rows), pass 2 merges the splits per row.",
))

__all__ = ["merge_partials", "simulate_split_kv", "split_kv_attention", "split_kv_attention_triton",
           "split_kv_partials"]
