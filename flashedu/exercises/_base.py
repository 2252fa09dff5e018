"""Shared by the checkers: calling the reader's function, and how a verdict is printed."""
from __future__ import annotations

from typing import Callable

FAILED = object()  # what :func:`attempt` returns when the reader's code raised


def attempt(failures: list[str], where: str, call: Callable[[], object]):
    """``call()`` (the reader's function and any conversion of its result), or :data:`FAILED`
    after adding what it raised to ``failures`` under ``where``: a checker reports the reader's
    exception as a wrong case, never raises it."""
    try:
        return call()
    except Exception as exc:  # noqa: BLE001  (any error in the reader's code is a verdict)
        failures.append(f"{where}: raised {type(exc).__name__}: {exc}")
        return FAILED


def report(name: str, failures: list[str], n_cases: int) -> bool:
    if failures:
        print(f"✗ {name}: {len(failures)} of {n_cases} cases wrong. First: {failures[0]}")
        return False
    print(f"✓ {name}: all {n_cases} cases pass.")
    return True
