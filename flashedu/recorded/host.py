"""Reader of ``flashedu.bench.host``'s runs (kind ``"host"``): the CPU time of one eager call
beside its GPU time, flashedu's kernels launched through a binding (``flashedu.ops._bound``) and
through Triton's own path, and torch SDPA, as chapter 7 quotes them.

* :func:`table` - one line per (case, implementation, launch path), in µs; :func:`table_text`
  prints it;
* :func:`summary` - what the chapter quotes, by glue name.
"""
from __future__ import annotations


def table(run: dict) -> list[dict]:
    """``case``, ``impl`` (with the launch path after a colon for flashedu's kernels), and
    ``host_us``, ``gpu_us`` (None where a graph cannot hold the call), ``eager_us``."""
    out = []
    for r in run["rows"]:
        name = r["impl"] + (f": {r['launch']}" if r.get("launch") else "")
        gpu = r.get("gpu_ms")
        out.append(dict(case=r["case"], impl=name, host_us=r["host_us"],
                        gpu_us=None if gpu is None else 1e3 * gpu, eager_us=1e3 * r["eager_ms"]))
    return out


def table_text(run: dict) -> str:
    """:func:`table` as fixed-width text, one row per line (``-``: no graph time)."""
    lines = [f"{'case':25s} {'implementation':24s} {'host':>6} {'GPU':>6} {'eager':>6}  (µs)"]
    for r in table(run):
        gpu_us = "-" if r["gpu_us"] is None else f"{r['gpu_us']:.0f}"
        lines.append(f"{r['case']:25s} {r['impl']:24s} {r['host_us']:6.0f} {gpu_us:>6} "
                     f"{r['eager_us']:6.0f}")
    return "\n".join(lines)


def _row(run: dict, case: str, impl: str, launch: str | None) -> dict:
    return next(r for r in run["rows"]
                if r["case"] == case and r["impl"] == impl and r.get("launch") == launch)


def summary(run: dict) -> dict:
    """Glue names: ``host_bound_us`` / ``host_triton_us`` / ``host_sdpa_us``, a v2_triton forward's
    host time bound and through Triton, and SDPA's; ``host_lse_us``, the bound forward that stores
    L and checks its inputs on every call (None before session 11's runs); ``host_grad_bound_us``
    / ``host_grad_sdpa_us``, the same forward when q, k, v need gradients (autograd's bookkeeping
    on top); for the decode cases
    (``dec8``, ``dec32``), split-KV's eager time over SDPA's, bound (``hx_dec8``) and
    through Triton (``hx_dec8_triton``), and the GPU times alone (``hx_dec8_gpu``)."""
    fwd, grad = "forward, N=1k", "forward, q/k/v need grad"
    out = dict(host_gpu=run["provenance"]["gpu"], host_date=run["provenance"]["date"][:10],
               host_commit=run["provenance"]["commit"],
               host_bound_us=_row(run, fwd, "v2_triton", "bound")["host_us"],
               host_triton_us=_row(run, fwd, "v2_triton", "triton")["host_us"],
               host_sdpa_us=_row(run, fwd, "sdpa", None)["host_us"],
               host_grad_bound_us=_row(run, grad, "v2_triton", "bound")["host_us"],
               host_grad_sdpa_us=_row(run, grad, "sdpa", None)["host_us"])
    lse = [r for r in run["rows"] if r["impl"] == "v2_triton_lse" and r.get("launch") == "bound"]
    out["host_lse_us"] = lse[0]["host_us"] if lse else None  # runs since session 11
    for n_k in (8, 32):
        case = f"decode, N_k={n_k}k"
        sdpa = _row(run, case, "sdpa", None)
        for launch, tag in (("bound", ""), ("triton", "_triton")):
            ours = _row(run, case, "split_kv_triton", launch)
            out[f"hx_dec{n_k}{tag}"] = ours["eager_ms"] / sdpa["eager_ms"]
            out[f"host_dec{n_k}{tag}_us"] = ours["host_us"]
        out[f"hx_dec{n_k}_gpu"] = _row(run, case, "split_kv_triton", "bound")["gpu_ms"] / sdpa["gpu_ms"]
        out[f"host_dec{n_k}_sdpa_us"] = sdpa["host_us"]
    return out
