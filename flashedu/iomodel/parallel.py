"""How a kernel's programs (thread blocks) fill a GPU's SMs: seed 000's point that v1
parallelises over batch × heads only, while v2 also splits the sequence into Q blocks.

Model: an SM runs ``per_sm`` programs at once (FlashAttention kernels use so much shared memory
that one or two fit); programs start in waves of ``SMs × per_sm``. The last wave may be partly
empty, and so may the only one. Time is counted in units of one v2 program (one Q tile against
every K/V tile): a v1 program does the same work for all T_r Q tiles of its head, so it takes
T_r units. Both launch the same total work; what differs is how well it fills the SMs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from flashedu.hardware import gpu as get_gpu
from flashedu.iomodel.blocks import n_tiles


@dataclass(frozen=True)
class Occupancy:
    algorithm: str
    programs: int
    slots: int  # programs that can run at once: SMs × per_sm
    waves: int
    program_time: int = 1  # one program's time, in units of one v2 program

    @property
    def finish_time(self) -> int:
        """When the last wave ends, in units of one v2 program."""
        return self.waves * self.program_time

    def done_at(self, t: float) -> float:
        """The share of all the work finished by time ``t`` (0 to 1): each wave's programs run
        from ``wave · program_time`` for ``program_time``."""
        done = 0.0
        for wave in range(self.waves):
            n = min(self.slots, self.programs - wave * self.slots)
            done += n * min(1.0, max(0.0, (t - wave * self.program_time) / self.program_time))
        return done / self.programs

    def busy_at(self, t: float) -> int:
        """Programs running at time ``t`` (0 <= t; 0 once every wave has finished)."""
        wave = int(t // self.program_time)
        return 0 if wave >= self.waves else min(self.slots, self.programs - wave * self.slots)

    @property
    def utilization(self) -> float:
        """Busy slot-waves over all slot-waves: 1.0 when every wave is full."""
        return self.programs / (self.waves * self.slots)


def programs(algorithm: str, *, batch: int, heads: int, N: int, block_r: int = 128) -> int:
    """Programs launched: v1 one per (batch, head); v2 (and the split-Q kernels after it) one per
    (batch, head, Q block)."""
    if algorithm == "v1":
        return batch * heads
    if algorithm == "v2":
        return batch * heads * n_tiles(N, block_r)
    raise ValueError(f"algorithm must be 'v1' or 'v2', got {algorithm!r}")


def occupancy(algorithm: str, *, batch: int, heads: int, N: int, gpu="A100", block_r: int = 128,
              per_sm: int = 1) -> Occupancy:
    if per_sm < 1:
        raise ValueError(f"per_sm must be >= 1, got {per_sm}")
    n = programs(algorithm, batch=batch, heads=heads, N=N, block_r=block_r)
    slots = get_gpu(gpu).sms * per_sm
    length = n_tiles(N, block_r) if algorithm == "v1" else 1
    return Occupancy(algorithm, n, slots, math.ceil(n / slots), length)


def warp_partition(scheme: str, *, block_r: int, block_c: int, d: int, warps: int = 4,
                   acc_itemsize: int = 4) -> dict:
    """Who computes what inside one program, and what the warps must exchange.

    ``"split_k"`` (v1): the warps split the K/V tile's columns; each holds a partial Oᵢ for all
    Br rows, which must be summed through shared memory: every warp writes Br×d partials and
    they are read back. ``"split_q"`` (v2): the warps split Qᵢ's rows; each owns its rows of S,
    P and O outright, so nothing is exchanged.
    Returns the owner of every score ``owner[r][c]`` and the shared-memory bytes exchanged.
    """
    if scheme == "split_k":
        cols = -(-block_c // warps)
        owner = [[c // cols for c in range(block_c)] for _ in range(block_r)]
        exchanged = 2 * warps * block_r * d * acc_itemsize  # write partial O, read them to sum
    elif scheme == "split_q":
        rows = -(-block_r // warps)
        owner = [[r // rows] * block_c for r in range(block_r)]
        exchanged = 0
    else:
        raise ValueError(f"scheme must be 'split_k' or 'split_q', got {scheme!r}")
    return dict(scheme=scheme, owner=owner, smem_exchange_bytes=exchanged, warps=warps)
