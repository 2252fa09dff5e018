"""FlashAttention-3's schedules as task graphs on one Hopper SM, and what they predict.

One program (thread block) owns ``block_m`` query rows, split between two consumer warpgroups
(128 threads each), and streams ``n_blocks`` K/V tiles of ``block_n`` rows. Per warpgroup and K/V
tile there are three compute tasks, GEMM0 (S = Q Kⱼᵀ, tensor cores), softmax (exponentials on
the MUFU plus max/sum/rescale on the FP32 lanes) and GEMM1 (O += P Vⱼ, tensor cores), and per
tile two copies (Kⱼ, Vⱼ) on the copy engine. A schedule is which dependencies join them:

* ``warp_specialize``: a producer warpgroup issues the copies into a circular buffer of
  ``stages`` slots as soon as a slot is free; without it the first consumer issues them in its
  own program order, and a slot is free only when *both* consumers are done with it;
* ``pingpong``: the two consumers take turns on the tensor cores (a named barrier), so one's
  softmax runs under the other's GEMMs;
* ``intra_warpgroup``: each consumer issues GEMM0 of tile j+1 and GEMM1 of tile j before it
  waits, so its softmax of tile j+1 runs while its own GEMM1 of tile j does.

Assumptions (the model's, not the hardware's): only the main loop (no Q load, no epilogue);
a GEMM's result is usable ``gemm_latency`` cycles after its work is done, a tile
``load_latency`` cycles after its bytes are moved (defaults 0: no latency at all), softmax's at
once; resources shared evenly among the tasks using them; no
register spills; the boost clock throughout; rates from :func:`flashedu.hardware.sm_rates`.
"""
from __future__ import annotations

from dataclasses import dataclass

from flashedu.hardware import SMRates, gpu, sm_rates
from flashedu.fa3sim.engine import Segment, Task, run

WARPGROUPS = 2
THREADS_PER_WARPGROUP = 128
# FA3 hands the consumer warpgroups 240 registers per thread (setmaxnreg), the producer 24-32.
CONSUMER_REGS_PER_THREAD = 240
# FP32 operations per score in a softmax besides its exponential (max, subtract, sum, convert):
# the model's default, an assumption.
ALU_OPS_PER_SCORE = 4.0

SCHEDULES = {
    # name: (label, warp_specialize, pingpong, intra_warpgroup, stages override or None)
    "no_overlap": ("(a) no overlap", False, False, False, 1),
    "warp_specialized": ("(b) warp specialisation", True, False, False, None),
    "pingpong": ("(c) + ping-pong", True, True, False, None),
    "intra_warpgroup": ("(d) + intra-warpgroup pipelining", True, False, True, None),
    "fa3": ("FA3: (c) and (d)", True, True, True, None),
}
KINDS = ("load", "gemm0", "softmax", "gemm1")
RESOURCES = {"load": "copy engine (TMA)", "gemm0": "tensor cores", "gemm1": "tensor cores",
             "softmax": "MUFU + FP32 lanes"}


@dataclass
class SimResult:
    """A simulated schedule: tasks with start/end (cycles), resource segments, and summaries."""

    schedule: str
    label: str
    tasks: list[Task]
    segments: list[Segment]
    makespan: float  # cycles
    gemm_flops: float
    rates: SMRates
    dtype: str
    accumulator_regs_per_thread: float

    @property
    def tensor_utilization(self) -> float:
        """Fraction of the makespan the tensor cores were busy."""
        return self.busy("tensor cores")

    @property
    def tflops(self) -> float:
        """Predicted TFLOP/s for the whole GPU: utilisation × the preset's matmul rate."""
        return self.tensor_utilization * self._gpu_rate() / 1e12

    def _gpu_rate(self) -> float:
        return gpu(self.rates.gpu).matmul_flops(self.dtype)

    def busy(self, resource: str) -> float:
        """Fraction of the makespan ``resource`` was in use (sum of shares × time)."""
        used = sum((s.t1 - s.t0) * s.share for s in self.segments if s.resource == resource)
        return used / self.makespan if self.makespan else 0.0

    @property
    def fits_registers(self) -> bool:
        """Whether the fp32 accumulators fit the registers FA3 gives a consumer thread."""
        return self.accumulator_regs_per_thread <= CONSUMER_REGS_PER_THREAD


