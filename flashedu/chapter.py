"""What a chapter's first cell calls: plotting set-up, seeding, and one line on what runs where."""
from __future__ import annotations

import sys

import torch

from flashedu import runtime


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
        # Versions on a line of their own: the first line is what ran where, short enough to
        # read without scrolling in the book.
        print(rt.describe().replace(" [", "\n[", 1))
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
    from flashedu._registry import get

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


def check_against_fp64(name: str, q, k, v, *, causal: bool = False, backward: bool = True,
                       fallback: str | None = None, token_mask=None, **kwargs) -> dict:
    """Run implementation ``name`` (or ``fallback``, with a message, where it cannot run here)
    on q, k, v, forward and, with ``backward``, backward with a random dO; compare o and the
    gradients with attention in fp64 on the CPU. ``token_mask`` (bool, True = keep, broadcast to
    [B, H, N, N_k]) is applied to the fp64 oracle, where a row with no key gives 0; other keyword
    arguments (``block_mask=``, say) go to the implementation. Prints the max errors, returns them."""
    import torch.nn.functional as F

    leaves = [t.detach().clone().requires_grad_(backward) for t in (q, k, v)]
    if fallback is None:
        from flashedu._registry import get

        o, ran = get(name).fn(*leaves, causal=causal, **kwargs), name
    else:
        o, ran = run(name, *leaves, causal=causal, fallback=fallback, **kwargs)
    exact = [t.detach().to("cpu", torch.float64).requires_grad_(backward) for t in (q, k, v)]
    if token_mask is None:
        ref = F.scaled_dot_product_attention(*exact, is_causal=causal)
    else:
        keep = token_mask.to("cpu", torch.bool)
        if causal:
            keep = keep & torch.ones(keep.shape[-2:], dtype=torch.bool).tril()
        s = (exact[0] @ exact[1].transpose(-1, -2)) / q.shape[-1] ** 0.5
        ref = torch.softmax(s.masked_fill(~keep, float("-inf")), dim=-1).nan_to_num(0.0) @ exact[2]
    errors = {"o": (o.detach().double().cpu() - ref.detach()).abs().max().item()}
    if backward:
        do = torch.randn_like(o)
        o.backward(do)
        ref.backward(do.detach().double().cpu())
        for n, got, want in zip("qkv", leaves, exact):
            errors[f"d{n}"] = (got.grad.double().cpu() - want.grad).abs().max().item()
    B, H, N, D = q.shape
    print(f"{ran} on {q.device}, N = {N}, d = {D}, {str(q.dtype).removeprefix('torch.')}, "
          f"{'causal' if causal else 'full'}\n  max error vs fp64: "
          + ", ".join(f"{k_} {e:.1e}" for k_, e in errors.items()))
    return errors
