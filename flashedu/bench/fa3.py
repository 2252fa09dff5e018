"""Chapter 6's ablation on a Hopper GPU: plain pointer loads (v2_triton) against TMA tensor
descriptors, pipeline depth 1-4, warp specialisation on and off (where it compiles).

On the GPU machine, from the repository root (about 4-5 minutes on an H100/H200):

    python -m flashedu.bench.fa3 --out $OUT          # writes $OUT/fa3/<gpu>.json (after every row)
    python -m flashedu.bench.fa3 --quick --out $OUT  # D128 only, N 8448, ~1.5 minutes

then copy the file to flashedu/recorded/data/fa3/. fp16, hidden 2048 (H = 2048 / D), B = max(1, 16384 // N),
non-causal (the paper's ablation: D = 128, N = 8448), FLOPs 4·B·H·N²·D, median of
triton.testing.do_bench. Every variant is checked against SDPA before it is timed.

Warp-specialised variants are first compiled in a child process: triton 3.6 aborted the whole
process (an MLIR assertion) on one warp-specialised loop, and an abort cannot be caught. A
variant whose child dies is recorded as "crashed" and skipped.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


import torch  # noqa: E402
import triton  # noqa: E402
from flashedu.bench.recorder import Recorder, require_gpu  # noqa: E402

from flashedu.ops.fa3.kernel import HAS_WARP_SPECIALIZE, TMAConfig, tma_forward  # noqa: E402
from flashedu.ops.v2.kernel import flash_attention_v2  # noqa: E402

TILES = [(128, 128, 8), (128, 64, 8)]
STAGES = [1, 2, 3, 4]


def variants(ws_ok: set) -> list[TMAConfig]:
    out = [TMAConfig(bm, bn, w, s, False) for bm, bn, w in TILES for s in STAGES]
    out += [TMAConfig(bm, bn, w, s, True) for bm, bn, w in TILES for s in STAGES if (bm, bn, w, s) in ws_ok]
    return out


def probe(args) -> None:
    """Child process: compile and run each warp-specialised config at D in args.dims; one line each."""
    for D in args.dims:
        q, k, v = (torch.randn(1, 2, 1024, D, device="cuda", dtype=torch.float16) for _ in range(3))
        ref = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        for bm, bn, w in TILES:
            for s in STAGES:
                if f"{D}:{bm}:{bn}:{w}:{s}" in args.skip.split(","):
                    continue
                print(f"TRY {D} {bm} {bn} {w} {s}", flush=True)
                try:
                    o, _ = tma_forward(q, k, v, causal=False, scale=D ** -0.5, config=TMAConfig(bm, bn, w, s, True))
                    torch.cuda.synchronize()
                    print(f"OK {D} {bm} {bn} {w} {s} {(o - ref).abs().max().item():.2e}", flush=True)
                except Exception as e:  # noqa: BLE001  (a config that does not compile is data)
                    print(f"FAIL {D} {bm} {bn} {w} {s} {type(e).__name__}: {str(e)[:150]!r}", flush=True)


def probe_warp_specialize(dims, log) -> tuple[dict, list]:
    """{D: set of (bm, bn, w, s) that compiled and ran}, and a row per probe."""
    ok, rows, done = {D: set() for D in dims}, [], set()
    for _attempt in range(len(TILES) * len(STAGES) * len(dims)):
        cmd = [sys.executable, "-m", "flashedu.bench.fa3", "--probe", "--dims", ",".join(map(str, dims)),
               "--skip", ",".join(":".join(map(str, key)) for key in done)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        last = None
        for line in proc.stdout.splitlines():
            parts = line.split()
            key = tuple(int(x) for x in parts[1:6]) if len(parts) >= 6 else None
            if parts and parts[0] == "TRY":
                last = key
            elif parts and parts[0] in ("OK", "FAIL") and key not in done:
                done.add(key)
                rows.append(dict(kind="ws_probe", D=key[0], config=key[1:], result=" ".join(parts[0:1] + parts[6:])))
                if parts[0] == "OK":
                    ok[key[0]].add(key[1:])
                log(rows[-1])
        if proc.returncode == 0:
            break
        # The child died on `last`: record it and run the rest again (done ones are skipped on read).
        if last is None or last in done:
            rows.append(dict(kind="ws_probe", error=f"child exited {proc.returncode}: {proc.stderr[-300:]}"))
            break
        done.add(last)
        rows.append(dict(kind="ws_probe", D=last[0], config=last[1:], result=f"crashed (exit {proc.returncode})"))
        log(rows[-1])
    return ok, rows


def bench(fn) -> float:
    return triton.testing.do_bench(fn, warmup=10, rep=50, return_mode="median")


def main() -> None:
    ap = argparse.ArgumentParser(prog=f"python -m {__spec__.name}" if __spec__ else None,
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "flashedu", "data"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--dims", default="64,128")
    ap.add_argument("--skip", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    require_gpu("flashedu.bench.fa3")
    args.dims = [int(x) for x in args.dims.split(",")]
    if args.probe:
        return probe(args)
    dims = [128] if args.quick else args.dims
    Ns = [8448] if args.quick else [4096, 8448, 16384]
    t0 = time.time()
    rows = []
    rec = Recorder(args.out, "fa3", warp_specialize_keyword=HAS_WARP_SPECIALIZE)

    def log(r):
        print(f"[{time.time() - t0:6.1f}s] {r}", flush=True)
        rec.save(rows)

    ws_ok = {D: set() for D in dims}
    if HAS_WARP_SPECIALIZE:
        ws_ok, probe_rows = probe_warp_specialize(dims, log)
        rows += probe_rows
    for D in dims:
        H = 2048 // D
        for N in Ns:
            B = max(1, 16384 // N)
            flops = 4.0 * B * H * N * N * D
            q, k, v = (torch.randn(B, H, N, D, device="cuda", dtype=torch.float16) for _ in range(3))
            ref = torch.nn.functional.scaled_dot_product_attention(q, k, v)
            cases = [("v2_triton", None, lambda: flash_attention_v2(q, k, v))]
            cases += [("v2_tma_triton", c, (lambda c=c: tma_forward(q, k, v, causal=False, scale=D ** -0.5, config=c)[0]))
                      for c in variants(ws_ok[D])]
            for name, cfg, fn in cases:
                r = dict(kind="time", impl=name, D=D, N=N, B=B, H=H, causal=False)
                if cfg is not None:
                    r.update(block_m=cfg.block_m, block_n=cfg.block_n, warps=cfg.num_warps, stages=cfg.num_stages,
                             warp_specialize=cfg.warp_specialize)
                try:
                    with torch.no_grad():
                        r["max_err"] = (fn() - ref).abs().max().item()
                        if r["max_err"] > 1e-2:
                            raise RuntimeError(f"wrong result: max error {r['max_err']:.3g}")
                        r["ms"] = bench(fn)
                    r["tflops"] = round(flops / (r["ms"] * 1e-3) / 1e12, 1)
                except Exception as e:  # noqa: BLE001
                    r["error"] = f"{type(e).__name__}: {str(e)[:200]}"
                rows.append(r)
                log(r)
            del q, k, v, ref
            torch.cuda.empty_cache()
    path = rec.save(rows, final=True, seconds=round(time.time() - t0))
    print(f"wrote {path} in {time.time() - t0:.0f}s")
    best = {}
    for r in rows:
        if r.get("kind") == "time" and "tflops" in r:
            key = (r["D"], r["N"], r["impl"], r.get("warp_specialize"))
            best[key] = max(best.get(key, 0), r["tflops"])
    for key, tf in sorted(best.items()):
        print(f"D{key[0]} N{key[1]} {key[2]:14s} ws={key[3]}: best {tf} TFLOP/s")


if __name__ == "__main__":
    main()
