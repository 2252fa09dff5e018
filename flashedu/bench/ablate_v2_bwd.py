"""Time v2_triton's backward (two kernels, no atomics) beside FA2's layout (one kernel, dQ by
atomic adds: flashedu/ops/v2/kernel_bwd_atomic.py), the same layout in Gluon on wgmma (Hopper:
flashedu/ops/fa3/gluon_bwd_kernel.py, each of GLUON_CONFIGS) and SDPA's cuDNN backward:
issue 20's ablation.

On the GPU machine, from the repository root (about 2-3 minutes on an H200):

    python -m flashedu.bench.ablate_v2_bwd --out DIR [--D 128 64] [--N 1024 4096 16384]
        [--no-atomic | --atomic-first K]

Issue 20's grid (fp16, hidden 2048: H = 2048 / D, B = 16384 / N, causal or not). Every atomic
config (Triton's and Gluon's) is first checked against the two-kernel gradients at the timed
shape (largest relative error of dq, dk, dv; rows over 1e-2 are not timed). Times are GPU times
of the backward alone (o and L computed once), the median of calls replayed from a CUDA graph.
Writes DIR/v2_bwd_ablation/<gpu>.json after every row.
"""
from __future__ import annotations

import argparse
import time

# (BLOCK_M, BLOCK_N, warps, stages) of the one-kernel layout: a K/V tile resident, as dK/dV's.
# Fastest first in 427bfde's run (docs/notes/v2-tuning.md, session 10).
ATOMIC_CONFIGS = [(64, 128, 8, 3), (64, 128, 8, 2), (32, 128, 8, 3), (64, 64, 4, 3), (128, 128, 8, 2)]
# the Gluon backward's (Q/dO ring depth,), 64 × 128 tiles, 8 warps. 4a22b8d's run had pairs
# (stages, overlap), overlap the next tile's score GEMMs issued under this tile's dQ adds:
# slower in every case, so removed (docs/notes/v2-tuning.md, session 19).
GLUON_CONFIGS = [(2,), (3,)]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog=f"python -m {__spec__.name}" if __spec__ else None,
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--D", type=int, nargs="+", default=[128, 64])
    ap.add_argument("--N", type=int, nargs="+", default=[1024, 4096, 16384])
    ap.add_argument("--deadline", type=float, default=300.0, help="stop starting cases after this many seconds")
    ap.add_argument("--atomic", action=argparse.BooleanOptionalAction, default=True,
                    help="time the Triton atomic-dQ configs (--no-atomic: the Gluon ones only)")
    ap.add_argument("--atomic-first", type=int, default=len(ATOMIC_CONFIGS),
                    help="time only the first K atomic-dQ configs (the list is fastest first)")
    a = ap.parse_args(argv)

    from flashedu.bench.recorder import Recorder, gpu_time, kernel_stats, require_gpu
    require_gpu("flashedu.bench.ablate_v2_bwd")
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    import flashedu  # noqa: F401  (decides compiled vs interpreter before kernels load)
    from flashedu.bench.cases import make_case
    from flashedu.bench.flops import attention_flops
    from flashedu.ops.v2 import kernel_bwd as two
    from flashedu.ops.v2 import kernel_bwd_atomic as one
    from flashedu.ops.v2.kernel import flash_attention_v2_lse
    from flashedu.ops.fa3 import gluon_bwd
    gluon_why = flashedu.runtime.current().why_not_gluon(device="cuda", dtype=torch.float16)

    rec = Recorder(a.out, "v2_bwd_ablation",
                   atomic_configs=ATOMIC_CONFIGS[:a.atomic_first] if a.atomic else [],
                   gluon_configs=GLUON_CONFIGS if gluon_why is None else [])
    rows: list[dict] = []
    t0 = time.time()

    def log(r):
        rows.append(r)
        print(f"[{time.time() - t0:5.0f}s] {r}", flush=True)
        rec.save(rows)

    torch.manual_seed(0)
    for D in a.D:
        for N in a.N:
            for causal in (False, True):
                if time.time() - t0 > a.deadline:
                    break
                case = make_case(dtype="fp16", D=D, causal=causal, N=N)
                B, H, scale = case.B, case.H, D ** -0.5
                q, k, v, do = (torch.randn(B, H, N, D, device="cuda", dtype=torch.float16) for _ in range(4))
                flops = attention_flops("bwd", B=B, H=H, N=N, D=D, causal=causal)
                base = dict(D=D, N=N, B=B, H=H, causal=causal)

                def timed(impl, fn, **extra):
                    r = dict(base, impl=impl, **extra)
                    try:
                        r.update(gpu_time(fn))
                        r["tflops"] = round(flops / r["ms"] / 1e9, 1)
                    except Exception as e:  # noqa: BLE001
                        r["error"] = f"{type(e).__name__}: {str(e)[:200]}"
                    log(r)

                qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
                with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                    o_ref = F.scaled_dot_product_attention(qg, kg, vg, is_causal=causal)
                    timed("sdpa cuDNN", lambda: torch.autograd.grad(o_ref, (qg, kg, vg), do, retain_graph=True))
                del o_ref
                o, lse = flash_attention_v2_lse(q, k, v, causal=causal)
                want = two.attention_backward(do, q, k, v, o, lse, causal=causal, scale=scale)
                timed("v2_triton (two kernels)",
                      lambda: two.attention_backward(do, q, k, v, o, lse, causal=causal, scale=scale))
                # the same two kernels in one launch (kernel_bwd.ONE_LAUNCH): the first call
                # runs them alone and keeps their configs, later calls launch both at once
                shipped, two.ONE_LAUNCH = two.ONE_LAUNCH, True
                try:
                    two.attention_backward(do, q, k, v, o, lse, causal=causal, scale=scale)
                    got = two.attention_backward(do, q, k, v, o, lse, causal=causal, scale=scale)
                    err = max(((g.float() - w.float()).norm() / w.float().norm()).item()
                              for g, w in zip(got, want))
                    timed("v2_triton (one launch)", lambda: two.attention_backward(
                        do, q, k, v, o, lse, causal=causal, scale=scale), max_rel_err=round(err, 6))
                finally:
                    two.ONE_LAUNCH = shipped
                variants = [("atomic dQ", cfg, lambda cfg=cfg: one.attention_backward_atomic(
                    do, q, k, v, o, lse, causal=causal, scale=scale, config=cfg))
                    for cfg in (ATOMIC_CONFIGS[:a.atomic_first] if a.atomic else [])]
                if gluon_why is None and D in gluon_bwd.HEAD_DIMS:
                    variants += [("gluon atomic dQ", cfg, lambda cfg=cfg: gluon_bwd.gluon_backward(
                        do, q, k, v, o, lse, causal=causal, scale=scale, stages=cfg[0]))
                        for cfg in GLUON_CONFIGS]
                for impl, cfg, run in variants:
                    try:
                        got = run()
                        err = max(((g.float() - w.float()).norm() / w.float().norm()).item()
                                  for g, w in zip(got, want))
                    except Exception as e:  # noqa: BLE001
                        log(dict(base, impl=impl, config=cfg, error=f"{type(e).__name__}: {str(e)[:200]}"))
                        continue
                    # registers and spills of the Triton kernel (Gluon's: gluon_bwd.hopper_bwd_resources)
                    stats = kernel_stats(one._bwd_dkdv_dq) if impl == "atomic dQ" else {}
                    if err > 1e-2:
                        log(dict(base, impl=impl, config=cfg, max_rel_err=err, **stats))
                        continue
                    timed(impl, run, config=cfg, max_rel_err=round(err, 6), **stats)
                del q, k, v, do, qg, kg, vg, o, lse, want
                torch.cuda.empty_cache()
    rec.save(rows, final=True, seconds=round(time.time() - t0))
    print("\nbest atomic configs vs the two kernels and cuDNN (backward TFLOP/s):")
    keys = sorted({(r["D"], r["N"], r["causal"]) for r in rows})
    for key in keys:
        sel = [r for r in rows if (r["D"], r["N"], r["causal"]) == key and "tflops" in r]
        by = {r["impl"]: r for r in sel if "config" not in r}
        best = {impl: max((r for r in sel if r["impl"] == impl), key=lambda r: r["tflops"], default=None)
                for impl in ("atomic dQ", "gluon atomic dQ")}
        print(key, {n: r["tflops"] for n, r in by.items()},
              {impl: r and (r["config"], r["tflops"]) for impl, r in best.items()})


if __name__ == "__main__":
    main()
