"""Compile the Gluon FA3 kernels for sm_90 without a GPU and print what the chip would give them.

Run as a script in a process of its own (``python gluon_compile.py '{"head_dim": 128, ...}'``;
``"kernel": "bwd"`` for the backward, :func:`bwd_resources`): Triton's interpreter mode, which
flashedu turns on when there is no GPU, would turn Gluon's own library functions into
interpreted ones, and Gluon cannot be interpreted. So this file imports nothing from flashedu; it
loads ``gluon_kernel.py`` and ``gluon_bwd_kernel.py`` beside it by path.
"""
from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path


def resources(head_dim: int, dtype: str, causal: bool, block_n: int, stages: int,
              warp_specialize: bool, pingpong: bool, intra: bool, split_mask: bool,
              persistent: bool, consumer_regs: int, consumers: int = 2,
              balanced: bool = False, q_buffers: int = 2, half_diagonal: bool = False) -> dict:
    """What the chip gives the kernel built with these switches (``balanced`` is the host's
    choice of work-item order, the same machine code either way)."""
    from triton.experimental.gluon import language as gl

    kernel = _load("gluon_kernel.py")
    # fp8: e4m3 q, k and V transposed ([B·H, D, N]), fp16 o
    gl_dtype = {"fp16": gl.float16, "bf16": gl.bfloat16, "fp8": gl.float8e4nv}[dtype]
    q_rows = 64 if warp_specialize else 128

    def desc(box, gl_type=gl_dtype):
        layout = gl.NVMMASharedLayout.get_default_for(box, gl_type)
        return f"tensordesc<{gl_type.name}[{','.join(map(str, box))}],{layout!r}>"

    constexprs = dict(CAUSAL=causal, STAGES=stages, WARP_SPEC=warp_specialize, PINGPONG=pingpong,
                      INTRA=intra, SPLIT_MASK=split_mask, PERSISTENT=persistent,
                      CONSUMERS=consumers, CONSUMER_REGS=consumer_regs, Q_BUFFERS=q_buffers,
                      HALF_DIAGONAL=half_diagonal, STAMP_ITERS=0)
    fp8 = dtype == "fp8"
    signature = {"q_desc": desc([1, q_rows, head_dim]), "k_desc": desc([1, block_n, head_dim]),
                 "v_desc": desc([1, head_dim, block_n] if fp8 else [1, block_n, head_dim]),
                 "o_desc": desc([1, q_rows, head_dim], gl.float16 if fp8 else gl_dtype),
                 "lse_ptr": "*fp32", "stamps_ptr": "*i64", "schedule_ptr": "*i32", "N_Q": "i32",
                 "N_K": "i32", "qk_scale": "fp32", "stamp_pid": "i32", "BH": "i32",
                 "q_descale": "*fp32", "k_descale": "*fp32", "v_descale": "*fp32",
                 "n_qt": "i32", "n_kt": "i32", "q_block": "i32", "kv_shift": "i32"}
    return _report(kernel.fa3_fwd_kernel, signature, constexprs, 4 if warp_specialize else 8)


def bwd_resources(head_dim: int, dtype: str, causal: bool, stages: int = 2,
                  block_m: int = 64, block_n: int = 128) -> dict:
    """What the chip gives the backward (``gluon_bwd_kernel.fa3_bwd_kernel``) built with these
    switches: the same report as :func:`resources`."""
    from triton.experimental.gluon import language as gl

    kernel = _load("gluon_bwd_kernel.py")
    gl_dtype = {"fp16": gl.float16, "bf16": gl.bfloat16}[dtype]

    def desc(box):
        layout = gl.NVMMASharedLayout.get_default_for(box, gl_dtype)
        return f"tensordesc<{gl_dtype.name}[{','.join(map(str, box))}],{layout!r}>"

    constexprs = dict(CAUSAL=causal, STAGES=stages)
    signature = {"q_desc": desc([1, block_m, head_dim]), "k_desc": desc([1, block_n, head_dim]),
                 "v_desc": desc([1, block_n, head_dim]), "do_desc": desc([1, block_m, head_dim]),
                 "lse_ptr": "*fp32", "delta_ptr": "*fp32", "dq_ptr": "*fp32",
                 "dk_ptr": f"*{'fp16' if dtype == 'fp16' else 'bf16'}",
                 "dv_ptr": f"*{'fp16' if dtype == 'fp16' else 'bf16'}",
                 "N_Q": "i32", "N_K": "i32", "qk_scale": "fp32", "scale": "fp32"}
    return _report(kernel.fa3_bwd_kernel, signature, constexprs, int(kernel.WARPS))


