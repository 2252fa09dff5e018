"""Check and time v2_triton (and v1_triton) beside torch's SDPA backends, in one process.

On the GPU machine, from the repository root:

    python -m flashedu.bench.tune_v2 --out $OUT [--wait-for FILE] [--quick]

1. every forward / dK-dV / dQ config of this arch, at D in {64, 128}, causal and not, against
   SDPA (forward and gradients), at a shape whose integer arguments specialise like the timed
   ones, so the autotuner reuses these compiles;
2. (after FILE exists, when --wait-for is given: lets a test run share the compile phase)
   forward, backward and forward+backward of v2_triton, forward of v1_triton, and SDPA's flash,
   efficient and cuDNN backends at the FlashAttention papers' shapes: fp16, hidden 2048
   (H = 2048 / D), B = 16384 / N, N in 512 ... 16k. FLOPs 4·B·H·N²·D forward (half when
   causal), backward 2.5x that. Median of triton.testing.do_bench after its warm-up.

Prints a TFLOP/s table last and writes everything to OUT/tune_v2.json.
"""
from __future__ import annotations

import argparse
import json
import os
import time


import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402
import triton  # noqa: E402

import flashedu  # noqa: E402
from flashedu import provenance  # noqa: E402
from flashedu.bench.peers import sdpa_peer  # noqa: E402
from flashedu.ops.v1.kernel import flash_attention_v1  # noqa: E402
from flashedu.ops.v2 import kernel_bwd as bwd  # noqa: E402
from flashedu.ops import _triton  # noqa: E402
from flashedu.ops.v2 import kernel as fwd  # noqa: E402
from flashedu.ops.v2.kernel import flash_attention_v2  # noqa: E402
from flashedu.bench.recorder import require_gpu  # noqa: E402
from flashedu.bench.schema import gpu_slug  # noqa: E402

DT = torch.float16


def rel(x, ref):
    return ((x.float() - ref.float()).norm() / ref.float().norm()).item()


def check_configs(rows, log):
    """Each config of this arch against SDPA (math backend in fp32) at B=1, H=4, N=2048."""
    for D in (64, 128):
        for causal in (False, True):
            q, k, v = (torch.randn(1, 4, 2048, D, device="cuda", dtype=DT) for _ in range(3))
            do = torch.randn_like(q)
            qf, kf, vf = (t.float().requires_grad_() for t in (q, k, v))
            with sdpa_kernel(SDPBackend.MATH):
                ref = F.scaled_dot_product_attention(qf, kf, vf, is_causal=causal)
            ref_grads = torch.autograd.grad(ref, (qf, kf, vf), do.float())
            scale = D ** -0.5
            for cfg in _triton.to_configs(fwd.FWD_CONFIGS, D, 2, resident=0, resident_tiles=1):
                t0 = time.time()
                try:
                    o, lse = fwd.attention_forward(q, k, v, causal=causal, scale=scale, config=cfg)
                    torch.cuda.synchronize()
                    err = rel(o, ref)
                except Exception as e:  # noqa: BLE001  (a config that does not compile is data)
                    err = f"{type(e).__name__}: {str(e)[:200]}"
                rows.append(dict(kernel="fwd", D=D, causal=causal, config=str(cfg), err=err,
                                 compile_s=round(time.time() - t0, 1)))
                log(rows[-1])
            o, lse = fwd.attention_forward(q, k, v, causal=causal, scale=scale)
            for name, table in (("dkdv", bwd.DKDV_CONFIGS), ("dq", bwd.DQ_CONFIGS)):
                resident, acc = (1, 2) if name == "dkdv" else (0, 1)
                for cfg in _triton.to_configs(table, D, 2, resident=resident, acc_tiles=acc):
                    t0 = time.time()
                    kw = {f"{name}_config": cfg}
                    try:
                        dq, dk, dv = bwd.attention_backward(do, q, k, v, o, lse, causal=causal,
                                                            scale=scale, **kw)
                        torch.cuda.synchronize()
                        err = max(rel(g, r) for g, r in zip((dq, dk, dv), ref_grads))
                    except Exception as e:  # noqa: BLE001
                        err = f"{type(e).__name__}: {str(e)[:200]}"
                    rows.append(dict(kernel=name, D=D, causal=causal, config=str(cfg), err=err,
                                     compile_s=round(time.time() - t0, 1)))
                    log(rows[-1])
    return rows


