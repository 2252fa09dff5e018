"""Reader of ``flashedu.bench.block_sparse``'s runs (kind ``"block_sparse"``) as time ratios to
the dense v2 kernel: the density-vs-time table of chapter 5; FlexAttention's times over ours,
forward and backward (chapter 8); and the backward's ablation beside FlexAttention (kind
``"block_sparse_bwd_ablation"``, from ``flashedu.bench.ablate_block_sparse_bwd``: the case studies).

Every ratio divides a median time by dense ``v2_triton``'s median for the same N, head dim and
pass, timed in the same process, so the GPU's clocks and the shapes cancel.
"""
from __future__ import annotations

from dataclasses import dataclass

from flashedu.hardware import GPUS

TARGETS = {1.0: 1.1, 0.25: 0.35, 0.1: 0.18}  # forward time over dense v2's, at most (issue 7)


@dataclass(frozen=True)
class Ratio:
    """block_sparse_triton (and FlexAttention, where it ran) over dense v2_triton."""

    N: int
    D: int
    pattern: str  # "dense", "random" or "local"
    target: float  # the density asked for
    density: float  # the mask's actual share of tiles
    pass_: str  # "fwd" or "fwd+bwd"
    ours: float
    flex: float | None


def ratios(run: dict) -> list[Ratio]:
    """One :class:`Ratio` per (N, D, pattern, density, pass) that has a dense v2 time beside it."""
    ms = {(r["impl"], r["pattern"], r["target_density"], r["N"], r["D"], r["pass_"]): r for r in run["rows"]}
    out = []
    for (impl, pat, s, N, D, p), r in ms.items():
        base = ms.get(("v2_triton", "dense", 1.0, N, D, p))
        if impl != "block_sparse_triton" or base is None:
            continue
        flex = ms.get(("flex_attention", pat, s, N, D, p))
        out.append(Ratio(N, D, pat, s, r["density"], p, r["ms"] / base["ms"],
                         flex["ms"] / base["ms"] if flex else None))
    return sorted(out, key=lambda x: (x.pass_ != "fwd", x.N, x.D, x.pattern != "dense", -x.target, x.pattern))


def worst(rows: list[Ratio], *, target: float, pattern: str = "random", pass_: str = "fwd",
          D: int | None = None) -> float:
    """The largest ratio at one target density over every N (and head dim unless ``D``)."""
    sel = [r.ours for r in rows if r.target == target and r.pattern == pattern and r.pass_ == pass_
           and (D is None or r.D == D)]
    if not sel:
        raise ValueError(f"no rows at target={target}, pattern={pattern!r}, pass_={pass_!r}, D={D}")
    return max(sel)


