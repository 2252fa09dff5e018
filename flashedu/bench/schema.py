"""The results file of ``python -m flashedu.bench``: what it holds, a check, merging split runs,
and reading older files (``flashedu/bench/tune_v2.py``'s) in the same shape.

    {"schema": "flashedu.bench/1",
     "info": provenance.collect() + describe, arch,        # where the numbers came from
     "setting": "...", "sweep": {...},                    # what was asked for
     "ceilings": {"matmul_bf16_tflops", "copy_tbs", ...}, # measured in the same run
     "times": [row, ...],                                 # see flashedu.bench.harness
     "ablations": {name: {"description", "rows"}}}

``times`` rows are a superset of what :mod:`flashedu.viz.tflops` reads (impl, D, causal, N, B, H,
``<pass>_ms``, ``<pass>_tflops``).
"""
from __future__ import annotations

import re

from flashedu.bench.cases import DTYPES
from flashedu.bench.flops import PASSES

SCHEMA = "flashedu.bench/1"
STATUS = re.compile(r"^(ok|skipped: .+|error: .*)$")
_KIND = {"sdpa_": "sdpa", "standard_torch": "torch"}


def gpu_slug(info: dict) -> str:
    """"NVIDIA H200" -> "nvidia-h200" (the default file name)."""
    return re.sub(r"[^a-z0-9]+", "-", (info.get("gpu") or "cpu").lower()).strip("-")


def _check_row(i: int, r) -> None:
    where = f"times[{i}]"
    if not isinstance(r, dict):
        raise ValueError(f"{where} must be a dict, got {type(r).__name__}")
    if not isinstance(r.get("impl"), str):
        raise ValueError(f"{where}.impl must be a str, got {r.get('impl')!r}")
    if r.get("dtype") not in DTYPES:
        raise ValueError(f"{where}.dtype must be one of {tuple(DTYPES)}, got {r.get('dtype')!r}")
    for key in ("D", "N", "B", "H"):
        x = r.get(key)
        if isinstance(x, bool) or not isinstance(x, int) or x < 1:
            raise ValueError(f"{where}.{key} must be a positive int, got {x!r}")
    if not isinstance(r.get("causal"), bool):
        raise ValueError(f"{where}.causal must be a bool, got {r.get('causal')!r}")
    for p in PASSES:
        status = r.get(f"{p}_status")
        if status is None:
            continue
        if not isinstance(status, str) or not STATUS.match(status):
            raise ValueError(f"{where}.{p}_status must be 'ok', 'skipped: ...' or 'error: ...', got {status!r}")
        if status == "ok":
            ms, tf = r.get(f"{p}_ms"), r.get(f"{p}_tflops")
            if not isinstance(ms, (int, float)) or not ms > 0:
                raise ValueError(f"{where}.{p}_ms must be a positive number when {p}_status is ok, got {ms!r}")
            if not isinstance(tf, (int, float)) or tf < 0:
                raise ValueError(f"{where}.{p}_tflops must be a number >= 0, got {tf!r}")
    for key in ("err", "grad_err"):
        if key in r and not isinstance(r[key], (int, float)):
            raise ValueError(f"{where}.{key} must be a number, got {r[key]!r}")


def validate(result) -> dict:
    """Raise ValueError naming the first field that is wrong; return ``result`` when it is right."""
    if not isinstance(result, dict):
        raise TypeError(f"result must be a dict, got {type(result).__name__}")
    if result.get("schema") != SCHEMA:
        raise ValueError(f"result.schema must be {SCHEMA!r}, got {result.get('schema')!r}")
    info = result.get("info")
    if not isinstance(info, dict):
        raise ValueError("result.info must be a dict (provenance.collect())")
    for key in ("date", "torch", "triton", "runtime"):
        if key not in info:
            raise ValueError(f"result.info.{key} is missing (provenance.collect() writes it)")
    for key, kind in (("setting", str), ("ceilings", dict), ("times", list), ("ablations", dict)):
        if not isinstance(result.get(key), kind):
            raise ValueError(f"result.{key} must be a {kind.__name__}, got {type(result.get(key)).__name__}")
    for i, r in enumerate(result["times"]):
        _check_row(i, r)
    for name, ab in result["ablations"].items():
        if not isinstance(ab, dict) or not isinstance(ab.get("rows"), list) or "description" not in ab:
            raise ValueError(f"result.ablations[{name!r}] must be a dict with 'description' and 'rows'")
    return result


def normalize(recorded: dict) -> dict:
    """Any recorded bench file in the harness's shape. Files without ``schema`` come from
    ``flashedu/bench/tune_v2.py``: fp16 only, no statuses, ceilings or ablations; their rows are taken as
    they are, with the dtype and statuses they imply."""
    if recorded.get("schema") == SCHEMA:
        # Statuses are one line; early files kept the CUDA error's second line ("Search for ...").
        times = [dict(r, **{f"{p}_status": (r[f"{p}_status"].splitlines() or [""])[0]
                            for p in PASSES if isinstance(r.get(f"{p}_status"), str)})
                 for r in recorded.get("times", [])]
        return dict(recorded, times=times)
    rows = []
    for r in recorded.get("times", []):
        if not isinstance(r.get("impl"), str) or "N" not in r or not any(f"{p}_ms" in r for p in PASSES):
            continue  # bookkeeping rows (autotune picks)
        kind = next((k for prefix, k in _KIND.items() if r["impl"].startswith(prefix)), "triton")
        row = dict(kind=kind, dtype="float16", **r)
        for p in PASSES:
            if f"{p}_ms" in r:
                row[f"{p}_status"] = "ok"
        rows.append(row)
    return dict(schema=SCHEMA, info=recorded["info"], setting=recorded["info"].get("setting", ""),
                sweep={}, ceilings={}, times=rows, ablations={}, source="flashedu/bench/tune_v2.py")


def row_key(r: dict) -> tuple:
    return (r["impl"], r["dtype"], r["D"], r["causal"], r["N"])


def merge(*results: dict) -> dict:
    """One file from several parts of a split run on one GPU: rows of the same (impl, dtype, D,
    mask, N) are united field by field (a forward part and a backward part make one row)."""
    if not results:
        raise ValueError("merge needs at least one result")
    results = [validate(normalize(r)) for r in results]
    gpus = {r["info"].get("gpu") for r in results}
    if len(gpus) > 1:
        raise ValueError(f"results must come from one GPU, got {sorted(map(str, gpus))}")
    rows: dict[tuple, dict] = {}
    for res in results:
        for r in res["times"]:
            rows.setdefault(row_key(r), {}).update(r)
    first = results[0]
    return dict(schema=SCHEMA, info=first["info"], setting=first["setting"],
                sweep=first.get("sweep", {}),
                ceilings=next((r["ceilings"] for r in results if r["ceilings"]), {}),
                times=list(rows.values()),
                ablations={k: v for r in results for k, v in r["ablations"].items()},
                # A file merged before keeps its own parts (its info is only its first part's).
                parts=[p for r in results for p in (r.get("parts") or
                                                    [dict(info=r["info"], ceilings=r["ceilings"],
                                                          sweep=r.get("sweep", {}))])])


def latest(results: list[dict]) -> dict:
    """The newest harness file among ``results`` (:func:`flashedu.recorded.bench.latest` reads the
    recorded ones), or the newest older file when there is no harness file; in the harness's shape."""
    if not results:
        raise FileNotFoundError("no recorded bench results")
    harness = [r for r in results if r.get("schema") == SCHEMA]
    return normalize(max(harness or results, key=lambda r: r["info"]["date"]))
