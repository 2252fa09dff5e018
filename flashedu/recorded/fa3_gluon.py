"""Readers of ``flashedu.bench.fa3_gluon``'s runs: the Gluon FA3 kernel beside cuDNN (kind
``"fa3_gluon"``) and one program's measured timeline under each schedule (``"fa3_timeline"``).

* :func:`speed_table` - per (D, causal, N): TFLOP/s of each implementation and schedule;
  :func:`speed_text` prints the kernel beside cuDNN and v2_triton;
* :func:`speed_summary` - what chapter 6 quotes of it, by glue name;
* :func:`variant_effect` - a tuning run's variant (kind ``"fa3_gluon_tuning"``: ``--extra``
  rows, one file per idea tried) against the default kernel timed beside it, at every case;
  :func:`variant_effects` - the same, one per run;
* :func:`phases` / :func:`timeline_summary` - the timeline as per-iteration phase lengths;
* :data:`SIM_OF` / :func:`model_summary` - the same schedules in chapter 6's simulator, its
  predictions in ns at a measured clock.
"""
from __future__ import annotations

from statistics import median

FULL = "fa3_gluon"
# The Gluon kernel's schedules (flashedu.ops.fa3.gluon.ABLATIONS) as the simulator's:
# (fa3sim schedule, overrides).
SIM_OF = {
    "FA3 (all three ideas)": ("fa3", {}),
    "no ping-pong": ("intra_warpgroup", {}),
    "no intra-warpgroup pipelining": ("pingpong", {}),
    "no warp specialisation": ("intra_warpgroup", {"warp_specialize": False}),
}
PREFIX = "fa3_gluon: "
# The kernel's stamped events, in the order a warpgroup passes them each iteration
# (flashedu.ops.fa3.gluon.EVENTS).
EVENTS = ("turn", "issued", "s_ready", "softmax_done", "o_ready")
PHASES = {  # phase: (from event, to event)
    "turn": ("turn", "issued"),          # waits for its turn, then issues GEMM0(j+1) and GEMM1(j)
    "wait_s": ("issued", "s_ready"),     # waits for S(j+1)
    "softmax": ("s_ready", "softmax_done"),
    "wait_o": ("softmax_done", "o_ready"),  # waits for GEMM1(j)
}


def timed(run: dict) -> list[dict]:
    return [r for r in run["rows"] if "tflops" in r]


def speed_table(run: dict) -> list[dict]:
    """One dict per (D, causal, N), sorted: ``tflops`` {implementation or schedule: TFLOP/s};
    the schedules are named as in ``flashedu.ops.fa3.gluon.ABLATIONS`` (the full kernel under
    ``"fa3_gluon"``)."""
    rows = timed(run)
    out = []
    for D, causal, N in sorted({(r["D"], r["causal"], r["N"]) for r in rows}):
        here = {r["impl"]: r["tflops"] for r in rows if (r["D"], r["causal"], r["N"]) == (D, causal, N)}
        out.append(dict(D=D, causal=causal, N=N, tflops=here))
    return out


def speed_text(run: dict) -> str:
    """:func:`speed_table` as fixed-width text: the registered kernel, cuDNN, their ratio and
    chapter 4's ``v2_triton``, in TFLOP/s."""
    lines = [f"{'d':>4} {'causal':>6} {'N':>6}  {'fa3_gluon':>9}  {'cuDNN':>6}  {'ratio':>5}  "
             f"{'v2_triton':>9}"]
    for r in speed_table(run):
        t = r["tflops"]
        lines.append(f"{r['D']:4d} {'yes' if r['causal'] else 'no':>6} {r['N']:6d}  "
                     f"{t[FULL]:9.0f}  {t['sdpa_cudnn']:6.0f}  {t[FULL] / t['sdpa_cudnn']:5.2f}  "
                     f"{t['v2_triton']:9.0f}")
    return "TFLOP/s, fp16:\n" + "\n".join(lines)


def ratio(row: dict, a: str, b: str = "sdpa_cudnn") -> float | None:
    t = row["tflops"]
    return t[a] / t[b] if a in t and b in t else None


def speed_summary(run: dict) -> dict:
    """Glue names: the GPU and date; the full kernel's TFLOP/s and its ratio to cuDNN at each
    (D, causal, N) (``fa3g_128_4096``, ``fa3g_x_128_4096``, with ``c`` after D when causal);
    each schedule's TFLOP/s at d = 128, N = 16384 (``fa3g_abl_<i>``, in ABLATIONS order)."""
    out = dict(fa3g_gpu=run["provenance"]["gpu"], fa3g_date=run["provenance"]["date"][:10])
    for row in speed_table(run):
        key = f"{row['D']}{'c' if row['causal'] else ''}_{row['N']}"
        if FULL in row["tflops"]:
            out[f"fa3g_{key}"] = row["tflops"][FULL]
            out[f"fa3g_x_{key}"] = ratio(row, FULL)
            out[f"fa3g_cudnn_{key}"] = row["tflops"].get("sdpa_cudnn")
            out[f"fa3g_v2_{key}"] = row["tflops"].get("v2_triton")
    return out


