"""Planted mistakes for tests/test_labs.py: a lab's packaged solution with one snippet of its
source replaced, loaded as a module of its own (from a file, so a Triton kernel in it compiles)."""
from __future__ import annotations

import importlib.util
import inspect
import itertools
from pathlib import Path

_ids = itertools.count()


def mutant(module, edits: list[tuple[str, str]], tmp: Path):
    """``module`` with each (old, new) edit applied; every ``old`` must occur exactly once."""
    src = inspect.getsource(module)
    for old, new in edits:
        n = src.count(old)
        assert n == 1, f"{module.__name__}: {old!r} occurs {n} times, expected once"
        src = src.replace(old, new)
    path = tmp / f"mutant_{next(_ids)}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
