"""Reader of ``flashedu.bench.ablate_v2_bwd``'s runs (kind ``"v2_bwd_ablation"``): v2_triton's
backward as two kernels beside FA2's one-kernel layout with dQ by atomic adds (in Triton, and in
Gluon on Hopper's asynchronous wgmma where the run has it), and cuDNN.

* :func:`atomic_dq_table` - per case, backward TFLOP/s of each (the one-kernel layouts at their
  fastest configs) and their ratios to ours; :func:`atomic_dq_text` prints it.
* :func:`gluon_text` - the Gluon layout beside the two kernels and cuDNN (chapter 6).
* :func:`overlap_effect` - what the removed ``OVERLAP`` build of the Gluon layout did.
"""
from __future__ import annotations

TWO = "v2_triton (two kernels)"
ATOMIC = "atomic dQ"
GLUON = "gluon atomic dQ"
CUDNN = "sdpa cuDNN"


def atomic_dq_table(run: dict) -> list[dict]:
    """``D``, ``N``, ``causal``, ``cudnn`` / ``two`` / ``atomic`` TFLOP/s, ``config`` (the atomic
    layout's fastest (BLOCK_M, BLOCK_N, warps, stages)) and ``ratio`` = atomic / two, for every
    case where all three were timed; where the run timed the Gluon layout too, ``gluon``,
    ``gluon_config`` (its fastest ring depth, ``(stages,)``) and ``gluon_ratio`` = gluon / two.
    Rows of the removed ``OVERLAP`` build (4a22b8d's run) are left out: :func:`overlap_effect`."""
    out = []
    for key in sorted({(r["D"], r["N"], r["causal"]) for r in run["rows"]}):
        here = [r for r in run["rows"] if (r["D"], r["N"], r["causal"]) == key and "tflops" in r]
        by = {r["impl"]: r for r in here if r["impl"] not in (ATOMIC, GLUON)}
        atomic, gluon = (max((r for r in here if r["impl"] == impl and not _overlap(r)),
                             key=lambda r: r["tflops"], default=None) for impl in (ATOMIC, GLUON))
        if atomic is None or TWO not in by or CUDNN not in by:
            continue
        two = by[TWO]["tflops"]
        row = dict(D=key[0], N=key[1], causal=key[2], cudnn=by[CUDNN]["tflops"], two=two,
                   atomic=atomic["tflops"], config=tuple(atomic["config"]),
                   ratio=atomic["tflops"] / two)
        if gluon is not None:
            row.update(gluon=gluon["tflops"], gluon_config=tuple(gluon["config"]),
                       gluon_ratio=gluon["tflops"] / two)
        out.append(row)
    return out


def _overlap(row: dict) -> bool:
    """A Gluon row of the removed OVERLAP build (config (stages, True))."""
    return row["impl"] == GLUON and len(row["config"]) > 1 and bool(row["config"][1])


def overlap_effect(run: dict) -> list[float]:
    """Per case where the run timed the Gluon backward with and without ``OVERLAP`` (the next
    tile's Sᵀ and dPᵀ GEMMs issued before this tile's dQ adds; 4a22b8d): the fastest overlapped
    build's speed over the fastest serial one's."""
    out = []
    for key in sorted({(r["D"], r["N"], r["causal"]) for r in run["rows"]}):
        here = [r for r in run["rows"] if r["impl"] == GLUON and "tflops" in r
                and (r["D"], r["N"], r["causal"]) == key]
        over = [r["tflops"] for r in here if _overlap(r)]
        serial = [r["tflops"] for r in here if not _overlap(r)]
        if over and serial:
            out.append(max(over) / max(serial))
    return out


def atomic_dq_text(run: dict) -> str:
    """:func:`atomic_dq_table` as fixed-width text (a Gluon column where the run has one)."""
    rows = atomic_dq_table(run)
    gluon = any("gluon" in r for r in rows)
    head = (f"{'d':>4} {'causal':>6} {'N':>6}  {'cuDNN':>6}  {'two kernels':>11}  "
            f"{'atomic dQ':>9}  {'ratio':>5}")
    lines = ["backward TFLOP/s; ratio: to the two kernels",
             head + (f"  {'Gluon':>6}  {'ratio':>5}" if gluon else "")]
    for r in rows:
        line = (f"{r['D']:4d} {'yes' if r['causal'] else 'no':>6} {r['N']:6d}  {r['cudnn']:6.0f}  "
                f"{r['two']:11.0f}  {r['atomic']:9.0f}  {r['ratio']:5.2f}")
        if gluon:
            line += (f"  {r['gluon']:6.0f}  {r['gluon_ratio']:5.2f}" if "gluon" in r
                     else f"  {'-':>6}  {'-':>5}")
        lines.append(line)
    return "\n".join(lines)


def gluon_text(run: dict) -> str:
    """Per case with a Gluon row: cuDNN, the two kernels, the Gluon backward at its fastest
    config and its speed over the two kernels' and over cuDNN's."""
    lines = ["backward TFLOP/s",
             f"{'d':>4} {'causal':>6} {'N':>6}  {'cuDNN':>6}  {'two kernels':>11}  {'Gluon':>6}"
             f"  {'/ two':>5}  {'/ cuDNN':>7}"]
    for r in atomic_dq_table(run):
        if "gluon" in r:
            lines.append(f"{r['D']:4d} {'yes' if r['causal'] else 'no':>6} {r['N']:6d}  "
                         f"{r['cudnn']:6.0f}  {r['two']:11.0f}  {r['gluon']:6.0f}  "
                         f"{r['gluon_ratio']:5.2f}  {r['gluon'] / r['cudnn']:7.2f}")
    return "\n".join(lines)


__all__ = ["atomic_dq_table", "atomic_dq_text", "gluon_text", "overlap_effect"]
