"""The sweep: cases × providers × passes in one process, written as one JSON file.

:func:`run` is what the command line and the book call; :func:`collect` is the same sweep with
the device, timer and providers given, so tests can drive it on the CPU with a fake timer.
"""
from __future__ import annotations

import json
import os
import time
from functools import partial
from pathlib import Path

import torch

from flashedu import provenance, recorded, registry, runtime
from flashedu.bench import ceilings as _ceilings
from flashedu.bench.cases import Case, preset as _preset, sweep
from flashedu.bench.flops import PASSES
from flashedu.bench.harness import ContextLost, Timer, do_bench_median, measure, one_line
from flashedu.bench.providers import Provider, providers
from flashedu.bench.schema import SCHEMA, gpu_slug

DATA = recorded.DATA / "bench"
SETTING = ("hidden 2048 (H = 2048 / D), B = 16384 / N; FLOPs 4·B·H·N²·D forward (half when causal), "
           "backward 2.5x, forward+backward 3.5x; median of triton.testing.do_bench after warm-up; "
           "frac: TFLOP/s over an 8192³ matmul of the same run (fp16 rows: fp16, others: bf16); err: ‖o − ref‖/‖ref‖ against "
           "torch's math attention in fp32 on two heads; peak_bytes: allocated during one call above "
           "what was allocated before it")

_print = partial(print, flush=True)  # a run cut off by a time limit still shows how far it got

try:  # optional: a progress bar when tqdm is installed, one line per case otherwise
    from tqdm.auto import tqdm as _tqdm
except ImportError:
    _tqdm = None


def refusal() -> str | None:
    """Why timing cannot happen on this machine, or None when it can."""
    rt = runtime.current()
    if rt.compiled and torch.cuda.is_available():
        return None
    return ("flashedu.bench times compiled kernels on a CUDA GPU, and this machine has none "
            f"({rt.describe()}). The book shows results recorded on a GPU instead "
            "(flashedu/recorded/data/bench); on a GPU, run `python -m flashedu.bench --quick`.")


def info() -> dict:
    """Provenance of this process plus how Triton runs here."""
    from flashedu.ops._triton import arch_key

    return dict(provenance.collect(), describe=runtime.describe(), arch=arch_key())


def write(result: dict, path: str | os.PathLike) -> Path:
    """Write ``result`` as JSON through a temporary file, so a killed run leaves the last
    complete write, never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(path)
    return path


def collect(cases: list[Case], *, passes=PASSES, device: str = "cuda", timer: Timer = do_bench_median,
            only: tuple[str, ...] | None = None, extra: list[Provider] = (), ceilings: dict | None = None,
            skip=frozenset(), progress: bool = True, log=_print, on_case=None) -> dict:
    """Time every provider of every case; a result dict in the :mod:`.schema` shape.
    ``extra`` providers join every case; cases whose ``Case.key()`` is in ``skip`` are left out
    (an earlier part did them); ``on_case(result)`` runs after each case (saving)."""
    bad = [p for p in passes if p not in PASSES]
    if isinstance(passes, str) or bad:
        raise ValueError(f"passes must be a sequence drawn from {PASSES}, got {passes!r}")
    ceilings = ceilings or {}
    result = dict(schema=SCHEMA, info=info(), setting=SETTING,
                  sweep=dict(passes=list(passes), cases=len(cases), only=list(only) if only else None),
                  ceilings=ceilings, times=[], ablations={})
    cases = [c for c in cases if c.key() not in skip]
    bar = _tqdm(cases, desc="cases", unit="case") if (progress and _tqdm) else cases
    for case in bar:
        provs = providers(case, device=device, only=only) + list(extra)
        if progress and _tqdm:
            bar.set_postfix_str(str(case))
        t0 = time.perf_counter()
        try:
            rows = measure(case, provs, passes=passes, timer=timer, device=device,
                           ceiling_tflops=_ceilings.for_dtype(ceilings, case.dtype))
        except ContextLost as exc:
            # Nothing more can run in this process: keep what was done and say how to go on.
            result["times"].extend(exc.rows)
            result["stopped"] = (f"stopped: {exc}. Rows before it are kept; run again with "
                                 f"--skip-done on this file and --only without that provider.")
            log(result["stopped"])
            if on_case:
                on_case(result)
            break
        except Exception as exc:  # noqa: BLE001  (inputs or reference did not fit: the case's result)
            rows = [dict(impl=p.name, kind=p.kind, algorithm=p.algorithm, **case.as_dict(),
                         **{f"{ps}_status": f"error: case failed: {one_line(exc)}"
                            for ps in passes}) for p in provs]
        result["times"].extend(rows)
        if progress and not _tqdm:
            ok = sum(r.get(f"{p}_status") == "ok" for r in rows for p in passes)
            log(f"{case}: {len(provs)} providers, {ok} passes ok, {time.perf_counter() - t0:.0f} s")
        if on_case:
            on_case(result)
    return result


def run(preset: str = "quick", *, passes=None, Ds=None, Ns=None, dtypes=None, causal=None, only=None,
        ablations=(), out: str | os.PathLike | None = None, skip_done: dict | None = None,
        progress: bool = True, log=_print) -> dict:
    """Time flashedu's Triton kernels beside torch SDPA's backends and naive attention on this
    GPU and return the result (and write it to ``out`` when given, after every case).

    ``preset`` "quick" (minutes on a T4) or "full" (the papers' sweep); ``passes``, ``Ds``,
    ``Ns``, ``dtypes``, ``causal`` narrow or change it (split a full run to fit a time limit);
    ``only`` keeps the named providers; ``ablations`` names from
    :data:`flashedu.bench.ablations.ABLATIONS`; ``skip_done``, an earlier result, leaves out
    the cases it holds. Raises RuntimeError without a CUDA GPU.
    """
    reason = refusal()
    if reason:
        raise RuntimeError(reason)
    spec = _preset(preset, fp8=bool(registry(backend="triton", algorithm="fp8")))
    for key, value in (("passes", passes), ("Ds", Ds), ("Ns", Ns), ("dtypes", dtypes), ("causal", causal)):
        if value is not None:
            spec[key] = tuple(value)
    passes = spec.pop("passes")
    cases = sweep(**spec) if passes else []
    measured = _ceilings.measure(do_bench_median)
    log(f"ceilings: matmul bf16 {measured['matmul_bf16_tflops']}, fp16 {measured['matmul_fp16_tflops']} "
        f"TFLOP/s; copy {measured['copy_tbs']} TB/s")
    save = (lambda res: write(res, out)) if out else None
    done = {(r["dtype"], r["D"], r["causal"], r["N"]) for r in (skip_done or {}).get("times", [])}
    result = collect(cases, passes=passes, only=tuple(only) if only else None, ceilings=measured,
                     skip=done, progress=progress, log=log, on_case=save)
    result["sweep"].update(preset=preset, **{k: list(v) for k, v in spec.items()})
    from flashedu.bench.ablations import ABLATIONS

    for name in ablations if "stopped" not in result else ():
        if name not in ABLATIONS:
            raise ValueError(f"ablations must be drawn from {tuple(ABLATIONS)}, got {name!r}")
        log(f"ablation {name}")
        result["ablations"][name] = ABLATIONS[name](ceiling_tflops=_ceilings.for_dtype(measured, "float16"),
                                                   log=log)
        if save:
            save(result)
    if out:
        write(result, out)
    return result


def default_out(result_info: dict | None = None) -> Path:
    """flashedu/recorded/data/bench/<gpu-slug>.json"""
    return DATA / f"{gpu_slug(result_info or provenance.collect())}.json"
