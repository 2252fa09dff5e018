import sys, re, importlib
sys.argv=[sys.argv[0]]
import m2c as m2b
from harness import *
BM, BN, D = 64, 128, 128
qs, _ = desc_sig("fp16", [BM, D], gl.float16); ks, _ = desc_sig("fp16", [BN, D], gl.float16)
from triton.experimental.gluon._runtime import GluonASTSource
import triton
src = GluonASTSource(m2b.attn_fwd_ws, {"q_desc": qs, "k_desc": ks, "v_desc": ks, "o_desc": qs, "lse_ptr": "*fp32","N_CTX": "i32", "qk_scale": "fp32", "STAGES": "constexpr"}, {"STAGES": 2})
k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4))
ptx = k.asm["ptx"]
print([l.strip() for l in ptx.splitlines() if "setmaxnreg" in l][:6])
print("n_regs/spills from cubin metadata:", getattr(k, "n_regs", None), getattr(k, "n_spills", None))
open("/tmp/gluon_scratch/ws2.ttgir","w").write(k.asm["ttgir"])
open("/tmp/gluon_scratch/ws2.ptx","w").write(ptx)
