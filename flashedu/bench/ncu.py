"""Real HBM traffic of the Triton kernels, read with Nsight Compute, beside the memory model.

On the GPU machine, from the repository root:

    python -m flashedu.bench.ncu --out DIR

runs each case in its own process under
``ncu --profile-from-start off --clock-control none --metrics dram__bytes_read.sum,dram__bytes_write.sum``:
the case is warmed up (compiled) first, and only the launch between cudaProfilerStart/Stop is
profiled. The model side is ``flashedu.iomodel.simulate`` at the kernel's block sizes. Writes
DIR/ncu_traffic.json with provenance; add a case to CASES to extend it to new kernels.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile

from flashedu.bench.recorder import require_gpu
from flashedu.bench.schema import gpu_slug


B, H, D = 1, 16, 64
# (kernel, model algorithm, N, causal, (block_r, block_c) the kernel runs with)
CASES = [(kernel, alg, N, causal, blocks)
         for kernel, alg, blocks in (("standard_triton", "standard", (64, 64)),
                                     ("v1_triton", "v1", (64, 64)),
                                     ("v2_triton", "v2", (128, 128)))
         for N in (1024, 4096) for causal in (False,)] + [("v2_triton", "v2", 16384, False, (128, 128)),
                                                          ("v2_triton", "v2", 4096, True, (128, 128))]
METRICS = ("dram__bytes_read.sum", "dram__bytes_write.sum")


def run_case(k: int) -> None:
    """Warm up one case, then launch it once inside the profiled range."""
    import torch
    import triton

    import flashedu  # noqa: F401  (decides the runtime before triton kernels load)
    from flashedu.ops.v1.kernel import flash_attention_v1
    from flashedu.ops.v2.kernel import attention_forward
    from flashedu.ops.standard.kernel import standard_attention_triton

    kernel, _, N, causal, (br, bc) = CASES[k]
    q, k_, v = (torch.randn(B, H, N, D, device="cuda", dtype=torch.float16) for _ in range(3))
    scale = D ** -0.5
    calls = {
        "standard_triton": lambda: standard_attention_triton(q, k_, v, causal=causal),
        "v1_triton": lambda: flash_attention_v1(q, k_, v, causal=causal, block_m=br, block_n=bc),
        "v2_triton": lambda: attention_forward(q, k_, v, causal=causal, scale=scale,
                                               config=triton.Config({"BLOCK_M": br, "BLOCK_N": bc},
                                                                    num_warps=8, num_stages=3)),
    }
    call = calls[kernel]
    call()
    torch.cuda.synchronize()
    torch.cuda.profiler.start()
    call()
    torch.cuda.synchronize()
    torch.cuda.profiler.stop()


def measure(k: int, log_dir: str) -> dict:
    log = os.path.join(log_dir, f"ncu_case{k}.csv")
    cmd = ["ncu", "--profile-from-start", "off", "--clock-control", "none", "--csv", "--print-units", "base",
           "--metrics", ",".join(METRICS), "--log-file", log, sys.executable, "-m", "flashedu.bench.ncu", "--case", str(k)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    totals = {m: 0.0 for m in METRICS}
    kernels = []
    with open(log) as f:
        rows = [r for r in csv.reader(line for line in f if line.startswith('"'))]
    header, body = rows[0], rows[1:]
    col = {name: i for i, name in enumerate(header)}
    for r in body:
        metric = r[col["Metric Name"]]
        if metric in totals:
            totals[metric] += float(r[col["Metric Value"]].replace(",", ""))
            kernels.append(r[col["Kernel Name"]][:60])
    return dict(read_bytes=int(totals[METRICS[0]]), write_bytes=int(totals[METRICS[1]]),
                kernels=sorted(set(kernels)))


def main() -> None:
    ap = argparse.ArgumentParser(prog=f"python -m {__spec__.name}" if __spec__ else None,
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", type=int)
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp"))
    args = ap.parse_args()
    require_gpu("flashedu.bench.ncu", tool="ncu")
    if args.case is not None:
        run_case(args.case)
        return
    import torch

    from flashedu import provenance
    from flashedu.iomodel import simulate

    rows = []
    logs = tempfile.mkdtemp(prefix="ncu_")  # ncu's CSVs: scratch, not results
    for k, (kernel, alg, N, causal, (br, bc)) in enumerate(CASES):
        model = simulate(alg, N=N, d=D, heads=H, batch=B, causal=causal, dtype=torch.float16,
                         block_r=br, block_c=bc, sram_bytes=1 << 30)
        row = dict(kernel=kernel, algorithm=alg, B=B, H=H, N=N, D=D, causal=causal, block_r=br, block_c=bc,
                   model_read_bytes=model.read_bytes, model_write_bytes=model.write_bytes)
        try:
            row.update(measure(k, logs))
        except (subprocess.CalledProcessError, KeyError, IndexError, ValueError) as exc:
            row["error"] = f"{type(exc).__name__}: {getattr(exc, 'stderr', '') or exc}"[-600:]
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = dict(provenance=provenance.collect(), setting=f"fp16, B={B}, H={H}, D={D}; one forward launch; "
               "ncu dram__bytes_read.sum / dram__bytes_write.sum, --clock-control none", rows=rows)
    path = os.path.join(args.out, "ncu", f"{gpu_slug(out['provenance'])}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
