"""Named sweeps that isolate one idea of a chapter, in the rows format of :mod:`.harness`.

    v1-vs-v2     chapter 4's loop swap: v1_triton against v2_triton, same shapes
    causal-skip  what skipping the tiles above the diagonal buys (see causal_skip)
    block-sizes  the v2 forward at fixed (BLOCK_M, BLOCK_N, num_warps)
    num-stages   the v2 forward at fixed software-pipelining depth
"""
from __future__ import annotations

from functools import partial

import torch

from flashedu.bench.cases import FULL_NS, make_case, sweep
from flashedu.bench.harness import do_bench_median, measure
from flashedu.bench.providers import Provider, providers

CONFIG_NS = (4096, 16384)
_print = partial(print, flush=True)
BLOCKS = ((64, 32), (64, 64), (128, 32), (128, 64), (128, 128))  # the kernel needs BLOCK_M % BLOCK_N == 0


def _run(cases, pick, *, passes=("fwd",), log=_print, **kw) -> list[dict]:
    rows = []
    for case in cases:
        log(f"  {case}")
        rows += measure(case, pick(case), passes=passes, **kw)
    return rows


def v1_vs_v2(*, Ns=FULL_NS, Ds=(64, 128), timer=do_bench_median, ceiling_tflops=None, log=_print,
             device: str = "cuda") -> dict:
    """v1_triton and v2_triton, fp16, causal and not; backward where both have one."""
    cases = sweep(Ds=Ds, Ns=Ns, dtypes=("float16",))
    rows = _run(cases, lambda c: providers(c, device=device, only=("v1_triton", "v2_triton")),
                passes=("fwd", "bwd"), timer=timer, ceiling_tflops=ceiling_tflops, device=device, log=log)
    return dict(description="v1_triton (Algorithm 1: K/V outer, one program per head, O through HBM) "
                            "against v2_triton (Q outer, one program per Q tile), fp16, B·N = 16k.",
                rows=rows)


def causal_skip(*, Ns=FULL_NS, Ds=(64, 128), timer=do_bench_median, ceiling_tflops=None, log=_print,
                device: str = "cuda") -> dict:
    """Forward time with the causal mask against without, same shape. v2_triton cannot turn its
    tile skipping off (its causal path never visits the tiles above the diagonal), so the
    unmasked run stands in for "masking without skipping": it does every tile, twice the causal
    FLOPs. A kernel that skips perfectly runs causal in half the full time (ratio 2); naive
    torch attention, which masks but computes every score, is timed beside it for contrast."""
    names = ("v2_triton", "sdpa_flash", "standard_torch")
    cases = sweep(Ds=Ds, Ns=Ns, dtypes=("float16",))
    raw = _run(cases, lambda c: providers(c, device=device, only=names), timer=timer,
               ceiling_tflops=ceiling_tflops, device=device, log=log)
    by = {(r["impl"], r["D"], r["N"], r["causal"]): r for r in raw}
    rows = []
    for (impl, D, N, causal), r in by.items():
        full = by.get((impl, D, N, False))
        if not causal or full is None:
            continue
        row = dict(impl=impl, D=D, N=N, B=r["B"], H=r["H"], causal_ms=r.get("fwd_ms"),
                   full_ms=full.get("fwd_ms"), causal_status=r.get("fwd_status"),
                   full_status=full.get("fwd_status"))
        if row["causal_ms"] and row["full_ms"]:
            row["full_over_causal"] = row["full_ms"] / row["causal_ms"]
        rows.append(row)
    return dict(description=causal_skip.__doc__.split("\n\n")[0].replace("\n    ", " "), rows=rows,
                raw=raw)


def _config_provider(bm: int, bn: int, warps: int, stages: int) -> Provider:
    import triton

    from flashedu.ops.v2.kernel import attention_forward

    cfg = triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=warps, num_stages=stages)

    def fn(q, k, v, *, causal=False):
        return attention_forward(q, k, v, causal=causal, scale=q.shape[-1] ** -0.5, config=cfg)[0]

    return Provider(f"v2 BM{bm} BN{bn} w{warps} s{stages}", fn, "triton", "v2", False, torch.float16)


def _config_sweep(configs, description, *, Ns, Ds, timer, ceiling_tflops, device, log) -> dict:
    cases = [make_case(dtype="float16", D=D, causal=c, N=N) for D in Ds for c in (False, True) for N in Ns]
    provs = [(_config_provider(*cfg), cfg) for cfg in configs]
    rows = []
    for case in cases:
        log(f"  {case}")
        got = measure(case, [p for p, _ in provs], passes=("fwd",), timer=timer,
                      ceiling_tflops=ceiling_tflops, device=device)
        for r, (_, (bm, bn, w, s)) in zip(got, provs):
            r.update(block_m=bm, block_n=bn, num_warps=w, num_stages=s)
        rows += got
    return dict(description=description, rows=rows)


def block_sizes(*, Ns=CONFIG_NS, Ds=(64, 128), timer=do_bench_median, ceiling_tflops=None, log=_print,
                device: str = "cuda") -> dict:
    """The v2 forward at each (BLOCK_M, BLOCK_N) and 4 or 8 warps, three pipeline stages."""
    configs = [(bm, bn, w, 3) for bm, bn in BLOCKS for w in (4, 8)]
    return _config_sweep(configs, "v2_triton forward at fixed (BLOCK_M, BLOCK_N, num_warps), "
                         "num_stages 3, fp16; configs that do not fit shared memory are errors.",
                         Ns=Ns, Ds=Ds, timer=timer, ceiling_tflops=ceiling_tflops, device=device, log=log)


def num_stages(*, Ns=CONFIG_NS, Ds=(64, 128), timer=do_bench_median, ceiling_tflops=None, log=_print,
               device: str = "cuda") -> dict:
    """The v2 forward at BLOCK_M 128, BLOCK_N 64, 8 warps and 1 to 5 pipeline stages."""
    configs = [(128, 64, 8, s) for s in (1, 2, 3, 4, 5)]
    return _config_sweep(configs, "v2_triton forward at BLOCK_M 128, BLOCK_N 64, 8 warps, with 1–5 "
                         "software-pipeline stages (K/V tiles in flight), fp16.",
                         Ns=Ns, Ds=Ds, timer=timer, ceiling_tflops=ceiling_tflops, device=device, log=log)


ABLATIONS = {"v1-vs-v2": v1_vs_v2, "causal-skip": causal_skip, "block-sizes": block_sizes,
             "num-stages": num_stages}
