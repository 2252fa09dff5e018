"""A fluid event simulator: tasks with dependencies share the resources of one SM.

Each task needs one resource (the copy engine, the tensor cores, the softmax units) for an
amount of *work*: clock cycles if it had the resource to itself. A task starts as soon as every
task it depends on has finished. Tasks running on one resource at the same time split its rate
evenly (processor sharing), the way the warp schedulers interleave two warpgroups' instructions
on the tensor cores: two GEMMs issued together both finish late, neither first. The output is
exact for this model: piecewise-constant shares between events, recorded as segments. A task
may carry a latency: its result arrives that long after its work is done, without holding the
resource meanwhile (a GEMM's accumulators being written back, say).
"""
from __future__ import annotations

from dataclasses import dataclass, field

EPS = 1e-9


@dataclass
class Task:
    """One piece of work: ``work`` cycles on ``resource`` at full rate, after ``deps``."""

    name: str
    resource: str
    work: float
    lane: str  # who does it (a warpgroup, the producer): a row of the Gantt chart
    kind: str  # "load", "gemm0", "softmax", "gemm1"
    iteration: int = 0
    deps: list[str] = field(default_factory=list)
    # Tasks whose *work* must be done first (their latency may still run): a turn on a
    # resource handed over when it is free, not when the last result lands.
    work_deps: list[str] = field(default_factory=list)
    latency: float = 0.0  # cycles after the work is done before dependents may use the result
    start: float | None = None
    work_end: float | None = None  # the resource is released here
    end: float | None = None  # the result is usable here: work_end + latency


@dataclass(frozen=True)
class Segment:
    """``task`` held ``share`` of ``resource`` from ``t0`` to ``t1`` (cycles)."""

    task: str
    resource: str
    t0: float
    t1: float
    share: float


def run(tasks: list[Task]) -> list[Segment]:
    """Simulate ``tasks`` (their start/end are filled in); return the resource segments.

    Raises ValueError on unknown or cyclic dependencies and on negative work."""
    by_name = {t.name: t for t in tasks}
    if len(by_name) != len(tasks):
        raise ValueError("tasks must have unique names")
    for t in tasks:
        if t.work < 0 or t.latency < 0:
            raise ValueError(f"task {t.name}: work and latency must be >= 0, got {t.work}, {t.latency}")
        for d in t.deps + t.work_deps:
            if d not in by_name:
                raise ValueError(f"task {t.name} depends on unknown task {d!r}")
        t.start = t.work_end = t.end = None
    waiting = {t.name: len(t.deps) + len(t.work_deps) for t in tasks}
    children: dict[str, list[str]] = {t.name: [] for t in tasks}
    work_children: dict[str, list[str]] = {t.name: [] for t in tasks}
    for t in tasks:
        for d in t.deps:
            children[d].append(t.name)
        for d in t.work_deps:
            work_children[d].append(t.name)
    now, left, active, segments, landing = 0.0, {}, [], [], []  # landing: (time, name)
    ready = [t.name for t in tasks if not t.deps and not t.work_deps]
    done = 0

    def wake(kids):
        for c in kids:
            waiting[c] -= 1
            if waiting[c] == 0:
                ready.append(c)

    def release(name):
        nonlocal done
        done += 1
        wake(children[name])

    def finish_work(name):
        task = by_name[name]
        task.work_end, task.end = now, now + task.latency
        wake(work_children[name])
        if task.latency <= EPS:
            release(name)
        else:
            landing.append((task.end, name))

    while True:
        # Zero-work tasks finish on the spot and may release others at the same instant.
        while ready:
            name = ready.pop(0)
            task = by_name[name]
            task.start = now
            if task.work <= EPS:
                finish_work(name)
            else:
                left[name] = task.work
                active.append(name)
        if not active and not landing:
            break
        users: dict[str, int] = {}
        for name in active:
            users[by_name[name].resource] = users.get(by_name[name].resource, 0) + 1
        # Each active task runs at rate 1/users of its resource until the first one finishes
        # or a result lands, whichever is sooner.
        step = min([left[n] * users[by_name[n].resource] for n in active]
                   + [t - now for t, _ in landing])
        for name in active:
            share = 1.0 / users[by_name[name].resource]
            if step > 0:
                segments.append(Segment(name, by_name[name].resource, now, now + step, share))
            left[name] -= step * share
        now += step
        finished = [n for n in active if left[n] <= EPS * max(1.0, by_name[n].work)]
        active = [n for n in active if n not in finished]
        for name in finished:
            del left[name]
            finish_work(name)
        for t, name in [x for x in landing if x[0] <= now + EPS]:
            landing.remove((t, name))
            release(name)
    if done != len(tasks):
        stuck = sorted(n for n, w in waiting.items() if w > 0)[:5]
        raise ValueError(f"dependency cycle: {len(tasks) - done} tasks never became ready, e.g. {stuck}")
    return segments
