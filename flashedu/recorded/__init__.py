"""Measurements recorded on real GPUs by the scripts in ``flashedu.bench``, read back for the book.

One folder per kind under ``data/`` (``data/<kind>/<gpu>.json``, as ``python -m
flashedu.bench.<kind>`` writes it); each file is JSON with its provenance (GPU, driver, versions,
commit, date) and its rows. The files ship inside the package so a Colab reader sees them too.

Here: :func:`load` (every file of a kind), :func:`first` and :func:`latest` (one file, or None).
Beside this, one reader per kind turns a file into what a chapter quotes: :mod:`.bench` (kinds
``bench`` and ``v2_tuning``), :mod:`.block_sparse` (``block_sparse`` and
``block_sparse_bwd_ablation``), :mod:`.fa3`, :mod:`.fp8` (``fp8`` and
``fp8_tuning``), :mod:`.decode`, :mod:`.ring`, :mod:`.memory`, :mod:`.ncu`.
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


def _recorded(kind: str) -> list[dict]:
    folder = DATA / kind
    return load(kind) if folder.is_dir() else []


def first(kind: str) -> dict | None:
    """The first recorded result of one kind (by GPU slug), or None when nothing of that kind is
    recorded (what a chapter shows from a GPU is optional: without it the chapter says so)."""
    return next(iter(_recorded(kind)), None)


def date(result: dict) -> str:
    """When a recorded result was measured (ISO 8601), from its provenance block (``info`` in
    the harness's files)."""
    block = result.get("provenance") or result.get("info") or {}
    if not block.get("date"):
        raise ValueError("recorded result has no provenance date")
    return str(block["date"])


def latest(kind: str) -> dict | None:
    """The most recently measured result of one kind, or None when nothing is recorded."""
    return max(_recorded(kind), key=date, default=None)
