"""How the Triton labs time the reader's kernel beside the book's own, on a GPU."""
from __future__ import annotations

from typing import Callable


def time_beside(mine: Callable[[], object], book: Callable[[], object]) -> tuple[float, float]:
    """GPU milliseconds of one call of ``mine`` and of ``book``: each compiled (and autotuned)
    first, then replayed from a CUDA graph, as the book's benchmarks time kernels (no host time,
    no autotuning inside the measurement)."""
    import torch

    from flashedu.bench.recorder import gpu_time

    for call in (mine, book):
        call()
    torch.cuda.synchronize()
    return gpu_time(mine)["ms"], gpu_time(book)["ms"]