def _load(name: str):
    """The kernel module beside this file, loaded by path (not through flashedu: see above)."""
    spec = importlib.util.spec_from_file_location(f"flashedu_fa3_{Path(name).stem}",
                                                  Path(__file__).with_name(name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report(fn, signature: dict, constexprs: dict, num_warps: int) -> dict:
    """Compile ``fn`` for sm_90 and read its resources, PTX and machine code."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    signature = dict(signature, **{k: "constexpr" for k in constexprs})
    compiled = triton.compile(GluonASTSource(fn, signature, constexprs),
                              target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps})
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "fa3.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        usage = subprocess.run([str(tool), "-res-usage", str(cubin)], capture_output=True,
                               text=True, check=True).stdout
        sass = subprocess.run([str(tool), "-sass", str(cubin)], capture_output=True, text=True,
                              check=True).stdout
    ptx = compiled.asm["ptx"]
    threads = re.search(r"\.reqntid (\d+)", ptx)
    loop = main_loop(sass)
    return {
        "shared_bytes": compiled.metadata.shared,
        "registers": int(re.search(r"REG:(\d+)", usage).group(1)),  # the cap before setmaxnreg
        # Spilled registers land on the stack (ptxas counts them there, not in LOCAL).
        "stack_bytes": int(re.search(r"STACK:(\d+)", usage).group(1)),
        "setmaxnreg": sorted({int(n) for n in re.findall(r"setmaxnreg\.\w+\.sync\.aligned\.u32\s+(\d+)", ptx)}),
        "threads": int(threads.group(1)) if threads else None,
        "wgmma": len(re.findall(r"wgmma\.mma_async", ptx)),
        # The consumers' steady-state loop in machine code (SASS): its length, and how many of
        # its instructions are selects (FSEL), which is what a mask applied to S costs.
        "loop_instructions": loop["instructions"],
        "loop_selects": loop["FSEL"],
        "loop_exps": loop["MUFU.EX2"],
        "loop_spills": loop["LDL"] + loop["STL"],  # local-memory traffic in the loop
        "triton": triton.__version__,
    }


def main_loop(sass: str) -> dict:
    """The smallest loop (a backward branch) whose body issues tensor-core GEMMs (HGMMA) and
    exponentials (MUFU.EX2): a consumer's main loop. Its instruction count and a few opcodes'
    counts (LDL/STL: spilled registers reloaded or stored)."""
    ins = [(int(a, 16), text.strip()) for a, text in
           re.findall(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", sass)]
    best = None
    for addr, text in ins:
        target = re.search(r"\bBRA\b.*?0x([0-9a-f]+)", text)
        if target and int(target.group(1), 16) < addr:
            body = [t for a, t in ins if int(target.group(1), 16) <= a <= addr]
            if (any("GMMA" in t for t in body) and any("MUFU.EX2" in t for t in body)
                    and (best is None or len(body) < len(best))):
                best = body
    ops = [re.sub(r"^@!?U?P\w+\s+", "", t).split()[0] for t in best or []]
    return {"instructions": len(ops),
            **{op: ops.count(op) for op in ("FSEL", "MUFU.EX2", "LDL", "STL")}}


if __name__ == "__main__":
    args = json.loads(sys.argv[1])
    build = bwd_resources if args.pop("kernel", "fwd") == "bwd" else resources
    print(json.dumps(build(**args)))
