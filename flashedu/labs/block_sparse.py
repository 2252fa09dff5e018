"""Lab 5's grader: block-sparse attention (Dao et al., 2022, Algorithm 5) walking a CSR list.

``fn(q, k, v, csr, *, block_r, block_c, causal, scale) -> o`` with q, k, v [N, D] fp64 (one
head) and ``csr`` the repository's :class:`~flashedu.ops.block_sparse.masks.csr.CSR` of the
listed tiles: Q tile i visits the K/V tiles ``csr.index[csr.ptr[i] : csr.ptr[i+1]]`` and no
other; causal: the diagonal tiles also hide keys after the query. A Q tile with an empty list
has no key: its rows are 0. Returns o [N, D].
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from flashedu.labs.attention_evidence import Attempt, diagnose
from flashedu.labs.cases import raised, wrong_shape
from flashedu.labs.evidence import (attention, close, keep_causal, max_error, poisoned_empty, spans,
                                    unwritten)
from flashedu.labs.report import CaseResult
from flashedu.ops.block_sparse.masks.csr import CSR, to_csr
from flashedu.ops.block_sparse.masks.mask import causal_blocks, expand

NAME = "block_sparse"
TOL = 1e-9


@dataclass(frozen=True)
class Case:
    name: str
    q: torch.Tensor  # [N, D] fp64
    k: torch.Tensor
    v: torch.Tensor
    blocks: torch.Tensor  # [Tr, Tc] bool, the tiles listed (causal ones already dropped)
    block_r: int
    block_c: int
    causal: bool
    huge: bool = False

    @property
    def csr(self) -> CSR:
        return to_csr(self.blocks)

    def keep(self, *, blocks: torch.Tensor | None = None, causal: bool | None = None) -> torch.Tensor:
        """[N, N] visible keys: the listed tiles, and key ≤ query when causal."""
        N = self.q.shape[0]
        b = self.blocks if blocks is None else blocks
        keep = expand(b, N, N, self.block_r, self.block_c)[0]
        return keep & keep_causal(N, N) if (self.causal if causal is None else causal) else keep


def cases(g: torch.Generator) -> list[Case]:
    def case(name, N, D, br, bc, causal, density=0.5, empty=(), spread=1.0):
        q, k, v = (torch.randn(N, D, generator=g, dtype=torch.float64) * spread for _ in range(3))
        Tr, Tc = -(-N // br), -(-N // bc)
        blocks = torch.rand(Tr, Tc, generator=g) < density
        blocks[torch.arange(Tr), torch.randint(0, Tc, (Tr,), generator=g)] = True  # most rows: ≥ 1 tile
        if causal:
            blocks &= causal_blocks(N, N, br, bc)
            blocks[:, 0] |= True  # the first key tile is always allowed under causal
        for i in empty:
            blocks[i] = False
        return Case(name, q, k, v, blocks, br, bc, causal, huge=spread > 10)

    return [
        case("N = 1", 1, 16, 16, 16, False),
        case("N = 7, causal", 7, 32, 4, 2, True),
        case("an empty row of tiles", 64, 32, 16, 16, False, empty=(1,)),
        case("N = 129", 129, 64, 32, 16, False, empty=(2,)),
        case("N = 129, causal", 129, 16, 16, 32, True, density=0.7, empty=(3,)),
        case("d = 128, causal", 100, 128, 32, 32, True, density=0.8),
        case("logits ±1e4", 48, 16, 16, 16, False, spread=50.0, density=0.6),
        case("N = 1000", 1000, 16, 64, 64, False, density=0.3, empty=(5,)),
    ]


def _diagnose(got: torch.Tensor, want: torch.Tensor, case: Case, scale: float, never) -> str:
    N = case.q.shape[0]
    q, k, v = (t[None, None] for t in (case.q, case.k, case.v))
    if not torch.isnan(got).any():
        if close(got, attention(case.q, case.k, case.v, scale=scale,
                                keep=keep_causal(N, N) if case.causal else None), 1e-7):
            return ("the output is dense attention: every K/V tile is visited; walk only the tiles "
                    "listed for row i, csr.index[csr.ptr[i] : csr.ptr[i+1]]")
        csr = case.csr
        fewer = case.blocks.clone()
        for i in range(case.blocks.shape[0]):
            row = csr.row(0, i)
            if row:
                fewer[i, row[-1]] = False
        if close(got, attention(case.q, case.k, case.v, scale=scale, keep=case.keep(blocks=fewer)), 1e-7):
            return ("each row's last listed tile is left out: the entries of row i are ptr[i] up to "
                    "and including ptr[i+1] − 1 (range(ptr[i], ptr[i+1]))")
    a = Attempt(q, k, v, scale, case.causal, case.keep(), (case.block_r,), (case.block_c,), TOL,
                huge=case.huge, block_keep=case.keep(causal=False))
    got = got.to(torch.float64)
    why = diagnose(got[None, None], want[None, None], a, None if never is None else never[None, None])
    empty = [i for i in range(case.blocks.shape[0]) if not case.blocks[i].any()]
    if "see no key" in why and empty:
        why = f"Q tiles {spans(empty)} have an empty list (ptr[i] = ptr[i+1]); their " + why
    return why


def run(fn, case: Case) -> CaseResult:
    N, D = case.q.shape
    meta = dict(name=case.name, shape=f"[{N}, {D}] Br={case.block_r} Bc={case.block_c} "
                f"{int(case.blocks.sum())}/{case.blocks.numel()} tiles", causal=case.causal, dtype="float64")
    scale = 1 / math.sqrt(D)
    try:
        with poisoned_empty():  # an output row the reader's code never writes stays NaN
            got = fn(case.q.clone(), case.k.clone(), case.v.clone(), case.csr, block_r=case.block_r,
                     block_c=case.block_c, causal=case.causal, scale=scale)
    except Exception as exc:  # noqa: BLE001  (the reader's error is this case's verdict)
        return raised(exc, **meta)
    bad = wrong_shape(got, case.q.shape, **meta)
    if bad:
        return bad
    got = got.detach().to("cpu")
    want = attention(case.q, case.k, case.v, scale=scale, keep=case.keep())
    err = max_error(got, want)
    if err <= TOL:
        return CaseResult(**meta, max_error=err, passed=True)
    never = unwritten(got) if got.dtype == torch.float64 else None
    return CaseResult(**meta, max_error=err, passed=False, diagnosis=_diagnose(got, want, case, scale, never))
