"""Ring attention across processes with torch.distributed (gloo on CPUs, NCCL on GPUs).

Each of the P processes holds one shard of the sequence: its queries, keys and values. The K/V
shards travel around the ring, rank r sending to r + 1 and receiving from r − 1; at every step a
rank folds the state of its queries against the shard in hand into its running (m, ℓ, o) with
⊕. After P steps every query has met every key: the exact attention, never holding more than
two K/V shards. The next shard is already on its way while the current one is computed on, so
the transfer costs nothing when the compute takes longer (:mod:`flashedu.ops.ring.model`).

The backward pass (dense path) runs the ring again: K/V travel with their gradients dK, dV,
which collect every rank's contribution and arrive home after one extra hop.
"""
from __future__ import annotations

import time

import torch
import torch.distributed as dist

from flashedu.softmax.state import empty_state, finalize, merge
from flashedu.validate import check_qkv
from flashedu.ops.ring.blocks import block_grads, block_state, block_state_flash
from flashedu.ops.ring.layout import check_layout, holder, positions, shard_segments


def _ranks(group):
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    peer = (lambda r: dist.get_global_rank(group, r)) if group is not None else (lambda r: r)
    return rank, world, peer


def _exchange(send: list, shapes: list, group) -> list:
    """Send ``send`` to the next rank and receive tensors of ``shapes`` from the previous one,
    all at once (batched, so NCCL cannot deadlock on the order). Returns (pending, received);
    the transfers are done after ``_wait(pending)``."""
    rank, world, peer = _ranks(group)
    send = [t.contiguous() for t in send]
    recv = [torch.empty(s, dtype=t.dtype, device=t.device) for t, s in zip(send, shapes)]
    ops = [dist.P2POp(dist.isend, t, peer((rank + 1) % world), group) for t in send]
    ops += [dist.P2POp(dist.irecv, t, peer((rank - 1) % world), group) for t in recv]
    # The sent tensors ride along with the works: they must outlive the transfer.
    return (dist.batch_isend_irecv(ops), send), recv


def _wait(pending) -> None:
    for w in pending[0]:
        w.wait()


def _plan(q, k, layout, causal, group):
    """Every rank's (n_q, n_k) from one all_gather; checks they are the layout's shards."""
    rank, world, _ = _ranks(group)
    mine = torch.tensor([q.shape[2], k.shape[2]], device=q.device)
    every = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(every, mine, group=group)
    lens = [tuple(int(x) for x in t.cpu()) for t in every]
    n_q, n_k = sum(a for a, _ in lens), sum(b for _, b in lens)
    if causal and n_q != n_k:
        raise ValueError(f"ring_attention: causal=True needs q and k of one total length, got {n_q} and {n_k}")
    for r, (a, b) in enumerate(lens):
        want = (len(positions(n_q, world, r, layout)), len(positions(n_k, world, r, layout)))
        if (a, b) != want or min(a, b) < 1:
            raise ValueError(f"ring_attention: rank {r} holds {a} queries and {b} keys, but the {layout!r} "
                             f"layout of {n_q} queries and {n_k} keys over {world} ranks gives it {want} "
                             f"(every rank needs at least one token)")
    return rank, world, n_q, n_k, lens


def _sync(t):
    if t.is_cuda:
        torch.cuda.synchronize(t.device)


def ring_forward(q, k, v, *, causal, scale, layout, group, kernel, stats=None):
    """The forward ring on validated local shards: returns (o like q, L = m + log ℓ [B, H, n, 1])."""
    rank, world, n_q, n_k, lens = _plan(q, k, layout, causal, group)
    work = torch.float64 if q.dtype == torch.float64 else torch.float32
    q_pos, q_segs = positions(n_q, world, rank, layout), shard_segments(n_q, world, rank, layout)
    qw = q if kernel else q.to(work)
    state = empty_state(q.shape[:3], v.shape[-1], dtype=work, device=q.device)
    kv = torch.stack((k, v))  # [2, B, H, n_k, D]: one message per step
    for t in range(world):
        j = holder(rank, t, world)
        works = None
        if t < world - 1:  # the next shard travels while this one is computed on
            nxt = lens[holder(rank, t + 1, world)][1]
            works, (incoming,) = _exchange([kv], [kv.shape[:3] + (nxt, kv.shape[4])], group)
        t0 = time.perf_counter()
        if kernel:
            st = block_state_flash(qw, kv[0], kv[1], q_segs, shard_segments(n_k, world, j, layout),
                                   causal=causal, scale=scale)
        else:
            st = block_state(qw, kv[0].to(work), kv[1].to(work), q_pos, positions(n_k, world, j, layout),
                             causal=causal, scale=scale)
        state = merge(state, st)
        _sync(q)
        t1 = time.perf_counter()
        sent = kv.numel() * kv.element_size() if works is not None else 0
        if works is not None:
            _wait(works)
            kv = incoming
        if stats is not None:
            stats.append(dict(step=t, holder=j, sent_bytes=sent, compute_s=t1 - t0,
                              wait_s=time.perf_counter() - t1))
    return finalize(state).to(q.dtype), state.m + torch.log(state.l)


