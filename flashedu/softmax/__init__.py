"""Chapter 2: softmax without seeing the whole row at once.

``reference``: naive, safe (three passes) and online (two passes) softmax, the running mean.
``state``: the running (m, ℓ, o) state of one query row and the merge operator ⊕ that combines two
partial states; tiling (ch. 3-4), split-KV decoding and ring attention (ch. 7) all reuse it.
The same softmax as a Triton kernel is :mod:`flashedu.ops.online.softmax_kernel`.
"""
from flashedu.softmax.reference import (naive_softmax, online_softmax, online_softmax_trace,
                                       running_mean_average, running_mean_sum, safe_softmax)
from flashedu.softmax.state import State, empty_state, finalize, merge, merge_all, state_of_block

__all__ = ["State", "empty_state", "finalize", "merge", "merge_all", "naive_softmax", "online_softmax",
           "online_softmax_trace", "running_mean_average", "running_mean_sum", "safe_softmax",
           "state_of_block"]