def _phases(gemms: list[str]) -> list[list[str]]:
    """Split one warpgroup's GEMMs (in issue order, with None where it waits on its softmax)
    into the runs it issues back to back: the unit a ping-pong turn covers."""
    out, cur = [], []
    for g in gemms:
        if g is None:
            if cur:
                out.append(cur)
            cur = []
        else:
            cur.append(g)
    if cur:
        out.append(cur)
    return out


def build(*, d: int, block_m: int, block_n: int, n_blocks: int, stages: int, warp_specialize: bool,
          pingpong: bool, intra_warpgroup: bool, rates: SMRates, dtype: str = "fp16",
          alu_ops_per_score: float = ALU_OPS_PER_SCORE, gemm_latency: float = 0.0,
          load_latency: float = 0.0) -> list[Task]:
    """The task graph of one program's main loop (see the module docstring)."""
    elem = 1 if dtype == "fp8" else 2
    rows = block_m // WARPGROUPS
    gemm = 2.0 * rows * block_n * d / rates.gemm_flops_per_clk(dtype)
    soft = rows * block_n * (1.0 / rates.sfu_per_clk + alu_ops_per_score / rates.fp32_per_clk)
    load = block_n * d * elem / rates.load_bytes_per_clk
    tasks: dict[str, Task] = {}

    def add(name, kind, work, lane, j, deps):
        latency = gemm_latency if kind.startswith("gemm") else load_latency if kind == "load" else 0.0
        tasks[name] = Task(name, RESOURCES[kind], work, lane, kind, j, [x for x in deps if x], latency=latency)

    wgs = [f"WG{w + 1}" for w in range(WARPGROUPS)]
    # Compute tasks in each consumer's program order; `prev` is what it waited on last.
    issue: dict[str, list] = {}
    for wg in wgs:
        g0, sm, g1 = (lambda j, k=k: f"{wg} {k} {j}" for k in ("gemm0", "softmax", "gemm1"))
        order = []
        if not intra_warpgroup:
            for j in range(n_blocks):
                add(g0(j), "gemm0", gemm, wg, j, [g1(j - 1) if j else None])
                add(sm(j), "softmax", soft, wg, j, [g0(j)])
                add(g1(j), "gemm1", gemm, wg, j, [sm(j)])
                order += [g0(j), None, g1(j)]
        else:
            # Algorithm 2 of the paper: S_next = Q K_j+1ᵀ and O += P_j V_j issued together, the
            # softmax of j+1 waits only for S_next, the loop's end waits for the GEMM1.
            add(g0(0), "gemm0", gemm, wg, 0, [])
            add(sm(0), "softmax", soft, wg, 0, [g0(0)])
            order += [g0(0), None]
            for j in range(1, n_blocks):
                add(g0(j), "gemm0", gemm, wg, j, [sm(j - 1), g1(j - 2) if j > 1 else None])
                add(g1(j - 1), "gemm1", gemm, wg, j - 1, [g0(j), sm(j - 1)])
                add(sm(j), "softmax", soft, wg, j, [g0(j)])
                order += [g0(j), g1(j - 1), None]
            last = n_blocks - 1
            add(g1(last), "gemm1", gemm, wg, last, [sm(last), g1(last - 1) if last else None])
            order += [g1(last)]
        issue[wg] = order

    # Copies. A slot of the circular buffer is reused `stages` tiles later, once every consumer
    # is done with the tile in it.
    lane = "producer" if warp_specialize else "WG1 (loads)"
    for j in range(n_blocks):
        k_deps, v_deps = [], []
        if j >= stages:
            old = j - stages
            k_deps += [f"{wg} gemm0 {old}" for wg in wgs]
            v_deps += [f"{wg} gemm1 {old}" for wg in wgs]
            if not warp_specialize:
                # No producer: the first consumer issues the copy in its own program order, after
                # a barrier with the other consumer frees the whole slot.
                k_deps += [f"{wg} gemm1 {old}" for wg in wgs]
                k_deps.append(_before(issue["WG1"], f"WG1 gemm0 {j - stages + 1}"))
        add(f"load K {j}", "load", load, lane, j, k_deps)
        add(f"load V {j}", "load", load, lane, j, v_deps)
        # Copies are issued in order (K0, V0, K1, ...); each may start once the one before it has
        # moved its bytes, not once it has landed: several are in flight at a time.
        tasks[f"load K {j}"].work_deps += [f"load V {j - 1}"] if j else []
        tasks[f"load V {j}"].work_deps.append(f"load K {j}")
    for wg in wgs:
        for j in range(n_blocks):
            tasks[f"{wg} gemm0 {j}"].deps.append(f"load K {j}")
            tasks[f"{wg} gemm1 {j}"].deps.append(f"load V {j}")

    if pingpong:
        # Turns go WG1 phase p, WG2 phase p, WG1 phase p+1, ...: each starts when the previous
        # turn's GEMMs have left the tensor cores (FA3 signals the barrier after issuing).
        phases = {wg: _phases(issue[wg]) for wg in wgs}
        prev = None
        for p in range(max(len(v) for v in phases.values())):
            for wg in wgs:
                if p < len(phases[wg]):
                    if prev is not None:
                        tasks[phases[wg][p][0]].work_deps.append(prev)
                    prev = phases[wg][p][-1]
    return list(tasks.values())


