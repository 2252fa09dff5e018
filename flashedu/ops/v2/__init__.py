"""FlashAttention-2: Q tiles outer, O/ℓ/m on chip, one division at the end (chapter 4)."""
from ..._registry import Impl, register
from .reference import v2_attention

register(Impl(
    name="v2_reference", algorithm="v2", backend="reference", chapter=4,
    fn=v2_attention,
    summary="FA2's forward: one program per Q tile streams K/V tiles, keeps O, ℓ, m on chip, "
            "divides by ℓ once and stores L = m + log ℓ; traffic recorded by flashedu.iomodel.",
))
