"""Peak GPU memory of one forward + backward, above the inputs, versus N.

    python -m flashedu.bench.peak_memory [--out flashedu/recorded/data/memory/<gpu>.json]

Setting of the targets table: B = 1, H = 16, D = 128, fp16. Each row records the peak bytes
allocated during o = fn(q, k, v); o.backward(do), minus what was allocated before (q, k, v, do);
'oom' where the GPU ran out.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch

from flashedu import provenance, recorded, registry
from flashedu.bench.peers import sdpa_peer
from flashedu.bench.recorder import require_gpu

DATA = recorded.DATA / "memory"


def peak_bytes(fn, B, H, N, D, dtype=torch.float16, causal=False) -> int | str:
    """Peak bytes allocated by one forward + backward above what was allocated before it;
    "oom" when it ran out of memory, "error: ..." when the provider cannot run on this GPU."""
    torch.cuda.empty_cache()
    q, k, v, do = (torch.randn(B, H, N, D, device="cuda", dtype=dtype) for _ in range(4))
    for t in (q, k, v):
        t.requires_grad_(True)
    # One untimed call first: compiling and autotuning allocate scratch buffers that are not the
    # kernel's own footprint (measured once: v2_triton's first call at N=4096 peaked 2.5x higher).
    try:
        fn(q, k, v, causal=causal).backward(do)
    except torch.OutOfMemoryError:
        return "oom"
    except RuntimeError as exc:  # a backend this GPU lacks (SDPA flash on a T4): a result, not a crash
        return "error: " + (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
    for t in (q, k, v):
        t.grad = None
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    try:
        fn(q, k, v, causal=causal).backward(do)
        torch.cuda.synchronize()
    except torch.OutOfMemoryError:
        return "oom"
    return torch.cuda.max_memory_allocated() - base


def providers() -> dict:
    """Registered implementations with a backward pass that run on this GPU, and SDPA flash."""
    out = {i.name: i.fn for i in registry(backward=True)
           if i.backend != "reference" and i.why_not(device="cuda", dtype=torch.float16) is None}
    out["sdpa_flash"] = sdpa_peer("sdpa_flash")
    return out


def measure(names=None, Ns=(1024, 2048, 4096, 8192, 16384), *, B: int = 1, H: int = 16, D: int = 128,
            quiet: bool = True) -> list[dict]:
    """Peak bytes of one forward + backward for each provider named (default: all) and N, as
    rows of the recorded file's shape. Needs a CUDA GPU (a chapter calls it only where one is)."""
    rows = []
    for name, fn in providers().items():
        if names is not None and name not in names:
            continue
        for N in Ns:
            peak = peak_bytes(fn, B, H, N, D)
            rows.append(dict(provider=name, B=B, H=H, N=N, D=D, dtype="float16", peak_bytes=peak))
            if not quiet:
                print(f"{name:14s} N={N:6d} peak above inputs: "
                      + (peak if isinstance(peak, str) else f"{peak / 2**20:10.1f} MiB"), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m flashedu.bench.peak_memory", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--ns", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    args = ap.parse_args()
    require_gpu("flashedu.bench.peak_memory")
    rows = measure(Ns=args.ns, quiet=False)
    info = provenance.collect()
    slug = re.sub(r"[^a-z0-9]+", "-", (info.get("gpu") or "cpu").lower()).strip("-")
    out = args.out or DATA / f"{slug}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(provenance=info, setting="one forward + backward, peak bytes above "
                                   "q, k, v, dO", rows=rows), indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
