"""Split-KV decoding (flash-decoding), written against the memory model.

At decode time a query has a handful of rows and the K/V cache is long. FA2 launches one program
per (Q block, head): B · H_kv programs for a single query row, far fewer than a GPU's SMs, each
walking the whole cache alone. Split-KV also splits the *keys*::

    pass 1, one program per (Q block, split s):     all in parallel
        load Q_i;  (m, ℓ, o) = identity
        for each K/V tile j of split s:  (m, ℓ, o) = (m, ℓ, o) ⊕ state(Q_i K_jᵀ, V_j)
        store the partial state (m_s, ℓ_s, o_s)                   (fp32, o unnormalised)
    pass 2, one program per Q block:
        load the S partial states;  O_i = finalize(⊕_s state_s);  store O_i

⊕ is chapter 2's merge (:mod:`flashedu.softmax.state`): associative and commutative, so the
splits can be merged in any order. Grouped-query attention (H / H_kv query heads per K/V head)
packs the query rows of a group into one tile, so every K/V tile is loaded once per group:
row r of the packed Q is query position r // G of query head r % G.
"""
from __future__ import annotations

import torch

from flashedu.iomodel.blocks import DEFAULT_SRAM_BYTES, n_tiles, resolve_blocks
from flashedu.iomodel.chip import Chip
from flashedu.iomodel.report import Report, build_report
from flashedu.softmax.state import State, empty_state, finalize, merge, merge_all, state_of_block
from flashedu.ops.split_kv.plan import check_gqa, resolve_splits, split_ranges

DEFAULT_SMS = 132  # an H100's, for the split heuristic when no GPU is asked about


