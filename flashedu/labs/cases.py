"""Calling the reader's function inside a grader: an exception is a verdict on that case, except
NotImplementedError, which means the blanks are still empty and ends grading as "not attempted"."""
from __future__ import annotations

from flashedu.labs.report import CaseResult


def raised(exc: Exception, *, name: str, shape: str, causal, dtype: str) -> CaseResult:
    """The row of a case whose call raised ``exc`` (re-raised if it is NotImplementedError)."""
    if isinstance(exc, NotImplementedError):
        raise exc
    return CaseResult(name, shape, causal, dtype, None, False,
                      f"raised {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")


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