def _before(order: list, name: str) -> str | None:
    """The task a consumer finished just before issuing ``name`` (its program-order predecessor)."""
    names = [x for x in order if x is not None]
    k = names.index(name)
    return names[k - 1] if k else None


def simulate(schedule: str = "fa3", *, d: int = 128, block_m: int = 128, block_n: int = 128,
             n_blocks: int = 16, stages: int = 2, gpu: str = "H100", dtype: str = "fp16",
             alu_ops_per_score: float = ALU_OPS_PER_SCORE, gemm_latency: float = 0.0,
             load_latency: float = 0.0,
             load_bytes_per_clk: float | None = None,
             warp_specialize: bool | None = None, pingpong: bool | None = None,
             intra_warpgroup: bool | None = None) -> SimResult:
    """Simulate one program's main loop under ``schedule`` (a key of :data:`SCHEDULES`); the
    three flags, when given, override the schedule's. Times are in clock cycles of ``gpu``."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    for arg, val in (("d", d), ("block_m", block_m), ("block_n", block_n), ("n_blocks", n_blocks),
                     ("stages", stages)):
        if isinstance(val, bool) or not isinstance(val, int) or val < 1:
            raise ValueError(f"{arg} must be a positive int, got {val!r}")
    if block_m % WARPGROUPS:
        raise ValueError(f"block_m must be a multiple of {WARPGROUPS} (one share per warpgroup), got {block_m}")
    for arg, val in (("alu_ops_per_score", alu_ops_per_score), ("gemm_latency", gemm_latency),
                     ("load_latency", load_latency)):
        if isinstance(val, bool) or not isinstance(val, (int, float)) or not val >= 0:
            raise ValueError(f"{arg} must be a number >= 0, got {val!r}")
    label, ws, pp, intra, fixed_stages = SCHEDULES[schedule]
    ws = ws if warp_specialize is None else warp_specialize
    pp = pp if pingpong is None else pingpong
    intra = intra if intra_warpgroup is None else intra_warpgroup
    stages = fixed_stages or stages
    rates = sm_rates(gpu) if load_bytes_per_clk is None else sm_rates(gpu, load_bytes_per_clk=load_bytes_per_clk)
    tasks = build(d=d, block_m=block_m, block_n=block_n, n_blocks=n_blocks, stages=stages,
                  warp_specialize=ws, pingpong=pp, intra_warpgroup=intra, rates=rates, dtype=dtype,
                  alu_ops_per_score=alu_ops_per_score, gemm_latency=gemm_latency,
                  load_latency=load_latency)
    segments = run(tasks)
    rows = block_m // WARPGROUPS
    acc_bytes = rows * d * 4 + rows * block_n * 4 * (2 if intra else 1)  # O, S (and S_next), fp32
    return SimResult(schedule, label, tasks, segments, max(t.end for t in tasks),
                     4.0 * block_m * block_n * d * n_blocks, rates, dtype,
                     acc_bytes / (THREADS_PER_WARPGROUP * 4))


def compare(**kwargs) -> dict[str, SimResult]:
    """Every schedule of :data:`SCHEDULES` at the same parameters."""
    return {name: simulate(name, **kwargs) for name in SCHEDULES}