def _pack(q: torch.Tensor, group: int) -> torch.Tensor:
    """[B, H, N, D] -> [B, H_kv, N·G, D], row i·G + g holding query i of head h_kv·G + g."""
    B, H, N, D = q.shape
    return q.reshape(B, H // group, group, N, D).transpose(2, 3).reshape(B, H // group, N * group, D)


def _unpack(o: torch.Tensor, group: int) -> torch.Tensor:
    """Inverse of :func:`_pack`."""
    B, H_kv, R, D = o.shape
    return o.reshape(B, H_kv, R // group, group, D).transpose(2, 3).reshape(B, H_kv * group, R // group, D)


def _mask(s, r0, r1, c0, c1, group, offset):
    """Causal mask for packed rows r0..r1 against keys c0..c1: key c is visible to query row
    r // G when c <= r // G + offset (offset = N_k - N_q aligns the last query with the last key)."""
    rows = torch.arange(r0, r1, device=s.device)[:, None] // group + offset
    cols = torch.arange(c0, c1, device=s.device)[None, :]
    return s.masked_fill(cols > rows, float("-inf"))


def split_kv_forward(chip: Chip, *, R: int, N_k: int, d: int, group: int, scale: float, causal: bool,
                     block_r: int, block_c: int, num_splits: int) -> None:
    """Both passes on ``chip``: reads packed Q [R, d], K, V [N_k, d]; writes the partial states
    and O [R, d]. R = N_q · group."""
    S = num_splits
    ranges = split_ranges(N_k, S, block_c)
    offset = N_k - R // group
    chip.tensor("O_split", S * R, d, stat=True)  # fp32 partials, split s at rows s·R ...
    chip.tensor("m_split", S * R, 1, stat=True)
    chip.tensor("l_split", S * R, 1, stat=True)
    chip.tensor("O", R, d)
    numeric = chip.numeric
    Tr = n_tiles(R, block_r)
    chip.phase("split")
    for s, (lo, hi) in enumerate(ranges):
        for i in range(Tr):
            chip.program(s * Tr + i)
            r0, r1 = i * block_r, min(R, (i + 1) * block_r)
            for name, rows, cols, acc in (("Q_i", block_r, d, False), ("K_j", block_c, d, False),
                                          ("V_j", block_c, d, False), ("O_i", block_r, d, True),
                                          ("S_ij", block_r, block_c, True), ("m_i", block_r, 1, True),
                                          ("l_i", block_r, 1, True)):
                chip.buffer(name, rows, cols, acc=acc)
            Qi = chip.load("Q", r0, r1, into="Q_i", i=i)  # [B, H_kv, Br, d]
            st = empty_state(Qi.shape[:3], d, dtype=Qi.dtype, device=Qi.device) if numeric else None
            for j, c0 in enumerate(range(lo, hi, block_c), start=lo // block_c):
                c1 = min(hi, c0 + block_c)
                if causal and c0 > (r1 - 1) // group + offset:
                    chip.skip(i, j)
                    continue
                Kj = chip.load("K", c0, c1, into="K_j", i=i, j=j)  # [B, H_kv, Bc, d]
                Vj = chip.load("V", c0, c1, into="V_j", i=i, j=j)  # [B, H_kv, Bc, d]
                chip.compute(i, j, (r1 - r0) * (c1 - c0), matmuls=2, softmax=True)
                if numeric:
                    sc = (Qi @ Kj.transpose(-1, -2)) * scale  # [B, H_kv, Br, Bc]
                    if causal:
                        sc = _mask(sc, r0, r1, c0, c1, group, offset)
                    st = merge(st, state_of_block(sc, Vj))
            p0 = s * R
            chip.store("O_split", st.o if numeric else None, p0 + r0, p0 + r1, from_="O_i", i=i)
            chip.store("m_split", st.m if numeric else None, p0 + r0, p0 + r1, from_="m_i", i=i)
            chip.store("l_split", st.l if numeric else None, p0 + r0, p0 + r1, from_="l_i", i=i)
            chip.free("Q_i", "K_j", "V_j", "O_i", "S_ij", "m_i", "l_i")
    chip.phase("merge")
    for i in range(Tr):
        chip.program(i)
        r0, r1 = i * block_r, min(R, (i + 1) * block_r)
        for name, cols in (("O_s", d), ("m_s", 1), ("l_s", 1), ("O_i", d), ("m_i", 1), ("l_i", 1)):
            chip.buffer(name, block_r, cols, acc=True)
        states = []
        for s in range(S):
            p0 = s * R
            chip.compute(i, s, 0, matmuls=0, softmax=False)
            loaded = [chip.load(n, p0 + r0, p0 + r1, into=b, i=i, j=s)
                      for n, b in (("m_split", "m_s"), ("l_split", "l_s"), ("O_split", "O_s"))]
            if numeric:
                states.append(State(*loaded))
        out = finalize(merge_all(states)) if numeric else None
        chip.store("O", out, r0, r1, from_="O_i", i=i)
        chip.free("O_s", "m_s", "l_s", "O_i", "m_i", "l_i")


def split_kv_attention(q, k, v, *, causal: bool = False, scale: float | None = None,
                       num_splits: int | None = None, block_r: int | None = None,
                       block_c: int | None = None, sram_bytes: int | None = None,
                       sms: int = DEFAULT_SMS, return_report: bool = False):
    """Split-KV attention on q ``[B, H, N_q, D]`` and k, v ``[B, H_kv, N_k, D]`` (H a multiple
    of H_kv), pass by pass through the memory model.

    ``num_splits`` defaults to FA2's heuristic for a GPU with ``sms`` SMs; splits fall on whole
    tiles of ``block_c`` keys (see :func:`~flashedu.ops.split_kv.plan.split_ranges`). Causal
    needs N_q == N_k. Returns o like q, or ``(o, report)`` with ``return_report=True``.
    """
    scale, group = check_gqa(q, k, v, causal=causal, scale=scale, name="split_kv_reference")
    B, H, N_q, D = q.shape
    N_k = k.shape[2]
    sram_bytes = DEFAULT_SRAM_BYTES if sram_bytes is None else sram_bytes
    br, bc = resolve_blocks("v2", d=D, sram_bytes=sram_bytes, dtype=q.dtype, block_r=block_r, block_c=block_c)
    R = N_q * group
    S = resolve_splits(num_splits, programs=B * k.shape[1] * n_tiles(R, br), n_k=N_k, block_n=bc, sms=sms)
    chip = Chip(sram_bytes=sram_bytes, dtype=q.dtype, numeric=True, batch=B, heads=k.shape[1], device=q.device)
    for name, t in (("Q", _pack(q, group)), ("K", k), ("V", v)):
        chip.tensor(name, t.shape[2], D, data=t.to(chip.work_dtype))
    split_kv_forward(chip, R=R, N_k=N_k, d=D, group=group, scale=scale, causal=causal,
                     block_r=br, block_c=bc, num_splits=S)
    o = _unpack(chip.data("O"), group).to(q.dtype)
    if not return_report:
        return o
    return o, build_report(chip, algorithm="split_kv", N=R, N_k=N_k, d=D, causal=causal, block_r=br, block_c=bc)


def simulate_split_kv(*, N_q: int = 1, N_k: int, d: int, heads: int, kv_heads: int | None = None,
                      batch: int = 1, num_splits: int | None = None, causal: bool = False,
                      dtype: torch.dtype = torch.float16, block_r: int | None = None,
                      block_c: int | None = None, sram_bytes: int = DEFAULT_SRAM_BYTES,
                      sms: int = DEFAULT_SMS) -> Report:
    """Shape-only run of split-KV: what it reads and writes, without the arithmetic. The
    report's ``N`` is the packed row count N_q · H / H_kv of one K/V head."""
    kv_heads = heads if kv_heads is None else kv_heads
    if heads % kv_heads:
        raise ValueError(f"heads ({heads}) must be a multiple of kv_heads ({kv_heads})")
    group = heads // kv_heads
    R = N_q * group
    br, bc = resolve_blocks("v2", d=d, sram_bytes=sram_bytes, dtype=dtype, block_r=block_r, block_c=block_c)
    S = resolve_splits(num_splits, programs=batch * kv_heads * n_tiles(R, br), n_k=N_k, block_n=bc, sms=sms)
    chip = Chip(sram_bytes=sram_bytes, dtype=dtype, numeric=False, batch=batch, heads=kv_heads)
    for name, rows in (("Q", R), ("K", N_k), ("V", N_k)):
        chip.tensor(name, rows, d)
    split_kv_forward(chip, R=R, N_k=N_k, d=d, group=group, scale=1.0, causal=causal,
                     block_r=br, block_c=bc, num_splits=S)
    return build_report(chip, algorithm="split_kv", N=R, N_k=N_k, d=d, causal=causal, block_r=br, block_c=bc)
