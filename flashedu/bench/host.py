"""Host time against GPU time of one eager call: what a short call costs on the CPU side, with the
compiled kernel bound once per call shape (``flashedu.ops._bound``) and through Triton's own
launch path, beside torch SDPA (issue 20's host-time and decode targets).

On the GPU machine, from the repository root (under a minute):

    python -m flashedu.bench.host --out DIR     # writes DIR/host/<gpu>.json

Launch paths: ``bound`` (flashedu's binding), ``tensors`` (the binding handing tensors to
Triton's Python launcher, as before session 11: the ablation of passing addresses and calling
the C launch directly) and ``triton`` (``kernel[grid](...)`` on every call).
``split_kv_triton_1launch`` / ``_2launch`` are the decode step with its merge forced into the
split launch / a second kernel (bound). ``v2_triton_lse`` is the forward that stores L and runs
the input checks on every call, as every forward did before session 11. Each row: ``host_us``,
microseconds of CPU time per call while the GPU is held busy (so calls only queue work): the
median of 50 calls, best of five rounds that take every path of a case in turn; ``gpu_ms``
from a CUDA graph replay (no host in it); ``eager_ms``, the median of eager calls back to back
(do_bench, which flushes L2 between calls: host time shorter than the flush hides behind it);
and ``loop_us``, microseconds a call in a loop of ``LOOP_CALLS`` calls with nothing between
them (a decode loop's step: the longer of host and GPU time). A call is host-bound where
``host_us`` exceeds the GPU time, and its loop time follows the host.
"""
from __future__ import annotations

import argparse
import contextlib


def cases(torch, F):
    """name -> (zero-argument call, what it is): fp16 forwards at one small training shape, the
    backward through autograd, and decoding one token against an 8k and a 32k cache (GQA 64/8)."""
    from flashedu.ops.split_kv.kernel import split_kv_attention_triton
    from flashedu.ops.v2.kernel import flash_attention_v2, flash_attention_v2_lse

    dt, dev = torch.float16, "cuda"
    q, k, v = (torch.randn(1, 16, 1024, 128, device=dev, dtype=dt) for _ in range(3))
    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
    do = torch.randn_like(q)

    def fwd_bwd(fn):
        def call():
            fn(qg, kg, vg).backward(do)
        return call

    out = {
        "forward, N=1k": {
            "v2_triton": lambda: flash_attention_v2(q, k, v),
            "v2_triton_lse": lambda: flash_attention_v2_lse(q, k, v),  # L kept, as before session 11
            "sdpa": lambda: F.scaled_dot_product_attention(q, k, v)},
        "forward, q/k/v need grad": {
            "v2_triton": lambda: flash_attention_v2(qg, kg, vg),
            "sdpa": lambda: F.scaled_dot_product_attention(qg, kg, vg)},
        "forward + backward": {
            "v2_triton": fwd_bwd(flash_attention_v2),
            "sdpa": fwd_bwd(F.scaled_dot_product_attention)},
    }
    for n_k in (8192, 32768):
        qd = torch.randn(1, 64, 1, 128, device=dev, dtype=dt)
        kd, vd = (torch.randn(1, 8, n_k, 128, device=dev, dtype=dt) for _ in range(2))
        out[f"decode, N_k={n_k // 1024}k"] = {
            "split_kv_triton": lambda qd=qd, kd=kd, vd=vd: split_kv_attention_triton(qd, kd, vd),
            # the merge forced into the split launch, or into a second kernel (the default
            # picks by the cache's size, and two launches in a CUDA graph)
            "split_kv_triton_1launch": lambda qd=qd, kd=kd, vd=vd: split_kv_attention_triton(
                qd, kd, vd, one_launch=True),
            "split_kv_triton_2launch": lambda qd=qd, kd=kd, vd=vd: split_kv_attention_triton(
                qd, kd, vd, one_launch=False),
            "sdpa": lambda qd=qd, kd=kd, vd=vd: F.scaled_dot_product_attention(qd, kd, vd, enable_gqa=True)}
    return out


ROUNDS = 5  # rounds over a case's paths; each path keeps its best median
# Launch paths timed per implementation (every one of flashedu's where not listed).
PATHS = {"sdpa": ("",), "split_kv_triton_1launch": ("bound",), "split_kv_triton_2launch": ("bound",)}


@contextlib.contextmanager
def _launch_path(_bound, path: str):
    """Launches take ``path``: "bound" or "" (flashedu's bindings as they are), "tensors" (every
    binding hands tensors to Triton's Python launcher, as bindings did before session 11: the
    ablation of addresses and the direct C launch), "triton" (no bindings)."""
    kept = {key: (b._pointers, b._direct) for key, b in _bound._BOUND.items()}
    _bound.ENABLED = path != "triton"
    if path == "tensors":
        for b in _bound._BOUND.values():
            b._pointers, b._direct = (), None
    try:
        yield
    finally:
        _bound.ENABLED = True
        for key, (pointers, direct) in kept.items():
            _bound._BOUND[key]._pointers, _bound._BOUND[key]._direct = pointers, direct


LOOP_CALLS = 200  # calls back to back in one loop_us measurement


def _loop_us(torch, fn, calls: int = LOOP_CALLS, rounds: int = 5) -> float:
    """Microseconds per call of ``fn`` called ``calls`` times back to back, between two events
    (the best of ``rounds``): what a step of a loop of such calls takes."""
    best = float("inf")
    for _ in range(rounds):
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        best = min(best, 1e3 * start.elapsed_time(end) / calls)
    return best


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog=f"python -m {__spec__.name}" if __spec__ else None,
                                description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)

    from flashedu.bench.recorder import Recorder, gpu_time, host_us, require_gpu
    require_gpu("flashedu.bench.host")
    import torch
    import torch.nn.functional as F
    import triton

    from flashedu.ops import _bound

    torch.manual_seed(0)
    rec = Recorder(a.out, "host", source="flashedu/bench/host.py")
    rows = []
    for case, impls in cases(torch, F).items():
        # Every (implementation, launch path) of a case is timed in turn, round after round,
        # and keeps its best round: the host's speed drifts by 10 µs and more within a run, and
        # interleaving spreads the drift over all of them instead of one.
        runs = [(impl, fn, path) for impl, fn in impls.items()
                for path in PATHS.get(impl, ("bound", "tensors", "triton"))]
        host = {}
        for _ in range(ROUNDS):
            for impl, fn, path in runs:
                with _launch_path(_bound, path):
                    fn()  # compile, tune and bind outside the clock
                    torch.cuda.synchronize()
                    host[impl, path] = min(host.get((impl, path), float("inf")), host_us(fn))
        for impl, fn, path in runs:
            with _launch_path(_bound, path):
                row = dict(case=case, impl=impl, launch=path or None,
                           host_us=round(host[impl, path], 1),
                           eager_ms=triton.testing.do_bench(fn, warmup=25, rep=100,
                                                            return_mode="median"))
                if "backward" not in case:  # a graph cannot hold autograd's backward call
                    row["gpu_ms"] = gpu_time(fn)["ms"]
                row["loop_us"] = round(_loop_us(torch, fn), 2)
            rows.append(row)
            print(row, flush=True)
            rec.save(rows)
    _bound.ENABLED = True
    rec.save(rows, final=True)


if __name__ == "__main__":
    main()
