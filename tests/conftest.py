"""Shared test helpers: the fp64 oracle (outputs and gradients), poisoned allocations, fresh inputs,
what this machine can run."""
from __future__ import annotations

import math

import pytest
import torch

import flashedu

GPU = flashedu.runtime.current().compiled
DEVICE = flashedu.runtime.current().device


def oracle(q, k, v, *, causal=False, scale=None):
    """Attention in fp64 on the CPU: the truth every implementation is compared with."""
    q, k, v = (t.detach().to("cpu", torch.float64) for t in (q, k, v))
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)


def oracle_grads(q, k, v, do, *, causal, scale=None):
    """dq, dk, dv of fp64 SDPA on the CPU."""
    q, k, v = (t.detach().to("cpu", torch.float64).requires_grad_() for t in (q, k, v))
    o = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
    return torch.autograd.grad(o, (q, k, v), do.to("cpu", torch.float64))


def tolerance(dtype: torch.dtype) -> float:
    """Max abs error allowed against the fp64 oracle for outputs of O(1) size."""
    return {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}[dtype]


@pytest.fixture
def poison(monkeypatch):
    """Make torch.empty/empty_like return NaN-filled tensors, so an output element a kernel
    forgets to write shows up as NaN instead of as whatever memory held before."""
    empty, empty_like = torch.empty, torch.empty_like

    def nan_fill(t):
        if t.dtype.is_floating_point:
            t.fill_(math.nan)
        return t

    monkeypatch.setattr(torch, "empty", lambda *a, **kw: nan_fill(empty(*a, **kw)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **kw: nan_fill(empty_like(*a, **kw)))


def fresh_qkv(B, H, N, D, *, dtype, device, n_k=None, seed=None):
    """New random inputs for every call (seeded from the OS unless a seed is given)."""
    g = torch.Generator().manual_seed(seed if seed is not None else torch.seed())
    n_k = N if n_k is None else n_k
    shapes = [(B, H, N, D), (B, H, n_k, D), (B, H, n_k, D)]
    return tuple(torch.randn(*s, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
                 for s in shapes)


def qkv_of_shape(shape, dtype, grad=False):
    """fresh_qkv for a (B, H, N_Q, N_K, D) shape on this machine's device, requiring grad or not."""
    B, H, N, NK, D = shape
    q, k, v = fresh_qkv(B, H, N, D, n_k=NK, dtype=dtype, device=DEVICE)
    return tuple(t.requires_grad_(grad) for t in (q, k, v))
