"""The Triton helper both block-sparse kernels (forward and backward) use to read one tile of the
token mask."""
import triton
import triton.language as tl


@triton.jit
def tile_bits(Tiles, t, offs_r, offs_c, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Token-mask tile t (int8 [BLOCK_M, BLOCK_N] in HBM) at row-in-tile offs_r and
    column-in-tile offs_c, broadcast to their shape; t = -1 (a tile with no token mask) loads
    nothing and reads 1, "keep"."""
    return tl.load(Tiles + tl.maximum(t, 0).to(tl.int64) * (BLOCK_M * BLOCK_N) + offs_r * BLOCK_N + offs_c,
                   # t broadcast through offs_r: the interpreter rejects a scalar in a load mask.
                   mask=((offs_r * 0 + t) >= 0) & (offs_c >= 0), other=1)
