"""Launching a compiled Triton kernel without Triton's per-call Python: bound once per call shape.

``kernel[grid](*args, **kwargs)`` runs Python on every call before the launcher: it binds the
arguments to the signature, works out how each integer and pointer specialises the kernel (equal
to 1? divisible by 16?), hashes that into a cache key, looks the compiled kernel up and
evaluates the grid (its cost beside the launcher's, measured: docs/notes/v2-tuning.md, session
9). For one call shape all of that gives the same answer every time, so :func:`bind` does it
once and keeps a :class:`Bound` that calls the launcher directly.

The caller's ``key`` must determine everything Triton specialises on: every integer argument
(shapes, strides), the dtypes, and whether each input pointer is 16-byte aligned. Floats (the
softmax scale) are not specialised and pass through. Outputs freshly allocated by torch are
always aligned. Only compiled kernels bind; the interpreter, and a process with launch hooks
installed (a profiler such as proton), take Triton's own path every time.
"""
from __future__ import annotations

import inspect

import triton

from flashedu import runtime


class Bound:
    """One compiled kernel, its grid and its trailing compile-time arguments: ``bound(*args)``
    launches it on the current stream with ``args`` (the kernel's leading, run-time arguments)."""

    __slots__ = ("_run", "_function", "_metadata", "_grid", "_tail", "_device", "_stream",
                 "_pointers", "_direct", "config")

    def __init__(self, compiled, grid: tuple, tail: tuple, device: int, pointers: tuple = ()):
        compiled._init_handles()
        self._run, self._function = compiled.run, compiled.function
        self._metadata = compiled.packed_metadata
        self._grid = tuple(grid) + (1,) * (3 - len(grid))
        self._tail, self._device = tail, device
        self._pointers = pointers  # positions in ``args`` of the tensors
        self._direct = _direct_launch(compiled.run)
        # Looked up once: `driver.active` is a proxy that resolves the backend on each access.
        self._stream = triton.runtime.driver.active.get_current_stream
        self.config: triton.Config | None = None  # the launch config it was bound with

    def __call__(self, *args) -> None:
        # [bound-call-start]
        g0, g1, g2 = self._grid
        stream = self._stream(self._device)  # torch's current stream
        # Tensors go in as addresses: handed a tensor, the launcher would ask the driver
        # whether its memory is on the GPU, pointer by pointer, call after call.
        args = list(args)
        for i in self._pointers:
            args[i] = args[i].data_ptr()
        # The launcher (triton 3.6 to 3.9) takes the grid, stream, function, metadata,
        # launch metadata, enter/exit hooks (None: bind() refuses when hooks are
        # installed), then every parameter of the kernel, compile-time ones included.
        if self._direct is None:
            self._run(g0, g1, g2, stream, self._function, self._metadata, None, None, None,
                      *args, *self._tail)
            return
        # triton 3.6, no scratch memory: its C launch itself, the Python wrapper skipped
        launch, coop, pdl = self._direct
        launch(g0, g1, g2, stream, self._function, coop, pdl, None, None,
               self._metadata, None, None, None, *args, *self._tail)
        # [bound-call-end]


def _direct_launch(run) -> tuple | None:
    """``(launch, cooperative grid, PDL)`` of triton 3.6's launcher, or None.

    Its Python wrapper (``CudaLauncher.__call__``) allocates per-launch scratch memory, which a
    kernel that needs none skips, then calls the C ``launch``: calling that directly saves a
    frame and two closures on every call. Only for the version whose ``launch`` signature this
    was written against, and only for kernels without scratch memory."""
    if not triton.__version__.startswith("3.6.") or type(run).__name__ != "CudaLauncher":
        return None
    if run.global_scratch_size or run.profile_scratch_size:
        return None
    return run.launch, run.launch_cooperative_grid, run.launch_pdl


_BOUND: dict = {}  # (kernel, caller's key) -> Bound
ENABLED = True  # False: every launch takes Triton's path (the host-time benchmark's baseline)


def lookup(kernel, key) -> Bound | None:
    """The binding made for ``key``, if any (a dict lookup: the fast path's whole cost)."""
    return _BOUND.get((kernel, key)) if ENABLED else None


def _hooks_installed() -> bool:
    hooks = triton.knobs.runtime
    return bool(getattr(hooks.launch_enter_hook, "calls", hooks.launch_enter_hook)
                or getattr(hooks.launch_exit_hook, "calls", hooks.launch_exit_hook))


def bind(kernel, key, grid, args: tuple, config: triton.Config, consts: dict) -> Bound | None:
    """Bind ``kernel`` for ``key`` after a launch of ``kernel[grid](*args, **consts)`` with
    ``config`` (so the compiled kernel is in Triton's cache); None where binding does not apply."""
    if not ENABLED or not runtime.current().compiled or _hooks_installed():
        return None
    kwargs = {**consts, **config.all_kwargs()}
    compiled = kernel.warmup(*args, grid=grid, **kwargs)
    if hasattr(compiled, "result"):  # an asynchronous compile's future (triton 3.5+)
        compiled = compiled.result()
    params = list(inspect.signature(kernel.fn).parameters.values())
    named = {**consts, **config.kwargs}
    tail = tuple(named[p.name] if p.name in named else p.default for p in params[len(args):])
    if any(t is inspect.Parameter.empty for t in tail):
        return None  # a parameter the caller did not name: leave it to Triton
    meta = {**named, **dict(zip((p.name for p in params), args))}
    pointers = tuple(i for i, a in enumerate(args) if hasattr(a, "data_ptr"))
    bound = Bound(compiled, grid(meta) if callable(grid) else grid, tail, rt_device(args), pointers)
    bound.config = config
    _BOUND[(kernel, key)] = bound
    return bound


def call_key(q, k, v, *options) -> tuple:
    """Everything an attention entry's input checks and Triton's specialisation read of q, k, v
    (shapes, strides, dtypes, devices, 16-byte alignment), then the caller's ``options``. Used as
    a binding's key, it also stands for the checks: a key bound once passed them, and a call
    with the same key would pass them again (host time: the checks are then skipped)."""
    return (q.shape, k.shape, v.shape, q.stride(), k.stride(), v.stride(), q.dtype, k.dtype,
            v.dtype, q.get_device(), k.get_device(), v.get_device(), aligned(q, k, v), *options)


def strides(key: tuple) -> tuple:
    """q's, k's and v's strides, flat, from a :func:`call_key`."""
    return (*key[3], *key[4], *key[5])


def rt_device(args: tuple) -> int:
    """The CUDA device of the first tensor argument (the kernel's inputs share one device)."""
    for a in args:
        if hasattr(a, "device"):
            return a.device.index or 0
    return 0


def aligned(*tensors) -> bool:
    """Whether every pointer is 16-byte aligned, as Triton specialises pointers (a view that
    starts mid-row may not be: it gets a binding of its own)."""
    bits = 0
    for t in tensors:
        bits |= t.data_ptr()
    return bits & 15 == 0


def clear() -> None:
    """Forget every binding (tests, and a process that changes Triton's knobs)."""
    _BOUND.clear()


def run(kernel, key, grid, args: tuple, consts: dict, *, num_warps: int, num_stages: int) -> None:
    """``kernel[grid](*args, **consts, num_warps=..., num_stages=...)``; the first call for
    ``key`` goes through Triton and binds, later ones launch the binding."""
    bound = lookup(kernel, key)
    if bound is not None:
        bound(*args)
        return
    config = triton.Config({}, num_warps=num_warps, num_stages=num_stages)
    kernel[grid](*args, **consts, **config.all_kwargs())
    bind(kernel, key, grid, args, config, consts)
