"""Readers of ``flashedu.bench.fp8``'s runs (kind ``"fp8"``) and ``flashedu.bench.tune_fp8``'s
(kind ``"fp8_tuning"``): chapter 6's FP8 speed and error, as tables and quoted numbers.

* :func:`fp8_speed_table` - per D and N, fp16 ``v2_triton`` against the fastest ``fp8_triton``
  configuration, and the torch quantisation step that prepares its inputs;
* :func:`fp8_e2e_table` / :func:`fp8_e2e_text` - fp16 in, fp16 out: the fused Triton quantiser,
  the kernel and the two together (``fp8_e2e_triton``) against fp16 ``v2_triton``;
* :func:`fp8_config_table` - every timed FP8 configuration's speed-up, as a Markdown table;
* :func:`fp8_design_costs` - what a second accumulator and one 128-row program per SM cost;
* :func:`fp8_gluon_table` / :func:`fp8_gluon_summary` - the Gluon FA3 kernel's FP8 build
  beside the Triton FP8 kernel;
* :func:`tuning_cost` - one variant against another in a ``tune_fp8`` run;
* :func:`fp8_summary` - what chapter 6 says, by glue name.

The figure is :func:`flashedu.viz.fa3_measured.fp8_speed_figure`.
"""
from __future__ import annotations

import re

from flashedu.recorded.fa3 import timed

QUANT = "fp8 quantisation (torch)"
FUSED = "fp8 quantisation (triton)"  # q, k, v; ": q" / ": v" rows time one tensor each
E2E = "fp8_e2e_triton"


def fp8_config(impl: str) -> str:
    """``"fp8_triton FP8Config(block_m=128, ...)"`` -> ``"block_m=128, ..."``."""
    m = re.search(r"\((.*)\)", impl)
    return m.group(1) if m else impl


def fp8_speed_table(run: dict) -> list[dict]:
    """One dict per (D, N), sorted: ``fp16_ms``/``fp16_tflops`` (v2_triton in fp16), ``fp8_ms``/
    ``fp8_tflops``/``fp8_config`` (the fastest fp8_triton configuration, on inputs already
    quantised), ``quant_ms`` (the torch quantisation step, None if not timed) and ``speedup``
    (fp16 time / fp8 time)."""
    rows = timed(run)
    out = []
    for D, N in sorted({(r["D"], r["N"]) for r in rows}):
        here = [r for r in rows if (r["D"], r["N"]) == (D, N)]
        fp16 = next(r for r in here if r["impl"].startswith("v2_triton"))
        fp8 = min((r for r in here if r["impl"].startswith("fp8_triton")), key=lambda r: r["ms"])
        quant = next((r for r in here if r["impl"] == QUANT), None)
        out.append(dict(D=D, N=N, fp16_ms=fp16["ms"], fp16_tflops=fp16["tflops"], fp8_ms=fp8["ms"],
                        fp8_tflops=fp8["tflops"], fp8_config=fp8_config(fp8["impl"]),
                        quant_ms=quant and quant["ms"], speedup=fp16["ms"] / fp8["ms"]))
    return out


def _fp8_fields(impl: str) -> dict:
    """``"fp8_triton FP8Config(block_m=64, ..., max_regs=168)"`` -> {"block_m": 64, ..., "max_regs": 168}."""
    out = {}
    for part in fp8_config(impl).split(", "):
        k, _, v = part.partition("=")
        out[k] = {"True": True, "False": False, "None": None}.get(v, int(v) if v.isdigit() else v)
    return out


def fp8_design_costs(run: dict, D: int = 128) -> dict:
    """At head dim ``D``, per N, how much slower (%) than the fastest configuration two design
    choices made the kernel, from the timed configurations: ``two_acc`` (P·V into a second
    accumulator, added to acc after; 128-row tiles, 8 warps) against the same tiles with one
    accumulator, and ``rows128`` (one program of 128 rows and 8 warps per SM) against the
    fastest configuration, which was 64-row tiles and 4 warps, two or three programs per SM."""
    out = {"two_acc": [], "rows128": []}
    for N in sorted({r["N"] for r in timed(run) if r["D"] == D}):
        fp8 = {r["impl"]: r["ms"] for r in timed(run) if (r["D"], r["N"]) == (D, N) and r["impl"].startswith("fp8_triton")}
        conf = {impl: _fp8_fields(impl) for impl in fp8}
        big = {c["fold_v"]: fp8[i] for i, c in conf.items()
               if (c["block_m"], c["block_n"], c["num_warps"], c.get("max_regs")) == (128, 128, 8, None)}
        if True in big and False in big:
            out["two_acc"].append(100 * (big[False] / big[True] - 1))
        if True in big:
            out["rows128"].append(100 * (big[True] / min(fp8.values()) - 1))
    return out