def bench(fn):
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def time_shapes(rows, Ns, Ds, log, with_v1=True):
    peers = {name: sdpa_peer(name) for name in ("sdpa_flash", "sdpa_efficient", "sdpa_cudnn")}
    for D in Ds:
        for causal in (False, True):
            for N in Ns:
                B, H = 16384 // N, 2048 // D
                fwd_flops = 4 * B * H * N * N * D / (2 if causal else 1)
                q, k, v = (torch.randn(B, H, N, D, device="cuda", dtype=DT, requires_grad=True)
                           for _ in range(3))
                do = torch.randn(B, H, N, D, device="cuda", dtype=DT)
                impls = {"v2_triton": flash_attention_v2, **peers}
                if with_v1:
                    impls["v1_triton"] = flash_attention_v1
                for name, fn in impls.items():
                    r = dict(impl=name, D=D, causal=causal, N=N, B=B, H=H)
                    try:
                        with torch.no_grad():
                            r["fwd_ms"] = bench(lambda: fn(q, k, v, causal=causal))
                        if name != "v1_triton":
                            o = fn(q, k, v, causal=causal)
                            r["bwd_ms"] = bench(lambda: torch.autograd.grad(o, (q, k, v), do, retain_graph=True))
                            r["fwdbwd_ms"] = bench(lambda: torch.autograd.grad(fn(q, k, v, causal=causal), (q, k, v), do))
                            del o
                    except Exception as e:  # noqa: BLE001  (a backend that refuses a shape is data)
                        r["error"] = f"{type(e).__name__}: {str(e)[:160]}"
                    for key, mult in (("fwd", 1.0), ("bwd", 2.5), ("fwdbwd", 3.5)):
                        if f"{key}_ms" in r:
                            r[f"{key}_tflops"] = round(mult * fwd_flops / (r[f"{key}_ms"] * 1e-3) / 1e12, 1)
                    rows.append(r)
                    log(r)
                picks = {}
                for kern in (fwd._fwd_kernel, bwd._bwd_dkdv, bwd._bwd_dq):
                    cfg = _triton.tuned_config(kern, D, 2)
                    picks[kern.fn.__name__ if hasattr(kern, "fn") else str(kern)] = str(cfg)
                rows.append(dict(impl="autotune_picks", D=D, causal=causal, N=N, picks=picks))
                log(rows[-1])
                del q, k, v, do
                torch.cuda.empty_cache()
    return rows


def strides_vs_contiguous(rows, log):
    """[B, N, H, D] storage viewed as [B, H, N, D]: strides passed as they are, vs a copy first."""
    B, H, N, D = 4, 16, 4096, 128
    base = [torch.randn(B, N, H, D, device="cuda", dtype=DT) for _ in range(3)]
    views = [t.transpose(1, 2) for t in base]
    with torch.no_grad():
        strided = bench(lambda: flash_attention_v2(*views, causal=True))
        copied = bench(lambda: flash_attention_v2(*(t.contiguous() for t in views), causal=True))
        contiguous = [t.contiguous() for t in views]
        plain = bench(lambda: flash_attention_v2(*contiguous, causal=True))
    rows.append(dict(test="strides", strided_ms=strided, copy_then_run_ms=copied, contiguous_ms=plain))
    log(rows[-1])


