"""Block-sparse FlashAttention (Dao et al., 2022, Algorithm 5) with FA2's loop order, written
against the memory model. v2's forward and backward with one change: the inner loop runs over
the row's *list* of K/V blocks (its CSR row), not over every block::

    for i in 1..Tr:                                   # one program per Q tile
        load Q_i;  O_i = 0, ℓ_i = 0, m_i = -inf
        for j in list(i):                             # only the tiles the mask lists
            load K_j, V_j  (and the token-mask tile M_ij when the tile is partial)
            S_ij = scale · Q_i K_jᵀ, -inf where M_ij (or the causal mask) drops a score
            ...v2's online-softmax update...
        store O_i / ℓ_i and L_i = m_i + log ℓ_i       (a row with no key: O_i = 0, L_i = -inf)

A tile that is not listed moves nothing; the trace notes it as skipped after the program's work
so that the tile-schedule pictures can grey it out (the kernel never looks at it). The backward is v2's
Algorithm 2 over each K/V tile's column list; a row that saw no key has P = 0 and so gets zero
gradients.
"""
from __future__ import annotations

import torch

from flashedu.ops.block_sparse.masks.csr import to_csr
from flashedu.ops.block_sparse.masks.mask import BlockSparseMask
from flashedu.iomodel.blocks import n_tiles
from flashedu.iomodel.chip import Chip
from flashedu.iomodel.tiles import exp_diff, finite_or_zero, nonzero_or_one, scores
from flashedu.ops.v2.reference_bwd import preprocess, probabilities

MASK_ITEMSIZE = 1  # a token-mask tile is stored one byte per score


def add_mask_tensor(chip: Chip, mask: BlockSparseMask) -> bool:
    """Put the token mask in HBM as tensor "M" (one byte per score) when some listed tile is
    partial; returns whether it did. The other tiles never read it."""
    if not bool(mask.partial().any()):
        return False
    data = None
    if chip.numeric:
        data = mask.token_mask[0].to(chip.device)[None, None].expand(chip.batch, chip.heads, -1, -1)
    chip.hbm.add("M", mask.N, mask.N_k, MASK_ITEMSIZE, data)
    chip._itemsizes["M"] = MASK_ITEMSIZE  # so the trace knows the bytes of an "M" load
    return True


def _note_skipped(chip: Chip, listed: torch.Tensor, tile) -> None:
    """Record the tiles a program's list leaves out, after its work: the kernel never visits
    them, the trace notes them for the pictures (and for the count of skipped tiles)."""
    for x in torch.nonzero(~listed).flatten().tolist():
        chip.skip(*tile(x))


def _masked(S: torch.Tensor, Mij: torch.Tensor | None) -> torch.Tensor:
    return S if Mij is None else S.masked_fill(~Mij, float("-inf"))


def block_sparse_forward(chip: Chip, *, N: int, N_k: int, d: int, scale: float, causal: bool,
                         block_r: int, block_c: int, mask: BlockSparseMask) -> None:
    """Run the forward on ``chip`` for a one-head ``mask`` (its blocks must be block_r × block_c):
    reads Q, K, V (and M for partial tiles), writes O [N, d] and L [N]."""
    chip.tensor("O", N, d)
    chip.tensor("L", N, 1, stat=True)
    has_m = add_mask_tensor(chip, mask)
    chip.phase("forward")
    br, bc = block_r, block_c
    Tc = n_tiles(N_k, bc)
    listed = mask.effective_blocks(causal)[0]  # [Tr, Tc]
    partial = mask.partial()[0] & listed
    rows = to_csr(listed)  # the count-and-list form a kernel iterates
    numeric = chip.numeric
    Oi = Li = None  # a shape-only run (numeric False) moves tiles but computes no values
    # [block-sparse-reference-start]
    for i in range(n_tiles(N, br)):
        chip.program(i)
        r0, r1 = i * br, min(N, (i + 1) * br)
        for name, r, c in (("Q_i", br, d), ("K_j", bc, d), ("V_j", bc, d)):
            chip.buffer(name, r, c)
        for name, r, c in (("O_i", br, d), ("S_ij", br, bc), ("m_i", br, 1), ("l_i", br, 1)):
            chip.buffer(name, r, c, acc=True)
        if has_m:
            chip.sram.alloc("M_ij", br, bc, MASK_ITEMSIZE)
        Qi = chip.load("Q", r0, r1, into="Q_i", i=i)  # [B, H, Br, d]
        if numeric:
            B, H = Qi.shape[:2]
            Oi = torch.zeros(B, H, r1 - r0, d, dtype=Qi.dtype, device=Qi.device)
            mi = torch.full((B, H, r1 - r0, 1), -torch.inf, dtype=Qi.dtype, device=Qi.device)
            li = torch.zeros_like(mi)
        for j in rows.row(0, i):  # only the K/V blocks row i lists
            c0, c1 = j * bc, min(N_k, (j + 1) * bc)
            Kj = chip.load("K", c0, c1, into="K_j", i=i, j=j)  # [B, H, Bc, d]
            Vj = chip.load("V", c0, c1, into="V_j", i=i, j=j)  # [B, H, Bc, d]
            Mij = None  # the token-mask tile, loaded for a partial tile only
            if partial[i, j]:
                Mij = chip.load("M", r0, r1, c0, c1, into="M_ij", i=i, j=j)
            chip.compute(i, j, (r1 - r0) * (c1 - c0), matmuls=2, softmax=True)
            if numeric:
                S = scores(Qi, Kj, scale, causal=causal, r0=r0, r1=r1, c0=c0, c1=c1)
                S = _masked(S, Mij)  # -inf where the token mask hides a score
                m_new = torch.maximum(mi, S.amax(dim=-1, keepdim=True))
                P = torch.exp(S - finite_or_zero(m_new))
                alpha = exp_diff(mi, m_new)
                li = alpha * li + P.sum(dim=-1, keepdim=True)
                Oi = alpha * Oi + P @ Vj
                mi = m_new
        if numeric:
            Oi = Oi / nonzero_or_one(li)  # ℓ = 0: the row saw no key, O_i = 0
            Li = mi + torch.log(li)  # and L_i = -inf
        chip.store("O", Oi, r0, r1, from_="O_i", i=i)
        chip.store("L", Li, r0, r1, from_="m_i", i=i)
        # [block-sparse-reference-end]
        chip.free("Q_i", "K_j", "V_j", "O_i", "S_ij", "m_i", "l_i", *(("M_ij",) if has_m else ()))
        _note_skipped(chip, listed[i], lambda j: (i, j))


