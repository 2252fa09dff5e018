"""Ring attention over NCCL on every GPU of one machine: check it, time it, record it.

On the GPU machine, from the repository root (about 3 minutes on 2 H200s):

    python -m flashedu.bench.ring --out $OUT            # all GPUs; --world N for fewer

Sets NCCL_NVLS_ENABLE=0, TORCH_SYMM_MEM_DISABLE_MULTICAST=1, NVSHMEM_DISABLE_NVLS=1 (NVLink
multicast stays off) unless already set, then spawns one process per GPU (the same launcher the
CPU tests use, with the nccl backend). Every step runs the chapter-4 FA2 Triton kernel on pairs
of position runs (flashedu.ops.ring.blocks.block_state_flash).

1. correctness: fp16, B=1, H=8, D=128, N = 2048 · P, every layout, causal and not: each rank's
   rows against single-GPU v2_triton on the whole sequence;
2. timing: fp16, B=1, H=16, D=128, N in {16k, 64k, 256k}: the ring forward (median of 5, after
   a warm-up) for contiguous / zigzag / striped causal and contiguous non-causal, with each
   step's compute and transfer-wait seconds; single-GPU v2_triton on the whole sequence (rank 0);
   and one K/V shard sent around the ring alone (the link's speed for this message size).

Writes OUT/ring-<gpu>-x<P>.json (copy it to flashedu/recorded/data/ring/) with flashedu.provenance.collect().
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time


from flashedu.ops.ring.launch import NCCL_ENV  # noqa: E402

for _key, _value in NCCL_ENV.items():
    os.environ.setdefault(_key, _value)

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from flashedu.bench.recorder import require_gpu  # noqa: E402
from flashedu.bench.schema import gpu_slug  # noqa: E402

LAYOUT_CASES = [("contiguous", True), ("zigzag", True), ("striped", True), ("contiguous", False)]


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _inputs(B, H, N, D, device, seed=0):
    g = torch.Generator(device=device).manual_seed(seed)
    dt = torch.float16 if device == "cuda" else torch.float32
    return tuple(torch.randn(B, H, N, D, device=device, dtype=dt, generator=g) for _ in range(3))


def _timed(fn, reps):
    out, times = None, []
    for _ in range(reps + 1):  # the first is the warm-up (compiles)
        dist.barrier()
        _sync()
        t0 = time.perf_counter()
        out = fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times[1:])


def task(rank, world, sizes, reps, check_n, device):
    # Large problems would autotune 8 configs per process first: take the first config instead.
    import flashedu.ops.v2.kernel as v2
    v2.should_tune = lambda *a: False
    from flashedu.ops.ring import ring_attention, shard
    from flashedu.ops.ring.attention import _exchange, _wait

    rows = []
    q, k, v = _inputs(1, 8, check_n * world, 128, device)
    for layout, causal in LAYOUT_CASES:
        want = shard(v2.flash_attention_v2(q, k, v, causal=causal), world, rank, layout)
        got = ring_attention(*(shard(t, world, rank, layout) for t in (q, k, v)), causal=causal, layout=layout,
                             kernel=True)
        rows.append(dict(test="check", layout=layout, causal=causal, N=q.shape[2], rank=rank,
                         max_err=(got.float() - want.float()).abs().max().item()))
    for N in sizes:
        q, k, v = _inputs(1, 16, N, 128, device)
        if rank == 0:  # one GPU on the whole sequence, while the other ranks wait at the barrier
            for causal in (True, False):
                v2.flash_attention_v2(q, k, v, causal=causal)
                _sync()
                t0 = time.perf_counter()
                for _ in range(reps):
                    v2.flash_attention_v2(q, k, v, causal=causal)
                _sync()
                rows.append(dict(test="single_gpu", N=N, causal=causal, seconds=(time.perf_counter() - t0) / reps))
        dist.barrier()
        for layout, causal in LAYOUT_CASES:
            parts = [shard(t, world, rank, layout) for t in (q, k, v)]
            _, s = _timed(lambda: ring_attention(*parts, causal=causal, layout=layout, kernel=True), reps)
            stats = []
            ring_attention(*parts, causal=causal, layout=layout, kernel=True, stats=stats)
            rows.append(dict(test="ring", N=N, layout=layout, causal=causal, rank=rank, seconds=s,
                             compute_s=[round(x["compute_s"], 6) for x in stats],
                             wait_s=[round(x["wait_s"], 6) for x in stats], sent_bytes=stats[0]["sent_bytes"]))
        kv = torch.stack(parts[1:])
        if world > 1:
            _, s = _timed(lambda: _wait(_exchange([kv], [kv.shape], None)[0]), reps)
            nbytes = kv.numel() * kv.element_size()
            rows.append(dict(test="send_kv", N=N, rank=rank, bytes=nbytes, seconds=s, GBps=nbytes / s / 1e9))
        del q, k, v, parts, kv
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows


def main():
    ap = argparse.ArgumentParser(prog=f"python -m {__spec__.name}" if __spec__ else None,
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=".")
    ap.add_argument("--world", type=int, default=None, help="processes (GPUs); default: all GPUs")
    ap.add_argument("--sizes", default="16384,65536,262144")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--smoke", action="store_true", help="CPU, gloo, 2 processes, tiny sizes: checks the script")
    args = ap.parse_args()
    require_gpu("flashedu.bench.ring")
    from flashedu import provenance
    from flashedu.ops.ring import run_processes

    if args.smoke:
        world, sizes, check_n, device, backend = args.world or 2, [64], 32, "cpu", "gloo"
    else:
        world, check_n, device, backend = args.world or torch.cuda.device_count(), 2048, "cuda", "nccl"
        sizes = [int(s) for s in args.sizes.split(",")]
    t0 = time.time()
    ranks = run_processes(task, world, sizes, args.reps, check_n, device, backend=backend, timeout_s=560)
    rows = [r for per_rank in ranks for r in per_rank]
    for r in rows:
        print(json.dumps(r), flush=True)
    info = provenance.collect()
    info["world"] = world
    info["nccl_env"] = {k: os.environ.get(k) for k in NCCL_ENV}
    name = os.path.join("ring", f"{gpu_slug(info)}-x{world}.json")
    os.makedirs(os.path.join(args.out, "ring"), exist_ok=True)
    with open(os.path.join(args.out, name), "w") as f:
        json.dump(dict(provenance=info, seconds=round(time.time() - t0, 1), rows=rows), f, indent=1)
    worst = max(r["max_err"] for r in rows if r["test"] == "check")
    print(f"\nmax error of the ring vs one GPU: {worst:.2e}; wrote {name} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
