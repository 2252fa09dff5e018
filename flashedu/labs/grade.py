"""The one entry point of the labs: ``grade(lab, fn)`` runs a lab's cases on fresh random
inputs against the reader's ``fn`` and returns a :class:`~flashedu.labs.report.Report`."""
from __future__ import annotations

import importlib
import os
import time

import torch

from flashedu.labs.report import Report

# Lab name -> the module holding its cases and checks (imported on first use: the Triton labs
# import triton).
LABS = {
    "online_softmax": "flashedu.labs.online_softmax",
    "v1_reference": "flashedu.labs.v1_reference",
    "v2_forward": "flashedu.labs.v2_forward",
    "v2_backward": "flashedu.labs.v2_backward",
    "block_sparse": "flashedu.labs.block_sparse",
    "split_kv": "flashedu.labs.split_kv",
}


def grade(lab: str, fn, *, seed: int | None = None) -> Report:
    """Grade ``fn`` on lab ``lab`` (one of :data:`LABS`).

    Inputs are drawn fresh each call from ``seed`` (a random one when None, printed in the
    report so a failure can be replayed with ``seed=``). Every case runs, even after a failure:
    which cases fail is part of the evidence. A blank left unfilled (NotImplementedError) stops
    grading with the status "not attempted"."""
    if lab not in LABS:
        raise ValueError(f"lab must be one of {', '.join(LABS)}; got {lab!r}")
    if not callable(fn):
        raise TypeError(f"fn must be callable (the function the lab asks for), got {type(fn).__name__}")
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little")
    elif isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")
    module = importlib.import_module(LABS[lab])
    g = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    results = []
    for case in module.cases(g):
        try:
            results.append(module.run(fn, case))
        except NotImplementedError as exc:
            return Report(lab, seed, "not attempted", message=str(exc) or "a blank raises NotImplementedError")
    notes = ()
    passed = all(r.passed for r in results)
    if passed and hasattr(module, "notes"):
        notes = tuple(module.notes(fn))
    return Report(lab, seed, "passed" if passed else "failed", tuple(results), notes=notes,
                  seconds=time.perf_counter() - start)