def ring_backward(q, k, v, o, lse, do, *, causal, scale, layout, group):
    """dq, dk, dv of this rank's shards: K/V and their running gradients travel the ring."""
    rank, world, n_q, n_k, lens = _plan(q, k, layout, causal, group)
    work = lse.dtype
    q_pos = positions(n_q, world, rank, layout)
    qw, dow = q.to(work), do.to(work)
    delta = (dow * o.to(work)).sum(dim=-1, keepdim=True)  # [B, H, n_q, 1]
    dq = torch.zeros_like(qw)
    kv = torch.stack((k, v)).to(work)
    dkv = torch.zeros_like(kv)
    for t in range(world):
        j = holder(rank, t, world)
        dq_j, dk_j, dv_j = block_grads(qw, kv[0], kv[1], dow, lse, delta, q_pos,
                                       positions(n_k, world, j, layout), causal=causal, scale=scale)
        dq += dq_j
        dkv = dkv + torch.stack((dk_j, dv_j))
        nxt = lens[holder(rank, t + 1, world)][1]
        shape = kv.shape[:3] + (nxt, kv.shape[4])
        # After the last step the gradients hop once more, home to the shard's owner.
        send = [kv, dkv] if t < world - 1 else [dkv]
        works, got = _exchange(send, [shape] * len(send), group)
        _wait(works)
        kv, dkv = (got[0], got[1]) if t < world - 1 else (kv, got[0])
    return dq.to(q.dtype), dkv[0].to(k.dtype), dkv[1].to(v.dtype)


class _Ring(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal, scale, layout, group):
        o, lse = ring_forward(q, k, v, causal=causal, scale=scale, layout=layout, group=group, kernel=False)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.args = dict(causal=causal, scale=scale, layout=layout, group=group)
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        return (*ring_backward(q, k, v, o, lse, do, **ctx.args), None, None, None, None)


def ring_attention(q, k, v, *, causal: bool = False, scale: float | None = None,
                   layout: str = "contiguous", group=None, kernel: bool | None = None,
                   stats: list | None = None) -> torch.Tensor:
    """Ring attention, called in every process of ``group`` (default: the whole world).

    q ``[B, H, n_q, D]`` and k, v ``[B, H, n_k, D]`` are this rank's shards, rows ordered as
    :func:`flashedu.ops.ring.layout.shard` cuts them (``layout``: "contiguous", "zigzag" or
    "striped"); ``scale`` defaults to 1/sqrt(D). Returns this rank's rows of the output.
    ``kernel`` (default: on a CUDA tensor) computes each step with the FA2 Triton kernel,
    forward only; otherwise dense fp32/fp64 math, differentiable. ``stats``, a list, receives
    one dict per step (bytes sent, compute and wait seconds).
    """
    check_layout(layout)
    scale = check_qkv(q, k, v, scale=scale, name="ring_attention")  # causal lengths: in _plan
    if kernel is None:
        kernel = q.is_cuda
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    if needs_grad and (kernel or stats is not None):
        raise ValueError("ring_attention: gradients need kernel=False and stats=None (the dense path)")
    if needs_grad:
        return _Ring.apply(q, k, v, causal, scale, layout, group)
    return ring_forward(q, k, v, causal=causal, scale=scale, layout=layout, group=group, kernel=kernel,
                        stats=stats)[0]


__all__ = ["ring_attention", "ring_backward", "ring_forward"]
