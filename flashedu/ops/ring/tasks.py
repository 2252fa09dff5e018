"""What each ring process runs (importable, so spawned processes can find them), and the
one-call wrapper that shards inputs, runs the ring in P processes and puts the output together."""
from __future__ import annotations

import time

import torch

from flashedu.ops.ring.attention import _exchange, _wait, ring_attention
from flashedu.ops.ring.launch import run_processes
from flashedu.ops.ring.layout import shard, unshard


def pass_around_task(rank, world, delay_s=0.0):
    """The ring with nothing but labels: every rank starts with its own rank number and passes
    what it holds to the next rank, P − 1 times. Returns what it held at each step."""
    time.sleep(delay_s)
    held = torch.tensor([rank])
    seen = [int(held)]
    for _ in range(world - 1):
        works, (held,) = _exchange([held], [held.shape], None)
        _wait(works)
        seen.append(int(held))
    return seen


def attention_task(rank, world, q, k, v, causal, layout, do=None):
    """Take this rank's shards of the full q, k, v, run the ring; with ``do`` also the backward.
    Returns a dict of this rank's rows (o and, with do, dq, dk, dv) and per-step stats."""
    qs, ks, vs = (shard(t, world, rank, layout) for t in (q, k, v))
    stats = [] if do is None else None
    if do is not None:
        qs, ks, vs = (t.clone().requires_grad_(True) for t in (qs, ks, vs))
    t0 = time.perf_counter()
    o = ring_attention(qs, ks, vs, causal=causal, layout=layout, stats=stats)
    out = dict(o=o.detach(), seconds=time.perf_counter() - t0, stats=stats)
    if do is not None:
        o.backward(shard(do, world, rank, layout))
        out.update(dq=qs.grad, dk=ks.grad, dv=vs.grad)
    return out


def ring_attention_processes(q, k, v, *, world_size: int, causal: bool = False, layout: str = "contiguous",
                             do=None, timeout_s: float = 60.0) -> dict:
    """Ring attention of full CPU tensors q, k, v ``[B, H, N, D]`` over ``world_size`` gloo
    processes: each gets its shard, the K/V shards travel, the output rows come back and are put
    in sequence order. With ``do`` (the output gradient) the backward ring runs too.
    Returns ``dict(o=..., [dq, dk, dv,] ranks=[per-rank dicts])``."""
    ranks = run_processes(attention_task, world_size, q, k, v, causal, layout, do, timeout_s=timeout_s)
    out = dict(o=unshard([r["o"] for r in ranks], layout), ranks=ranks)
    if do is not None:
        for name in ("dq", "dk", "dv"):
            out[name] = unshard([r[name] for r in ranks], layout)
    return out
