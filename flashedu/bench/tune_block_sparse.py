"""Time block_sparse_triton's forward config by config against mask density, on a GPU (issue 7).

On the GPU machine, from the repository root (about 2 minutes per head dim on an H100/H200):

    python -m flashedu.bench.tune_block_sparse --D 128 --out $OUT   # writes $OUT/block_sparse_tuning/<gpu>.json

At the shapes of ``flashedu/bench/block_sparse.py`` (hidden 2048, B·N = 16k, fp16, 128 × 128
mask blocks) and for a dense, a random 25 %, a random 10 % and a local 10 % mask, every
candidate (BLOCK_M, BLOCK_N, warps, stages) of the forward is timed beside dense v2_triton,
both by CUDA-graph replay (``ms``, as the benchmark times) and by do_bench's events around
eager calls (``ms_eager``; this script calls the kernel with few checks, so its host time stays
well under the GPU's). ``--table`` times only the head of FWD_CONFIGS; ``--flag NAME`` times
each config again with the boolean ``kernel.NAME`` flipped (a kernel variant under test).
Each config is first checked against SDPA (fp32, expanded mask) at N = 1024. Also recorded:
the host time of one call (the GPU held busy by a sleep, so only the Python side is timed), to
tell a launch-bound measurement from a kernel-bound one. A config that does not compile is a
row with its error, not a crash.

The run at e805acf (docs/notes/data/block-sparse-tuning-e805acf-d*.json) also timed each
config with the rows started longest first; that order changed times by ±1 % either way and
was removed (its ``ms`` is do_bench's, eager).
"""
from __future__ import annotations

import argparse
import time


import flashedu  # noqa: E402, F401  (decides compiled vs interpreter before kernels load)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import triton  # noqa: E402
from flashedu.bench.recorder import Recorder, gpu_time, host_us, kernel_stats, require_gpu  # noqa: E402

from flashedu.ops.block_sparse import masks as bs  # noqa: E402
from flashedu.ops.block_sparse import kernel as impl  # noqa: E402
from flashedu.ops.v2.kernel import flash_attention_v2  # noqa: E402

DT = torch.float16
BLOCK = 128
# The sm90 table before this tuning (v2's), then tiles for short rows: 64-row tiles with 4
# warps fit two or three programs on an SM, so one's prologue and epilogue overlap another's loop.
CONFIGS = [(128, 128, 8, 3), (128, 64, 8, 3), (128, 64, 4, 3), (128, 64, 8, 4), (128, 128, 8, 2),
           (128, 128, 8, 4), (64, 64, 4, 3), (64, 32, 8, 2), (64, 64, 4, 2), (64, 64, 4, 4),
           (64, 128, 4, 2), (64, 128, 4, 3), (64, 128, 8, 2), (128, 64, 8, 2), (64, 32, 4, 3)]


def cfg(t):
    bm, bn, w, s = t
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)


def masks_for(N: int):
    T = N // BLOCK
    return [("dense", 1.0, bs.dense_mask(N, block_r=BLOCK)),
            ("random", 0.25, bs.random_blocks(N, block=BLOCK, density=0.25, seed=25)),
            ("random", 0.1, bs.random_blocks(N, block=BLOCK, density=0.1, seed=10)),
            ("local", 0.1, bs.local(N, block=BLOCK, width=max(0, round((0.1 * T - 1) / 2))))]


def set_flags(flags: dict) -> None:
    for name, value in flags.items():
        setattr(impl, name, value)


