"""Block masks for block-sparse FlashAttention (chapter 5): what to skip, and how a kernel reads it.

    from flashedu.ops.block_sparse import masks as bs
    m = bs.butterfly(4096, block=128)               # a BlockSparseMask, 32 × 32 tiles
    m.density(), m.nnz()                            # fraction and count of tiles computed
    lay = bs.kernel_layout(m, causal=False)         # the CSR lists the kernels iterate
    bm = bs.to_flex(m)                              # torch FlexAttention's BlockMask

Pieces: ``mask`` (the mask, from a tile grid or a token mask), ``patterns`` (local, strided,
global + local, BigBird, butterfly, random), ``csr`` (count-and-list layout), ``flex``.
"""
from flashedu.ops.block_sparse.masks.csr import CSR, KernelLayout, from_csr, kernel_layout, to_csr
from flashedu.ops.block_sparse.masks.flex import flex_available, from_flex, to_flex
from flashedu.ops.block_sparse.masks.mask import (BlockSparseMask, causal_blocks, dense_mask, expand, from_blocks,
                   from_token_mask)
from flashedu.ops.block_sparse.masks.patterns import (PATTERNS, bigbird, butterfly, global_local, local, random_blocks,
                       sliding_window, strided, with_causal)

__all__ = ["BlockSparseMask", "CSR", "KernelLayout", "PATTERNS", "bigbird", "butterfly",
           "causal_blocks", "dense_mask", "expand", "flex_available", "from_blocks", "from_csr",
           "from_flex", "from_token_mask", "global_local", "kernel_layout", "local",
           "random_blocks", "sliding_window", "strided", "to_csr", "to_flex", "with_causal"]
