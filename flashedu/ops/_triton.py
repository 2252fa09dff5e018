"""Host-side helpers shared by every Triton kernel in flashedu: which config list applies on this
GPU, whether a config fits its shared memory, launching with the autotuner or the first config that
fits, and timing configs the autotuner cannot tune (``choose``).

Kernels never import each other's host code; they import this.
"""
from __future__ import annotations

import functools

import torch
import triton

from flashedu import runtime
from flashedu.ops import _bound

# exp(x) = exp2(x · log2 e): every kernel works in base 2 (one FMA and one MUFU op an element).
LOG2E = 1.4426950408889634


def arch_key() -> str:
    """Which config list applies here: by compute capability, or the interpreter's one config."""
    rt = runtime.current()
    if not rt.compiled:
        return "interpreter"
    major, minor = rt.capability
    if major >= 9:
        return "sm90"
    if (major, minor) == (8, 0):
        return "sm80"
    return "sm86"  # sm_86/87/89 (~100 KB of shared memory per block), and anything older


def max_shared_memory() -> int:
    """Bytes of shared memory one program may use on this device (the interpreter: unlimited)."""
    if not runtime.current().compiled:
        return 1 << 30
    return _device_shared_memory(torch.cuda.current_device())


@functools.lru_cache(maxsize=None)
def _device_shared_memory(device: int) -> int:
    # Cached: triton's get_device_properties took ~0.9 ms a call on an H200 (triton 3.6), which
    # was most of a small forward's time before this cache.
    return triton.runtime.driver.active.utils.get_device_properties(device)["max_shared_mem"]


def shared_bytes(resident_rows: int, streamed_rows: int, stages: int, head_dim: int, elem_bytes: int,
                 resident_tiles: int = 2) -> int:
    """Shared-memory estimate of one program: the resident tiles plus `stages` copies of two
    streamed tiles (K and V, or Q and dO)."""
    return elem_bytes * head_dim * (resident_tiles * resident_rows + 2 * stages * streamed_rows)


def fits(resident_rows: int, streamed_rows: int, stages: int, head_dim: int, elem_bytes: int,
         resident_tiles: int = 2) -> bool:
    """Whether :func:`shared_bytes` fits this GPU's shared memory per program."""
    need = shared_bytes(resident_rows, streamed_rows, stages, head_dim, elem_bytes, resident_tiles)
    return need <= max_shared_memory()


def to_configs(table: dict, head_dim: int, elem_bytes: int, resident: int,
               resident_tiles: int = 2, acc_tiles: int = 1) -> list[triton.Config]:
    """This arch's configs that fit its shared memory and registers; ``resident`` is the index
    (0: BLOCK_M, 1: BLOCK_N) of the tiles that stay on chip while the others stream, and
    ``acc_tiles`` fp32 accumulators have that tile's shape."""
    out = []
    for bm, bn, warps, stages in table[arch_key()]:
        rows = (bm, bn)
        # fp32 accumulators of 256 registers per thread spilled to local memory in every
        # compile we looked at (sm_90, triton 3.9: dK/dV at D=128 with 4 warps, ~1 KB of stack);
        # at most 128 (8 warps) mostly did not.
        acc_regs = acc_tiles * rows[resident] * head_dim // (32 * warps)
        if runtime.current().compiled and acc_regs > 128:
            continue
        if fits(rows[resident], rows[1 - resident], stages, head_dim, elem_bytes, resident_tiles):
            out.append(triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=warps, num_stages=stages))
    return out


_TUNED: dict = {}  # (kernel, arch, head dim, element bytes) -> its autotuner
_CONFIGS: dict = {}  # the config list of one launch site, computed once per process


def launch(kernel, grid, args, consts, *, table: dict, head_dim: int, elem_bytes: int, resident: int,
           tune: bool, config: triton.Config | None = None, name: str = "kernel",
           resident_tiles: int = 2, acc_tiles: int = 1, bind_key=None) -> triton.Config | None:
    """Run ``kernel[grid](*args, **consts)`` with: an explicit config; the autotuner over this
    arch's configs (``tune``); or the first config that fits (small problems and tests: one
    compile per variant instead of one per config).

    ``bind_key`` (a key that fixes every integer argument, dtype and pointer alignment, see
    :mod:`flashedu.ops._bound`): the first call with it binds the compiled kernel and the config
    chosen, later calls launch that binding directly, skipping Triton's per-call Python.

    Returns the config that ran."""
    if bind_key is not None and config is None:
        bound = _bound.lookup(kernel, bind_key)
        if bound is not None:
            bound(*args)
            return bound.config
    chosen = _launch(kernel, grid, args, consts, table=table, head_dim=head_dim,
                     elem_bytes=elem_bytes, resident=resident, tune=tune, config=config, name=name,
                     resident_tiles=resident_tiles, acc_tiles=acc_tiles)
    if bind_key is not None and config is None:
        _bound.bind(kernel, bind_key, grid, args, chosen, consts)
    return chosen


