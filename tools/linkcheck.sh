#!/usr/bin/env bash
# Check every external link in the book (papers, blog posts, the repository) with Sphinx's
# linkcheck builder. Needs the network, so it is NOT part of tools/test.sh or CI: run it by hand
# now and then. Notebooks are not executed for it (links live in the text, not in outputs).
# Usage: bash tools/linkcheck.sh   (after tools/build_book.sh has set up .venv)
# Report: _build/linkcheck/output.txt (and output.json); exits non-zero on a broken link.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ -x .venv/bin/jupyter-book ] || { echo "linkcheck: run bash tools/build_book.sh first (creates .venv)" >&2; exit 1; }

# jupyter-book turns _config.yml/_toc.yml into Sphinx's conf.py; plain sphinx-build on it can
# switch execution off. The conf.py goes to a temporary folder (not the repository), so its paths,
# meant relative to the repository root, are made absolute.
root="$PWD"
conf="$(mktemp -d)"
trap 'rm -rf "$conf"' EXIT
.venv/bin/jupyter-book config sphinx . >/dev/null
mv conf.py "$conf/conf.py"
cat >> "$conf/conf.py" <<PY
import os, sys
sys.path.insert(0, "$root/tools/sphinx_ext")  # local_extensions
bibtex_bibfiles = [os.path.join("$root", f) for f in bibtex_bibfiles]
html_static_path = [os.path.join("$root", p) for p in html_static_path]
suppress_warnings = suppress_warnings + ["mystnb.glue"]  # glue keys are empty without execution
PY
.venv/bin/sphinx-build -b linkcheck -c "$conf" -D nb_execution_mode=off -q . _build/linkcheck
echo "== linkcheck passed: _build/linkcheck/output.txt"
