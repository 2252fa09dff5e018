"""One-pass attention with a running (m, ℓ, o) state per query row (chapter 2)."""
from flashedu._registry import Impl, register
from flashedu.ops.online.reference import online_attention

register(Impl(
    name="online_reference", algorithm="online", backend="reference", chapter=2,
    fn=online_attention,
    summary="Keys streamed a block at a time; each block's state is merged into the row's running (m, ℓ, o).",
))
