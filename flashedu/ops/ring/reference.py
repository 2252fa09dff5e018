"""The ring in one process: a loop over steps and ranks instead of P processes.

It does exactly what the P processes do (the same shards, the same visiting order, the same ⊕),
with the "send" reduced to indexing the next shard, so it fits the ``fn(q, k, v)`` convention of
the registry (``ring_reference``) and can record, step by step, which shard each rank held and
how its state grew. :func:`flashedu.ops.ring.ring_attention` is the real thing beside it.
"""
from __future__ import annotations

import torch

from flashedu.softmax.state import empty_state, finalize, merge
from flashedu.validate import check_qkv
from flashedu.ops.ring.blocks import block_state
from flashedu.ops.ring.layout import check_layout, holder, positions, unshard


def ring_simulated(q, k, v, *, causal: bool = False, scale: float | None = None, world_size: int = 4,
                   layout: str = "zigzag", trace: list | None = None) -> torch.Tensor:
    """Ring attention of q ``[B, H, N_q, D]`` and k, v ``[B, H, N_k, D]`` over ``world_size``
    simulated ranks holding ``layout`` shards ("contiguous", "zigzag", "striped"). Exact, in
    fp32 (fp64 for fp64 inputs); differentiable through autograd. Ranks with no tokens (N <
    world_size) simply hold empty shards. ``trace``, a list, receives one dict per (step,
    rank): the shard held, pairs attended, and the rank's running max m so far."""
    scale = check_qkv(q, k, v, causal=causal, scale=scale, name="ring_reference")
    check_layout(layout)
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"ring_reference: world_size must be a positive int, got {world_size!r}")
    work = torch.float64 if q.dtype == torch.float64 else torch.float32
    P, N_q, N_k = world_size, q.shape[2], k.shape[2]
    q_pos = [positions(N_q, P, r, layout).to(q.device) for r in range(P)]
    k_pos = [positions(N_k, P, r, layout).to(q.device) for r in range(P)]
    qs = [q.to(work).index_select(2, p) for p in q_pos]  # [B, H, n_r, D] per rank
    ks = [k.to(work).index_select(2, p) for p in k_pos]
    vs = [v.to(work).index_select(2, p) for p in k_pos]
    states = [empty_state(t.shape[:3], v.shape[-1], dtype=work, device=q.device) for t in qs]
    for step in range(P):
        for r in range(P):
            j = holder(r, step, P)
            if len(k_pos[j]) == 0 or len(q_pos[r]) == 0:
                continue
            states[r] = merge(states[r], block_state(qs[r], ks[j], vs[j], q_pos[r], k_pos[j],
                                                     causal=causal, scale=scale))
            if trace is not None:
                visible = (k_pos[j][None, :] <= q_pos[r][:, None]).sum() if causal else len(q_pos[r]) * len(k_pos[j])
                trace.append(dict(step=step, rank=r, holds=j, pairs=int(visible),
                                  m=states[r].m.detach().clone()))
    return unshard([finalize(s) for s in states], layout).to(q.dtype)
