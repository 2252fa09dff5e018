"""FlashAttention-3 (chapter 6): its ideas in Triton (the TMA-fed, pipelined forward) and in
Gluon (warp specialisation, ping-pong, intra-warpgroup pipelining, for Hopper). The FP8 forward is
:mod:`flashedu.ops.fp8`; the schedule simulator is :mod:`flashedu.fa3sim`."""
from flashedu._registry import Impl, register
from flashedu.ops.fa3 import gluon as _gluon
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

register(Impl(
    name=_gluon.NAME, algorithm="fa3", backend="gluon", chapter=6,
    fn=_gluon.flash_attention_fa3, backward=True, dtypes=_gluon.DTYPES, devices=("cuda",),
    head_dims=_gluon.HEAD_DIMS, min_capability=(9, 0),
    summary="FlashAttention-3's forward in Gluon for Hopper: a producer warp feeds a TMA ring, two "
            "consumer warpgroups ping-pong their GEMMs, and each issues GEMM0(j+1) with GEMM1(j) "
            "so softmax hides under the tensor cores; chapter 4's backward.",
    extra={"ablations": tuple(_gluon.ABLATIONS)},
))
