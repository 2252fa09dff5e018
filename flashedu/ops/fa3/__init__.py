"""FlashAttention-3's ideas in Triton (chapter 6): the TMA-fed, pipelined fp16 forward. The FP8
forward is :mod:`flashedu.ops.fp8`; the schedule simulator is :mod:`flashedu.fa3sim`."""
from flashedu._registry import Impl, register
from flashedu.ops.fa3 import kernel as _tma

register(Impl(
    name="v2_tma_triton", algorithm="v2", backend="triton", chapter=6,
    fn=_tma.flash_attention_tma, backward=True, dtypes=_tma.DTYPES, head_dims=_tma.HEAD_DIMS,
    min_capability=_tma.MIN_CAPABILITY,
    summary="FlashAttention-2's forward fed by Hopper's copy engine: tensor descriptors (TMA) load "
            "K/V tiles, tl.range(num_stages) keeps several in flight, warp specialisation where the "
            "installed Triton compiles it; chapter 4's backward.",
    extra={"warp_specialize_available": _tma.HAS_WARP_SPECIALIZE},
))