def _mask_table(rows, columns: tuple[str, str], cells) -> str:
    """A Markdown table of rows of one N: (pattern, density) down in the rows' order, two
    columns per head dim across (``columns`` name them); ``cells(r)`` gives a row's two."""
    Ds = sorted({r.D for r in rows})
    by = {(r.pattern, r.target, r.D): r for r in rows}
    head = "| tiles | " + " | ".join(f"{columns[0]}, d={D} | {columns[1]}, d={D}" for D in Ds) + " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(Ds))]
    for pat, s in dict.fromkeys((r.pattern, r.target) for r in rows):
        row = []
        for D in Ds:
            r = by.get((pat, s, D))
            row += cells(r) if r else ["–", "–"]
        lines.append(f"| {pat} {s:.0%} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def markdown_table(rows: list[Ratio], *, N: int, pass_: str = "fwd") -> str:
    """A Markdown table of one sequence length: pattern and density down, head dims across."""
    here = [r for r in rows if r.N == N and r.pass_ == pass_]
    if not here:
        raise ValueError(f"no rows at N={N}, pass_={pass_!r}")
    return _mask_table(here, ("ours", "Flex"),
                       lambda r: [f"{r.ours:.2f}x", f"{r.flex:.2f}x" if r.flex else "–"])


@dataclass(frozen=True)
class FlexSpeed:
    """FlexAttention's time over ours for one mask, forward and backward apart (the backward is
    forward + backward minus forward, for each of the two): above 1 we are faster."""

    N: int
    D: int
    pattern: str
    target: float
    fwd: float
    bwd: float


def flex_speeds(run: dict) -> list[FlexSpeed]:
    """One :class:`FlexSpeed` per mask timed for both kernels in both passes."""
    ms = {(r["impl"], r["pattern"], r["target_density"], r["N"], r["D"], r["pass_"]): r["ms"]
          for r in run["rows"]}
    out = []
    for (impl, pat, s, N, D, p), flex_f in ms.items():
        if impl != "flex_attention" or p != "fwd":
            continue
        ours_f = ms.get(("block_sparse_triton", pat, s, N, D, "fwd"))
        ours_fb = ms.get(("block_sparse_triton", pat, s, N, D, "fwd+bwd"))
        flex_fb = ms.get(("flex_attention", pat, s, N, D, "fwd+bwd"))
        if ours_f and ours_fb and flex_fb and ours_fb > ours_f:
            out.append(FlexSpeed(N, D, pat, s, flex_f / ours_f, (flex_fb - flex_f) / (ours_fb - ours_f)))
    return sorted(out, key=lambda x: (x.N, x.D, x.pattern != "dense", x.pattern, -x.target))


def flex_markdown(rows: list[FlexSpeed], *, N: int) -> str:
    """A Markdown table of one N: masks down; forward and backward per head dim across."""
    here = [r for r in rows if r.N == N]
    if not here:
        raise ValueError(f"no FlexAttention rows at N={N}")
    return _mask_table(here, ("forward", "backward"), lambda r: [f"{r.fwd:.2f}x", f"{r.bwd:.2f}x"])


def bwd_ablation_markdown(run: dict) -> str:
    """``flashedu.bench.ablate_block_sparse_bwd``'s run (kind ``"block_sparse_bwd_ablation"``)
    as a Markdown table: one row per (head dim, N, density), FlexAttention's backward time over
    each variant of ours across."""
    variants = list(dict.fromkeys(v for r in run["rows"] for v in r["flex_over"]))
    lines = ["| d | N | tiles | " + " | ".join(variants) + " |", "|" + "---|" * (3 + len(variants))]
    for r in run["rows"]:
        cells = [f"{r['flex_over'][v]:.3f}x" if v in r["flex_over"] else "–" for v in variants]
        lines.append(f"| {r['D']} | {r['N'] // 1024}k | {r['target_density']:.0%} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bwd_gain(run: dict, without: str, with_: str) -> list[float]:
    """Per row of an ablation run, the backward time of variant ``without`` over ``with_``."""
    return [r["bwd_ms"][without] / r["bwd_ms"][with_] for r in run["rows"]
            if without in r["bwd_ms"] and with_ in r["bwd_ms"]]


WALK = "block_sparse_triton index-walk"  # ablation: dense and local masks, every index loaded
NO_PREFETCH = "block_sparse_triton no-prefetch"  # ablation: random masks, each index read when needed


def ablation_cost(run: dict, impl: str, pattern: str) -> dict[int, list[float]]:
    """Per head dim, the forward time of ablation ``impl`` over the kernel as shipped, on the
    masks of ``pattern``: one value per (N, density) that the run recorded, in N order."""
    ms = {(r["impl"], r["N"], r["D"], r["target_density"]): r["ms"] for r in run["rows"]
          if r["pattern"] == pattern and r["pass_"] == "fwd"}
    out: dict[int, list[float]] = {}
    for (name, N, D, s), t in sorted(ms.items()):
        if name == impl and ("block_sparse_triton", N, D, s) in ms:
            out.setdefault(D, []).append(t / ms[("block_sparse_triton", N, D, s)])
    return out


def index_walk_cost(run: dict) -> dict[int, list[float]]:
    """Per head dim, the dense mask with every tile's index loaded from the list (no pointer
    walk along the run) over the same kernel with the walk, one value per N."""
    return ablation_cost(run, WALK, "dense")


def prefetch_gain(run: dict) -> dict[int, list[float]]:
    """Per head dim, random masks with each index read only when its tile is due over the kernel
    that reads it one iteration early, one value per (N, density)."""
    return ablation_cost(run, NO_PREFETCH, "random")


def picked_tiles(run: dict) -> dict[int, str]:
    """Per head dim, the forward configs the kernel timed and kept, as "BLOCK_M × BLOCK_N,
    w warps, s stages" (stages joined by "or" where the pick changed with N or the mask)."""
    seen: dict[int, dict[tuple, list[int]]] = {}
    for r in run["rows"]:
        c = r.get("config")
        if r["impl"] == "block_sparse_triton" and c:
            stages = seen.setdefault(r["D"], {}).setdefault(tuple(c[:3]), [])
            if c[3] not in stages:
                stages.append(c[3])
    return {D: "; ".join(f"{bm} × {bn}, {w} warps, {' or '.join(map(str, sorted(st)))} stages"
                         for (bm, bn, w), st in tiles.items())
            for D, tiles in sorted(seen.items())}


def shared_kb(config, D: int, elem_bytes: int = 2) -> float:
    """KB of shared memory a forward program holds: its Q tile and ``stages`` buffers of a K
    and a V tile (the estimate the kernels' config filter uses)."""
    from flashedu.ops._triton import shared_bytes

    bm, bn, _, stages = config
    return shared_bytes(bm, bn, stages, D, elem_bytes, resident_tiles=1) / 1024


def summary(run: dict) -> dict:
    """The numbers chapter 5's prose quotes from one run, by glue name: worst forward (and
    forward + backward) ratio at 50 / 25 / 10% random tiles, the speed-ups they mean, the dense
    ratio per head dim, what walking the dense rows through the index list would cost
    (:func:`index_walk_cost`) and what reading each index late costs (:func:`prefetch_gain`),
    where the run recorded them, the tiles picked, the host time of an eager call beside the GPU
    time of the shortest forward, FlexAttention over ours at the longest N and 25%, and the
    range of FlexAttention over ours in each pass (:func:`flex_speeds`; backward per head dim)."""
    rows = ratios(run)
    out = dict(meas_gpu=run["provenance"]["gpu"], meas_date=run["provenance"]["date"][:10])
    for s, name in ((0.5, "50"), (0.25, "25"), (0.1, "10")):
        out[f"meas_{name}"] = worst(rows, target=s)
        out[f"meas_{name}_fb"] = worst(rows, target=s, pass_="fwd+bwd")
    out["speedup_50"] = 1 / out["meas_50"]
    out["speedup_25"] = 1 / out["meas_25"]
    for D in sorted({r.D for r in rows}):
        out[f"dense_d{D}"] = worst(rows, target=1.0, pattern="dense", D=D)
        out[f"dense_fb_d{D}"] = worst(rows, target=1.0, pattern="dense", pass_="fwd+bwd", D=D)
    for D, walk in index_walk_cost(run).items():
        out[f"walk_lo_d{D}"], out[f"walk_hi_d{D}"] = min(walk), max(walk)
    for D, late in prefetch_gain(run).items():
        out[f"prefetch_lo_d{D}"], out[f"prefetch_hi_d{D}"] = min(late), max(late)
    for D, text in picked_tiles(run).items():
        out[f"tiles_d{D}"] = text
        first = next(r["config"] for r in run["rows"] if r.get("config") and r["D"] == D)
        out[f"tiles_kb_d{D}"] = shared_kb(first, D)
        preset = next((g for name, g in GPUS.items() if name in run["provenance"]["gpu"]), None)
        if preset:  # programs whose shared memory fits one SM side by side
            out[f"tiles_per_sm_d{D}"] = int(preset.sram_per_sm_bytes / 1024 // out[f"tiles_kb_d{D}"])
    host = [r["host_us"] for r in run["rows"] if r["impl"] == "block_sparse_triton" and "host_us" in r]
    if host:
        out["host_lo_us"], out["host_hi_us"] = min(host), max(host)
        fwd = [r for r in run["rows"] if r["impl"] == "block_sparse_triton" and r["pass_"] == "fwd"]
        out["gpu_min_us"] = min(r["ms"] for r in fwd) * 1000
    big = max(r.N for r in rows)
    out["meas_big_k"] = big // 1024
    block = run.get("config", {}).get("block")
    if block:  # the shortest rows measured: 10% of the tiles of a row at the smallest N
        small = min(r.N for r in rows)
        out["meas_small_k"], out["row_tiles_small"] = small // 1024, small // block
        out["row_tiles_10"] = 0.1 * small / block
    flex = [r.flex / r.ours for r in rows
            if r.N == big and r.target == 0.25 and r.pattern == "random" and r.pass_ == "fwd" and r.flex]
    if flex:
        out["flex_over_ours_25"] = max(flex)
    speeds = flex_speeds(run)
    if speeds:
        out["flex_fwd_lo"] = min(r.fwd for r in speeds)
        out["flex_fwd_hi"] = max(r.fwd for r in speeds)
        for D in sorted({r.D for r in speeds}):
            bwd = [r.bwd for r in speeds if r.D == D]
            out[f"flex_bwd_lo_d{D}"], out[f"flex_bwd_hi_d{D}"] = min(bwd), max(bwd)
    return out


def figure_points(run: dict) -> list[dict]:
    """Forward, random-tile ratios as points for :func:`flashedu.viz.block_sparse.density_figure`."""
    gpu = run["provenance"]["gpu"]
    return [dict(density=r.target, ratio=r.ours, label=f"{gpu}, N={r.N // 1024}k, d={r.D}, measured")
            for r in ratios(run) if r.pattern == "random" and r.pass_ == "fwd"]
