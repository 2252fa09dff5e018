"""The compact table printed at the end of a run (the last lines are what a remote run returns)."""
from __future__ import annotations

import math
from collections import Counter

from flashedu.bench.flops import PASSES

SHORT = {"float16": "fp16", "bfloat16": "bf16", "fp8": "fp8", "float32": "fp32"}


def _cell(r: dict | None, p: str) -> str:
    if r is None:
        return "-"
    status = r.get(f"{p}_status", "")
    if status == "ok":
        return f"{r[f'{p}_tflops']:.0f}"
    if status.startswith("skipped: memory"):
        return "mem"
    if status.startswith("error"):
        return "ERR"
    return "-"


def table(result: dict, passes=None) -> str:
    """TFLOP/s per pass, one line per (dtype, D, mask, provider), one column per N; "mem" where
    skipped for memory, "ERR" where the provider failed, "-" where it does not apply."""
    rows = result["times"]
    passes = [p for p in (passes or PASSES) if any(f"{p}_status" in r for r in rows)]
    Ns = sorted({r["N"] for r in rows})
    by = {(r["impl"], r["dtype"], r["D"], r["causal"], r["N"]): r for r in rows}
    groups = list(dict.fromkeys((r["dtype"], r["D"], r["causal"]) for r in rows))
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    c = result.get("ceilings", {})
    out = [f"ceilings: matmul bf16 {c.get('matmul_bf16_tflops')}, fp16 {c.get('matmul_fp16_tflops')} TFLOP/s; "
           f"copy {c.get('copy_tbs')} TB/s" if c else "ceilings: not measured"]
    for p in passes:
        out.append(f"\n{p} TFLOP/s{'':28s}" + "".join(f"{n:>7d}" for n in Ns))
        for dtype, D, causal in groups:
            for name in impls:
                cells = [_cell(by.get((name, dtype, D, causal, n)), p) for n in Ns]
                if all(c == "-" for c in cells):
                    continue
                label = f"{SHORT.get(dtype, dtype)} D{D:<3d} {'causal' if causal else 'full  '} {name:15s}"
                out.append(f"{label:36s}" + "".join(f"{c:>7s}" for c in cells))
    counts = Counter(r.get(f"{p}_status", "").split(":")[0] for r in rows for p in passes
                     if f"{p}_status" in r)
    out.append("\n" + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    worst: dict = {}
    for r in rows:
        errs = [r[k] for k in ("err", "grad_err") if isinstance(r.get(k), (int, float))]
        if errs:
            # max() would drop a NaN (every comparison with it is False): a NaN must show.
            prev = worst.get(r["impl"], 0.0)
            worst[r["impl"]] = math.nan if any(map(math.isnan, [prev, *errs])) else max(prev, *errs)
    if worst:
        out.append("largest error vs fp32 math: " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
    errors = sorted({f"{r['impl']} {p}: {r[f'{p}_status']}" for r in rows for p in passes
                     if str(r.get(f"{p}_status", "")).startswith("error")})
    out += [f"  {e[:150]}" for e in errors[:12]]
    return "\n".join(out)


def ablation_table(name: str, ablation: dict) -> str:
    """A few lines per recorded ablation: the ratio for causal-skip, forward TFLOP/s per config
    for block-sizes and num-stages, forward and backward TFLOP/s for v1-vs-v2."""
    out = [f"{name}: {ablation['description']}"]
    rows = ablation["rows"]
    if name == "causal-skip":
        for r in rows:
            ratio = f"{r['full_over_causal']:.2f}x" if "full_over_causal" in r else r.get("causal_status")
            out.append(f"  {r['impl']:15s} D{r['D']:<3d} N={r['N']:<6d} full/causal time {ratio}")
        return "\n".join(out)
    for r in rows:
        cells = [f"{p} {r[f'{p}_tflops']:.0f}" if r.get(f"{p}_status") == "ok" else f"{p} {_cell(r, p)}"
                 for p in PASSES if f"{p}_status" in r]
        mask = "causal" if r["causal"] else "full"
        out.append(f"  {r['impl']:22s} D{r['D']:<3d} {mask:6s} N={r['N']:<6d} " + ", ".join(cells))
    return "\n".join(out)


HEADLINE_CASES = ((128, 16384), (64, 4096))  # (D, N) where the book compares with SDPA
HEADLINE_IMPLS = ("v2_triton", "v2_tma_triton", "sdpa_flash", "sdpa_cudnn", "sdpa_efficient")


def headline(result: dict, *, dtype: str = "float16", cases=HEADLINE_CASES, impls=HEADLINE_IMPLS) -> str:
    """A Markdown table of TFLOP/s: one row per implementation, one column per (D, N, mask,
    pass) of ``cases``; "–" where the file has no successful time."""
    by = {(r["impl"], r["D"], r["causal"], r["N"]): r for r in result["times"] if r["dtype"] == dtype}
    cols = [(D, N, c, p) for D, N in cases for c in (False, True) for p in ("fwd", "bwd")]
    size = lambda N: f"{N // 1024}k" if N % 1024 == 0 else str(N)  # noqa: E731
    head = "| TFLOP/s | " + " | ".join(f"d={D} N={size(N)} {'causal' if c else 'full'} {p}"
                                        for D, N, c, p in cols) + " |"
    lines = [head, "|---|" + "---:|" * len(cols)]
    for name in impls:
        cells = []
        for D, N, c, p in cols:
            r = by.get((name, D, c, N))
            cells.append(f"{r[f'{p}_tflops']:.0f}" if r and r.get(f"{p}_status") == "ok" else "–")
        if any(x != "–" for x in cells):
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
