"""Time block_sparse_triton's backward config by config, beside FlexAttention's, on a GPU (issue 21).

On the GPU machine, from the repository root (about 3 minutes on an H200):

    python -m flashedu.bench.tune_block_sparse_bwd --out $OUT   # writes $OUT/block_sparse_bwd_tuning/<gpu>.json

At the shapes of ``flashedu/bench/block_sparse.py`` (hidden 2048, B·N = 16k, fp16, 128 × 128
mask blocks), for a dense and a random 25 % mask: the backward's two kernels are timed one
candidate at a time, each (BLOCK_M, BLOCK_N, warps, stages) of :data:`DKDV` with the dQ kernel
on its first config, then each of :data:`DQ` with dK/dV on its first. A backward's time is
forward+backward minus forward, both replayed from CUDA graphs (as the benchmark times them),
and FlexAttention's (compiled, the same BlockMask) is timed the same way in the same run. A
config that does not fit or compile is a row with its error. A tuning log: the book reads the
benchmark's record, not this one.
"""
from __future__ import annotations

import argparse
import time

import flashedu  # noqa: F401  (first: it decides compiled vs interpreter before triton loads)
import torch

from flashedu.bench.block_sparse import BLOCK, DT, flex_fns
from flashedu.bench.recorder import Recorder, backward_ms, require_gpu
from flashedu.ops._triton import _PICKED
from flashedu.ops.block_sparse import kernel_bwd
from flashedu.ops.block_sparse import masks as bs
from flashedu.ops.block_sparse.kernel import block_sparse_flash_attention

# Candidates (BLOCK_M, BLOCK_N, warps, stages); the first of each is the table's first today.
DKDV = [(64, 128, 8, 3), (64, 128, 8, 2), (64, 128, 8, 4), (32, 128, 8, 4), (32, 128, 4, 3),
        (32, 128, 4, 5), (64, 128, 4, 3), (64, 64, 4, 3), (128, 128, 8, 2)]
DQ = [(128, 64, 8, 3), (128, 64, 8, 2), (128, 64, 8, 4), (128, 32, 8, 4), (128, 32, 4, 5),
      (128, 64, 4, 3), (64, 64, 4, 3), (128, 128, 8, 2), (64, 128, 8, 3)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog=f"python -m {__spec__.name}" if __spec__ else None,
                                description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--D", type=int, nargs="+", default=[128])
    p.add_argument("--N", type=int, nargs="+", default=[4096, 16384])
    a = p.parse_args(argv)
    require_gpu("flashedu.bench.tune_block_sparse_bwd")
    rec = Recorder(a.out, "block_sparse_bwd_tuning", source="flashedu/bench/tune_block_sparse_bwd.py",
                   config=dict(block=BLOCK, dtype="float16", timer="graph: fwd+bwd minus fwd"))
    flex, flex_why = flex_fns()
    rows, t0 = [], time.time()
    tables = {"dkdv": kernel_bwd.DKDV_CONFIGS, "dq": kernel_bwd.DQ_CONFIGS}
    arch = "sm90" if torch.cuda.get_device_capability() >= (9, 0) else "sm80"
    kept = {name: list(t[arch]) for name, t in tables.items()}

    def log(row):
        rows.append(row)
        print(f"[{time.time() - t0:6.1f}s] {row}", flush=True)
        rec.save(rows, notes=[f"FlexAttention not timed: {flex_why}"] if flex_why else [])

    for D in a.D:
        for N in a.N:
            B, H = 16384 // N, 2048 // D
            q, k, v = (torch.randn(B, H, N, D, device="cuda", dtype=DT, requires_grad=True) for _ in range(3))
            do = torch.randn_like(q)
            masks = [("dense", bs.dense_mask(N, block_r=BLOCK)),
                     ("random 25%", bs.random_blocks(N, block=BLOCK, density=0.25, seed=25))]
            for pattern, mask in masks:
                shape = dict(D=D, N=N, B=B, H=H, pattern=pattern, density=mask.density())
                if flex is not None:
                    fm = bs.to_flex(mask, device="cuda")
                    flex_fwd = (lambda: flex(q, k, v, block_mask=fm))
                    log(dict(impl="flex_attention", bwd_ms=backward_ms(flex_fwd, do, [q, k, v]),
                             **shape))
                ours = (lambda: block_sparse_flash_attention(q, k, v, block_mask=mask))
                for name, other, candidates in (("dkdv", "dq", DKDV), ("dq", "dkdv", DQ)):
                    for cfg in candidates:
                        tables[name][arch], tables[other][arch] = [cfg], kept[other][:1]
                        _PICKED.clear()
                        row = dict(impl="block_sparse_triton", kernel=name, config=list(cfg), **shape)
                        try:
                            row["bwd_ms"] = backward_ms(ours, do, [q, k, v])
                        except Exception as e:  # noqa: BLE001  (a config that does not fit is data)
                            row["error"] = f"{type(e).__name__}: {str(e)[:160]}"
                        finally:
                            tables[name][arch], tables[other][arch] = kept[name], kept[other]
                        log(row)
            del q, k, v, do
            torch.cuda.empty_cache()
    rec.save(rows, final=True, wall_s=round(time.time() - t0, 1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
