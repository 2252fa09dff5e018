"""Reader of ``flashedu.bench.ablate_v2_bwd``'s runs (kind ``"v2_bwd_ablation"``): v2_triton's
backward as two kernels beside FA2's one-kernel layout with dQ by atomic adds, and cuDNN.

* :func:`atomic_dq_table` - per case, backward TFLOP/s of the three (the atomic layout at its
  fastest config) and the atomic layout's ratio to ours; :func:`atomic_dq_text` prints it.
"""
from __future__ import annotations

TWO = "v2_triton (two kernels)"
ATOMIC = "atomic dQ"
CUDNN = "sdpa cuDNN"


def atomic_dq_table(run: dict) -> list[dict]:
    """``D``, ``N``, ``causal``, ``cudnn`` / ``two`` / ``atomic`` TFLOP/s, ``config`` (the atomic
    layout's fastest (BLOCK_M, BLOCK_N, warps, stages)) and ``ratio`` = atomic / two, for every
    case where all three were timed."""
    out = []
    for key in sorted({(r["D"], r["N"], r["causal"]) for r in run["rows"]}):
        here = [r for r in run["rows"] if (r["D"], r["N"], r["causal"]) == key and "tflops" in r]
        by = {r["impl"]: r for r in here if r["impl"] != ATOMIC}
        atomic = max((r for r in here if r["impl"] == ATOMIC), key=lambda r: r["tflops"], default=None)
        if atomic is None or TWO not in by or CUDNN not in by:
            continue
        two = by[TWO]["tflops"]
        out.append(dict(D=key[0], N=key[1], causal=key[2], cudnn=by[CUDNN]["tflops"], two=two,
                        atomic=atomic["tflops"], config=tuple(atomic["config"]),
                        ratio=atomic["tflops"] / two))
    return out


def atomic_dq_text(run: dict) -> str:
    """:func:`atomic_dq_table` as fixed-width text."""
    lines = [f"{'d':>4} {'causal':>6} {'N':>6}  {'cuDNN':>6}  {'two kernels':>11}  "
             f"{'atomic dQ':>9}  {'ratio':>5}   (backward TFLOP/s)"]
    for r in atomic_dq_table(run):
        lines.append(f"{r['D']:4d} {'yes' if r['causal'] else 'no':>6} {r['N']:6d}  {r['cudnn']:6.0f}  "
                     f"{r['two']:11.0f}  {r['atomic']:9.0f}  {r['ratio']:5.2f}")
    return "\n".join(lines)


__all__ = ["atomic_dq_table", "atomic_dq_text"]
