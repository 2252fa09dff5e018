"""Time the FP8 kernel's speed variants against our fp16 v2 kernel, on a GPU (chapter 6, issue 8).

On the GPU machine, from the repository root (about 2 minutes on an H100/H200):

    python -m flashedu.bench.tune_fp8 --out $OUT     # writes $OUT/fp8_tuning/<gpu>.json

Each variant is an :class:`~flashedu.ops.fp8.kernel.FP8Config`: tiles, warps, stages, TMA,
and the speed options (``fold_v``: P·V accumulates straight into acc; ``exp_fma``: the exps by a
cubic on the FMA units instead of MUFU; ``max_regs``: a register cap, so that more programs
share an SM and one's softmax runs under another's GEMMs). For each: the relative error
against SDPA in fp16 on the same (unquantised) inputs, and the median time at hidden 2048
(H = 2048 / D, B = 16384 / N), non-causal and causal. Tuning data, not a chapter figure: the
winners go into ``CONFIGS``, which bench_fp8.py and the harness time. Registers and spills of a
config are cheaper to see on the CPU: compile for sm_90 with triton's bundled ptxas and read
``cuobjdump -res-usage`` (docs/notes/fp8-tuning.md).
"""
from __future__ import annotations

import argparse
import dataclasses
import time


import torch  # noqa: E402
import triton  # noqa: E402
from flashedu.bench.recorder import Recorder, require_gpu  # noqa: E402

from flashedu.ops import fp8  # noqa: E402
from flashedu.bench.cases import make_case  # noqa: E402
from flashedu.bench.flops import attention_flops  # noqa: E402
from flashedu.ops.fp8.kernel import FP8Config, flash_attention_fp8  # noqa: E402
from flashedu.ops.v2.kernel import flash_attention_v2  # noqa: E402

BASE = FP8Config(128, 128, 8, 3, True)
M64 = FP8Config(64, 128, 4, 2, True)
VARIANTS = {
    "two accumulators (session 2)": dataclasses.replace(BASE, fold_v=False),
    "fold_v": BASE,
    "fold_v exp_fma": dataclasses.replace(BASE, exp_fma=True),
    "128x64 8w regs128": FP8Config(128, 64, 8, 3, True, max_regs=128),
    "64x128 4w s2": M64,
    "64x128 4w s2 regs168": dataclasses.replace(M64, max_regs=168),
    "64x128 4w s3": dataclasses.replace(M64, num_stages=3),
    "64x128 4w s3 regs168": dataclasses.replace(M64, num_stages=3, max_regs=168),
    "64x128 4w s2 regs168 exp_fma": dataclasses.replace(M64, max_regs=168, exp_fma=True),
    "64x64 4w s3": FP8Config(64, 64, 4, 3, True),
    "64x64 4w s2 regs128": FP8Config(64, 64, 4, 2, True, max_regs=128),
}


def main() -> None:
    ap = argparse.ArgumentParser(prog=f"python -m {__spec__.name}" if __spec__ else None,
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    args = ap.parse_args()
    require_gpu("flashedu.bench.tune_fp8")
    t0 = time.time()
    rows: list[dict] = []
    rec = Recorder(args.out, "fp8_tuning", config=dict(variants={n: dataclasses.asdict(c) for n, c in VARIANTS.items()}))
    names = [n for n in VARIANTS if not args.only or n in args.only.split(",")]
    for D, Ns in ((128, (4096, 8192, 16384)), (64, (8192,))):
        for N in Ns:
            case = make_case(dtype="fp16", D=D, causal=False, N=N)  # the papers' B·N = 16k, H·D = 2048
            B, H = case.B, case.H
            q, k, v = (torch.randn(B, H, N, D, device="cuda", dtype=torch.float16) for _ in range(3))
            q8, k8, v8, kw = fp8.prepare_fp8(q, k, v, "fp8_fa3")
            for causal in (False, True):
                f = attention_flops("fwd", B=B, H=H, N=N, D=D, causal=causal)
                ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
                base = triton.testing.do_bench(lambda: flash_attention_v2(q, k, v, causal=causal), warmup=10, rep=50)
                rows.append(dict(impl="v2_triton fp16", D=D, N=N, causal=causal, ms=base,
                                 tflops=round(f / base / 1e9, 1)))
                print(f"[{time.time() - t0:5.0f}s] {rows[-1]}", flush=True)
                for name in names:
                    cfg = VARIANTS[name]
                    r = dict(impl=name, D=D, N=N, causal=causal)
                    try:
                        with torch.no_grad():
                            o = flash_attention_fp8(q8, k8, v8, causal=causal, config=cfg, **kw)
                            r["rel_err"] = round(((o.float() - ref.float()).norm() / ref.float().norm()).item(), 5)
                            ms = triton.testing.do_bench(
                                lambda: flash_attention_fp8(q8, k8, v8, causal=causal, config=cfg, **kw),
                                warmup=10, rep=50)
                        r.update(ms=ms, tflops=round(f / ms / 1e9, 1), x_fp16=round(base / ms, 3))
                    except Exception as e:  # noqa: BLE001  (a variant that does not compile is data)
                        r["error"] = f"{type(e).__name__}: {str(e)[:300]}"
                    rows.append(r)
                    print(f"[{time.time() - t0:5.0f}s] {r}", flush=True)
                    rec.save(rows)
            del q, k, v, q8, k8, v8
            torch.cuda.empty_cache()
    rec.save(rows, final=True, seconds=round(time.time() - t0))
    print("\nx fp16 v2 (non-causal / causal):")
    for name in names:
        cells = [f"D{r['D']} N{r['N']} {'c' if r['causal'] else 'f'} {r.get('x_fp16', 'ERR')}"
                 for r in rows if r["impl"] == name]
        print(f"  {name:32s} " + "  ".join(cells))


if __name__ == "__main__":
    main()
