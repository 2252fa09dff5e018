"""Start P processes in one torch.distributed group, run a function in each, collect the results.

Made to never hang a test run or a notebook: the processes meet through a file in a fresh
temporary folder (no port to pick, so no two runs can collide), ``init_process_group`` and every
collective get a timeout, and the parent kills every child when the whole run passes its
deadline. Results come back through ``torch.save`` files in the same folder.
"""
from __future__ import annotations

import datetime
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

# gloo: children are forked from a server process that has imported torch and flashedu once (a
# second or so per process saved on every run). NCCL: spawned afresh, because importing flashedu
# asks CUDA about the GPU, and a process forked after that cannot use CUDA.
FORKSERVER = "forkserver" in mp.get_all_start_methods()

# Multicast over NVLink (NVLS) is off on the shared GPU machines; harmless elsewhere.
NCCL_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def _worker(rank, world, init, backend, fn, args, out, timeout_s, threads):
    torch.set_num_threads(threads)
    if backend == "nccl":
        for key, value in NCCL_ENV.items():
            os.environ.setdefault(key, value)
        torch.cuda.set_device(rank)
    kw = dict(device_id=torch.device("cuda", rank)) if backend == "nccl" else {}
    dist.init_process_group(backend, init_method=init, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=timeout_s), **kw)
    try:
        result = fn(rank, world, *args)
        torch.save(result, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_processes(fn, world_size: int, *args, backend: str = "gloo", timeout_s: float = 60.0,
                  threads: int = 1) -> list:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` fresh processes joined in one process
    group (``backend`` "gloo" for CPU tensors, "nccl" with one GPU per rank) and return the
    results, rank by rank. ``fn`` must be importable (a module-level function, not one defined
    in a notebook). Raises :class:`TimeoutError` after ``timeout_s`` seconds, with every child
    killed, and re-raises a child's exception with its traceback."""
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' or 'nccl', got {backend!r}")
    method = "forkserver" if FORKSERVER and backend == "gloo" else "spawn"
    if method == "forkserver":
        # Takes effect when the server starts (the first run of this process); ignored after.
        import multiprocessing.forkserver as fs
        fs.set_forkserver_preload(["flashedu.ops.ring.tasks", fn.__module__])
    with tempfile.TemporaryDirectory(prefix="flashedu-ring-") as tmp:
        init = f"file://{Path(tmp) / 'store'}"
        ctx = mp.start_processes(_worker, args=(world_size, init, backend, fn, args, tmp, timeout_s, threads),
                                 nprocs=world_size, join=False, start_method=method)
        deadline = time.monotonic() + timeout_s
        try:
            while not ctx.join(timeout=0.1):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"ring processes did not finish within {timeout_s:.0f} s; killed them")
        finally:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
                    p.join(5)
        return [torch.load(Path(tmp) / f"rank{r}.pt", weights_only=False) for r in range(world_size)]
