"""Shared by the checkers: how a verdict is printed."""
from __future__ import annotations


def report(name: str, failures: list[str], n_cases: int) -> bool:
    if failures:
        print(f"✗ {name}: {len(failures)} of {n_cases} cases wrong. First: {failures[0]}")
        return False
    print(f"✓ {name}: all {n_cases} cases pass.")
    return True
