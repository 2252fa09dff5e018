"""One-pass attention with a running (m, ℓ, o) state per query row (chapter 2)."""
from flashedu._registry import Impl, register
from flashedu.ops.online.kernel import DTYPES as _DTYPES, online_attention_triton
from flashedu.ops.online.reference import online_attention

register(Impl(
    name="online_reference", algorithm="online", backend="reference", chapter=2,
    fn=online_attention,
    summary="Keys streamed a block at a time; each block's state is merged into the row's running (m, ℓ, o).",
))

register(Impl(
    name="online_triton", algorithm="online", backend="triton", chapter=2,
    fn=online_attention_triton, dtypes=_DTYPES,
    summary="One Triton program per query row: keys and values stream past a block at a time, "
            "(m, ℓ, o) stay in registers, one division at the end. Vector arithmetic only, no "
            "tl.dot, and no K/V reuse across rows: the step before chapter 3 tiles the queries.",
))
