#!/usr/bin/env bash
# Build the book from a fresh clone: .venv (created if missing), pinned Python deps, the vendored
# browser JS (tools/vendor_assets.py), then jupyter-book with -W: any Sphinx warning, and any cell
# that fails (an error or a timeout is a warning there), makes the build, and this script, fail.
# Usage: bash tools/build_book.sh   (from any directory; needs Python >= 3.10 and npm)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || { echo "build_book: need Python >= 3.10 (set PYTHON=...)" >&2; exit 1; }
  echo "== creating .venv"
  "$PYTHON" -m venv .venv
fi

# pip takes ~4 s (and prints build noise) even when everything is installed: skip it while
# requirements.txt and pyproject.toml are unchanged since the last install into this .venv.
stamp=.venv/.flashedu-deps.sha256
want="$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "== installing requirements.txt and flashedu (-e .)"
  .venv/bin/python -m pip install -q -r requirements.txt -e .
  echo "$want" > "$stamp"
fi

echo "== vendoring MathJax, ipywidgets embed manager, require.js (npm)"
.venv/bin/python tools/vendor_assets.py

echo "== jupyter-book build (-W: warnings and failing cells are errors)"
# --all: Sphinx re-reads (so re-executes) only pages whose source changed, and a page whose
# warning failed the last run is not re-read, so a plain second run exits 0 with the problem
# still there. A change in flashedu/ would not re-run the chapters that use it either.
start=$SECONDS
.venv/bin/jupyter-book build --all -W -n --keep-going .
echo "== book built in $((SECONDS - start)) s: $ROOT/_build/html/index.html"
