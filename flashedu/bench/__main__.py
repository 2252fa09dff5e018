"""python -m flashedu.bench: time every registered Triton kernel beside torch SDPA's backends and
naive attention on this GPU, in one process, and write one JSON file.

    python -m flashedu.bench --quick                       # minutes on a Colab T4
    python -m flashedu.bench                               # the full sweep (split it, below)
    python -m flashedu.bench --dtype fp16 --pass fwd --out part1.json
    python -m flashedu.bench --no-sweep --ablation causal-skip num-stages --out abl.json
    python -m flashedu.bench --merge part*.json abl.json --out flashedu/recorded/data/bench/nvidia-h200.json
    python -m flashedu.bench --table flashedu/recorded/data/bench/nvidia-h200.json

The file is rewritten after every case, so a run stopped by a time limit keeps what it finished.
Set FLASHEDU_COMMIT where the working tree has no .git (it goes into the provenance).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from flashedu.bench.ablations import ABLATIONS
from flashedu.bench.cases import dtype_name
from flashedu.bench.flops import PASSES


def _csv(kind):
    def parse(text: str):
        try:
            return tuple(kind(x) for x in text.split(",") if x)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m flashedu.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the small sweep (D 64/128, N 1k/4k, fp16, fwd+bwd)")
    ap.add_argument("--pass", dest="passes", type=_csv(str), help=f"comma-separated, from {','.join(PASSES)}")
    ap.add_argument("--D", dest="Ds", type=_csv(int), help="head dims, e.g. 64,128")
    ap.add_argument("--N", dest="Ns", type=_csv(int), help="sequence lengths, e.g. 512,16384")
    ap.add_argument("--dtype", dest="dtypes", type=_csv(dtype_name), help="fp16,bf16,fp8")
    ap.add_argument("--causal", choices=("both", "yes", "no"), default="both")
    ap.add_argument("--only", type=_csv(str), help="provider names to keep, e.g. v2_triton,sdpa_flash")
    ap.add_argument("--ablation", nargs="+", default=[], choices=sorted(ABLATIONS))
    ap.add_argument("--no-sweep", action="store_true", help="ablations only")
    ap.add_argument("--out", type=Path, help="default: flashedu/recorded/data/bench/<gpu>.json")
    ap.add_argument("--skip-done", type=Path, metavar="FILE",
                    help="leave out the cases an earlier (partial) results file holds")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--merge", nargs="+", type=Path, metavar="FILE", help="merge parts into --out")
    ap.add_argument("--table", type=Path, metavar="FILE", help="print the table of a results file")
    return ap


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from flashedu.bench import report, runner, schema

    if args.table:
        result = schema.normalize(json.loads(args.table.read_text()))
        for name, ab in result["ablations"].items():
            print(report.ablation_table(name, ab), "\n")
        print(report.table(result))
        return 0
    if args.merge:
        if not args.out:
            raise SystemExit("--merge needs --out")
        merged = schema.validate(schema.merge(*(json.loads(p.read_text()) for p in args.merge)))
        print(f"wrote {runner.write(merged, args.out)} ({len(merged['times'])} rows)")
        return 0
    if args.passes and any(p not in PASSES for p in args.passes):
        raise SystemExit(f"--pass takes {','.join(PASSES)}, got {','.join(args.passes)}")
    reason = runner.refusal()
    if reason:
        print(reason, file=sys.stderr)
        return 2
    out = args.out or runner.default_out()
    causal = {"both": None, "yes": (True,), "no": (False,)}[args.causal]
    result = runner.run("quick" if args.quick else "full", passes=() if args.no_sweep else args.passes,
                        Ds=args.Ds, Ns=args.Ns, dtypes=args.dtypes, causal=causal, only=args.only,
                        ablations=args.ablation, out=out, progress=not args.no_progress,
                        skip_done=json.loads(args.skip_done.read_text()) if args.skip_done else None)
    for name, ab in result["ablations"].items():
        print(report.ablation_table(name, ab), "\n")
    if result["times"]:
        print(report.table(result))
    print(f"wrote {out}")
    if result.get("stopped"):
        print(result["stopped"], file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
