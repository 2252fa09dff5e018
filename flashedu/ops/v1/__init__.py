"""FlashAttention v1: Algorithm 1 of Dao et al. (2022), K/V outer loop, O/ℓ/m through HBM (chapter 3)."""
from ..._registry import Impl, register
from .reference import v1_attention

register(Impl(
    name="v1_reference", algorithm="v1", backend="reference", chapter=3,
    fn=v1_attention,
    summary="Algorithm 1 literally: K/V tiles outer, Q tiles inner, O, ℓ, m read and written "
            "back to HBM every inner step; traffic recorded by flashedu.iomodel.",
))
