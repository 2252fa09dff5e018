"""Execute every chapter notebook with nbclient, save the executed copies, and print what each
chapter said about where it ran (its set-up cell's first line) and how long it took.

Used on the GPU machine to show the same notebooks run compiled there:
    python tools/run_chapters.py --out DIR [--only ch05 ch06]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def first_stream_line(nb) -> str:
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("text", "").strip():
                return out["text"].strip().splitlines()[0]
    return ""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--timeout", type=int, default=900)
    ap.add_argument("--only", nargs="+", default=[], metavar="PREFIX", help="e.g. ch05 ch06 (default: every chapter)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    summary = []
    for path in sorted((ROOT / "book").glob("*.ipynb")):
        if args.only and not path.name.startswith(tuple(args.only)):
            continue
        nb = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        status = "ok"
        try:
            NotebookClient(nb, timeout=args.timeout, kernel_name="python3",
                           resources={"metadata": {"path": str(path.parent)}}).execute()
        except Exception as exc:  # keep going: report every chapter
            status = f"failed: {type(exc).__name__}: {str(exc)[-400:]}"
        seconds = time.perf_counter() - start
        nbformat.write(nb, args.out / path.name)
        row = dict(chapter=path.name, status=status, seconds=round(seconds, 1), said=first_stream_line(nb))
        summary.append(row)
        print(json.dumps(row))
    (args.out / "chapters.json").write_text(json.dumps(summary, indent=1))
    if any(r["status"] != "ok" for r in summary):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
