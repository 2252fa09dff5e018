#!/usr/bin/env bash
# On the GPU machine (run through the device tool, with .whl carried): install the carried wheels,
# run the test suite in compiled mode and execute every chapter. Results land in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
python3 -c "import flashedu, torch, triton; print(flashedu.describe())"
rc=0
python3 -m pytest tests --ignore tests/test_browser.py -q -rs -p no:cacheprovider 2>&1 | tee "$OUT/pytest.log" | tail -n 25 || rc=1
python3 tools/run_chapters.py --out "$OUT/chapters" || rc=1
exit $rc
