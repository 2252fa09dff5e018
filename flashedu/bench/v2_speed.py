"""Time v2_triton's forward, config by config and with each idea switched on or off, beside
SDPA's cuDNN and flash backends, ``v2_tma_triton`` and (optionally) a public Triton kernel, in
one process: the ablation log of issue 20's forward.

On the GPU machine, from the repository root:

    python -m flashedu.bench.v2_speed --out DIR [--D 128] [--peer FILE] [--deadline SECONDS]

``--peer FILE`` loads a public kernel from a file that is *not* part of flashedu (it is fetched
for the run, never committed): any module with ``attention(q, k, v, causal, sm_scale)``, such
as the Triton tutorial's fused attention; ``--peer-configs`` cuts its autotuner's list to the
configs named (``BMxBN/wW/sS``, comma-separated) so that it compiles in minutes.

Each case is fp16, hidden size 2048 (H = 2048 / D), B = 16384 / N, at N in 1k, 4k, 16k, causal or
not. Every row checks its output against SDPA's cuDNN backend before it is timed (median of
calls replayed from a CUDA graph). Writes DIR/v2_speed/<gpu>.json after every row.
"""
from __future__ import annotations

import argparse
import importlib.util
import time

# (BLOCK_M, BLOCK_N, warps, stages, PIPELINE); the kernel needs BLOCK_N to divide BLOCK_M.
VARIANTS_D128 = [
    (128, 128, 8, 3, False), (128, 64, 8, 3, False), (128, 64, 4, 3, False), (128, 64, 8, 4, False),
    (128, 128, 8, 2, False), (64, 64, 4, 3, False), (64, 64, 4, 4, False),
    (128, 64, 8, 3, True), (128, 64, 8, 2, True), (128, 64, 4, 3, True), (128, 64, 8, 4, True),
    (64, 64, 4, 3, True), (64, 64, 4, 2, True),
]
VARIANTS_D64 = [
    (128, 128, 8, 3, False), (128, 64, 4, 3, False), (128, 64, 8, 3, False), (128, 64, 4, 4, False),
    (64, 64, 4, 3, False), (128, 128, 8, 2, False),
    (128, 64, 4, 3, True), (128, 64, 8, 3, True), (128, 128, 8, 3, True), (128, 64, 4, 4, True),
    (64, 64, 4, 3, True),
]


def load_peer(path: str, configs: str | None):
    """``attention(q, k, v, causal, sm_scale)`` from the file at ``path``; with ``configs``, its
    autotuned kernels keep only those configs."""
    import triton

    spec = importlib.util.spec_from_file_location("peer_attention", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if configs:
        want = set(configs.split(","))
        for obj in vars(mod).values():
            if isinstance(obj, triton.runtime.Autotuner):
                def name(c):
                    return f"{c.kwargs.get('BLOCK_M')}x{c.kwargs.get('BLOCK_N')}/w{c.num_warps}/s{c.num_stages}"
                kept = [c for c in obj.configs if name(c) in want]
                if kept:
                    obj.configs = kept
    return mod.attention


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog=f"python -m {__spec__.name}" if __spec__ else None,
                                description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--D", type=int, nargs="+", default=[128])
    p.add_argument("--N", type=int, nargs="+", default=[1024, 4096, 16384])
    p.add_argument("--peer")
    p.add_argument("--peer-configs")
    p.add_argument("--deadline", type=float, default=540.0, help="stop starting rows after this many seconds")
    p.add_argument("--only", nargs="+", help="time only these candidates (names as in the rows)")
    a = p.parse_args(argv)

    from flashedu.bench.recorder import Recorder, gpu_time, require_gpu
    require_gpu("flashedu.bench.v2_speed")
    import torch
    import triton

    import flashedu
    from flashedu.bench.peers import sdpa_peer
    from flashedu.ops import _triton
    from flashedu.ops.v2 import kernel as v2k

    t_start = time.time()
    rec = Recorder(a.out, "v2_speed", source="flashedu/bench/v2_speed.py")
    rows: list = []
    cudnn, flash = sdpa_peer("sdpa_cudnn"), sdpa_peer("sdpa_flash")
    tma = flashedu.get("v2_tma_triton").fn
    peer = load_peer(a.peer, a.peer_configs) if a.peer else None

    def row(**r):
        rows.append(r)
        rec.save(rows)
        print({k: v for k, v in r.items() if k != "error"} | ({"error": r["error"][:120]} if "error" in r else {}),
              flush=True)

    for D in a.D:
        variants = VARIANTS_D128 if D == 128 else VARIANTS_D64
        for causal in (False, True):
            for N in a.N:
                if time.time() - t_start > a.deadline:
                    row(note="deadline reached", D=D, causal=causal, N=N)
                    rec.save(rows, final=True)
                    return
                B, H = 16384 // N, 2048 // D
                flops = 4 * B * H * N * N * D / (2 if causal else 1)
                q, k, v = (torch.randn(B, H, N, D, device="cuda", dtype=torch.float16) for _ in range(3))
                scale = D ** -0.5
                ref = cudnn(q, k, v, causal=causal)
                cands = {"sdpa_cudnn": lambda: cudnn(q, k, v, causal=causal),
                         "sdpa_flash": lambda: flash(q, k, v, causal=causal),
                         "v2_triton": lambda: v2k.flash_attention_v2_lse(q, k, v, causal=causal)[0],
                         "v2_tma_triton": lambda: tma(q, k, v, causal=causal)}
                if peer is not None:
                    cands["peer"] = lambda: peer(q, k, v, causal, scale)
                for bm, bn, w, s, pipe in variants:
                    cfg = triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "PIPELINE": pipe}, num_warps=w, num_stages=s)
                    name = f"v2 {bm}x{bn}/w{w}/s{s}" + (" pipelined" if pipe else "")
                    cands[name] = (lambda cfg=cfg: v2k.attention_forward(q, k, v, causal=causal, scale=scale,
                                                                          config=cfg)[0])
                for name, fn in cands.items():
                    if a.only and name not in a.only:
                        continue
                    r = dict(impl=name, D=D, causal=causal, N=N, B=B, H=H)
                    t0 = time.time()
                    try:
                        with torch.no_grad():
                            o = fn()
                            torch.cuda.synchronize()
                            r["err"] = (o.float() - ref.float()).abs().max().item()
                            r["first_call_s"] = round(time.time() - t0, 1)
                            r.update(gpu_time(fn))
                        r["tflops"] = round(flops / (r["ms"] * 1e-3) / 1e12, 1)
                    except Exception as exc:  # noqa: BLE001  (a variant that fails is a result)
                        r["error"] = f"{type(exc).__name__}: {exc}"[:400]
                    row(**r)
                picked = _triton.tuned_config(v2k._fwd_kernel, D, 2)
                row(impl="v2_triton picked", D=D, causal=causal, N=N, config=str(picked))
                del q, k, v, ref
                torch.cuda.empty_cache()
    rec.save(rows, final=True)


if __name__ == "__main__":
    main()
