"""What a chapter's first cell calls: plotting set-up, seeding, and one line on what runs where."""
from __future__ import annotations

import sys

import torch

from . import runtime


def on_colab() -> bool:
    return "google.colab" in sys.modules


def setup(seed: int = 0, *, quiet: bool = False) -> runtime.Runtime:
    """Prepare a chapter: plotly renderer, torch seed; print and return the runtime."""
    import plotly.io as pio

    # Colab has its own renderer. Elsewhere the mimetype alone is dropped by the book's HTML
    # builder, so the notebook renderer is added (the book swaps its inline plotly.js for one
    # shared, local copy).
    pio.renderers.default = "colab" if on_colab() else "plotly_mimetype+notebook"
    torch.manual_seed(seed)
    rt = runtime.current()
    if not quiet:
        print(rt.describe())
    return rt


def random_qkv(B: int, H: int, N: int, D: int, *, dtype=torch.float32, device=None,
               generator: torch.Generator | None = None):
    """Fresh N(0, 1) q, k, v shaped [B, H, N, D] on the runtime's device unless one is given."""
    device = device or runtime.current().device
    return tuple(torch.randn(B, H, N, D, generator=generator).to(device=device, dtype=dtype)
                 for _ in range(3))


def run(name: str, q, k, v, *, fallback: str = "standard_reference", **kwargs):
    """Call implementation ``name``; if it cannot run on this machine (a T4 and an FP8 kernel,
    say), print why and call ``fallback`` instead. Returns ``(o, name_that_ran)``."""
    from ._registry import get

    impl = get(name)
    reason = impl.why_not(device=q.device.type, dtype=q.dtype, head_dim=q.shape[-1])
    if reason is not None:
        print(f"{name} cannot run here ({reason}); using {fallback} instead.")
        impl = get(fallback)
    return impl.fn(q, k, v, **kwargs), impl.name


def glue(name: str, value, *, display: bool = False):
    """Put a computed value into the prose with myst-nb's ``{glue}`` role when the book is built;
    elsewhere (Colab, plain Jupyter) do nothing. Returns None, so a cell ending in a glue call
    shows no stray output."""
    try:
        from myst_nb import glue as _glue
    except ImportError:
        return
    _glue(name, value, display=display)
