"""Time block-sparse FlashAttention against density on a GPU; check it against dense SDPA.

On the GPU machine, from the repository root (about 4-7 minutes on an H100/H200):

    python -m flashedu.bench.block_sparse --out $OUT [--quick] [--no-flex]

For N in {4k, 8k, 16k}, D in {64, 128}, fp16, the FlashAttention papers' shapes (hidden 2048:
H = 2048 / D, B = 16384 / N), one mask shared by all heads at 128 × 128 tiles:

* dense (100%), random tiles at 50 / 25 / 10 %, local bands of about 50 / 25 / 10 %;
* block_sparse_triton forward and forward+backward, against dense v2_triton (same harness) and
  against torch's FlexAttention (torch.compile) with the same mask, where torch has it;
* ablations (:data:`ABLATIONS`): the forward of the dense and local masks with the
  consecutive-run shortcut off (``block_sparse_triton index-walk``: every tile's block read
  from the index list), and of the random masks with each index read when it is needed
  instead of one iteration early (``block_sparse_triton no-prefetch``);
* correctness: block_sparse_triton on one batch element, two heads, against SDPA in fp32 with
  the expanded token mask (rows with no key: ours must be exactly 0).

Times are GPU times: the median of triton.testing.do_bench_cudagraph, which replays the calls
from a CUDA graph. At 10 % of the tiles a forward takes about 0.1-0.2 ms on the GPU, as long as
the Python of one eager call (checks, layout lookup, Triton's launch), so events around eager
calls would time the CPU. That host time is recorded beside each forward (``host_us``), as is
the config the forward timed and kept. A call that cannot be captured is timed eagerly with
do_bench and says so (``timer``). Writes OUT/block_sparse/<gpu>.json after every row (copy it to
flashedu/recorded/data/block_sparse/ to show it in chapter 5; ``--N`` splits the run over two GPUs and
``--merge`` joins the parts) and prints a table and the targets (25% of tiles ≤ 0.35x dense v2,
10% ≤ 0.18x, 100% within 1.1x).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


import flashedu  # noqa: E402  (first: it decides compiled vs interpreter before triton loads)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from flashedu.bench.recorder import Recorder, gpu_time, host_us, require_gpu  # noqa: E402

from flashedu.ops.block_sparse import masks as bs  # noqa: E402
from flashedu.ops.block_sparse import kernel  # noqa: E402
from flashedu.ops.block_sparse.kernel import block_sparse_flash_attention  # noqa: E402
from flashedu.ops.v2.kernel import flash_attention_v2  # noqa: E402

DT = torch.float16
BLOCK = 128
DENSITIES = (0.5, 0.25, 0.1)
# impl name -> (kernel flag, value for the ablation, patterns it is timed on)
ABLATIONS = {"block_sparse_triton index-walk": ("USE_RUN", False, ("dense", "local")),
             "block_sparse_triton no-prefetch": ("PREFETCH_INDEX", False, ("random",))}
FLEX_BUDGET_S = 330  # stop starting FlexAttention cases after this much wall time (compiles are slow)


def masks_for(N: int) -> list[tuple[str, float, bs.BlockSparseMask]]:
    """(pattern, target density, mask): dense, random and local at each target density."""
    T = N // BLOCK
    out = [("dense", 1.0, bs.dense_mask(N, block_r=BLOCK))]
    for s in DENSITIES:
        out.append(("random", s, bs.random_blocks(N, block=BLOCK, density=s, seed=int(s * 100))))
        width = max(0, round((s * T - 1) / 2))  # a band of 2w + 1 tiles per row
        out.append(("local", s, bs.local(N, block=BLOCK, width=width)))
    return out


def bench(fn, grads=None) -> dict:
    return gpu_time(fn, grads)


def check(N: int, D: int, name: str, mask, log) -> dict:
    """block_sparse_triton vs SDPA (fp32, expanded mask) on B=1, H=2."""
    q, k, v = (torch.randn(1, 2, N, D, device="cuda", dtype=DT) for _ in range(3))
    o = block_sparse_flash_attention(q, k, v, block_mask=mask).float()
    keep = mask.dense()[0].cuda()  # [N, N]
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=keep)
    rows = keep.any(-1)
    err = (o[:, :, rows] - ref[:, :, rows]).abs().max().item()
    empty_zero = bool((o[:, :, ~rows] == 0).all()) if (~rows).any() else None
    row = dict(N=N, D=D, pattern=name, density=mask.density(), max_err=err, empty_rows_zero=empty_zero,
               ok=err < 1e-2 and empty_zero is not False)
    log(row)
    return row


def flex_fns():
    """(forward fn(q, k, v, block_mask), why-not) for compiled FlexAttention."""
    why = bs.flex_available()
    if why:
        return None, why
    from torch.nn.attention.flex_attention import flex_attention
    return torch.compile(flex_attention, dynamic=False), None


def main() -> int:
    ap = argparse.ArgumentParser(prog=f"python -m {__spec__.name}" if __spec__ else None,
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join("flashedu", "data"))
    ap.add_argument("--quick", action="store_true", help="N = 4k only")
    ap.add_argument("--no-flex", action="store_true", help="skip FlexAttention")
    ap.add_argument("--N", type=int, nargs="+", help="these sequence lengths only (one part of a run)")
    ap.add_argument("--merge", nargs="+", metavar="JSON", help="join parts of one run into --out's file, then stop")
    ap.add_argument("--flex-budget", type=float, default=FLEX_BUDGET_S,
                    help=f"stop starting FlexAttention cases after this many seconds (default {FLEX_BUDGET_S})")
    args = ap.parse_args()
    if args.merge:
        return merge(args.merge, args.out)
    require_gpu("flashedu.bench.block_sparse")
    rt = flashedu.runtime.current()
    if not rt.compiled:
        print(f"needs a GPU: {rt.describe()}")
        return 2
    t0 = time.time()

    rows, checks, notes = [], [], []
    rec = Recorder(args.out, "block_sparse",
                   config=dict(block=BLOCK, dtype="float16", densities=DENSITIES,
                               shapes="hidden 2048: H = 2048 / D, B = 16384 / N",
                               timer="triton.testing.do_bench_cudagraph median, rep 40 ms"))

    def log(row):
        print(f"[{time.time() - t0:6.1f}s] " + json.dumps(row), flush=True)
        rec.save(rows, checks=checks, notes=notes)

    flex, flex_why = (None, "--no-flex") if args.no_flex else flex_fns()
    if flex_why:
        notes.append(f"FlexAttention not timed: {flex_why}")
    Ns = (4096,) if args.quick else tuple(args.N or (4096, 8192, 16384))
    for N in Ns:
        for D in (64, 128):
            B, H = 16384 // N, 2048 // D
            shape = dict(N=N, D=D, B=B, H=H)
            q, k, v = (torch.randn(B, H, N, D, device="cuda", dtype=DT, requires_grad=True) for _ in range(3))
            do = torch.randn_like(q)

            def fwd_bwd(f):
                return lambda: f().backward(do)

            for pass_, make in (("fwd", lambda f: f), ("fwd+bwd", fwd_bwd)):
                f = (lambda: flash_attention_v2(q, k, v))
                rows.append(dict(impl="v2_triton", pattern="dense", target_density=1.0, density=1.0,
                                 pass_=pass_, **bench(make(f), [q, k, v]), **shape))
                if pass_ == "fwd":
                    rows[-1]["host_us"] = round(host_us(f), 1)
                log(rows[-1])
            for name, target, mask in masks_for(N):
                if N == Ns[0] or name == "random":
                    checks.append(check(N, D, name, mask, log))
                f = (lambda m=mask: block_sparse_flash_attention(q, k, v, block_mask=m))
                for pass_, make in (("fwd", lambda f: f), ("fwd+bwd", fwd_bwd)):
                    rows.append(dict(impl="block_sparse_triton", pattern=name, target_density=target,
                                     density=mask.density(), pass_=pass_, **bench(make(f), [q, k, v]), **shape))
                    if pass_ == "fwd":
                        rows[-1].update(host_us=round(host_us(f), 1),
                                        config=kernel.picked_config(q, k, mask))
                    log(rows[-1])
                for impl, (flag, value, patterns) in ABLATIONS.items():
                    if name not in patterns:
                        continue
                    kept = getattr(kernel, flag)
                    setattr(kernel, flag, value)
                    try:
                        rows.append(dict(impl=impl, pattern=name, target_density=target, density=mask.density(),
                                         pass_="fwd", **bench(f, [q, k, v]), **shape))
                    finally:
                        setattr(kernel, flag, kept)
                    log(rows[-1])
                if flex is None or time.time() - t0 > args.flex_budget:
                    if flex is not None and not any("budget" in n for n in notes):
                        notes.append(f"FlexAttention cases after {args.flex_budget:.0f} s were skipped (time budget)")
                    continue
                try:
                    fm = bs.to_flex(mask, device="cuda")
                    g = (lambda fm=fm: flex(q, k, v, block_mask=fm))
                    for pass_, make in (("fwd", lambda f: f), ("fwd+bwd", fwd_bwd)):
                        rows.append(dict(impl="flex_attention", pattern=name, target_density=target,
                                         density=mask.density(), pass_=pass_, **bench(make(g), [q, k, v]), **shape))
                        log(rows[-1])
                except Exception as exc:  # noqa: BLE001  (a FlexAttention failure is a result, not a crash)
                    notes.append(f"FlexAttention N={N} D={D} {name} {target}: {type(exc).__name__}: {str(exc)[:200]}")
                    print(notes[-1], flush=True)
            del q, k, v, do
            torch.cuda.empty_cache()

    path = rec.save(rows, final=True, checks=checks, notes=notes, wall_s=round(time.time() - t0, 1))
    with open(path) as fh:
        result = json.load(fh)
    print(f"\nwrote {path} in {time.time() - t0:.0f} s")
    return summarize(result)


def merge(paths: list[str], out: str) -> int:
    """Join the parts of one run (same commit, one sequence length each, say) into
    out/block_sparse/<gpu>.json: rows, checks and notes concatenated, each part's provenance
    and wall time kept under "parts"."""
    docs = [json.load(open(p)) for p in paths]
    commits = {d["provenance"].get("commit") for d in docs}
    if len(commits) != 1 or any(d.get("partial") for d in docs):
        print(f"refusing to merge: commits {commits}, partial {[d.get('partial') for d in docs]}")
        return 1
    from flashedu.bench.schema import gpu_slug
    first = docs[0]
    doc = dict(provenance=first["provenance"], config=first["config"],
               checks=[c for d in docs for c in d["checks"]], notes=[n for d in docs for n in d["notes"]],
               parts=[dict(provenance=d["provenance"], wall_s=d.get("wall_s")) for d in docs],
               wall_s=max(d.get("wall_s") or 0 for d in docs), rows=[r for d in docs for r in d["rows"]],
               partial=False)
    path = os.path.join(out, "block_sparse", f"{gpu_slug(first['provenance'])}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(doc, fh, indent=1)
    print(f"wrote {path}: {len(doc['rows'])} rows from {len(docs)} parts")
    return summarize(doc)


def summarize(result: dict) -> int:
    """Print time ratios to dense v2 and the targets; exit status 1 when a check failed."""
    ms = {(r["impl"], r["pattern"], r["target_density"], r["N"], r["D"], r["pass_"]): r["ms"] for r in result["rows"]}
    print(f"\n{'pass':8s} {'N':>6s} {'D':>4s} {'pattern':8s} {'target':>6s} {'bs/v2':>7s} {'flex/v2':>8s}")
    fails = []
    for (impl, pat, s, N, D, p), t in sorted(ms.items(), key=lambda kv: (kv[0][5], kv[0][3], kv[0][4], kv[0][1], -kv[0][2])):
        if impl != "block_sparse_triton":
            continue
        base = ms[("v2_triton", "dense", 1.0, N, D, p)]
        flex = ms.get(("flex_attention", pat, s, N, D, p))
        ratio = t / base
        print(f"{p:8s} {N:6d} {D:4d} {pat:8s} {s:6.0%} {ratio:7.2f} {flex / base if flex else float('nan'):8.2f}")
        limit = {1.0: 1.1, 0.25: 0.35, 0.1: 0.18}.get(s)
        if p == "fwd" and pat == "random" or (s == 1.0 and p == "fwd"):
            if limit is not None and ratio > limit:
                fails.append(f"{p} N={N} D={D} {pat} {s:.0%}: {ratio:.2f}x dense v2 (target ≤ {limit}x)")
    bad = [c for c in result["checks"] if not c["ok"]]
    print("\ntargets (forward, random tiles): " + ("all met" if not fails else "MISSED:\n  " + "\n  ".join(fails)))
    print(f"correctness: {len(result['checks']) - len(bad)} of {len(result['checks'])} checks pass")
    for n in result["notes"]:
        print("note:", n)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
