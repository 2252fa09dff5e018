"""FlashAttention-2: Q tiles outer, O/ℓ/m on chip, one division at the end (chapter 4)."""
from flashedu._registry import Impl, register
from flashedu.iomodel.models import Model, register_model
from flashedu.ops.v2.autograd import v2_attention
from flashedu.ops.v2.reference import v2_forward
from flashedu.ops.v2.reference_bwd import STATS, backward_block_sizes, v2_backward
from flashedu.ops.v2.reference_bwd_split import v2_backward_split

register_model(Model("v2", forward=v2_forward, backward=v2_backward, stats=STATS,
                     backward_block_sizes=backward_block_sizes))
# The backward as v2_triton splits it (dQ in a pass of its own), for its byte count beside
# Algorithm 2's; same tiles, so the two differ only in where dQ is summed.
register_model(Model("v2_split_bwd", backward=v2_backward_split, stats=STATS,
                     backward_block_sizes=backward_block_sizes))

register(Impl(
    name="v2_reference", algorithm="v2", backend="reference", chapter=4,
    fn=v2_attention, backward=True,
    summary="FA2's forward: one program per Q tile streams K/V tiles, keeps O, ℓ, m on chip, "
            "divides by ℓ once and stores L = m + log ℓ; traffic recorded by flashedu.iomodel.",
))

import torch  # noqa: E402

from flashedu.ops.v2.kernel import HEAD_DIMS as _V2_HEAD_DIMS, MIN_CAPABILITY as _V2_MIN_CAPABILITY  # noqa: E402
from flashedu.ops.v2.kernel import flash_attention_v2  # noqa: E402

register(Impl(
    name="v2_triton", algorithm="v2", backend="triton", chapter=4,
    fn=flash_attention_v2, backward=True,
    dtypes=(torch.float16, torch.bfloat16, torch.float32),
    head_dims=_V2_HEAD_DIMS, min_capability=_V2_MIN_CAPABILITY,
    summary="FlashAttention-2 in Triton: one program per Q tile, exp2 with the scale folded in, "
            "causal tiles above the diagonal skipped; backward as Algorithm 2 (Δ preprocess, "
            "dK/dV per K/V tile, dQ per Q tile); L = m + log ℓ is all the forward saves.",
))
