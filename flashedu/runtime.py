"""Decide once what runs where, and say it in one line.

* a CUDA GPU that Triton can compile for -> compiled Triton kernels at full problem sizes;
* no GPU -> Triton kernels under the interpreter (``TRITON_INTERPRET=1``) on the CPU, at small
  sizes. The variable is read when ``triton`` is imported, so this module sets it before anything
  in flashedu imports triton;
* a GPU too old for one kernel (a T4 and bf16, FP8 or TMA, say) -> that kernel's ``why_not`` says
  so and the chapter falls back.

``decide`` is a pure function of what it is told, so tests can fake any machine.
``FLASHEDU_DEVICE=cpu`` forces the interpreter even when a GPU is present.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass

import torch

# Triton can compile for Volta and newer; what each dtype needs on top of that.
MIN_TRITON_CAPABILITY = (7, 0)
DTYPE_MIN_CAPABILITY = {torch.bfloat16: (8, 0)}
FP8_DTYPES = tuple(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n))


@dataclass(frozen=True)
class Runtime:
    mode: str  # "compiled" | "interpreter" | "unavailable"
    device: str  # where tensors for Triton kernels live: "cuda" or "cpu"
    gpu_name: str | None = None
    capability: tuple[int, int] | None = None
    reason: str = ""  # why Triton is unavailable, when it is

    @property
    def compiled(self) -> bool:
        return self.mode == "compiled"

    @property
    def interpreted(self) -> bool:
        return self.mode == "interpreter"

    def size(self, cpu, gpu):
        """Pick a problem size: small under the interpreter, full on a GPU."""
        return gpu if self.compiled else cpu

    def why_not_triton(self, *, device: str, dtype: torch.dtype,
                       min_capability: tuple[int, int] = (0, 0)) -> str | None:
        if self.mode == "unavailable":
            return self.reason
        if device != self.device:
            where = "the GPU" if self.compiled else "the CPU (interpreter)"
            return f"Triton kernels run on {where} here; tensors are on {device}"
        if self.interpreted:
            if dtype == torch.bfloat16:
                return "the Triton interpreter has no bfloat16 (it multiplies raw bit patterns)"
            return None
        need = max(min_capability, DTYPE_MIN_CAPABILITY.get(dtype, (0, 0)))
        if dtype in FP8_DTYPES:
            need = max(need, (8, 9))
        if self.capability < need:
            return (f"{self.gpu_name} is sm_{self.capability[0]}{self.capability[1]}; "
                    f"this kernel with {str(dtype).removeprefix('torch.')} needs sm_{need[0]}{need[1]} or newer")
        return None

    def why_not_gluon(self, *, device: str, dtype: torch.dtype) -> str | None:
        """Why a Gluon kernel for Hopper cannot run here: Gluon has no interpreter, and wgmma
        exists on sm_90 alone (Blackwell's tensor cores take other instructions)."""
        if self.mode == "unavailable":
            return self.reason
        if not self.compiled:
            return ("Gluon kernels run compiled on a GPU only (the Triton interpreter does not "
                    "run Gluon); no CUDA GPU here")
        if device != self.device:
            return f"Gluon kernels run on the GPU here; tensors are on {device}"
        if self.capability != (9, 0):
            return (f"{self.gpu_name} is sm_{self.capability[0]}{self.capability[1]}; this Gluon "
                    "kernel is written for Hopper (sm_90: wgmma, TMA, setmaxnreg)")
        if importlib.util.find_spec("triton.experimental.gluon") is None:
            return f"triton {_triton_version()} has no Gluon (triton.experimental.gluon)"
        return None

    def describe(self) -> str:
        versions = f"torch {torch.__version__}, triton {_triton_version() or 'not installed'}"
        if self.compiled:
            cap = f"sm_{self.capability[0]}{self.capability[1]}"
            return f"{self.gpu_name} ({cap}): Triton kernels compiled for the GPU, full sizes. [{versions}]"
        if self.interpreted:
            return f"No CUDA GPU: Triton kernels run under the interpreter on the CPU, small sizes. [{versions}]"
        return f"Triton kernels cannot run here: {self.reason} [{versions}]"


def decide(*, cuda: bool, capability: tuple[int, int] | None = None, gpu_name: str | None = None,
           triton_installed: bool = True, triton_imported: bool = False,
           interpret_env: str | None = None, force_cpu: bool = False) -> Runtime:
    """What runs where, from facts about the machine (no side effects)."""
    if not triton_installed:
        return Runtime("unavailable", "cpu", gpu_name, capability,
                       reason="triton is not installed (pip install triton)")
    use_gpu = cuda and not force_cpu
    if use_gpu and capability is not None and capability < MIN_TRITON_CAPABILITY:
        return Runtime("unavailable", "cuda", gpu_name, capability,
                       reason=f"{gpu_name} is sm_{capability[0]}{capability[1]}; Triton needs sm_70 or newer")
    if use_gpu and interpret_env != "1":
        return Runtime("compiled", "cuda", gpu_name, capability)
    if triton_imported and interpret_env != "1":
        return Runtime("unavailable", "cpu", gpu_name, capability,
                       reason="triton was imported before flashedu with TRITON_INTERPRET unset; "
                              "restart the kernel and import flashedu first")
    return Runtime("interpreter", "cpu", gpu_name, capability)


def _triton_version() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return None
    import triton

    return triton.__version__


def _detect() -> Runtime:
    cuda = torch.cuda.is_available()
    rt = decide(
        cuda=cuda,
        capability=torch.cuda.get_device_capability() if cuda else None,
        gpu_name=torch.cuda.get_device_name() if cuda else None,
        triton_installed=importlib.util.find_spec("triton") is not None,
        triton_imported="triton" in sys.modules,
        interpret_env=os.environ.get("TRITON_INTERPRET"),
        force_cpu=os.environ.get("FLASHEDU_DEVICE", "").lower() == "cpu",
    )
    if rt.interpreted:
        os.environ["TRITON_INTERPRET"] = "1"
    return rt


_CURRENT: Runtime | None = None


def current() -> Runtime:
    """The runtime of this process, decided on first use."""
    global _CURRENT
    if _CURRENT is None:
        _CURRENT = _detect()
    return _CURRENT


def describe() -> str:
    return current().describe()


def require_triton(name: str, t: torch.Tensor, *, min_capability: tuple[int, int] = (0, 0)) -> Runtime:
    """The runtime, or a RuntimeError naming kernel ``name`` and why it cannot run on ``t``'s
    device and dtype here (no GPU and bf16, a T4 and FP8, tensors on the wrong device...)."""
    rt = current()
    reason = rt.why_not_triton(device=t.device.type, dtype=t.dtype, min_capability=min_capability)
    if reason:
        raise RuntimeError(f"{name} cannot run here: {reason}")
    return rt
