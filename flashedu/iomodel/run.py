"""Running a reference algorithm on the memory model: numerically on tensors, or shape-only.

``simulate`` is the book's entry point: it runs the same reference code as the registered
implementations, with the arithmetic skipped, and returns the recorded :class:`Report`; with
``backward=True`` it runs the backward reference (v1, v2) instead, on a chip of its own.
"""
from __future__ import annotations

import time
from typing import Callable

import torch

from flashedu.validate import check_qkv
from flashedu.iomodel.blocks import DEFAULT_SRAM_BYTES, check_blocks, resolve_blocks
from flashedu.iomodel.chip import Chip
from flashedu.iomodel.models import Model, get_model, names
from flashedu.iomodel.report import Report, build_report


def _backward(algorithm: str) -> Model:
    model = get_model(algorithm)
    if model.backward is None:
        raise NotImplementedError(f"backward=True runs {[n for n in names() if get_model(n).backward]}; "
                                  f"{algorithm!r} has no backward reference (standard attention's "
                                  "backward is autograd's)")
    return model


def _backward_blocks(default: Callable, *, d, sram_bytes, dtype, block_r, block_c) -> tuple[int, int]:
    # The backward keeps gradient tiles on chip too, so its defaults are not the forward's.
    if block_r is None or block_c is None:
        dr, dc = default(d=d, sram_bytes=sram_bytes, dtype=dtype)
        block_r = dr if block_r is None else block_r
        block_c = dc if block_c is None else block_c
    check_blocks(block_r, block_c)
    return block_r, block_c


def _backward_inputs(chip: Chip, *, N: int, d: int, stats: tuple[str, ...], data=None) -> None:
    """Put O, the forward's row statistics and dO in HBM (data: name -> tensor, numeric runs)."""
    for name in ("O", *stats, "dO"):
        chip.tensor(name, N, 1 if name in stats else d, data=(data or {}).get(name), stat=name in stats)


def check_sram(sram_bytes) -> int:
    if sram_bytes is None:
        return DEFAULT_SRAM_BYTES
    if isinstance(sram_bytes, bool) or not isinstance(sram_bytes, int) or sram_bytes < 1:
        raise ValueError(f"sram_bytes must be a positive int, got {sram_bytes!r}")
    return sram_bytes


def run_reference(algorithm: str, forward: Callable, q, k, v, *, causal: bool, scale,
                  block_r, block_c, sram_bytes) -> tuple[torch.Tensor, Report, Chip]:
    """Validate ``[B, H, N, D]`` inputs, run ``forward`` numerically, return (o, report, chip)."""
    scale = check_qkv(q, k, v, causal=causal, scale=scale, name=f"{algorithm}_reference")
    B, H, N, D = q.shape
    N_k = k.shape[2]
    sram_bytes = check_sram(sram_bytes)
    br, bc = resolve_blocks(algorithm, d=D, sram_bytes=sram_bytes, dtype=q.dtype,
                            block_r=block_r, block_c=block_c)
    chip = Chip.from_qkv(q, k, v, sram_bytes=sram_bytes)
    forward(chip, N=N, N_k=N_k, d=D, scale=scale, causal=causal, block_r=br, block_c=bc)
    report = build_report(chip, algorithm=algorithm, N=N, N_k=N_k, d=D, causal=causal,
                          block_r=br, block_c=bc)
    return chip.data("O").to(q.dtype), report, chip


