"""Time the fused FP8 quantiser's launch knobs (issue 21): tiles of rows per program and warps,
for the rotated pass (Q, K) and the unrotated K-major pass (V), each checked to write the same
bytes and scales as the default before it is timed (CUDA-graph medians).

On the GPU machine, from the repository root (under a minute):

    python -m flashedu.bench.tune_fp8_quant --out DIR    # DIR/fp8_quant_tuning/<gpu>.json

fp16 [4, 16, 4096, 128] (B·N = 16k, H·d = 2048), 128-row scale blocks; ``GBps`` counts 2 bytes
read and 1 written per element. A tuning log: copy it to docs/notes/data/, no chapter reads it.
"""
from __future__ import annotations

import argparse


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog=f"python -m {__spec__.name}" if __spec__ else None,
                                description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--tiles", type=int, nargs="+", default=[1, 2, 4])
    a = p.parse_args(argv)

    from flashedu.bench.recorder import Recorder, gpu_time, require_gpu
    require_gpu("flashedu.bench.tune_fp8_quant")
    import torch

    from flashedu.ops.fp8.dropin import rotation_signs
    from flashedu.ops.fp8.quant_kernel import quantize_tiles

    x = torch.randn(4, 16, 4096, 128, device="cuda", dtype=torch.float16)
    rec = Recorder(a.out, "fp8_quant_tuning", source="flashedu/bench/tune_fp8_quant.py")
    rows = []
    for tensor, kw in (("q (rotated)", dict(signs=rotation_signs(128))),
                       ("v (k-major)", dict(k_major=True))):
        want = quantize_tiles(x, block=128, **kw)
        for tiles in a.tiles:
            for warps in (4, 8):
                def call(tiles=tiles, warps=warps, kw=kw):
                    return quantize_tiles(x, block=128, tiles=tiles, num_warps=warps, **kw)
                got = call()
                same = torch.equal(got[1], want[1]) and torch.equal(got[0].float(), want[0].float())
                ms = gpu_time(call)["ms"]
                rows.append(dict(tensor=tensor, tiles=tiles, warps=warps, ms=ms, same=same,
                                 GBps=x.numel() * 3 / (ms * 1e-3) / 1e9))
                print(rows[-1], flush=True)
                rec.save(rows)
    rec.save(rows, final=True)


if __name__ == "__main__":
    main()
