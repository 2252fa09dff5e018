"""Read a run of ``tools/bench_block_sparse.py`` (``flashedu/data/block_sparse/<gpu>.json``) as
time ratios to the dense v2 kernel: the density-vs-time table of chapter 5.

Every ratio divides a median time by dense ``v2_triton``'s median for the same N, head dim and
pass, timed in the same process, so the GPU's clocks and the shapes cancel.
"""
from __future__ import annotations

from dataclasses import dataclass

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


def markdown_table(rows: list[Ratio], *, N: int, pass_: str = "fwd") -> str:
    """A Markdown table of one sequence length: pattern and density down, head dims across."""
    Ds = sorted({r.D for r in rows if r.N == N and r.pass_ == pass_})
    keys = []
    for r in rows:
        if r.N == N and r.pass_ == pass_ and (r.pattern, r.target) not in keys:
            keys.append((r.pattern, r.target))
    if not keys:
        raise ValueError(f"no rows at N={N}, pass_={pass_!r}")
    by = {(r.pattern, r.target, r.D): r for r in rows if r.N == N and r.pass_ == pass_}
    head = "| tiles | " + " | ".join(f"ours, d={D} | Flex, d={D}" for D in Ds) + " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(Ds))]
    for pat, s in keys:
        cells = []
        for D in Ds:
            r = by.get((pat, s, D))
            cells += [f"{r.ours:.2f}x" if r else "–", f"{r.flex:.2f}x" if r and r.flex else "–"]
        lines.append(f"| {pat} {s:.0%} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


WALK = "block_sparse_triton index-walk"  # the ablation: the dense mask with every index loaded


def index_walk_cost(run: dict) -> dict[int, list[float]]:
    """Per head dim, the forward time of the dense mask when every tile's index is loaded from
    the list (no pointer walk along the run) over the same kernel with the walk, one value per N."""
    ms = {(r["impl"], r["N"], r["D"]): r["ms"] for r in run["rows"]
          if r["pattern"] == "dense" and r["pass_"] == "fwd"}
    out: dict[int, list[float]] = {}
    for (impl, N, D), t in sorted(ms.items()):
        if impl == WALK and ("block_sparse_triton", N, D) in ms:
            out.setdefault(D, []).append(t / ms[("block_sparse_triton", N, D)])
    return out


def summary(run: dict) -> dict:
    """The numbers chapter 5's prose quotes from one run, by glue name: worst forward (and
    forward + backward) ratio at 50 / 25 / 10% random tiles, the speed-ups they mean, the dense
    ratio per head dim, what walking the dense rows through the index list would cost
    (:func:`index_walk_cost`, where the run recorded it), and FlexAttention over ours at the
    longest N and 25%."""
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
    big = max(r.N for r in rows)
    out["meas_big_k"] = big // 1024
    flex = [r.flex / r.ours for r in rows
            if r.N == big and r.target == 0.25 and r.pattern == "random" and r.pass_ == "fwd" and r.flex]
    if flex:
        out["flex_over_ours_25"] = max(flex)
    return out


def figure_points(run: dict) -> list[dict]:
    """Forward, random-tile ratios as points for :func:`flashedu.viz.block_sparse.density_figure`."""
    gpu = run["provenance"]["gpu"]
    return [dict(density=r.target, ratio=r.ours, label=f"{gpu}, N={r.N // 1024}k, d={r.D}, measured")
            for r in ratios(run) if r.pattern == "random" and r.pass_ == "fwd"]
