"""FP8 attention as FlashAttention-3 does it, simulated exactly on a CPU (chapter 6).

* :mod:`.hadamard` - the fast Walsh–Hadamard transform and the rotation M = D·H;
* :mod:`.quant` - e4m3 quantisation with per-tensor or per-tile scales;
* :mod:`.reference` - the FP8 kernel's arithmetic in PyTorch (registered as ``fp8_reference``);
* :mod:`.recipes` - FA3's Table 3: the recipes, outlier inputs, RMSE against fp64;
* :mod:`.kernel` - the FP8 forward in Triton (registered as ``fp8_triton``);
* :mod:`.gluon` - the FP8 forward through the Gluon FA3 kernel, Hopper only (``fp8_gluon``);
* :mod:`.quant_kernel` - the recipe's quantisation as one fused Triton pass per tensor;
* :mod:`.dropin` - quantiser and kernel together, called like every entry (``fp8_e2e_triton``).
"""
from flashedu._registry import Impl, get, register
from flashedu.ops.fp8 import dropin as _dropin, gluon as _gluon, kernel as _kernel
from flashedu.ops.fp8.hadamard import fwht, hadamard_matrix, random_signs, rotate, rotation
from flashedu.ops.fp8.quant import E4M3, E4M3_MAX, Quantized, is_k_major, k_major, quantize, round_e4m3
from flashedu.ops.fp8.recipes import PAPER_RMSE, RECIPES, Recipe, outlier_qkv, prepare_fp8, rmse, rmse_table, simulate
from flashedu.ops.fp8.reference import FP8_DTYPES, fp8_attention_reference

# Max abs error of FP8 attention against fp64 on O(1) inputs. A value of V lands on its tile's
# e4m3 grid, off by up to half the top step, 16/448 of the tile's largest |v| (about 4 for
# normal inputs: 0.15); where a row sees one key (the first causal row) o is that value.
FP8_TOLERANCE = 0.25

register(Impl(
    name="fp8_triton", algorithm="fp8", backend="triton", chapter=6,
    fn=_kernel.flash_attention_fp8, dtypes=FP8_DTYPES, head_dims=_kernel.HEAD_DIMS,
    min_capability=_kernel.MIN_CAPABILITY,
    summary="FP8 (e4m3) forward with one descale per tile, fp32 accumulation, V transposed (K-major) "
            "for the second product; takes e4m3 q, k, v from flashedu.ops.fp8.prepare_fp8 (Hadamard "
            "rotation of Q and K, block scales).",
    extra={"takes": "float8_e4m3fn q, k, v and q_descale, k_descale, v_descale"},
))

# Gluon on Hopper only, like fa3_gluon: backend "gluon" makes why_not ask
# runtime.why_not_gluon (compiled, sm_90, Gluon installed), so elsewhere it is skipped with why.
register(Impl(
    name=_gluon.NAME, algorithm="fp8", backend="gluon", chapter=6,
    fn=_gluon.flash_attention_fp8_gluon, dtypes=FP8_DTYPES, devices=("cuda",),
    head_dims=_gluon.HEAD_DIMS, min_capability=(9, 0),
    summary="FP8 (e4m3) forward through the Gluon FA3 kernel for Hopper (producer warp, ping-pong "
            "consumer warpgroups, e4m3 wgmma) with fp8_triton's recipe: per-tile descales, P·2⁸ "
            "in e4m3, V K-major; takes what flashedu.ops.fp8.prepare_fp8 returns; o in fp16.",
    extra={"takes": "float8_e4m3fn q, k, v and q_descale, k_descale, v_descale"},
))

register(Impl(
    name="fp8_e2e_triton", algorithm="fp8", backend="triton", chapter=6,
    fn=_dropin.fp8_attention_triton, dtypes=_dropin.DTYPES, head_dims=_kernel.HEAD_DIMS,
    min_capability=_kernel.MIN_CAPABILITY, tolerance=FP8_TOLERANCE,
    summary="FP8 end to end, called like every entry: fp16/bf16 q, k, v are rotated, block-scaled "
            "and cast to e4m3 by one fused Triton pass per tensor, then attended by fp8_gluon on "
            "Hopper at D=128 with fp16 q (faster there), by fp8_triton elsewhere; o in q's dtype.",
))

register(Impl(
    name="fp8_reference", algorithm="fp8", backend="reference", chapter=6,
    fn=fp8_attention_reference, dtypes=FP8_DTYPES, devices=("cpu", "cuda"),
    summary="The FP8 kernel's arithmetic in PyTorch (e4m3 products, fp32 sums, per-tile descales, P "
            "cast to e4m3); flashedu.ops.fp8.simulate runs FA3's Table 3 recipes through it.",
    extra={"recipes": tuple(RECIPES), "takes": "float8_e4m3fn q, k, v and q_descale, k_descale, v_descale"},
))


def fp8_attention(q, k, v, *, recipe: str = "fp8_fa3", impl: str = "fp8_reference", causal: bool = False,
                  generator=None, block_m: int = 128, block_n: int = 128):
    """Quantise high-precision ``q, k, v`` [B, H, N, D] as ``recipe`` says, then run the FP8
    implementation ``impl`` ("fp8_reference", "fp8_triton" or "fp8_gluon") on them. Returns o
    in fp16."""
    q8, k8, v8, kw = prepare_fp8(q, k, v, recipe, block_m=block_m, block_n=block_n, generator=generator)
    return get(impl).fn(q8, k8, v8, causal=causal, **kw)


__all__ = ["E4M3", "E4M3_MAX", "PAPER_RMSE", "Quantized", "RECIPES", "Recipe", "fp8_attention",
           "fp8_attention_reference", "fwht", "hadamard_matrix", "is_k_major", "k_major", "outlier_qkv", "prepare_fp8", "quantize",
           "random_signs", "rmse", "rmse_table", "rotate", "rotation", "round_e4m3", "simulate"]
