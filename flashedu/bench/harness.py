"""Time, check and weigh every provider in one case; one row per provider.

A row holds the case, and per pass ("fwd", "bwd", "fwdbwd"): ``<pass>_status`` ("ok",
"skipped: ...", "error: ..."), and when it ran ``<pass>_ms`` (median), ``<pass>_tflops``,
``<pass>_frac`` (of the matmul ceiling measured in the same run) and ``<pass>_peak_bytes``
(allocated during one call above what was allocated before it). ``err`` is ‖o − ref‖ / ‖ref‖ and
``grad_err`` the largest such error of dQ, dK, dV, against torch's math attention in fp32 on the
first heads of the first batch entry (heads are independent, so a slice checks the whole run).
A provider that raises gets its error in the row; nothing here raises for one provider's sake,
except :class:`ContextLost` after a CUDA error that leaves the process unusable (the row keeps
the error; the caller stops the sweep).
"""
from __future__ import annotations

import gc
from typing import Callable

import torch

from flashedu.bench.cases import Case, torch_dtype
from flashedu.bench.flops import attention_flops, tflops
from flashedu.bench.peers import sdpa_peer
from flashedu.bench.providers import Provider, fits, free_bytes

Timer = Callable[[Callable[[], object]], float]  # fn -> milliseconds
REF_HEADS = 2  # heads of batch entry 0 checked against the fp32 reference


def do_bench_median(fn) -> float:
    """Median milliseconds of ``fn`` by ``triton.testing.do_bench`` after its warm-up (it also
    flushes L2 between calls, so no run is timed out of cache)."""
    import triton.testing

    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def make_inputs(case: Case, *, device: str, dtype: torch.dtype | None = None,
                generator: torch.Generator | None = None):
    """Fresh N(0, 1) q, k, v (requiring grad) and dO, ``[B, H, N, D]``: never zeros, which can
    hide unwritten outputs and run faster than real data."""
    dtype = dtype or torch_dtype(case)
    make = torch.float16 if dtype not in (torch.float16, torch.bfloat16, torch.float32) else dtype
    shape = (case.B, case.H, case.N, case.D)
    out = [torch.randn(shape, device=device, dtype=make, generator=generator) for _ in range(4)]
    # FP8 tensors cannot require grad: their providers run forward only.
    q, k, v = (t.to(dtype).requires_grad_(dtype.is_floating_point and dtype.itemsize > 1) for t in out[:3])
    return q, k, v, out[3]


def reference(q, k, v, do, *, causal: bool, heads: int = REF_HEADS):
    """o and (dq, dk, dv) of torch's math attention in fp32 on ``[:1, :heads]``."""
    qs, ks, vs = (t.detach()[:1, :heads].float().requires_grad_(True) for t in (q, k, v))
    o = sdpa_peer("sdpa_math")(qs, ks, vs, causal=causal)
    grads = torch.autograd.grad(o, (qs, ks, vs), do[:1, :heads].float())
    return o.detach(), grads


def rel_err(x: torch.Tensor, ref: torch.Tensor, heads: int = REF_HEADS) -> float:
    """‖x − ref‖ / ‖ref‖ on the slice the reference covers (NaN stays NaN: it never passes)."""
    x = x.detach()[:1, :heads].float()
    return ((x - ref).norm() / ref.norm()).item()


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _peak(fn, device: str):
    """``fn()``'s result and the bytes it allocated at its peak above what was there before
    (None off a GPU)."""
    if torch.device(device).type != "cuda":
        return fn(), None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = fn()
    torch.cuda.synchronize()
    return out, torch.cuda.max_memory_allocated() - base


class ContextLost(RuntimeError):
    """A provider broke the CUDA context (an illegal memory access, a device-side assert): every
    later call in this process fails, so the sweep must stop rather than blame the others."""


