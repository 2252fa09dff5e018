#!/usr/bin/env bash
# Run every test from a fresh machine: builds the book (which sets up .venv and is itself the
# build check: -W fails on any warning or failing cell), then the unit tests, nbmake over every
# chapter, and the browser check of the built HTML in headless Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."

# The browser check drives Debian's Chromium (Playwright's own browser download does not work
# offline). Install it when missing.
if ! command -v chromium >/dev/null 2>&1; then
  echo "== installing chromium (Debian package)"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi

echo "== building the book (tools/build_book.sh)"
bash tools/build_book.sh

echo "== pytest: unit tests, nbmake over book/, browser check"
# pytest exits 5 when it collects nothing; set -e turns that, like any failure, into a failed run.
.venv/bin/python -m pytest tests book --nbmake --nbmake-timeout=900 --strict-markers -rs -q
