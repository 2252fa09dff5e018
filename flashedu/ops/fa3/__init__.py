"""FlashAttention-3's ideas in Triton (chapter 6): the TMA-fed, pipelined fp16 forward, and the
FP8 forward beside the PyTorch version of its arithmetic."""
from flashedu._registry import Impl, register
from flashedu.fp8.recipes import RECIPES as _RECIPES
from flashedu.fp8.reference import FP8_DTYPES as _FP8_DTYPES
from flashedu.fp8.reference import fp8_attention_reference
from flashedu.ops.fa3 import fp8_triton as _fp8
from flashedu.ops.fa3 import triton_impl as _tma

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
    name="fp8_triton", algorithm="fp8", backend="triton", chapter=6,
    fn=_fp8.flash_attention_fp8, dtypes=_FP8_DTYPES, head_dims=_fp8.HEAD_DIMS,
    min_capability=_fp8.MIN_CAPABILITY,
    summary="FP8 (e4m3) forward with one descale per tile, fp32 accumulation, V transposed (K-major) "
            "for the second product; takes e4m3 q, k, v from flashedu.fp8.prepare_fp8 (Hadamard "
            "rotation of Q and K, block scales).",
    extra={"takes": "float8_e4m3fn q, k, v and q_descale, k_descale, v_descale"},
))

register(Impl(
    name="fp8_reference", algorithm="fp8", backend="reference", chapter=6,
    fn=fp8_attention_reference, dtypes=_FP8_DTYPES, devices=("cpu", "cuda"),
    summary="The FP8 kernel's arithmetic in PyTorch (e4m3 products, fp32 sums, per-tile descales, P "
            "cast to e4m3); flashedu.fp8.simulate runs FA3's Table 3 recipes through it.",
    extra={"recipes": tuple(_RECIPES), "takes": "float8_e4m3fn q, k, v and q_descale, k_descale, v_descale"},
))