def block_sparse_backward(chip: Chip, *, N: int, N_k: int, d: int, scale: float, causal: bool,
                          block_r: int, block_c: int, mask: BlockSparseMask) -> None:
    """FA2's Algorithm 2 over the listed tiles only: reads Q, K, V, O, dO, L (and M), writes
    D [N], dQ [N, d] (fp32 accumulator), dK, dV [N_k, d]."""
    chip.tensor("D", N, 1, stat=True)
    chip.tensor("dQ", N, d, stat=True)
    chip.tensor("dK", N_k, d)
    chip.tensor("dV", N_k, d)
    has_m = add_mask_tensor(chip, mask)
    br, bc = block_r, block_c
    Tr, Tc = n_tiles(N, br), n_tiles(N_k, bc)
    listed = mask.effective_blocks(causal)[0]  # [Tr, Tc]
    partial = mask.partial()[0] & listed
    cols = to_csr(listed.T)  # per K/V tile, the list of Q tiles
    numeric = chip.numeric

    preprocess(chip, N=N, d=d, block_r=br)  # D = rowsum(dO ∘ O) and dQ = 0, as in v2

    chip.phase("backward")
    for j in range(Tc):
        chip.program(j)
        c0, c1 = j * bc, min(N_k, (j + 1) * bc)
        for name, rows, cols_, acc in (("K_j", bc, d, False), ("V_j", bc, d, False), ("dK_j", bc, d, True),
                                       ("dV_j", bc, d, True), ("Q_i", br, d, False), ("dO_i", br, d, False),
                                       ("dQ_i", br, d, True), ("L_i", br, 1, True), ("D_i", br, 1, True),
                                       ("S_ij", br, bc, True), ("dP_ij", br, bc, True)):
            chip.buffer(name, rows, cols_, acc=acc)
        if has_m:
            chip.sram.alloc("M_ij", br, bc, MASK_ITEMSIZE)
        # A K/V tile no row lists still writes its (zero) dK_j, dV_j: K_j, V_j are loaded as v2 does.
        Kj = chip.load("K", c0, c1, into="K_j", j=j)  # [B, H, Bc, d]
        Vj = chip.load("V", c0, c1, into="V_j", j=j)  # [B, H, Bc, d]
        if numeric:
            dKj, dVj = torch.zeros_like(Kj), torch.zeros_like(Vj)
        for i in cols.row(0, j):
            r0, r1 = i * br, min(N, (i + 1) * br)
            Qi = chip.load("Q", r0, r1, into="Q_i", i=i, j=j)  # [B, H, Br, d]
            dOi = chip.load("dO", r0, r1, into="dO_i", i=i, j=j)  # [B, H, Br, d]
            Li = chip.load("L", r0, r1, into="L_i", i=i, j=j)  # [B, H, Br, 1]
            Di = chip.load("D", r0, r1, into="D_i", i=i, j=j)  # [B, H, Br, 1]
            Mij = None  # the token-mask tile, loaded for a partial tile only
            if partial[i, j]:
                Mij = chip.load("M", r0, r1, c0, c1, into="M_ij", i=i, j=j)
            chip.compute(i, j, (r1 - r0) * (c1 - c0), matmuls=5, softmax=True)
            if numeric:
                S = scores(Qi, Kj, scale, causal=causal, r0=r0, r1=r1, c0=c0, c1=c1)
                S = _masked(S, Mij)  # -inf where the token mask hides a score
                P = probabilities(S, Li)  # masked scores and rows with L = -inf give P = 0
                dVj = dVj + P.transpose(-1, -2) @ dOi
                dS = P * (dOi @ Vj.transpose(-1, -2) - Di)
            dQi = chip.load("dQ", r0, r1, into="dQ_i", i=i, j=j)  # [B, H, Br, d]
            if numeric:
                dQi = dQi + scale * (dS @ Kj)
                dKj = dKj + scale * (dS.transpose(-1, -2) @ Qi)
            chip.store("dQ", dQi, r0, r1, from_="dQ_i", i=i, j=j)
        chip.store("dK", dKj if numeric else None, c0, c1, from_="dK_j", j=j)
        chip.store("dV", dVj if numeric else None, c0, c1, from_="dV_j", j=j)
        chip.free("K_j", "V_j", "dK_j", "dV_j", "Q_i", "dO_i", "dQ_i", "L_i", "D_i", "S_ij", "dP_ij",
                  *(("M_ij",) if has_m else ()))
        _note_skipped(chip, listed[:, j], lambda i: (i, j))