def run_backward(algorithm: str, q, k, v, o, do, stats: dict, *, causal: bool, scale,
                 block_r, block_c, sram_bytes) -> tuple[tuple[torch.Tensor, ...], Report]:
    """Put q, k, v, the forward's o and row statistics (``stats``: name -> ``[B, H, N]``) and the
    output gradient do in HBM, run ``algorithm``'s backward numerically, return
    ((dq, dk, dv), report)."""
    scale = check_qkv(q, k, v, causal=causal, scale=scale, name=f"{algorithm}_backward")
    B, H, N, D = q.shape
    for name, t in (("o", o), ("do", do)):
        if not isinstance(t, torch.Tensor) or t.shape != q.shape:
            raise ValueError(f"{algorithm}_backward: {name} must be a tensor shaped like q {tuple(q.shape)}")
    model = _backward(algorithm)
    for name in model.stats:
        if stats[name].numel() != B * H * N:
            raise ValueError(f"{algorithm}_backward: {name} must have shape [B, H, N] = {(B, H, N)}, "
                             f"got {tuple(stats[name].shape)}")
    sram_bytes = check_sram(sram_bytes)
    br, bc = _backward_blocks(model.backward_block_sizes, d=D, sram_bytes=sram_bytes, dtype=q.dtype, block_r=block_r,
                              block_c=block_c)
    chip = Chip.from_qkv(q.detach(), k.detach(), v.detach(), sram_bytes=sram_bytes)
    data = {"O": o, "dO": do, **{n: stats[n].reshape(B, H, N, 1) for n in model.stats}}
    _backward_inputs(chip, N=N, d=D, stats=model.stats, data={n: t.detach().to(chip.work_dtype)
                                                        for n, t in data.items()})
    model.backward(chip, N=N, N_k=k.shape[2], d=D, scale=scale, causal=causal, block_r=br, block_c=bc)
    report = build_report(chip, algorithm=algorithm, N=N, N_k=k.shape[2], d=D, causal=causal,
                          block_r=br, block_c=bc, backward=True)
    return tuple(chip.data(n).to(q.dtype) for n in ("dQ", "dK", "dV")), report


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def simulate(algorithm: str, *, N: int, d: int, sram_bytes: int = DEFAULT_SRAM_BYTES,
             causal: bool = False, block_mask=None, backward: bool = False,
             dtype: torch.dtype = torch.float16, block_r: int | None = None,
             block_c: int | None = None, batch: int = 1, heads: int = 1,
             N_k: int | None = None) -> Report:
    """Run ``algorithm``'s reference shape-only and return what it moved.

    ``algorithm``: "standard", "v1", "v2" or "block_sparse" (with ``block_mask``, a
    :class:`~flashedu.ops.block_sparse.masks.BlockSparseMask` whose blocks are the tiles; None: every tile;
    its backward runs at the largest tiles dividing the mask's that fit). One (batch, head) by default; ``batch`` and
    ``heads`` multiply the traffic, not the trace. Block sizes default as documented in
    :mod:`flashedu.iomodel.blocks` (v1: the paper's Bc = ⌈M/4d⌉, Br = min(Bc, d)).
    ``backward=True`` ("v1", "v2"): the report of the backward pass alone (its trace's phases
    are "init"/"preprocess" and "backward"), from Q, K, V, O, dO and the forward's statistics in
    HBM; block sizes default to what the backward's larger set of tiles fits
    (``flashedu.ops.v2.reference_bwd.backward_block_sizes``, and v1's).
    Raises :class:`~flashedu.iomodel.SRAMOverflowError` when the tiles do not fit ``sram_bytes``.

    >>> r = simulate("v2", N=4096, d=64)
    >>> r.read_elements == 4096 * 64 * (1 + 2 * r.Tr)
    True
    """
    model = get_model(algorithm)
    if block_mask is not None and model.simulate is None:
        raise ValueError(f"block_mask needs algorithm='block_sparse' (v2's loops over the listed "
                         f"tiles), got algorithm={algorithm!r}")
    N, d, batch, heads = (_positive_int(n, x) for n, x in (("N", N), ("d", d), ("batch", batch), ("heads", heads)))
    N_k = N if N_k is None else _positive_int("N_k", N_k)
    if causal and N_k != N:
        raise ValueError(f"causal=True needs N_k == N, got N={N}, N_k={N_k}")
    sram_bytes = check_sram(sram_bytes)
    if model.simulate is not None:
        return model.simulate(N=N, N_k=N_k, d=d, block_mask=block_mask, causal=causal, backward=backward,
                              dtype=dtype, sram_bytes=sram_bytes, batch=batch, heads=heads,
                              block_r=block_r, block_c=block_c)
    if backward:
        model = _backward(algorithm)
        run, stats = model.backward, model.stats
        br, bc = _backward_blocks(model.backward_block_sizes, d=d, sram_bytes=sram_bytes, dtype=dtype,
                                  block_r=block_r, block_c=block_c)
    else:
        run, stats = model.forward, ()
        br, bc = resolve_blocks(algorithm, d=d, sram_bytes=sram_bytes, dtype=dtype,
                                block_r=block_r, block_c=block_c)
    chip = Chip(sram_bytes=sram_bytes, dtype=dtype, numeric=False, batch=batch, heads=heads)
    for name, rows in (("Q", N), ("K", N_k), ("V", N_k)):
        chip.tensor(name, rows, d)
    if backward:
        _backward_inputs(chip, N=N, d=d, stats=stats)
    # The scale only matters to the arithmetic, which a shape-only run skips.
    run(chip, N=N, N_k=N_k, d=d, scale=1.0, causal=causal, block_r=br, block_c=bc)
    return build_report(chip, algorithm=algorithm, N=N, N_k=N_k, d=d, causal=causal,
                        block_r=br, block_c=bc, backward=backward)


def time_simulation(algorithm: str = "v2", **kwargs) -> float:
    """Seconds one shape-only :func:`simulate` takes (for the book's "how fast is the model" note)."""
    t0 = time.perf_counter()
    simulate(algorithm, **kwargs)
    return time.perf_counter() - t0