def fp8_config_table(run: dict, D: int = 128) -> str:
    """A Markdown table of every timed ``fp8_triton`` configuration at head dim ``D``: its tile
    (rows×keys), warps, stages, register cap and P·V accumulators (one or two), and its speed-up
    over fp16 ``v2_triton`` per N (the fastest per N in bold)."""
    rows = [r for r in timed(run) if r["D"] == D]
    Ns = sorted({r["N"] for r in rows})
    fp16 = {r["N"]: r["ms"] for r in rows if r["impl"].startswith("v2_triton")}
    ms = {(r["impl"], r["N"]): r["ms"] for r in rows if r["impl"].startswith("fp8_triton")}
    best = {N: min(t for (i, n), t in ms.items() if n == N) for N in Ns}
    lines = ["| tile | warps | stages | reg. cap | P·V acc. | " + " | ".join(f"N={N // 1024}k" for N in Ns) + " |",
             "|---|---:|---:|---:|---|" + "---:|" * len(Ns)]
    for impl in dict.fromkeys(i for i, _ in ms):
        c = _fp8_fields(impl)
        cells = []
        for N in Ns:
            t = ms.get((impl, N))
            text = f"{fp16[N] / t:.2f}×" if t else "–"
            cells.append(f"**{text}**" if t == best[N] else text)
        lines.append(f"| {c['block_m']}×{c['block_n']} | {c['num_warps']} | {c['num_stages']} | "
                     f"{c.get('max_regs') or '–'} | {'one' if c.get('fold_v', True) else 'two'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tuning_cost(tuning: dict, variant: str, base: str, D: int = 128) -> list[float]:
    """From a ``flashedu/bench/tune_fp8.py`` run: how much slower (%) ``variant`` was than ``base`` at head
    dim ``D``, one value per (N, causal) where both were timed (negative: faster)."""
    ms = {(r["impl"], r["N"], r["causal"]): r["ms"] for r in tuning["rows"] if r["D"] == D and "ms" in r}
    return [100 * (ms[(variant, N, c)] / ms[(base, N, c)] - 1) for (impl, N, c) in sorted(ms)
            if impl == base and (variant, N, c) in ms]


def fp8_e2e_table(run: dict, D: int = 128) -> list[dict]:
    """Per N at head dim ``D`` (rows of runs that timed the drop-in): ``fp16_ms`` (v2_triton),
    ``quant_ms`` (the fused quantiser over q, k and v), ``q_ms`` / ``v_ms`` (one tensor, with and
    without the rotation), ``attend`` (the kernel the drop-in called: "fp8_gluon" or
    "fp8_triton"; runs before the row said so used fp8_triton), ``kernel_ms`` (that kernel's
    fastest configuration in the run), ``e2e_ms``
    (``fp8_e2e_triton``: quantiser and kernel in one call), ``speedup`` (fp16 / e2e) and
    ``quant_share`` (quantiser / e2e). Times are the bench's ``ms``: CUDA-graph replays in runs
    since session 11; earlier runs hold eager medians there, and their quantiser times come from
    ``graph_ms`` (a replay, no host time in it).
    ``quant_GBps``: bytes the quantiser moves (2 read and 1 written per element of q, k, v)
    per second."""
    rows = [r for r in timed(run) if r["D"] == D]
    out = []
    for N in sorted({r["N"] for r in rows if r["impl"] == E2E}):
        here = {r["impl"]: r for r in rows if r["N"] == N}
        t = {n: here[n].get("graph_ms", here[n]["ms"]) for n in (FUSED, f"{FUSED}: q", f"{FUSED}: v")}
        r0 = here[E2E]
        attend = r0.get("attend", "fp8_triton")
        kernel = min(r["ms"] for n, r in here.items() if n.startswith(attend))
        e2e, fp16 = r0["ms"], here["v2_triton fp16"]["ms"]
        nbytes = 3 * 3 * r0["B"] * r0["H"] * N * D
        out.append(dict(N=N, fp16_ms=fp16, quant_ms=t[FUSED], q_ms=t[f"{FUSED}: q"],
                        v_ms=t[f"{FUSED}: v"], attend=attend, kernel_ms=kernel, e2e_ms=e2e, speedup=fp16 / e2e,
                        quant_share=t[FUSED] / e2e, quant_GBps=nbytes / (t[FUSED] * 1e-3) / 1e9))
    return out


def fp8_e2e_text(run: dict, D: int = 128) -> str:
    """:func:`fp8_e2e_table` as fixed-width text, in ms."""
    lines = [f"{'N':>6} {'fp16 v2':>8} {'quantise':>9} {'FP8 kernel':>11} {'end to end':>11} "
             f"{'x fp16':>7}   (ms)"]
    for r in fp8_e2e_table(run, D):
        lines.append(f"{r['N']:6d} {r['fp16_ms']:8.3f} {r['quant_ms']:9.3f} {r['kernel_ms']:11.3f} "
                     f"{r['e2e_ms']:11.3f} {r['speedup']:7.2f}")
    return "\n".join(lines)


def fp8_gluon_table(run: dict) -> list[dict]:
    """Per (D, N) where the run timed the Gluon FA3 kernel's FP8 build (``fp8_gluon`` rows,
    on sm_90): its fastest configuration's TFLOP/s (``gluon_tflops``, ``gluon_config``)
    beside the fastest ``fp8_triton`` configuration's (``triton_tflops``), and their
    ratio (``x_triton``), both on the same quantised inputs."""
    rows = timed(run)
    out = []
    for D, N in sorted({(r["D"], r["N"]) for r in rows if r["impl"].startswith("fp8_gluon")}):
        here = [r for r in rows if (r["D"], r["N"]) == (D, N)]
        gluon = min((r for r in here if r["impl"].startswith("fp8_gluon")), key=lambda r: r["ms"])
        triton = min((r for r in here if r["impl"].startswith("fp8_triton")), key=lambda r: r["ms"])
        out.append(dict(D=D, N=N, gluon_tflops=gluon["tflops"], gluon_config=fp8_config(gluon["impl"]),
                        triton_tflops=triton["tflops"], x_triton=triton["ms"] / gluon["ms"]))
    return out


def fp8_gluon_summary(run: dict, N: int = 16384) -> dict:
    """What chapter 6 says of the Gluon FP8 build, by glue name: its TFLOP/s and the Triton
    FP8 kernel's at d = 128 and ``N`` (``g8_tflops``, ``g8_triton_tflops``), and per head dim
    the range of its speed over the Triton kernel's (``g8_x_128_lo``, ``g8_x_64_hi``, ...);
    empty where the run timed no Gluon row."""
    table = fp8_gluon_table(run)
    out = {}
    for r in table:
        if (r["D"], r["N"]) == (128, N):
            out.update(g8_tflops=r["gluon_tflops"], g8_triton_tflops=r["triton_tflops"])
    for D in sorted({r["D"] for r in table}):
        x = [r["x_triton"] for r in table if r["D"] == D]
        out[f"g8_x_{D}_lo"], out[f"g8_x_{D}_hi"] = min(x), max(x)
    return out


def fp8_summary(run: dict) -> dict:
    """What chapter 6 says of FP8 on the GPU, by glue name: the speed-up over fp16 at d = 128 per
    N and its range at d = 64, the torch quantisation step's time range (ms) and its ratio to the
    d = 128 kernel's time, what two design choices cost (:func:`fp8_design_costs`, % ranges),
    the FA3 recipe's RMSE beside the paper's, and the largest gap (%) between a kernel RMSE and
    its simulation."""
    sp = fp8_speed_table(run)
    rm = {r["recipe"]: r for r in run["rows"] if r.get("kind") == "rmse"}
    x64 = [r["speedup"] for r in sp if r["D"] == 64]
    out = dict(fp8_gpu=run["provenance"]["gpu"], fp8_date=run["provenance"]["date"][:10])
    out.update({f"fp8_x_{r['N']}": r["speedup"] for r in sp if r["D"] == 128})
    out["fp8_x_64_lo"], out["fp8_x_64_hi"] = min(x64), max(x64)
    out["fp8_quant_lo"] = min(r["quant_ms"] for r in sp)
    out["fp8_quant_hi"] = max(r["quant_ms"] for r in sp)
    ratio = [r["quant_ms"] / r["fp8_ms"] for r in sp if r["D"] == 128]
    out["fp8_quant_x_lo"], out["fp8_quant_x_hi"] = min(ratio), max(ratio)
    for name, values in fp8_design_costs(run).items():
        if values:
            out[f"fp8_{name}_lo"], out[f"fp8_{name}_hi"] = min(values), max(values)
    out["fp8_rmse_gpu"], out["fp8_rmse_paper"] = rm["fp8_fa3"]["rmse"], rm["fp8_fa3"]["paper"]
    out["fp8_rmse_agree"] = 100 * max(abs(r["rmse"] / r["simulated"] - 1) for r in rm.values())
    return out

