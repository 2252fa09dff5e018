"""Time v2_triton's backward kernels config by config at one head dim, on a GPU (issue 6).

On the GPU machine, from the repository root (about 2 minutes on an H100/H200):

    python -m flashedu.bench.tune_v2_bwd --D 256 --out $OUT   # writes $OUT/v2_bwd_tuning/<gpu>.json

The backward is two kernels, dK/dV (a K/V tile resident, Q tiles streaming) and dQ (the
mirror). Each candidate (BLOCK_M, BLOCK_N, warps, stages) of one kernel is timed with the other
kernel held at its first fitting config, at hidden 2048 (H = 2048 / D, B = 16384 / N),
causal and not, beside SDPA's flash and cuDNN backward; each is first checked against SDPA's
gradients (math backend, fp32) at N = 1024. Candidates include ones the register/shared-memory
filter of ``to_configs`` would drop, so the filter itself is tested: a config that does not
compile or spills is recorded, not fatal. Tuning data: winners go into DKDV_CONFIGS/DQ_CONFIGS.
"""
from __future__ import annotations

import argparse
import time


import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import triton  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402
from flashedu.bench.recorder import Recorder, kernel_stats, require_gpu  # noqa: E402

import flashedu  # noqa: E402, F401  (decides compiled vs interpreter before kernels load)
from flashedu.bench.cases import make_case  # noqa: E402
from flashedu.bench.flops import attention_flops  # noqa: E402
from flashedu.ops.v2 import kernel_bwd as bwd  # noqa: E402
from flashedu.ops.v2.kernel import flash_attention_v2_lse  # noqa: E402

DT = torch.float16
DKDV = [(16, 32, 8, 2), (32, 64, 8, 2), (32, 64, 8, 3), (64, 64, 8, 2), (16, 64, 8, 2), (16, 64, 8, 3),
        (32, 32, 4, 2), (32, 64, 4, 2), (64, 128, 8, 2), (32, 128, 8, 2)]
DQ = [(128, 32, 8, 2), (64, 64, 8, 2), (64, 32, 4, 4), (64, 32, 8, 3), (128, 32, 8, 3), (64, 16, 8, 2),
      (128, 64, 8, 2), (64, 64, 4, 2)]


def cfg(t):
    bm, bn, w, s = t
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)


def main() -> None:
    ap = argparse.ArgumentParser(prog=f"python -m {__spec__.name}" if __spec__ else None,
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--D", type=int, default=256)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    require_gpu("flashedu.bench.tune_v2_bwd")
    D, t0 = args.D, time.time()
    rec = Recorder(args.out, "v2_bwd_tuning", D=D, dkdv=DKDV, dq=DQ)
    rows: list[dict] = []
    first = {"dkdv": cfg(DKDV[0]), "dq": cfg(DQ[0])}

    def log(r):
        rows.append(r)
        print(f"[{time.time() - t0:5.0f}s] {r}", flush=True)
        rec.save(rows)

    def grads(q, k, v, do, causal, which, c):
        o, lse = flash_attention_v2_lse(q, k, v, causal=causal)
        kw = dict(dkdv_config=first["dkdv"], dq_config=first["dq"])
        kw[f"{which}_config"] = c
        return lambda: bwd.attention_backward(do, q, k, v, o, lse, causal=causal, scale=D ** -0.5, **kw)

    # Correctness at N = 1024.
    q, k, v, do = (torch.randn(1, 4, 1024, D, device="cuda", dtype=DT) for _ in range(4))
    ok = {}
    for causal in (False, True):
        qf, kf, vf = (t.float().requires_grad_() for t in (q, k, v))
        with sdpa_kernel(SDPBackend.MATH):
            F.scaled_dot_product_attention(qf, kf, vf, is_causal=causal).backward(do.float())
        for which, table in (("dkdv", DKDV), ("dq", DQ)):
            for t in table:
                r = dict(kind="check", kernel=which, config=t, causal=causal)
                try:
                    dq, dk, dv = grads(q, k, v, do, causal, which, cfg(t))()
                    r.update(kernel_stats(bwd._bwd_dkdv if which == "dkdv" else bwd._bwd_dq))
                    errs = [((a.float() - b.grad).norm() / b.grad.norm()).item() for a, b in ((dq, qf), (dk, kf), (dv, vf))]
                    r["max_rel_err"] = round(max(errs), 5)
                    ok[(which, t)] = ok.get((which, t), True) and max(errs) < 1e-2
                except Exception as e:  # noqa: BLE001
                    r["error"] = f"{type(e).__name__}: {str(e)[:200]}"
                    ok[(which, t)] = False
                log(r)
    # Timing.
    for N in (2048, 4096, 16384):
        case = make_case(dtype="fp16", D=D, causal=False, N=N)  # the papers' B·N = 16k, H·D = 2048
        B, H = case.B, case.H
        q, k, v, do = (torch.randn(B, H, N, D, device="cuda", dtype=DT) for _ in range(4))
        for causal in (False, True):
            flops = attention_flops("bwd", B=B, H=H, N=N, D=D, causal=causal)
            for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION):
                r = dict(kind="time", kernel=f"sdpa {backend.name}", N=N, causal=causal)
                try:
                    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
                    with sdpa_kernel(backend):
                        o = F.scaled_dot_product_attention(qg, kg, vg, is_causal=causal)
                        ms = triton.testing.do_bench(lambda: torch.autograd.grad(o, (qg, kg, vg), do, retain_graph=True),
                                                     warmup=10, rep=50)
                    r.update(ms=ms, tflops=round(flops / ms / 1e9, 1))
                except Exception as e:  # noqa: BLE001
                    r["error"] = f"{type(e).__name__}: {str(e)[:200]}"
                log(r)
            for which, table in (("dkdv", DKDV), ("dq", DQ)):
                for t in table:
                    if not ok.get((which, t)):
                        continue
                    r = dict(kind="time", kernel=which, config=t, N=N, causal=causal)
                    try:
                        ms = triton.testing.do_bench(grads(q, k, v, do, causal, which, cfg(t)), warmup=10, rep=50)
                        r.update(ms=ms, tflops=round(flops / ms / 1e9, 1))
                    except Exception as e:  # noqa: BLE001
                        r["error"] = f"{type(e).__name__}: {str(e)[:200]}"
                    log(r)
        del q, k, v, do
        torch.cuda.empty_cache()
    rec.save(rows, final=True, seconds=round(time.time() - t0))
    print("\nfastest per kernel (whole backward TFLOP/s, other kernel at its first config):")
    for which in ("dkdv", "dq"):
        for N in (2048, 4096, 16384):
            for causal in (False, True):
                cand = [r for r in rows if r["kind"] == "time" and r["kernel"] == which and r["N"] == N
                        and r["causal"] == causal and "ms" in r]
                if cand:
                    best = min(cand, key=lambda r: r["ms"])
                    print(f"  {which:5s} N={N:5d} causal={causal!s:5s} {best['config']} {best['tflops']}")


if __name__ == "__main__":
    main()
