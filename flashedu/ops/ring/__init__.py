"""Ring attention (chapter 7): the sequence sharded over processes, K/V shards travelling around
a ring, partial states merged with ⊕.

``layout`` (who holds which tokens; causal load balance), ``blocks`` (one step's state, dense or
with the FA2 kernel), ``attention`` (the torch.distributed ring, forward and backward),
``launch``/``tasks`` (spawning gloo or NCCL processes), ``reference`` (the ring in one process,
registered as ``ring_reference``), ``model`` (communication vs compute per step).
"""
from flashedu._registry import Impl, register
from flashedu.ops.ring.attention import ring_attention
from flashedu.ops.ring.launch import run_processes
from flashedu.ops.ring.layout import LAYOUTS, positions, shard, shard_segments, unshard, work_matrix
from flashedu.ops.ring.reference import ring_simulated
from flashedu.ops.ring.tasks import ring_attention_processes

register(Impl(
    name="ring_reference", algorithm="ring", backend="reference", chapter=7,
    fn=ring_simulated, backward=True,
    summary="Ring attention with the ranks simulated by a loop: each rank keeps its query shard, "
            "the K/V shards pass from rank to rank (zig-zag layout by default) and every step's "
            "state is merged with ⊕; exact, differentiable through autograd.",
))

__all__ = ["LAYOUTS", "positions", "ring_attention", "ring_attention_processes", "run_processes", "shard",
           "shard_segments", "unshard", "work_matrix"]
