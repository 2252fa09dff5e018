"""Where the GPU scripts ``python -m flashedu.bench.<kind>`` write their results, and how: one JSON file per GPU,
rewritten after every row through a temporary file, so a run stopped by a time limit keeps
what it finished (``"partial": true`` until the script's last write)."""
from __future__ import annotations

import json
import os
import shutil
import sys

from flashedu import provenance
from flashedu.bench.schema import gpu_slug


def require_gpu(script: str, *, tool: str | None = None) -> None:
    """Stop a GPU script on a machine without a CUDA GPU (or without ``tool`` on the PATH): one
    line on stderr and exit code 2, before anything is written."""
    import torch

    if not torch.cuda.is_available():
        _refuse(f"{script}: needs a CUDA GPU and found none (torch {torch.__version__}); "
                "nothing was measured or written")
    if tool is not None and shutil.which(tool) is None:
        _refuse(f"{script}: needs {tool} on the PATH and found none; nothing was measured or written")


def _refuse(line: str) -> None:
    print(line, file=sys.stderr)
    sys.exit(2)


class Recorder:
    """``Recorder(out, "fa3", **header)`` writes ``out/fa3/<gpu>.json`` holding the provenance,
    ``header`` and the rows given to :meth:`save`."""

    def __init__(self, out: str, kind: str, **header):
        self.info = provenance.collect()
        self.path = os.path.join(out, kind, f"{gpu_slug(self.info)}.json")
        self.header = header
        os.makedirs(os.path.dirname(self.path), exist_ok=True)

    def save(self, rows: list, *, final: bool = False, **extra) -> str:
        doc = dict(provenance=self.info, **self.header, **extra, rows=rows, partial=not final)
        tmp = self.path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(doc, fh, indent=1)
        os.replace(tmp, self.path)
        return self.path


def host_us(fn, calls: int = 50) -> float:
    """Microseconds of host (Python and launch) time of one call of ``fn``, the median of
    ``calls`` calls timed one by one: the GPU is first given a long sleep, so the calls only
    queue work and the clock times the CPU side alone. A median, not a mean: the odd call that
    the garbage collector or another process stalls moved means by 10 µs between runs."""
    import time

    import torch

    fn()
    torch.cuda.synchronize()
    torch.cuda._sleep(200_000_000)  # ~0.1 s of GPU cycles: longer than the calls take to queue
    clock, times = time.perf_counter, []
    for _ in range(calls):
        t = clock()
        fn()
        times.append(clock() - t)
    torch.cuda.synchronize()
    return sorted(times)[calls // 2] * 1e6


def gpu_time(fn, grads=None) -> dict:
    """{"ms": GPU milliseconds of one call of ``fn``, "timer": how}: the median of calls replayed
    from a CUDA graph (no Python between them), or, for a call that cannot be captured, of
    do_bench's events around eager calls, and then ``timer`` says why."""
    import torch
    import triton

    try:
        return dict(ms=triton.testing.do_bench_cudagraph(fn, rep=40, grad_to_none=grads, return_mode="median"),
                    timer="graph")
    except Exception as exc:  # noqa: BLE001  (not capturable: time it eagerly, and say so)
        torch.cuda.synchronize()
        return dict(ms=triton.testing.do_bench(fn, warmup=10, rep=40, grad_to_none=grads),
                    timer=f"eager ({type(exc).__name__}: {str(exc)[:80]})")


def backward_ms(fwd, do, grads) -> float:
    """GPU milliseconds of the backward of ``fwd()`` (a zero-argument forward) against ``do``:
    forward+backward minus forward, each from :func:`gpu_time` (``grads``: the leaves whose
    .grad is reset between calls)."""
    both = gpu_time(lambda: fwd().backward(do), grads)["ms"]
    return both - gpu_time(fwd, grads)["ms"]


def kernel_stats(kernel) -> dict:
    """Registers and spilled bytes of the last variant ``kernel`` (a Triton JIT function)
    compiled, as ``n_regs``/``n_spills``; what went wrong instead, when it cannot tell."""
    try:
        k = [k for c in kernel.device_caches.values() for k in c[0].values()][-1]
        if not hasattr(k, "n_regs"):
            # triton 3.6 reads registers and spills when it loads the binary, on first launch;
            # a variant compiled but not launched (a binding's warmup) has not been loaded yet.
            k._init_handles()
        return dict(n_regs=k.n_regs, n_spills=k.n_spills)
    except Exception as e:  # noqa: BLE001
        return dict(stats_error=f"{type(e).__name__}: {e}"[:120])
