"""Where the GPU scripts in tools/ write their results, and how: one JSON file per GPU,
rewritten after every row through a temporary file, so a run stopped by a time limit keeps
what it finished (``"partial": true`` until the script's last write)."""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from flashedu import provenance  # noqa: E402
from flashedu.bench.schema import gpu_slug  # noqa: E402


class Recorder:
    """``Recorder(out, "fa3", **header)`` writes ``out/fa3/<gpu>.json`` holding the provenance,
    ``header`` and the rows given to :meth:`save`."""

    def __init__(self, out: str, kind: str, **header):
        self.info = provenance.collect()
        self.path = os.path.join(out, kind, f"{gpu_slug(self.info)}.json")
        self.header = header
        os.makedirs(os.path.dirname(self.path), exist_ok=True)

    def save(self, rows: list, *, final: bool = False, **extra) -> str:
        doc = dict(provenance=self.info, **self.header, **extra, rows=rows, partial=not final)
        tmp = self.path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(doc, fh, indent=1)
        os.replace(tmp, self.path)
        return self.path
