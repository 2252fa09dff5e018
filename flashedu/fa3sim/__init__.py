"""Chapter 6's model of a Hopper SM: why FlashAttention-3 overlaps, and what each overlap buys.

* :func:`exp_share` - softmax's exponentials against the GEMMs, from the GPU presets;
* :func:`simulate` / :func:`compare` - one program's main loop under the schedules of
  :data:`SCHEDULES` (no overlap, warp specialisation, ping-pong, intra-warpgroup pipelining);
* :mod:`.engine` - the fluid event simulator underneath.
"""
from flashedu.fa3sim.engine import Segment, Task, run
from flashedu.fa3sim.exp_share import ExpShare, exp_share, exp_share_table
from flashedu.fa3sim.schedules import KINDS, SCHEDULES, SimResult, build, compare, simulate

__all__ = ["ExpShare", "KINDS", "SCHEDULES", "Segment", "SimResult", "Task", "build", "compare",
           "exp_share", "exp_share_table", "run", "simulate"]
