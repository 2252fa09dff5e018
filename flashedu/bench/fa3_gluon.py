"""Time the Gluon FA3 forward beside SDPA's cuDNN backend, v2_triton and v2_tma_triton, with
each of FA3's ideas switched off in turn (FA3's Table 2 on our GPU), and record one program's
measured timeline: issue 19's numbers.

On the GPU machine, from the repository root:

    python -m flashedu.bench.fa3_gluon --out DIR [--D 64 128] [--N 1024 4096 16384]
                                       [--schedules NAME ...] [--extra [NAME ...]] [--deadline S]
                                       [--causal both|yes|no]
    python -m flashedu.bench.fa3_gluon --out DIR --timeline

Each case is fp16, hidden size 2048 (H = 2048 / D), B = 16384 / N, causal or not: issue 20's
grid, so the rows sit beside v2_speed's. Every row checks its
output against cuDNN before it is timed (median of calls replayed from a CUDA graph). Writes
DIR/fa3_gluon/<gpu>.json after every row. ``--timeline`` instead stamps one program of a d=128,
N=4096 forward under each schedule: DIR/fa3_timeline/<gpu>.json.
"""
from __future__ import annotations

import argparse
from dataclasses import replace


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog=f"python -m {__spec__.name}" if __spec__ else None,
                                description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--D", type=int, nargs="+", default=[128, 64])
    p.add_argument("--N", type=int, nargs="+", default=[1024, 4096, 16384])
    p.add_argument("--schedules", nargs="*", default=None,
                   help="FA3 schedules (ablation names) to time beside the default; default: all")
    p.add_argument("--extra", nargs="*", default=None,
                   help="also time these variants (stage counts, 64-row K/V tiles, persistent, "
                        "192-row tiles at D <= 64; no names: all of them)")
    p.add_argument("--causal", choices=["both", "yes", "no"], default="both",
                   help="time causal cases, non-causal ones, or both")
    p.add_argument("--timeline", action="store_true", help="record the timeline only")
    p.add_argument("--deadline", type=float, default=480.0, help="stop starting rows after this many seconds")
    a = p.parse_args(argv)

    from flashedu.bench.recorder import Recorder, require_gpu
    require_gpu("flashedu.bench.fa3_gluon")
    import torch

    import flashedu
    from flashedu.bench.fwd_grid import Grid
    from flashedu.ops.fa3 import gluon as fg
    from flashedu.ops.v2 import kernel as v2k

    torch.manual_seed(0)
    if a.timeline:
        _timeline(a.out, Recorder, fg, torch)
        return
    tma = flashedu.get("v2_tma_triton").fn

    def variants(D: int, N: int, causal: bool) -> dict:
        # "fa3_gluon" is what a call of this shape runs (persistent or not); the schedules and
        # extras vary the one-item-per-program kernel.
        out = {"fa3_gluon": fg.default_config(D, n_k=N, causal=causal)}
        base = fg.default_config(D)
        for n, c in fg.ablation_configs(D).items():
            # the full schedule is timed apart where the registered kernel is another build
            # (persistent, or three consumers), so each switch is measured against its base
            if n == "FA3 (all three ideas)" and c == out["fa3_gluon"]:
                continue
            if a.schedules is None or n in a.schedules:
                out[f"fa3_gluon: {n}"] = c
        if a.extra is not None:
            extra = {f"{st} stages": replace(base, stages=st) for st in (2, 3, 4) if st != base.stages}
            extra["64-row K/V tiles"] = replace(base, block_n=64)
            extra["split mask"] = replace(base, split_mask=True)
            extra["persistent"] = replace(base, persistent=True)
            # the persistent grid with one more knob turned (short rows, causal or not)
            pers = extra["persistent"]
            extra["persistent, no ping-pong"] = replace(pers, pingpong=False)
            extra["persistent, split mask"] = replace(pers, split_mask=True)
            if causal:  # balanced by a model of each item's time, not the paired rounds
                extra["persistent, balanced schedule"] = replace(pers, balanced=True)
            if out["fa3_gluon"].half_diagonal:  # warpgroup 0's whole diagonal tile computed
                extra["whole diagonal"] = replace(out["fa3_gluon"], half_diagonal=False)
            if out["fa3_gluon"].persistent:  # the registered grid with one Q buffer
                extra["persistent, one Q buffer"] = replace(out["fa3_gluon"], q_buffers=1)
            for st in (2, 3):
                if st != base.stages:
                    extra[f"persistent, {st} stages"] = replace(pers, stages=st)
            if D <= 64:  # three consumer warpgroups: 192 query rows a program
                three = replace(base, consumers=3, consumer_regs=fg.max_consumer_regs(3))
                extra["192-row tiles"] = three
                extra["192-row tiles, no ping-pong"] = replace(three, pingpong=False)
                extra["192-row tiles, persistent"] = replace(three, persistent=True)
            for n, c in extra.items():
                if not a.extra or n in a.extra:
                    out[f"fa3_gluon: {n}"] = c
        return out

    def candidates(q, k, v, causal):
        scale = q.shape[-1] ** -0.5
        cands = {"v2_triton": (lambda: v2k.flash_attention_v2_lse(q, k, v, causal=causal)[0], {}),
                 "v2_tma_triton": (lambda: tma(q, k, v, causal=causal), {})}
        for name, cfg in variants(q.shape[-1], k.shape[2], causal).items():
            cands[name] = (lambda cfg=cfg: fg.gluon_forward(q, k, v, causal=causal, scale=scale,
                                                             config=cfg)[0],
                           {"config": cfg.__dict__})
        return cands

    grid = Grid(Recorder(a.out, "fa3_gluon", source="flashedu/bench/fa3_gluon.py"))
    causals = {"both": (False, True), "yes": (True,), "no": (False,)}[a.causal]
    grid.run(a.D, a.N, candidates=candidates, deadline=a.deadline, causals=causals)


def _timeline(out, Recorder, fg, torch):
    """One program (the first query tile of head 0) of a d=128, N=4096 forward, each schedule."""
    rec = Recorder(out, "fa3_timeline", source="flashedu/bench/fa3_gluon.py")
    runs = []
    q, k, v = (torch.randn(1, 16, 4096, 128, device="cuda", dtype=torch.float16) for _ in range(3))
    for name, cfg in fg.ablation_configs(128).items():
        try:
            runs.append({"schedule": name, "B": 1, "H": 16, "N": 4096, "D": 128, "causal": False,
                         **fg.timeline(q, k, v, config=cfg, iters=8, program=0)})
        except Exception as exc:  # noqa: BLE001  (a schedule that fails is a result)
            runs.append({"schedule": name, "error": f"{type(exc).__name__}: {exc}"[:400]})
        print(runs[-1].get("error") or f"timeline {name}: recorded", flush=True)
        rec.save(runs)
    rec.save(runs, final=True)


if __name__ == "__main__":
    main()
