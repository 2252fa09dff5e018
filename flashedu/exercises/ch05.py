"""Chapter 5's checkers."""
from __future__ import annotations

import torch

from flashedu.exercises._base import FAILED, attempt, report


def check_block_sparse_reads(fn, *, cases: int = 20, seed: int = 0) -> bool:
    """``fn(N, d, Br, Bc, nnz)`` must return the HBM elements block-sparse FlashAttention's
    forward reads (Q, K, V) when ``nnz`` tiles are listed, N a multiple of both blocks and no
    tile partial, as the memory model records it."""
    from flashedu.ops.block_sparse import masks as bs
    from flashedu.iomodel import simulate

    g = torch.Generator().manual_seed(seed)
    failures = []
    for c in range(cases):
        br, bc = (32, 64, 128, 64)[c % 4], (32, 64, 64, 128)[c % 4]
        N = int(torch.randint(1, 9, (1,), generator=g)) * 128
        d = (16, 32, 64)[c % 3]
        density = float(torch.rand(1, generator=g))
        m = bs.random_blocks(N, block=br, block_c=bc, density=density, seed=c)
        want = simulate("block_sparse", N=N, d=d, block_mask=m, sram_bytes=1 << 20).read_elements
        got = attempt(failures, f"N={N}, d={d}, Br={br}, Bc={bc}, nnz={m.nnz()}", lambda: fn(N, d, br, bc, m.nnz()))
        if got is FAILED:
            continue
        if got != want:
            failures.append(f"N={N}, d={d}, Br={br}, Bc={bc}, nnz={m.nnz()}: got {got}, the model recorded {want}")
    return report("block-sparse reads", failures, cases)


def check_csr(fn, *, cases: int = 20, seed: int = 0) -> bool:
    """``fn(grid)`` for a bool [Tr, Tc] tile grid must return ``(ptr, index)`` as lists: row i's
    K/V blocks are ``index[ptr[i]:ptr[i+1]]`` in increasing order. Grids include empty rows."""
    from flashedu.ops.block_sparse.masks import to_csr

    g = torch.Generator().manual_seed(seed)
    failures = []
    for c in range(cases):
        Tr, Tc = (int(x) for x in torch.randint(1, 12, (2,), generator=g))
        grid = torch.rand(Tr, Tc, generator=g) < float(torch.rand(1, generator=g))
        want = to_csr(grid)
        def as_lists(grid=grid):
            ptr, index = fn(grid.clone())
            return [int(x) for x in ptr], [int(x) for x in index]

        got = attempt(failures, f"{Tr}×{Tc} grid", as_lists)
        if got is FAILED:
            continue
        ptr, index = got
        if ptr != want.ptr.tolist():
            failures.append(f"{Tr}×{Tc} grid: ptr {ptr}, expected {want.ptr.tolist()} (ptr[i+1] - ptr[i] is row i's count)")
        elif index != want.index.tolist():
            failures.append(f"{Tr}×{Tc} grid: index {index}, expected {want.index.tolist()}")
    return report("CSR of a block mask", failures, cases)


def check_programs_per_sm(fn, *, cases: int = 20, seed: int = 0) -> bool:
    """``fn(block_m, block_n, stages, d, sram_kb)`` must return how many forward programs fit
    side by side in ``sram_kb`` KB of an SM's shared memory, counting what each holds: its fp16
    Q tile [block_m, d] and ``stages`` buffers of a K and a V tile [block_n, d]."""
    from flashedu.recorded.block_sparse import shared_kb

    g = torch.Generator().manual_seed(seed)
    failures = []
    for c in range(cases):
        bm, bn = (64, 128)[c % 2], (32, 64, 128)[c % 3]
        stages = int(torch.randint(1, 5, (1,), generator=g))
        d = (64, 128)[(c // 2) % 2]
        sram_kb = (100, 164, 228)[c % 3]
        want = int(sram_kb // shared_kb((bm, bn, 4, stages), d))
        got = attempt(failures, f"{bm}×{bn}, {stages} stages, d={d}, {sram_kb} KB",
                      lambda: fn(bm, bn, stages, d, sram_kb))
        if got is FAILED:
            continue
        if got != want:
            failures.append(f"{bm}×{bn}, {stages} stages, d={d}, {sram_kb} KB: got {got}, expected {want}")
    return report("programs per SM", failures, cases)
