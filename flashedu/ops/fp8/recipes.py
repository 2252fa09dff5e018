"""FA3's Table 3 on a CPU: the error of each attention recipe against fp64, on outlier inputs.

Inputs as in the paper: entries N(0, 1) + N(0, 100)·Bernoulli(0.001), so about one entry in a
thousand is ten times larger than the rest, stored in fp16. Recipes:

* ``fp16_standard``: S = QKᵀ rounded to fp16, P = softmax(S) rounded to fp16, O = PV;
* ``fp16_flash``: FlashAttention-2/3 in fp16: S and the softmax in fp32, P rounded to fp16
  before PV, fp32 accumulation;
* ``fp8_per_tensor``: one e4m3 scale per tensor (the paper's FP8 baseline);
* ``fp8_block``: one scale per Br×d tile of Q and Bc×d tile of K, V (block quantisation only);
* ``fp8_incoherent``: Q, K rotated by M = D·H, per-tensor scales (incoherent processing only);
* ``fp8_fa3``: both.

The FP8 recipes run :func:`.reference.fp8_attention_reference`, the kernel's own arithmetic.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from flashedu.ops.fp8.hadamard import random_signs, rotate
from flashedu.ops.fp8.quant import k_major, quantize
from flashedu.ops.fp8.reference import fp8_attention_reference


@dataclass(frozen=True)
class Recipe:
    label: str
    fp8: bool
    rotate: bool = False
    block_quant: bool = False


RECIPES = {
    "fp16_standard": Recipe("FP16, standard attention", fp8=False),
    "fp16_flash": Recipe("FP16, FlashAttention-2/3", fp8=False),
    "fp8_per_tensor": Recipe("FP8 baseline (per-tensor scale)", fp8=True),
    "fp8_block": Recipe("FP8, block quantisation only", fp8=True, block_quant=True),
    "fp8_incoherent": Recipe("FP8, incoherent processing only", fp8=True, rotate=True),
    "fp8_fa3": Recipe("FP8, FA3 (both)", fp8=True, rotate=True, block_quant=True),
}
# FA3 paper, Table 3: RMSE against fp64 on the inputs above.
PAPER_RMSE = {"fp16_standard": 3.2e-4, "fp16_flash": 1.9e-4, "fp8_per_tensor": 2.4e-2, "fp8_block": 2.4e-2,
              "fp8_incoherent": 9.3e-3, "fp8_fa3": 9.1e-3}


def outlier_qkv(B: int = 1, H: int = 4, N: int = 1024, D: int = 128, *, p: float = 0.001,
                outlier_std: float = 10.0, generator: torch.Generator | None = None, dtype=torch.float16):
    """q, k, v [B, H, N, D] with entries N(0, 1) + N(0, outlier_std²)·Bernoulli(p), in ``dtype``."""
    if not 0 <= p <= 1:
        raise ValueError(f"p must be a probability, got {p!r}")

    def one():
        base = torch.randn(B, H, N, D, generator=generator, dtype=torch.float64)
        spikes = torch.randn(B, H, N, D, generator=generator, dtype=torch.float64) * outlier_std
        hit = torch.rand(B, H, N, D, generator=generator, dtype=torch.float64) < p
        return (base + spikes * hit).to(dtype)

    return one(), one(), one()


def _fp16_standard(q, k, v, scale, causal):
    s = ((q.float() @ k.float().transpose(-1, -2)) * scale).half()  # S stored in fp16
    if causal:
        n = s.shape[-1]
        s = s.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), -math.inf)
    p = torch.softmax(s.float(), dim=-1).half()  # P stored in fp16
    return (p.float() @ v.float()).half()


def _fp16_flash(q, k, v, scale, causal, block_n=128):
    B, H, N, D = q.shape
    qf, kf, vf = q.float(), k.float(), v.float()
    m = torch.full((B, H, N), -math.inf)
    l, acc = torch.zeros(B, H, N), torch.zeros(B, H, N, D)
    rows = torch.arange(N)[:, None]
    for start in range(0, k.shape[2], block_n):
        s = qf @ kf[:, :, start:start + block_n].transpose(-1, -2) * (scale * 1.4426950408889634)
        if causal:
            s = s.masked_fill(torch.arange(start, start + s.shape[-1])[None, :] > rows, -math.inf)
        m_new = torch.maximum(m, s.amax(-1))
        m_sub = torch.where(m_new == -math.inf, torch.zeros_like(m_new), m_new)
        p = torch.exp2(s - m_sub[..., None])
        alpha = torch.exp2(m - m_sub)
        l = l * alpha + p.sum(-1)
        acc = acc * alpha[..., None] + p.half().float() @ vf[:, :, start:start + block_n]
        m = m_new
    return (acc / l.clamp_min(1e-30)[..., None]).half()


def prepare_fp8(q, k, v, recipe: str = "fp8_fa3", *, block_m: int = 128, block_n: int = 128,
                generator: torch.Generator | None = None):
    """Quantise ``q, k, v`` for the FP8 kernel as ``recipe`` says (rotation, scale granularity).
    Returns (q8, k8, v8, kwargs) with the descales and blocks the kernel and reference take;
    v8 is stored K-major (:func:`~flashedu.ops.fp8.quant.k_major`), as the kernel reads it."""
    r = _recipe(recipe)
    if not r.fp8:
        raise ValueError(f"recipe {recipe!r} is not an FP8 recipe")
    qf, kf, vf = q.float(), k.float(), v.float()
    if r.rotate:
        signs = random_signs(q.shape[-1], generator=generator)
        qf, kf = rotate(qf, signs), rotate(kf, signs)  # (QM)(KM)ᵀ = QKᵀ; V is not rotated
    per_tensor = not r.block_quant
    qq = quantize(qf, block=block_m, per_tensor=per_tensor)
    kq = quantize(kf, block=block_n, per_tensor=per_tensor)
    vq = quantize(vf, block=block_n, per_tensor=per_tensor)
    kwargs = dict(q_descale=qq.scale, k_descale=kq.scale, v_descale=vq.scale, q_block=block_m, kv_block=block_n)
    return qq.x8, kq.x8, k_major(vq.x8), kwargs


def simulate(q, k, v, recipe: str = "fp8_fa3", *, causal: bool = False, block_m: int = 128, block_n: int = 128,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Attention of fp16 ``q, k, v`` [B, H, N, D] through ``recipe`` (a key of :data:`RECIPES`),
    on the CPU. Returns o in fp16."""
    r = _recipe(recipe)
    scale = 1.0 / math.sqrt(q.shape[-1])
    if recipe == "fp16_standard":
        return _fp16_standard(q, k, v, scale, causal)
    if recipe == "fp16_flash":
        return _fp16_flash(q, k, v, scale, causal, block_n)
    assert r.fp8
    q8, k8, v8, kw = prepare_fp8(q, k, v, recipe, block_m=block_m, block_n=block_n, generator=generator)
    return fp8_attention_reference(q8, k8, v8, causal=causal, block_n=block_n, **kw)


def rmse(o: torch.Tensor, ref: torch.Tensor) -> float:
    """Root mean square of o − ref, in fp64."""
    return (o.double() - ref.double()).pow(2).mean().sqrt().item()


def rmse_table(B: int = 1, H: int = 4, N: int = 1024, D: int = 128, *, seed: int = 0, causal: bool = False,
               recipes=tuple(RECIPES)) -> dict[str, float]:
    """RMSE against fp64 attention of each recipe on fresh outlier inputs (seeded)."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = outlier_qkv(B, H, N, D, generator=g)
    ref = torch.nn.functional.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=causal)
    return {name: rmse(simulate(q, k, v, name, causal=causal, generator=g), ref) for name in recipes}


def _recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"recipe must be one of {', '.join(RECIPES)}, got {name!r}")
    return RECIPES[name]
