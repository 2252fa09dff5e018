"""Calling the reader's function inside a grader: an exception is a verdict on that case, except
NotImplementedError, which means the blanks are still empty and ends grading as "not attempted"."""
from __future__ import annotations

from flashedu.labs.report import CaseResult


def raised(exc: Exception, *, name: str, shape: str, causal, dtype: str) -> CaseResult:
    """The row of a case whose call raised ``exc`` (re-raised if it is NotImplementedError)."""
    if isinstance(exc, NotImplementedError):
        raise exc
    # A Triton compile error holds the kernel's source with the error last: keep both ends.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    what = lines[0] if len(lines) < 2 else f"{lines[0]} … {lines[-1]}"
    return CaseResult(name, shape, causal, dtype, None, False, f"raised {type(exc).__name__}: {what[:400]}")


def wrong_shape(got, want_shape, *, name: str, shape: str, causal, dtype: str, what: str = "the output"):
    """The row of a case whose result is not a tensor of ``want_shape``, or None if it is one."""
    import torch

    if not isinstance(got, torch.Tensor):
        why = f"{what} is a {type(got).__name__}, expected a tensor of shape {tuple(want_shape)}"
    elif tuple(got.shape) != tuple(want_shape):
        why = f"{what} has shape {tuple(got.shape)}, expected {tuple(want_shape)}"
    else:
        return None
    return CaseResult(name, shape, causal, dtype, None, False, why)
