"""Measurements recorded on real GPUs by the scripts in ``flashedu.bench``, read back for the book.

Each file is JSON with a ``provenance`` block (GPU, driver, versions, commit, date) and ``rows``;
the files ship inside the package so a Colab reader sees them too.
"""
from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"


def load(kind: str) -> list[dict]:
    """Every recorded result of one kind (``"memory"``, ...), in file-name order (GPU slug)."""
    folder = DATA / kind
    if not folder.is_dir():
        raise FileNotFoundError(f"no recorded results of kind {kind!r} under {DATA}")
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def first(kind: str) -> dict | None:
    """The first recorded result of one kind, or None when nothing of that kind is recorded
    (what a chapter shows from a GPU is optional: without it the chapter says so)."""
    folder = DATA / kind
    return load(kind)[0] if folder.is_dir() and any(folder.glob("*.json")) else None
