"""Print a ``python -m flashedu.bench.tune_fp8`` run as a Markdown table: each variant's speed-up
over fp16 v2_triton. Reads recorded files; needs no GPU.

    python -m flashedu.bench.tuning_table flashedu/recorded/data/fp8_tuning/nvidia-h200.json
"""
from __future__ import annotations

import argparse
import json


def table(run: dict) -> str:
    rows = run["rows"]
    base = {(r["D"], r["N"], r["causal"]): r["ms"] for r in rows if r["impl"] == "v2_triton fp16"}
    ms = {(r["impl"], r["D"], r["N"], r["causal"]): r.get("ms") for r in rows}
    cases = sorted(base)
    lines = ["| variant (× fp16 v2) | " + " | ".join(f"d{D} N{N // 1024}k {'causal' if c else 'full'}"
                                                 for D, N, c in cases) + " |",
             "|---|" + "---:|" * len(cases)]
    for impl in dict.fromkeys(r["impl"] for r in rows):
        if impl != "v2_triton fp16":
            lines.append(f"| {impl} | " + " | ".join(f"{base[c] / ms[(impl, *c)]:.2f}" if ms.get((impl, *c)) else "–"
                                                    for c in cases) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m flashedu.bench.tuning_table", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", metavar="JSON", help="recorded tune_fp8 runs")
    for path in ap.parse_args().files:
        run = json.load(open(path))
        print(f"{path} (commit {run['provenance']['commit'][:7]}, {run['provenance']['gpu']})\n\n{table(run)}\n")
