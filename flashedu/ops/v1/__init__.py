"""FlashAttention v1: Algorithm 1 of Dao et al. (2022), K/V outer loop, O/ℓ/m through HBM (chapter 3)."""
from flashedu._registry import Impl, register
from flashedu.iomodel.models import Model, register_model
from flashedu.ops.v1.autograd import v1_attention
from flashedu.ops.v1.reference import v1_forward
from flashedu.ops.v1.reference_bwd import STATS, backward_block_sizes, v1_backward

register_model(Model("v1", forward=v1_forward, backward=v1_backward, stats=STATS,
                     backward_block_sizes=backward_block_sizes))

register(Impl(
    name="v1_reference", algorithm="v1", backend="reference", chapter=3,
    fn=v1_attention, backward=True,
    summary="Algorithm 1 literally: K/V tiles outer, Q tiles inner, O, ℓ, m read and written "
            "back to HBM every inner step; traffic recorded by flashedu.iomodel.",
))

import torch  # noqa: E402

from flashedu.ops.v1.kernel import HEAD_DIMS as _V1_HEAD_DIMS, MIN_CAPABILITY as _V1_MIN_CAPABILITY  # noqa: E402
from flashedu.ops.v1.kernel import flash_attention_v1  # noqa: E402

register(Impl(
    name="v1_triton", algorithm="v1", backend="triton", chapter=3,
    fn=flash_attention_v1, backward=True,
    dtypes=(torch.float16, torch.bfloat16, torch.float32),
    head_dims=_V1_HEAD_DIMS, min_capability=_V1_MIN_CAPABILITY,
    summary="Algorithm 1's schedule in one Triton program per (batch, head): K/V tiles outer, "
            "Q tiles inner, O (a running average), ℓ and m re-read and re-written in HBM every "
            "inner step; backward as Algorithm 4 in the same schedule (P recomputed from the "
            "stored ℓ and m, dQ read-modify-written in HBM). Faithful, not fast: the baseline "
            "for what v2's loop swap buys.",
))
