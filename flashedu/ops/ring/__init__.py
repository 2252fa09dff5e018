"""Ring attention simulated in one process (chapter 7); the multi-process ring is flashedu.ring."""
from flashedu._registry import Impl, register
from flashedu.ring.simulate import ring_simulated

register(Impl(
    name="ring_reference", algorithm="ring", backend="reference", chapter=7,
    fn=ring_simulated, backward=True,
    summary="Ring attention with the ranks simulated by a loop: each rank keeps its query shard, "
            "the K/V shards pass from rank to rank (zig-zag layout by default) and every step's "
            "state is merged with ⊕; exact, differentiable through autograd.",
))