def ablation(run: dict, *, D: int = 128, N: int = 16384, causal: bool = False) -> dict[str, float]:
    """TFLOP/s of each schedule and variant at one case: {"FA3 (all three ideas)": ...,
    "no ping-pong": ..., "3 stages": ...} (variants are named as the bench names them).
    The switched-off schedules run the one-item, two-consumer build; "FA3 (all three ideas)" is
    that build with every switch on: its own row where the run timed one (the registered kernel
    at that shape being another build, persistent or with three consumers), else the registered
    kernel's row. Runs before that row existed compare with the registered kernel at every
    shape, so read them where it is the one-item build."""
    row = next((r for r in speed_table(run) if (r["D"], r["N"], r["causal"]) == (D, N, causal)), None)
    if row is None:
        return {}
    t = row["tflops"]
    out = {impl[len(PREFIX):]: tf for impl, tf in t.items() if impl.startswith(PREFIX)}
    if "FA3 (all three ideas)" not in out and FULL in t:
        out = {"FA3 (all three ideas)": t[FULL], **out}
    return out


def variant_effect(runs: list[dict], variant: str) -> dict | None:
    """``variant`` (a bench name after ``"fa3_gluon: "``, e.g. ``"split mask"``) against the
    default kernel timed beside it in the same run, gathered over ``runs`` (each case from the
    run that timed it): ``ratios`` {(D, causal, N): variant / default}, their ``low`` and
    ``high``, ``worst`` and ``best`` (the cases of those), the runs' ``commits``; None where no
    run timed it."""
    ratios, commits = {}, []
    for run in runs:
        found = False
        for row in speed_table(run):
            t = row["tflops"]
            if PREFIX + variant in t and FULL in t:
                ratios[(row["D"], row["causal"], row["N"])] = t[PREFIX + variant] / t[FULL]
                found = True
        if found:
            commits.append(run["provenance"]["commit"])
    if not ratios:
        return None
    worst, best = min(ratios, key=ratios.get), max(ratios, key=ratios.get)
    return dict(ratios=ratios, low=ratios[worst], high=ratios[best], worst=worst, best=best,
                commits=commits)


def variant_effects(runs: list[dict], variant: str) -> list[dict]:
    """:func:`variant_effect` of each run that timed ``variant``, oldest first: a knob timed
    again after the kernel around it changed (the causal schedule under "persistent")."""
    from flashedu.recorded import date

    found = (variant_effect([run], variant) for run in sorted(runs, key=date))
    return [effect for effect in found if effect is not None]


def phases(entry: dict) -> list[list[dict]]:
    """Per warpgroup, per stamped iteration: each phase's (start, end) in ns, plus ``rest``
    (from o_ready to the next iteration's turn: rescaling O, waiting for the next K and V)."""
    out = []
    for wg in entry["warpgroups"]:
        its = wg["iterations"]
        rows = []
        for i, it in enumerate(its):
            if any(it[e] is None for e in EVENTS):
                continue
            row = {p: (it[a], it[b]) for p, (a, b) in PHASES.items()}
            if i + 1 < len(its) and its[i + 1]["turn"] is not None:
                row["rest"] = (it["o_ready"], its[i + 1]["turn"])
            rows.append(row)
        out.append(rows)
    return out


def timeline_summary(run: dict) -> dict[str, dict]:
    """Per schedule: median ns per iteration (``period``, turn to turn) and of each phase,
    over both warpgroups; ``stagger``, the median ns between the two warpgroups' softmax
    starts; ``clock_ghz`` from the program's own cycle/ns ratio."""
    out = {}
    for entry in run["rows"]:
        if "warpgroups" not in entry:
            continue
        ph = phases(entry)
        periods = [wg["iterations"][i + 1]["turn"] - wg["iterations"][i]["turn"]
                   for wg in entry["warpgroups"] for i in range(len(wg["iterations"]) - 1)]
        d = {"period": median(periods)}
        for p in PHASES:
            d[p] = median(r[p][1] - r[p][0] for rows in ph for r in rows)
        d["clock_ghz"] = 1 / median(wg["ns_per_cycle"] for wg in entry["warpgroups"])
        if len(ph) == 2:  # how far apart the two warpgroups' softmaxes start
            d["stagger"] = median(abs(a["softmax"][0] - b["softmax"][0]) for a, b in zip(*ph))
        out[entry["schedule"]] = d
    return out


def simulate_schedule(schedule: str, *, n_blocks: int = 16):
    """The simulator's run of one Gluon schedule: d = 128, 128-row K/V tiles, an H200."""
    from flashedu.fa3sim import simulate

    sim, overrides = SIM_OF[schedule]
    return simulate(sim, d=128, block_n=128, n_blocks=n_blocks, gpu="H200", **overrides)


def model_summary(schedule: str, ns_per_cycle: float, *, n_blocks: int = 16) -> dict:
    """What the simulator predicts for one schedule, in ns at a measured clock: ``period`` (a
    tile), ``softmax`` (one warpgroup's, median) and ``gemms`` (one warpgroup's two GEMMs)."""
    r = simulate_schedule(schedule, n_blocks=n_blocks)

    def task_ns(kinds):  # median length of one task of these kinds (WG1)
        return ns_per_cycle * median(t.work_end - t.start for t in r.tasks
                                     if t.kind in kinds and t.lane == "WG1")

    return {"period": r.makespan / n_blocks * ns_per_cycle, "softmax": task_ns(("softmax",)),
            "gemms": 2 * task_ns(("gemm0", "gemm1"))}


__all__ = ["EVENTS", "SIM_OF", "model_summary", "simulate_schedule", "PHASES", "ablation", "phases", "ratio", "speed_summary", "speed_table",
           "timed", "timeline_summary"]
