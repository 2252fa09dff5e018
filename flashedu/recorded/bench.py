"""Reader of the benchmark harness's runs (kind ``"bench"``, ``python -m flashedu.bench``) and of
chapter 4's older tuning run (kind ``"v2_tuning"``, ``python -m flashedu.bench.tune_v2``).

Both come back in the harness's shape (:func:`flashedu.bench.schema.normalize`), so one set of
helpers reads either: :func:`timing_rows` for the rows that were timed, :func:`ratio` for one
kernel's speed over another's in one case. The figures are in :mod:`flashedu.viz.tflops` and
:mod:`flashedu.viz.speedups`.
"""
from __future__ import annotations

from flashedu import recorded
from flashedu.bench.schema import latest as _latest_of, normalize


def latest() -> dict:
    """The newest harness run recorded (by its provenance date), in the harness's shape."""
    return _latest_of(recorded.load("bench"))


def v2_tuning() -> dict | None:
    """Chapter 4's tuning run (v2 and v1 beside torch's SDPA backends, fp16), in the harness's
    shape; None when none is recorded."""
    run = recorded.latest("v2_tuning")
    return None if run is None else normalize(run)


def timing_rows(recorded: dict, *, dtype: str = "float16") -> list[dict]:
    """The timing rows (one per kernel, D, mask, N) of one dtype whose forward pass was timed;
    bookkeeping rows and rows that failed or were skipped are left out (the report lists them)."""
    return [r for r in normalize(recorded)["times"] if r.get("dtype", "float16") == dtype
            and r.get("fwd_status", "ok") == "ok" and r.get("fwd_ms", 0) > 0]


def ratio(recorded: dict, *, impl: str, peer: str, pass_: str, D: int, causal: bool, N: int,
          dtype: str = "float16") -> float:
    """Speed of ``impl`` over ``peer`` (time ratio) in one recorded case."""
    rows = {(r["impl"], r["D"], r["causal"], r["N"]): r for r in timing_rows(recorded, dtype=dtype)}
    a, b = rows[(impl, D, causal, N)], rows[(peer, D, causal, N)]
    return b[f"{pass_}_ms"] / a[f"{pass_}_ms"]



def _ablation_rows(recorded: dict, name: str) -> list[dict]:
    return normalize(recorded).get("ablations", {}).get(name, {}).get("rows", [])


def stage_ladder(recorded: dict, *, D: int, N: int, causal: bool) -> dict[int, float]:
    """The ``num-stages`` ablation: forward TFLOP/s per num_stages at one shape (timed rows only)."""
    return {r["num_stages"]: r["fwd_tflops"] for r in _ablation_rows(recorded, "num-stages")
            if (r["D"], r["N"], r["causal"]) == (D, N, causal)
            and r.get("fwd_status", "ok") == "ok" and "fwd_tflops" in r}


def causal_skip(recorded: dict, *, D: int) -> dict[str, dict[int, float]]:
    """The ``causal-skip`` ablation: per kernel, N -> unmasked time over causal time (2 = every
    masked tile skipped)."""
    out: dict[str, dict[int, float]] = {}
    for r in _ablation_rows(recorded, "causal-skip"):
        if r["D"] == D and "full_over_causal" in r:
            out.setdefault(r["impl"], {})[r["N"]] = r["full_over_causal"]
    return out
