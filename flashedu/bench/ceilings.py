"""The ceilings every kernel of a run is compared with, measured in that same run: a large
bf16 (and fp16) matmul (what the tensor cores reach through cuBLAS) and a large device-to-device copy (what
HBM delivers, counting bytes read plus bytes written). Datasheet numbers are leads, these are the
real roof of the machine as found."""
from __future__ import annotations

import torch

from flashedu.bench.flops import matmul_flops

MATMUL_SIZE = 8192
COPY_BYTES = 1 << 30


def measure(timer, *, device: str = "cuda", size: int = MATMUL_SIZE, copy_bytes: int = COPY_BYTES) -> dict:
    """``{"matmul_bf16_tflops", "matmul_fp16_tflops", "matmul_shape", "copy_tbs", ...}`` timed
    with ``timer`` (milliseconds of a callable) on random data."""
    out = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
        ms = timer(lambda: a @ b)
        out[f"matmul_{name}_tflops"] = round(matmul_flops(size, size, size) / (ms * 1e-3) / 1e12, 1)
        out[f"matmul_{name}_ms"] = ms
        del a, b
    src = torch.randn(copy_bytes // 4, device=device, dtype=torch.float32)
    dst = torch.empty_like(src)
    copy_ms = timer(lambda: dst.copy_(src))
    del src, dst
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
    return dict(out, matmul_shape=[size, size, size],
                copy_tbs=round(2 * copy_bytes / (copy_ms * 1e-3) / 1e12, 3), copy_bytes=copy_bytes,
                copy_ms=copy_ms)


def for_dtype(ceilings: dict, dtype: str) -> float | None:
    """The matmul ceiling a case of ``dtype`` is compared with: the fp16 matmul for fp16 (a T4 has
    fp16 tensor cores but no bf16 ones), the bf16 matmul for everything else."""
    if dtype == "float16" and ceilings.get("matmul_fp16_tflops"):
        return ceilings["matmul_fp16_tflops"]
    return ceilings.get("matmul_bf16_tflops")