def main() -> None:
    ap = argparse.ArgumentParser(prog=f"python -m {__spec__.name}" if __spec__ else None,
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--D", type=int, default=128)
    ap.add_argument("--N", type=int, nargs="+", default=[4096, 8192, 16384])
    ap.add_argument("--out", required=True)
    ap.add_argument("--host", action="store_true", help="only the host-time breakdown of one call")
    ap.add_argument("--table", action="store_true", help="only the first five configs of FWD_CONFIGS")
    ap.add_argument("--flag", help="also time every config with this kernel flag flipped")
    args = ap.parse_args()
    require_gpu("flashedu.bench.tune_block_sparse")
    D, t0 = args.D, time.time()
    if args.host:
        return host_breakdown(D)
    configs = [tuple(c) for c in impl.FWD_CONFIGS["sm90"][:5]] if args.table else CONFIGS
    flags = [{}]
    if args.flag:  # as shipped, then flipped
        flags = [{args.flag: v} for v in (getattr(impl, args.flag), not getattr(impl, args.flag))]
    rec = Recorder(args.out, "block_sparse_tuning", D=D, block=BLOCK, configs=configs, flag=args.flag,
                   shapes="hidden 2048: H = 2048 / D, B = 16384 / N", dtype="float16",
                   timer="ms: do_bench_cudagraph median (rep 40 ms); ms_eager: do_bench median (warmup 10, rep 40)")
    rows: list[dict] = []

    def log(r):
        rows.append(r)
        print(f"[{time.time() - t0:5.0f}s] {r}", flush=True)
        rec.save(rows)

    def fwd(q, k, v, mask, c):
        return lambda: impl.forward(q, k, v, mask, causal=False, scale=D ** -0.5, config=cfg(c))[0]

    # Correctness at N = 1024 (a random mask with empty rows), each config and order.
    N = 1024
    q, k, v = (torch.randn(1, 2, N, D, device="cuda", dtype=DT) for _ in range(3))
    mask = bs.random_blocks(N, block=BLOCK, density=0.3, seed=3)
    keep = mask.dense()[0].cuda()
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=keep)
    rows_kept = keep.any(-1)
    ok = {}
    for c, fl in ((c, fl) for c in configs for fl in flags):
        set_flags(fl)
        r = dict(kind="check", config=c, **fl)
        try:
            o = fwd(q, k, v, mask, c)().float()
            r.update(kernel_stats(impl._fwd_kernel))
            err = (o[:, :, rows_kept] - ref[:, :, rows_kept]).abs().max().item()
            zero = bool((o[:, :, ~rows_kept] == 0).all())
            r.update(max_err=round(err, 5), empty_rows_zero=zero)
            ok[c, str(fl)] = err < 1e-2 and zero
        except Exception as e:  # noqa: BLE001
            r["error"] = f"{type(e).__name__}: {str(e)[:200]}"
            ok[c, str(fl)] = False
        log(r)
    set_flags(flags[0])

    for N in args.N:
        B, H = 16384 // N, 2048 // D
        q, k, v = (torch.randn(B, H, N, D, device="cuda", dtype=DT) for _ in range(3))
        shape = dict(N=N, B=B, H=H)
        v2 = lambda: flash_attention_v2(q, k, v)  # noqa: E731
        log(dict(kind="time", impl="v2_triton", pattern="dense", density=1.0, **gpu_time(v2),
                 ms_eager=triton.testing.do_bench(v2, warmup=10, rep=40), **shape))
        for name, target, mask in masks_for(N):
            m = dict(pattern=name, target_density=target, density=round(mask.density(), 4))
            qg = q.clone().requires_grad_()
            log(dict(kind="host", impl="block_sparse_triton", **m, **shape,
                     us=round(host_us(lambda: impl.block_sparse_flash_attention(qg, k, v, block_mask=mask)), 1)))
            for c, fl in ((c, fl) for c in configs for fl in flags):
                if not ok.get((c, str(fl))):
                    continue
                set_flags(fl)
                r = dict(kind="time", impl="block_sparse_triton", config=c, **fl, **m, **shape)
                try:
                    r.update(gpu_time(fwd(q, k, v, mask, c)))
                    r["ms_eager"] = triton.testing.do_bench(fwd(q, k, v, mask, c), warmup=10, rep=40)
                except Exception as e:  # noqa: BLE001
                    r["error"] = f"{type(e).__name__}: {str(e)[:200]}"
                log(r)
            set_flags(flags[0])
        del q, k, v
        torch.cuda.empty_cache()
    rec.save(rows, final=True, seconds=round(time.time() - t0))

    print("\nfastest config per mask (ratio to dense v2):")
    for N in args.N:
        base = next(r["ms"] for r in rows if r["kind"] == "time" and r["impl"] == "v2_triton" and r["N"] == N)
        for name, target in (("dense", 1.0), ("random", 0.25), ("random", 0.1), ("local", 0.1)):
            cand = [r for r in rows if r["kind"] == "time" and r["impl"] == "block_sparse_triton" and r["N"] == N
                    and r["pattern"] == name and r["target_density"] == target and "ms" in r]
            if cand:
                best = min(cand, key=lambda r: r["ms"])
                first = next((r for r in cand if r["config"] == configs[0]), best)
                fl = {k: best[k] for k in flags[-1]}
                print(f"  N={N:5d} {name:6s} {target:4.0%}  best {best['config']} {fl} {best['ms'] / base:.3f}"
                      f"   {configs[0]} {first['ms'] / base:.3f}")


def host_breakdown(D: int) -> None:
    """Host µs per call at N = 4k, 10 % random: where the Python of an eager forward goes."""
    from flashedu.ops.block_sparse.masks.csr import kernel_layout
    from flashedu.ops.v2.kernel import flash_attention_v2_lse

    N = 4096
    B, H = 16384 // N, 2048 // D
    q, k, v = (torch.randn(B, H, N, D, device="cuda", dtype=DT) for _ in range(3))
    qg = q.clone().requires_grad_()
    mask = bs.random_blocks(N, block=BLOCK, density=0.1, seed=10)
    c = cfg(CONFIGS[0])
    lay = kernel_layout(mask.refine(64, 64), causal=False, device="cuda")
    o, lse = impl.forward(q, k, v, mask, causal=False, scale=D ** -0.5)
    steps = {
        "v2_triton (autograd, q needs grad)": lambda: flash_attention_v2(qg, k, v),
        "v2_triton lse (no autograd)": lambda: flash_attention_v2_lse(q, k, v),
        "block_sparse_triton (autograd, q needs grad)":
            lambda: impl.block_sparse_flash_attention(qg, k, v, block_mask=mask),
        "block_sparse_triton (no grad)": lambda: impl.block_sparse_flash_attention(q, k, v, block_mask=mask),
        "forward(), config given": lambda: impl.forward(q, k, v, mask, causal=False, scale=D ** -0.5, config=c),
        "forward(), config chosen": lambda: impl.forward(q, k, v, mask, causal=False, scale=D ** -0.5),
        "launch() alone": lambda: impl.launch(q, k, v, o, lse, lay, mask_heads=1, causal=False, scale=D ** -0.5,
                                              cfg=cfg((64, 64, 4, 3))),
        "torch.empty x2": lambda: (torch.empty_like(q), torch.empty(B, H, N, device="cuda")),
    }
    for name, fn in steps.items():
        print(f"{name:46s} {min(host_us(fn) for _ in range(3)):7.1f} us", flush=True)


if __name__ == "__main__":
    main()
