"""Lab 2's grader: FlashAttention's Algorithm 1 (Dao et al., 2022) against the simulated chip.

``fn(chip, *, N, d, scale, causal, block_r, block_c)`` gets a :class:`~flashedu.iomodel.Chip`
whose HBM holds Q, K, V ([B, H, N, d], fp64) and O [N, d], ℓ [N, 1], m [N, 1] filled with NaN
(the grader creates them, so an element never written shows). It must initialise O, ℓ, m in HBM
(line 2), reserve its SRAM buffers, and run the loops: K/V tiles outer, Q tiles inner, O_i, ℓ_i,
m_i read and written back every inner step; causal: skip the tiles above the diagonal.

Graded on O against fp64 attention and on the HBM traffic the chip recorded, tensor by tensor,
against :func:`flashedu.iomodel.formula` ("v1", exact counts).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from flashedu.iomodel import DEFAULT_SRAM_BYTES, Chip, formula
from flashedu.iomodel.blocks import fully_masked, n_tiles
from flashedu.labs.attention_evidence import Attempt, diagnose
from flashedu.labs.cases import raised
from flashedu.labs.evidence import attention, keep_causal, max_error, poison, unwritten
from flashedu.labs.report import CaseResult

NAME = "v1_reference"
TOL = 1e-9
MESSAGES = {"no divide": "O is left an unnormalised sum Σ e^(s − m) v: Algorithm 1 keeps O_i an "
                         "average, divided by ℓ_new in every inner step (line 12)"}


@dataclass(frozen=True)
class Case:
    name: str
    q: torch.Tensor  # [B, H, N, d] fp64
    k: torch.Tensor
    v: torch.Tensor
    causal: bool
    block_r: int
    block_c: int
    huge: bool = False


def cases(g: torch.Generator) -> list[Case]:
    def qkv(B, H, N, d, spread=1.0):
        return [torch.randn(B, H, N, d, generator=g, dtype=torch.float64) * spread for _ in range(3)]

    big = qkv(1, 1, 40, 16)
    big[0] *= 50.0  # logits near ±1e4: scale·q·k has a spread of 50 · 50 · 4 / 4 = 2500
    big[1] *= 50.0
    return [
        Case("N = 1", *qkv(1, 1, 1, 16), False, 16, 32),
        Case("N = 7, causal", *qkv(1, 2, 7, 32), True, 4, 8),
        Case("N a multiple", *qkv(1, 1, 64, 32), False, 16, 16),
        Case("N = 129", *qkv(2, 1, 129, 64), False, 32, 16),
        Case("N = 129, causal", *qkv(1, 1, 129, 16), True, 16, 32),
        Case("d = 128, causal", *qkv(1, 1, 100, 128), True, 32, 32),
        Case("logits ±1e4", *big, False, 8, 16, huge=True),
        Case("N = 1000", *qkv(1, 1, 1000, 16), False, 64, 128),
    ]


def _shape(case: Case) -> str:
    B, H, N, d = case.q.shape
    return f"[{B}, {H}, {N}, {d}] Br={case.block_r} Bc={case.block_c}"


def _computed_tiles(N: int, br: int, bc: int, causal: bool):
    for j in range(n_tiles(N, bc)):
        for i in range(n_tiles(N, br)):
            if not (causal and fully_masked(i * br, min(N, (i + 1) * br), j * bc)):
                yield i, j


def _traffic(chip: Chip, case: Case) -> tuple[str, str]:
    """(the table's traffic cell, a diagnosis or "") from the chip's per-tensor counts."""
    B, H, N, d = case.q.shape
    br, bc, bh = case.block_r, case.block_c, B * H
    f = formula("v1", N=N, d=d, block_r=br, block_c=bc, causal=case.causal, batch=B, heads=H)
    want = f.exact.per_tensor
    got = {n: (t.read_elements, t.write_elements) for n, t in chip.hbm.tensors.items()}
    ratios = {n: (got[n][0] / want[n][0] if want[n][0] else 1.0) for n in want}
    worst = max(ratios, key=lambda n: abs(math.log(max(ratios[n], 1e-9))))
    reads = sum(r for r, _ in got.values()) / f.exact.reads
    writes = sum(w for _, w in got.values()) / f.exact.writes
    cell = f"reads {reads:.2f}×, writes {writes:.2f}×"
    if abs(ratios[worst] - 1) > 1e-12:
        cell += f" ({worst} reads {ratios[worst]:.2f}×)"
    for n in got:
        if n not in want:
            return cell, f"tensor {n} is not in Algorithm 1's traffic: it moves {got[n]} elements (reads, writes)"
    steps_rows = sum(min(N, (i + 1) * br) - i * br for i, _ in _computed_tiles(N, br, bc, case.causal))
    per_ij_cols = sum(min(N, (j + 1) * bc) - j * bc for _, j in _computed_tiles(N, br, bc, case.causal))
    if case.causal:
        full = formula("v1", N=N, d=d, block_r=br, block_c=bc, causal=False, batch=B, heads=H).exact.per_tensor
        if got["Q"] == full["Q"] and full["Q"] != want["Q"]:
            return cell, ("Q, O, ℓ, m move as many elements as without the causal mask: the tiles above "
                          "the diagonal are not skipped (skip tile (i, j) when its first key j·Bc is "
                          "after its last query min(N, (i+1)·Br) − 1)")
    for n in ("K", "V"):
        r, w = got[n][0], want[n][0]
        if r != w:
            if r == per_ij_cols * d * bh:
                return cell, (f"{n}: reads {r / w:.1f}× the formula ({r:,} elements, not {w:,}): {n}_j is "
                              "loaded inside the i loop, once per (i, j) tile; load it once per j, before "
                              "the i loop (Algorithm 1, line 6)")
            return cell, f"{n}: reads {r:,} elements, the formula {w:,} ({r / w:.2f}×): load each {n}_j once"
    for n, unit in (("Q", d), ("O", d), ("l", 1), ("m", 1)):
        r, w = got[n][0], want[n][0]
        name = {"l": "ℓ"}.get(n, n)
        if r != w:
            k = r / w
            if k == int(k) and k >= 2:
                return cell, (f"{name}: reads {k:.1f}× the formula ({r:,} elements, not {w:,}): {name}_i is "
                              f"loaded {int(k)} times in each inner (i, j) step; once is enough "
                              "(Algorithm 1, line 8)")
            return cell, (f"{name}: reads {k:.2f}× the formula ({r:,} elements, not {w:,}); Algorithm 1 "
                          f"loads {name}_i once in every computed (i, j) step ({steps_rows} rows a head)")
    for n, unit in (("O", d), ("l", 1), ("m", 1)):
        r, w = got[n][1], want[n][1]
        name = {"l": "ℓ"}.get(n, n)
        if r != w:
            if r == w - N * unit * bh:
                return cell, (f"{name}: writes {w - r:,} elements fewer than the formula: the initialisation "
                              f"{name} = {'−inf' if n == 'm' else '0'} in HBM (Algorithm 1, line 2) is missing")
            return cell, (f"{name}: writes {r / w:.2f}× the formula ({r:,} elements, not {w:,}); Algorithm 1 "
                          f"stores {name}_i once per computed (i, j) step (line 13) and once at line 2")
    return cell, ""


def run(fn, case: Case) -> CaseResult:
    B, H, N, d = case.q.shape
    meta = dict(name=case.name, shape=_shape(case), causal=case.causal, dtype="float64")
    scale = 1 / math.sqrt(d)
    chip = Chip.from_qkv(case.q, case.k, case.v, sram_bytes=DEFAULT_SRAM_BYTES)
    chip.tensor("O", N, d)  # NaN until written
    chip.tensor("l", N, 1, stat=True)
    chip.tensor("m", N, 1, stat=True)
    for name in ("O", "l", "m"):  # NaN with the "never written" payload
        chip.data(name).copy_(poison(chip.data(name).shape, dtype=chip.data(name).dtype))
    try:
        fn(chip, N=N, d=d, scale=scale, causal=case.causal, block_r=case.block_r, block_c=case.block_c)
    except Exception as exc:  # noqa: BLE001  (the reader's error is this case's verdict)
        return raised(exc, **meta)
    never = unwritten(chip.data("O"))
    got = chip.data("O").to(torch.float64)
    keep = keep_causal(N, N) if case.causal else None
    want = attention(case.q, case.k, case.v, scale=scale, keep=keep)
    err = max_error(got, want)
    cell, traffic_why = _traffic(chip, case)
    if err <= TOL and not traffic_why:
        return CaseResult(**meta, max_error=err, passed=True, traffic=cell)
    if err > TOL:
        attempt = Attempt(case.q, case.k, case.v, scale, case.causal, keep, (case.block_r,),
                          (case.block_c,), TOL, huge=case.huge, messages=MESSAGES)
        why = diagnose(got, want, attempt, never)
        if traffic_why and "NaN" in why and "line 2" in traffic_why:
            why = (traffic_why + "; so the first inner step reads the NaN the grader filled HBM with")
        elif traffic_why:
            why += f". Traffic: {traffic_why}"
    else:
        why = f"O is right, but the traffic is not: {traffic_why}"
    return CaseResult(**meta, max_error=err, passed=False, diagnosis=why, traffic=cell)
