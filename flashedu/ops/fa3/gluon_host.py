"""Host-side pieces the Gluon forward (:mod:`.gluon`) and backward (:mod:`.gluon_bwd`) share: the
dtype map, the TMA descriptor over ``[B·H, N, D]``, and the compile-only report for sm_90."""
from __future__ import annotations

import torch

DTYPE_NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float8_e4m3fn: "fp8"}


def gl_dtype(dtype: torch.dtype):
    """Gluon's name for a torch dtype."""
    from triton.experimental.gluon import language as gl

    return {torch.float16: gl.float16, torch.bfloat16: gl.bfloat16,
            torch.float8_e4m3fn: gl.float8e4nv}[dtype]


def descriptor(t: torch.Tensor, rows: int):
    """A TMA descriptor over t ([B, H, N, D], contiguous) seen as [B·H, N, D]; one copy moves a
    [1, rows, D] box."""
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    B, H, N, D = t.shape
    flat = t.view(B * H, N, D)
    box = [1, rows, D]
    layout = gl.NVMMASharedLayout.get_default_for(box, gl_dtype(t.dtype))
    return TensorDescriptor(flat, shape=[B * H, N, D], strides=list(flat.stride()),
                            block_shape=box, layout=layout)


def compile_report(args: dict, name: str) -> dict:
    """Run ``gluon_compile.py`` on ``args`` (its JSON argument) in a process of its own, and
    return its report; RuntimeError naming kernel ``name``, with the compiler's last line,
    where it fails."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = Path(__file__).with_name("gluon_compile.py")
    r = subprocess.run([sys.executable, str(script), json.dumps(args)], capture_output=True,
                       text=True, env=env)
    if r.returncode != 0:
        last = [line for line in r.stderr.splitlines() if line.strip() and "nanobind" not in line]
        raise RuntimeError(f"{name} does not compile for sm_90 here: "
                           f"{last[-1] if last else 'exit code ' + str(r.returncode)}")
    return json.loads(r.stdout.strip().splitlines()[-1])