def _breaks_context(exc: BaseException) -> bool:
    """True for CUDA errors that stay with the process (sticky errors)."""
    text = str(exc)
    return isinstance(exc, getattr(torch, "AcceleratorError", ())) or any(
        s in text for s in ("illegal memory access", "device-side assert", "unspecified launch failure"))


def one_line(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first[:200]}"


def _free(device: str) -> None:
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def _time_pass(row, p: Provider, pass_: str, case: Case, inputs, ref, *, timer: Timer, device: str,
               ceiling_tflops: float | None) -> None:
    q, k, v, do = inputs
    c = case.causal
    if pass_ == "fwd":
        def call():
            with torch.no_grad():
                return p.fn(q, k, v, causal=c)
        out, peak = _peak(call, device)
        row.setdefault("err", rel_err(out, ref[0]))
        del out
        fn = call
    elif pass_ == "bwd":
        o = p.fn(q, k, v, causal=c)
        row.setdefault("err", rel_err(o, ref[0]))
        grads, peak = _peak(lambda: torch.autograd.grad(o, (q, k, v), do, retain_graph=True), device)
        row.setdefault("grad_err", max(rel_err(g, r) for g, r in zip(grads, ref[1])))
        del grads

        def fn():
            return torch.autograd.grad(o, (q, k, v), do, retain_graph=True)
    else:
        def fn():
            return torch.autograd.grad(p.fn(q, k, v, causal=c), (q, k, v), do)
        grads, peak = _peak(fn, device)
        row.setdefault("grad_err", max(rel_err(g, r) for g, r in zip(grads, ref[1])))
        del grads
    _sync(device)
    ms = timer(fn)
    row[f"{pass_}_ms"] = ms
    row[f"{pass_}_tflops"] = round(tflops(attention_flops(pass_, B=case.B, H=case.H, N=case.N, D=case.D,
                                                          causal=c), ms), 2)
    if ceiling_tflops:
        row[f"{pass_}_frac"] = round(row[f"{pass_}_tflops"] / ceiling_tflops, 4)
    row[f"{pass_}_peak_bytes"] = peak
    row[f"{pass_}_status"] = "ok"


def measure(case: Case, providers: list[Provider], *, passes=("fwd",), timer: Timer = do_bench_median,
            device: str = "cuda", ceiling_tflops: float | None = None,
            generator: torch.Generator | None = None) -> list[dict]:
    """One row per provider for ``case`` (see the module docstring for the fields)."""
    if isinstance(passes, str):
        raise TypeError("passes must be a sequence of pass names, not a str")
    inputs_by_dtype: dict = {}
    rows = []
    for p in providers:
        row = dict(impl=p.name, kind=p.kind, algorithm=p.algorithm, **case.as_dict())
        rows.append(row)
        if p.dtype not in inputs_by_dtype:
            inputs = make_inputs(case, device=device, dtype=p.dtype, generator=generator)
            inputs_by_dtype[p.dtype] = (inputs, reference(*inputs, causal=case.causal))
        inputs, ref = inputs_by_dtype[p.dtype]
        for pass_ in passes:
            if pass_ != "fwd" and not p.backward:
                row[f"{pass_}_status"] = "skipped: no backward"
                continue
            if not fits(p, case, with_grad=pass_ != "fwd", free=free_bytes(device)):
                row[f"{pass_}_status"] = "skipped: memory"
                continue
            try:
                _time_pass(row, p, pass_, case, inputs, ref, timer=timer, device=device,
                           ceiling_tflops=ceiling_tflops)
            except torch.OutOfMemoryError:
                row[f"{pass_}_status"] = "skipped: memory (ran out)"
            except Exception as exc:  # noqa: BLE001  (one provider's failure is a result)
                row[f"{pass_}_status"] = f"error: {one_line(exc)}"
                if _breaks_context(exc):
                    lost = ContextLost(f"{p.name} {pass_} in {case}: {one_line(exc)}")
                    lost.rows = rows  # this case's rows so far, the failing one included
                    raise lost from exc
            _free(device)
    del inputs_by_dtype
    _free(device)
    return rows
