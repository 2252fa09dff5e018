import sys, re, triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
from triton.experimental.gluon import language as gl
def desc_sig(dtype_str, block, gl_dtype):
    lay = gl.NVMMASharedLayout.get_default_for(block, gl_dtype)
    return f"tensordesc<{dtype_str}[{','.join(map(str,block))}],{lay!r}>", lay
def compile_for_sm90(fn, signature, constexprs, **opts):
    src = GluonASTSource(fn, signature, constexprs)
    k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=opts)
    ptx = k.asm["ptx"]
    print(fn.__name__, "OK; shared", k.metadata.shared, "num_warps", k.metadata.num_warps,
          "| wgmma:", len(re.findall(r"wgmma.mma_async", ptx)), "setmaxnreg:", sorted(set(re.findall(r"setmaxnreg\.\w+\.sync\.aligned\.u32 \d+", ptx))),
          "cp.async.bulk.tensor:", len(re.findall(r"cp.async.bulk.tensor", ptx)), "mbarrier.try_wait:", len(re.findall(r"mbarrier.try_wait", ptx)))
    return k