def profile_overhead(rows, log):
    """Host time per call (no sync) and where it goes: cProfile of 20 small forward calls."""
    import cProfile
    import io
    import pstats

    q, k, v = (torch.randn(32, 16, 512, 64, device="cuda", dtype=DT) for _ in range(3))
    first = _triton.to_configs(fwd.FWD_CONFIGS, 64, 2, resident=0, resident_tiles=1)[0]
    paths = {
        "public": lambda: flash_attention_v2(q, k, v),
        "forward_tuned": lambda: fwd.attention_forward(q, k, v, causal=False, scale=0.125),
        "forward_explicit": lambda: fwd.attention_forward(q, k, v, causal=False, scale=0.125, config=first),
        "v1": lambda: flash_attention_v1(q, k, v),
    }
    for name, f in paths.items():
        f()
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(20):
            f()
        host = (time.perf_counter() - t) / 20
        torch.cuda.synchronize()
        total = (time.perf_counter() - t) / 20
        rows.append(dict(path=name, host_ms=round(host * 1e3, 3), total_ms=round(total * 1e3, 3),
                         bench_ms=bench(f)))
        log(rows[-1])
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(20):
        paths["public"]()
    prof.disable()
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(25)
    print(s.getvalue(), flush=True)


def table(rows, Ns):
    out = []
    names = ["v2_triton", "sdpa_flash", "sdpa_cudnn", "sdpa_efficient", "v1_triton"]
    for key in ("fwd", "bwd", "fwdbwd"):
        out.append(f"\n{key} TFLOP/s (fp16)   " + " ".join(f"{n:>7}" for n in Ns))
        for D in (64, 128):
            for causal in (False, True):
                for name in names:
                    vals = []
                    for N in Ns:
                        r = next((r for r in rows if r.get("impl") == name and r["D"] == D
                                  and r["causal"] == causal and r["N"] == N), None)
                        vals.append(f"{r[f'{key}_tflops']:7.1f}" if r and f"{key}_tflops" in r else "      -")
                    if any(v.strip() != "-" for v in vals):
                        out.append(f"D{D:<3} {'causal' if causal else 'full  '} {name:14s} " + " ".join(vals))
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(prog=f"python -m {__spec__.name}" if __spec__ else None,
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp"))
    ap.add_argument("--wait-for", default=None, help="file whose existence starts the timing phase")
    ap.add_argument("--quick", action="store_true", help="N in {2k, 8k} only, no config check")
    ap.add_argument("--no-check", action="store_true")
    ap.add_argument("--no-v1", action="store_true")
    ap.add_argument("--profile", action="store_true", help="host overhead of one call, then exit")
    ap.add_argument("--N", default=None, help="comma-separated sequence lengths to time")
    args = ap.parse_args()
    require_gpu("flashedu.bench.tune_v2")
    info = dict(provenance.collect(), arch=_triton.arch_key(), describe=flashedu.describe(),
                setting="fp16, hidden 2048 (H = 2048 / D), B = 16384 / N; FLOPs 4·B·H·N²·D forward "
                        "(half when causal), backward 2.5x; median of triton.testing.do_bench")
    print(info, flush=True)
    results = dict(info=info)
    path = os.path.join(args.out, "v2_tuning", f"{gpu_slug(info)}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)

    def log(row):
        print(json.dumps(row), flush=True)
        with open(path, "w") as f:
            json.dump(results, f, indent=1)

    t0 = time.time()
    if args.profile:
        profile_overhead(results.setdefault("profile", []), log)
        return
    if not (args.quick or args.no_check):
        check_configs(results.setdefault("checks", []), log)
        print(f"config checks: {time.time() - t0:.0f} s", flush=True)
    if args.wait_for:
        while not os.path.exists(args.wait_for):
            time.sleep(1)
        print(f"waited for {args.wait_for} until {time.time() - t0:.0f} s", flush=True)
    Ns = [2048, 8192] if args.quick else [512, 1024, 2048, 4096, 8192, 16384]
    if args.N:
        Ns = [int(n) for n in args.N.split(",")]
    rows = results.setdefault("times", [])
    time_shapes(rows, Ns, (64, 128), log, with_v1=not args.no_v1)
    strides_vs_contiguous(results.setdefault("strides", []), log)
    print(f"total: {time.time() - t0:.0f} s", flush=True)
    print(table(rows, Ns), flush=True)


if __name__ == "__main__":
    main()
