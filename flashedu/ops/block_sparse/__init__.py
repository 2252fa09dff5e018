"""Block-sparse FlashAttention (chapter 5): v2's loops over the tiles a block mask lists."""
from flashedu._registry import Impl, register
from flashedu.iomodel.models import Model, register_model
from flashedu.ops.block_sparse.api import block_sparse_attention, simulate_block_sparse

register_model(Model("block_sparse", simulate=simulate_block_sparse))

register(Impl(
    name="block_sparse_reference", algorithm="block_sparse", backend="reference", chapter=5,
    fn=block_sparse_attention, backward=True, block_sparse=True,
    summary="Block-sparse FlashAttention with FA2's loop order: each Q tile walks its CSR list of "
            "K/V tiles only (partial tiles apply the token mask); backward over each K/V tile's "
            "column list; traffic recorded by flashedu.iomodel.",
))

from flashedu.ops.block_sparse.kernel import DTYPES as _DTYPES, HEAD_DIMS as _HEAD_DIMS, MIN_CAPABILITY as _MIN_CAPABILITY  # noqa: E402
from flashedu.ops.block_sparse.kernel import block_sparse_flash_attention  # noqa: E402

register(Impl(
    name="block_sparse_triton", algorithm="block_sparse", backend="triton", chapter=5,
    fn=block_sparse_flash_attention, backward=True, block_sparse=True,
    dtypes=_DTYPES, head_dims=_HEAD_DIMS, min_capability=_MIN_CAPABILITY,
    summary="Block-sparse FlashAttention in Triton: v2's kernels iterating CSR lists of tiles "
            "(mask-free entries first, then masked: partial, diagonal, short); backward walks "
            "the column lists for dK/dV and the row lists for dQ.",
))
