"""Time v2_triton's forward, config by config and with each idea switched on or off, beside
SDPA's cuDNN and flash backends, ``v2_tma_triton``, ``fa3_gluon`` (on sm_90) and (optionally) a
public Triton kernel, in one process: the ablation log of issue 20's forward.

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

    from flashedu.bench.recorder import Recorder, require_gpu
    require_gpu("flashedu.bench.v2_speed")
    import torch
    import triton

    import flashedu
    from flashedu.bench.fwd_grid import Grid
    from flashedu.bench.peers import sdpa_peer
    from flashedu.ops import _triton
    from flashedu.ops.v2 import kernel as v2k

    # the peer file's first comment line says what it is (it is not in this repository)
    peer_name = None
    if a.peer:
        with open(a.peer) as fh:
            peer_name = fh.readline().lstrip("# ").strip()
    grid = Grid(Recorder(a.out, "v2_speed", source="flashedu/bench/v2_speed.py", peer=peer_name,
                         peer_configs=a.peer_configs))
    flash = sdpa_peer("sdpa_flash")
    tma = flashedu.get("v2_tma_triton").fn
    gluon = flashedu.get("fa3_gluon").fn if torch.cuda.get_device_capability() == (9, 0) else None
    peer = load_peer(a.peer, a.peer_configs) if a.peer else None

    def candidates(q, k, v, causal):
        D = q.shape[-1]
        scale = D ** -0.5
        cands = {"sdpa_flash": lambda: flash(q, k, v, causal=causal),
                 "v2_triton": lambda: v2k.flash_attention_v2_lse(q, k, v, causal=causal)[0],
                 "v2_tma_triton": lambda: tma(q, k, v, causal=causal)}
        if peer is not None:
            cands["peer"] = lambda: peer(q, k, v, causal, scale)
        if gluon is not None:
            cands["fa3_gluon"] = lambda: gluon(q, k, v, causal=causal)
        for bm, bn, w, s, pipe in VARIANTS_D128 if D == 128 else VARIANTS_D64:
            cfg = triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "PIPELINE": pipe}, num_warps=w,
                                num_stages=s)
            name = f"v2 {bm}x{bn}/w{w}/s{s}" + (" pipelined" if pipe else "")
            cands[name] = (lambda cfg=cfg: v2k.attention_forward(q, k, v, causal=causal,
                                                                  scale=scale, config=cfg)[0])
        return {name: (fn, {}) for name, fn in cands.items() if not a.only or name in a.only}

    def picked(D, causal, N):
        grid.row(impl="v2_triton picked", D=D, causal=causal, N=N,
                 config=str(_triton.tuned_config(v2k._fwd_kernel, D, 2)))

    grid.run(a.D, a.N, candidates=candidates, deadline=a.deadline, after_case=picked)


if __name__ == "__main__":
    main()
