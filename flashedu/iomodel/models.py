"""Which algorithms the memory model can run: each ``ops/<algorithm>/`` folder plugs its
chip-level references in here when it registers, so the model never imports an algorithm.

A forward reference is ``forward(chip, *, N, N_k, d, scale, causal, block_r, block_c)``: it reads
Q, K, V from the chip's HBM and writes O (and its row statistics). A backward reference has the
same signature and also reads O, dO and the statistics named in ``stats``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Model:
    """One algorithm as the memory model sees it."""

    name: str
    forward: Callable | None = None
    backward: Callable | None = None
    # Row statistics of the forward that the backward reads back (v2: L; v1: l and m).
    stats: tuple[str, ...] = ()
    # (Br, Bc) defaults of the backward, whose larger set of tiles changes what fits on chip.
    backward_block_sizes: Callable | None = None
    # Replaces simulate()'s own loop when the algorithm takes more than the shape (block-sparse:
    # a mask); called with simulate()'s keyword arguments.
    simulate: Callable | None = None


_MODELS: dict[str, Model] = {}


def register_model(model: Model) -> Model:
    if model.name in _MODELS:
        raise ValueError(f"the memory model already has an algorithm named {model.name!r}")
    _MODELS[model.name] = model
    return model


def names() -> tuple[str, ...]:
    """Algorithms the memory model can run, in the order they registered (chapter order)."""
    return tuple(_MODELS)


def get_model(name: str) -> Model:
    try:
        return _MODELS[name]
    except KeyError:
        raise ValueError(f"algorithm must be one of {names()}, got {name!r}") from None
