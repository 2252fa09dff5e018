"""Reader of ``flashedu.bench.host``'s runs (kind ``"host"``): the CPU time of one eager call
beside its GPU time, flashedu's kernels launched through a binding (``flashedu.ops._bound``) and
through Triton's own path, and torch SDPA, as chapter 7 quotes them.

* :func:`table` - one line per (case, implementation, launch path), in µs; :func:`table_text`
  prints it;
* :func:`summary` - what the chapter quotes, by glue name.
"""
from __future__ import annotations


def table(run: dict) -> list[dict]:
    """``case``, ``impl`` (with the launch path after a colon for flashedu's kernels;
    ``split_kv_triton`` shortened to ``split_kv``), and ``host_us``, ``gpu_us`` (None where a
    graph cannot hold the call), ``eager_us``, ``loop_us`` (a step of a loop of back-to-back
    calls; None in runs before session 16)."""
    out = []
    for r in run["rows"]:
        name = r["impl"].replace("split_kv_triton", "split_kv")
        name += f": {r['launch']}" if r.get("launch") else ""
        gpu = r.get("gpu_ms")
        out.append(dict(case=r["case"], impl=name, host_us=r["host_us"],
                        gpu_us=None if gpu is None else 1e3 * gpu, eager_us=1e3 * r["eager_ms"],
                        loop_us=r.get("loop_us")))
    return out


def table_text(run: dict) -> str:
    """:func:`table` as fixed-width text, one row per line (``-``: not measured)."""
    lines = [f"{'case':25s} {'implementation':24s} {'host':>6} {'GPU':>6} {'eager':>6} "
             f"{'loop':>6}  (µs)"]
    for r in table(run):
        gpu_us, loop_us = ("-" if r[k] is None else f"{r[k]:.0f}" for k in ("gpu_us", "loop_us"))
        lines.append(f"{r['case']:25s} {r['impl']:24s} {r['host_us']:6.0f} {gpu_us:>6} "
                     f"{r['eager_us']:6.0f} {loop_us:>6}")
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
    through Triton (``hx_dec8_triton``), and the GPU times alone (``hx_dec8_gpu``); since session
    16 also the merge forced into the split launch (``_1l``) or a second kernel (``_2l``):
    ``host_dec8_1l_us``, ``gpu_dec8_1l_us``, ``loop_dec8_1l_us``, and the loop step of the
    default (``loop_dec8_us``), of SDPA (``loop_dec8_sdpa_us``) and their ratio (``lx_dec8``);
    None in older runs."""
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
        # runs since session 16: the merge forced into one launch or two, and loop steps
        for tag, impl in (("1l", "split_kv_triton_1launch"), ("2l", "split_kv_triton_2launch")):
            forced = [r for r in run["rows"] if r["case"] == case and r["impl"] == impl]
            out[f"host_dec{n_k}_{tag}_us"] = forced[0]["host_us"] if forced else None
            out[f"gpu_dec{n_k}_{tag}_us"] = 1e3 * forced[0]["gpu_ms"] if forced else None
            out[f"loop_dec{n_k}_{tag}_us"] = forced[0].get("loop_us") if forced else None
        ours = _row(run, case, "split_kv_triton", "bound")
        out[f"loop_dec{n_k}_us"], out[f"loop_dec{n_k}_sdpa_us"] = ours.get("loop_us"), sdpa.get("loop_us")
        out[f"lx_dec{n_k}"] = (ours["loop_us"] / sdpa["loop_us"]
                               if ours.get("loop_us") and sdpa.get("loop_us") else None)
    return out
