"""Time block_sparse_triton's backward with each of its launch options on and off, beside
FlexAttention's backward with the same BlockMask: issue 21's ablation.

On the GPU machine, from the repository root (about 30 s a case on an H200):

    python -m flashedu.bench.ablate_block_sparse_bwd --out DIR [--D 128 64] [--N 4096]
        [--density 1 0.5 0.25 0.1] [--deadline 300]

Options (module flags of ``flashedu/ops/block_sparse/kernel_bwd.py``): ``PREFETCH_INDEX``
(both walks read the next entry's block index one iteration early) and ``ONE_LAUNCH`` (both
passes' programs in one grid, FlexAttention's layout). Each variant is one setting of both;
the shipped setting is ``as shipped``. Shapes as ``flashedu/bench/block_sparse.py`` (fp16,
hidden 2048: H = 2048 / D, B = 16384 / N, random tile masks of 128 × 128 blocks, dense at
density 1). A backward's time is forward+backward minus forward, both replayed from CUDA graphs;
two interleaved rounds over every variant and FlexAttention, the best of each kept (a round's
times are kept too). Writes DIR/block_sparse_bwd_ablation/<gpu>.json after every case.
"""
from __future__ import annotations

import argparse
import time

# (name, PREFETCH_INDEX, ONE_LAUNCH)
VARIANTS = [("no prefetch", False, False), ("prefetch", True, False),
            ("prefetch, one launch", True, True)]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog=f"python -m {__spec__.name}" if __spec__ else None,
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--D", type=int, nargs="+", default=[128, 64])
    ap.add_argument("--N", type=int, nargs="+", default=[4096])
    ap.add_argument("--density", type=float, nargs="+", default=[1.0, 0.5, 0.25, 0.1])
    ap.add_argument("--deadline", type=float, default=300.0, help="stop starting cases after this many seconds")
    a = ap.parse_args(argv)

    from flashedu.bench.recorder import Recorder, backward_ms, require_gpu
    require_gpu("flashedu.bench.ablate_block_sparse_bwd")
    import torch

    from flashedu.bench.block_sparse import BLOCK, DT, flex_fns
    from flashedu.ops._triton import _PICKED
    from flashedu.ops.block_sparse import kernel_bwd
    from flashedu.ops.block_sparse import masks as bs
    from flashedu.ops.block_sparse.kernel import block_sparse_flash_attention

    shipped = (kernel_bwd.PREFETCH_INDEX, kernel_bwd.ONE_LAUNCH)
    rec = Recorder(a.out, "block_sparse_bwd_ablation", source="flashedu/bench/ablate_block_sparse_bwd.py",
                   config=dict(block=BLOCK, dtype="float16", timer="graph: fwd+bwd minus fwd, best of 2 rounds",
                               shipped=dict(PREFETCH_INDEX=shipped[0], ONE_LAUNCH=shipped[1])))
    flex, flex_why = flex_fns()
    rows, t0 = [], time.time()
    for D in a.D:
        for N in a.N:
            B, H = 16384 // N, 2048 // D
            q, k, v = (torch.randn(B, H, N, D, device="cuda", dtype=DT, requires_grad=True) for _ in range(3))
            do = torch.randn_like(q)
            for density in a.density:
                if time.time() - t0 > a.deadline:
                    break
                mask = (bs.dense_mask(N, block_r=BLOCK) if density >= 1 else
                        bs.random_blocks(N, block=BLOCK, density=density, seed=int(100 * density)))

                rounds = {}
                fm = bs.to_flex(mask, device="cuda") if flex is not None else None
                ours = (lambda: block_sparse_flash_attention(q, k, v, block_mask=mask))
                for _ in range(2):
                    if fm is not None:
                        rounds.setdefault("flex_attention", []).append(
                            backward_ms(lambda: flex(q, k, v, block_mask=fm), do, [q, k, v]))
                    for name, prefetch, one_launch in VARIANTS:
                        kernel_bwd.PREFETCH_INDEX, kernel_bwd.ONE_LAUNCH = prefetch, one_launch
                        _PICKED.clear()
                        rounds.setdefault(name, []).append(backward_ms(ours, do, [q, k, v]))
                kernel_bwd.PREFETCH_INDEX, kernel_bwd.ONE_LAUNCH = shipped
                ms = {name: min(t) for name, t in rounds.items()}
                row = dict(D=D, N=N, B=B, H=H, density=mask.density(), target_density=density,
                           bwd_ms=ms, rounds=rounds)
                if "flex_attention" in ms:  # higher is better for us
                    row["flex_over"] = {name: ms["flex_attention"] / ms[name] for name, *_ in VARIANTS}
                rows.append(row)
                print(f"[{time.time() - t0:5.0f}s] D={D} N={N} density {density}: "
                      + ", ".join(f"{n} {t:.3f}" for n, t in ms.items()), flush=True)
                rec.save(rows, notes=[f"FlexAttention not timed: {flex_why}"] if flex_why else [])
            del q, k, v, do
            torch.cuda.empty_cache()
    rec.save(rows, final=True, wall_s=round(time.time() - t0, 1))


if __name__ == "__main__":
    main()
