"""torch's own attention backends, the peers every flashedu kernel is measured against. They are
not registered implementations (flashedu did not write them); benchmarks list them beside the
registry."""
from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F

try:
    from torch.nn.attention import SDPBackend, sdpa_kernel
except ImportError:  # torch < 2.3
    SDPBackend = sdpa_kernel = None

SDPA_BACKENDS = {"sdpa_flash": "FLASH_ATTENTION", "sdpa_efficient": "EFFICIENT_ATTENTION",
                 "sdpa_cudnn": "CUDNN_ATTENTION", "sdpa_math": "MATH"}


def sdpa_peer(name: str):
    """``fn(q, k, v, *, causal=False, scale=None)`` forced onto one SDPA backend."""
    backend = getattr(SDPBackend, SDPA_BACKENDS[name], None) if SDPBackend else None

    def fn(q, k, v, *, causal=False, scale=None):
        ctx = sdpa_kernel(backend) if backend is not None else nullcontext()
        with ctx:
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)

    fn.__name__ = name
    return fn


def peers() -> dict:
    return {name: sdpa_peer(name) for name in SDPA_BACKENDS}
