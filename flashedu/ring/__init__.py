"""Ring attention (chapter 7): the sequence sharded over processes, K/V shards travelling around
a ring, partial states merged with ⊕.

``layout`` (who holds which tokens; causal load balance), ``blocks`` (one step's state, dense or
with the FA2 kernel), ``attention`` (the torch.distributed ring, forward and backward),
``launch``/``tasks`` (spawning gloo or NCCL processes), ``simulate`` (the ring in one process,
registered as ``ring_reference``), ``model`` (communication vs compute per step).
"""
from flashedu.ring.attention import ring_attention
from flashedu.ring.launch import run_processes
from flashedu.ring.layout import LAYOUTS, positions, shard, shard_segments, unshard, work_matrix
from flashedu.ring.tasks import ring_attention_processes

__all__ = ["LAYOUTS", "positions", "ring_attention", "ring_attention_processes", "run_processes", "shard",
           "shard_segments", "unshard", "work_matrix"]
