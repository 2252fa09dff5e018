from harness import *
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import tma, mbarrier, fence_async_shared, warpgroup_mma, warpgroup_mma_wait

@gluon.jit
def qk3d(q_desc, k_desc, o_desc):
    BM: gl.constexpr = q_desc.block_type.shape[1]; D: gl.constexpr = q_desc.block_type.shape[2]; BN: gl.constexpr = k_desc.block_type.shape[1]
    q3 = gl.allocate_shared_memory(q_desc.dtype, q_desc.block_type.shape, q_desc.layout)
    k3 = gl.allocate_shared_memory(k_desc.dtype, [2] + k_desc.block_type.shape, k_desc.layout)
    bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    mbarrier.init(bar, count=1)
    bh = gl.program_id(1)
    mbarrier.expect(bar, q_desc.block_type.nbytes + k_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(q_desc, [bh, 0, 0], bar, q3)
    tma.async_copy_global_to_shared(k_desc, [bh, 0, 0], bar, k3.index(0))
    mbarrier.wait(bar, 0)
    q2 = q3.reshape([BM, D])
    k2 = k3.index(0).reshape([BN, D])
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BN, 16])
    s = warpgroup_mma(q2, k2.permute((1, 0)), gl.zeros([BM, BN], gl.float32, s_layout), use_acc=False, is_async=True)
    s = warpgroup_mma_wait(0, deps=(s, ))
    o3 = gl.allocate_shared_memory(o_desc.dtype, o_desc.block_type.shape, o_desc.layout)
    o3.reshape([BM, BN]).store(s.to(gl.float16))
    fence_async_shared()
    tma.async_copy_shared_to_global(o_desc, [bh, 0, 0], o3)
    tma.store_wait(0)

qs, _ = desc_sig("fp16", [1, 64, 128], gl.float16); ks, _ = desc_sig("fp16", [1, 128, 128], gl.float16)
compile_for_sm90(qk3d, {"q_desc": qs, "k_desc": ks, "o_desc": ks.replace("128,128", "64,128") if False else qs.replace("[1,64,128]","[1,64,128]")}, {}, num_warps=4)