def _launch(kernel, grid, args, consts, *, table, head_dim, elem_bytes, resident, tune, config, name,
            resident_tiles, acc_tiles) -> triton.Config:
    """:func:`launch` through Triton's own path; returns the config that ran."""
    if config is None:
        ckey = (id(table), arch_key(), head_dim, elem_bytes, resident, resident_tiles, acc_tiles)
        if ckey not in _CONFIGS:
            _CONFIGS[ckey] = to_configs(table, head_dim, elem_bytes, resident, resident_tiles, acc_tiles)
        configs = _CONFIGS[ckey]
        if not configs:
            raise ValueError(f"{name}: head dim D={head_dim} does not fit this GPU's "
                             f"{max_shared_memory() // 1024} KB of shared memory per block")
        if tune and len(configs) > 1:
            key = (kernel, arch_key(), head_dim, elem_bytes)
            if key not in _TUNED:
                # Timed by replaying a CUDA graph, as the benchmarks time kernels: with eager
                # timing (an L2 flush and the host between calls) the autotuner picked configs
                # up to 5% slower than the fastest in the harness's own timing (issue 20).
                _TUNED[key] = triton.autotune(configs, key=["N_Q", "N_K", "HEAD_DIM", "CAUSAL"],
                                              use_cuda_graph=True)(kernel)
            _TUNED[key][grid](*args, **consts)
            return _TUNED[key].best_config
        config = configs[0]
    # all_kwargs(), as the autotuner passes them: the same options hit the same compiled kernel.
    kernel[grid](*args, **consts, **config.all_kwargs())
    return config


_PICKED: dict = {}  # (kernel name, shape key) -> the config timed fastest by choose()


def choose(name: str, configs: list, key: tuple, run, *, tune: bool):
    """The first config, or on large GPU problems the fastest (timed once per key), for kernels
    that the autotuner cannot tune: block-sparse (each config needs its own layout argument) and
    FP8 (configs carry launch options such as a register cap).

    Two rounds over the list, each config's best median kept: configs within a few percent of
    each other swapped places from one process to the next with a single round. Timed by
    replaying a CUDA graph, as the benchmarks time kernels and as :func:`launch` autotunes (with
    eager timing the FP8 drop-in ran slower end to end than its best config alone:
    docs/notes/fp8-tuning.md, session 10)."""
    if not tune or len(configs) == 1:
        return configs[0]
    if (name, key) not in _PICKED:
        times = [float("inf")] * len(configs)
        for _ in range(2):
            for i, c in enumerate(configs):
                times[i] = min(times[i], _graph_ms(lambda c=c: run(c)))
        _PICKED[(name, key)] = configs[min(range(len(configs)), key=times.__getitem__)]
    return _PICKED[(name, key)]


def _graph_ms(fn) -> float:
    """Median GPU ms of ``fn`` replayed from a CUDA graph; eager events where it cannot be captured."""
    try:
        return triton.testing.do_bench_cudagraph(fn, rep=20, return_mode="median")
    except Exception:  # noqa: BLE001  (not capturable: time it eagerly)
        torch.cuda.synchronize()
        return triton.testing.do_bench(fn, warmup=10, rep=50)


def picked(name: str, key: tuple) -> triton.Config | None:
    """What :func:`choose` kept for (name, key), if it timed that key."""
    return _PICKED.get((name, key))


def tuned_config(kernel, head_dim: int, elem_bytes: int) -> triton.Config | None:
    """The autotuner's last pick for ``kernel`` here (for the tuning notes), if it ran."""
    tuner = _TUNED.get((kernel, arch_key(), head_dim, elem_bytes))
    return getattr(tuner, "best_config", None)


def should_tune(B: int, H: int, N_Q: int, N_K: int) -> bool:
    """Autotune only where it pays: large problems on a GPU (tests stay at one compile each)."""
    return runtime.current().compiled and B * H * N_Q * N_K > (1 << 27)
