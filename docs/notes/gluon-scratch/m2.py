from harness import *
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import tma, mbarrier, fence_async_shared, warpgroup_mma, warpgroup_mma_wait

@gluon.jit
def load_part(q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, kv_ready, kv_empty, q_off, row0, n_blocks):
    STAGES: gl.constexpr = k_smem.type.shape[0]
    mbarrier.expect(q_bar, q_desc.block_type.nbytes * 2)
    tma.async_copy_global_to_shared(q_desc, [q_off, 0], q_bar, q_smem.index(0))
    tma.async_copy_global_to_shared(q_desc, [q_off + q_desc.block_type.shape[0], 0], q_bar, q_smem.index(1))
    kv_bytes: gl.constexpr = k_desc.block_type.nbytes + v_desc.block_type.nbytes
    for j in range(n_blocks):
        st = j % STAGES
        ph = (j // STAGES) & 1
        mbarrier.wait(kv_empty.index(st), ph ^ 1)
        mbarrier.expect(kv_ready.index(st), kv_bytes)
        tma.async_copy_global_to_shared(k_desc, [row0 + j * k_desc.block_type.shape[0], 0], kv_ready.index(st), k_smem.index(st))
        tma.async_copy_global_to_shared(v_desc, [row0 + j * k_desc.block_type.shape[0], 0], kv_ready.index(st), v_smem.index(st))

@gluon.jit
def consumer(WG: gl.constexpr, o_desc, lse_ptr, q_smem, k_smem, v_smem, o_smem, q_bar, kv_ready, kv_empty,
             q_off, lse_off, n_blocks, qk_scale):
    STAGES: gl.constexpr = k_smem.type.shape[0]
    BLOCK_M: gl.constexpr = q_smem.type.shape[1]
    HEAD_DIM: gl.constexpr = q_smem.type.shape[2]
    BLOCK_N: gl.constexpr = k_smem.type.shape[1]
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BLOCK_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, HEAD_DIM, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    q = q_smem.index(WG)
    m_i = gl.full([BLOCK_M], float("-inf"), gl.float32, gl.SliceLayout(1, s_layout))
    l_i = gl.full([BLOCK_M], 0.0, gl.float32, gl.SliceLayout(1, s_layout))
    acc = gl.zeros([BLOCK_M, HEAD_DIM], gl.float32, o_layout)
    s_zero = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, s_layout)
    mbarrier.wait(q_bar, 0)
    mbarrier.wait(kv_ready.index(0), 0)
    s = warpgroup_mma(q, k_smem.index(0).permute((1, 0)), s_zero, use_acc=False, is_async=True)
    s = warpgroup_mma_wait(num_outstanding=0, deps=(s, ))
    for j in range(n_blocks):
        st = j % STAGES
        m_new = gl.maximum(m_i, gl.max(s, axis=1) * qk_scale)
        p = gl.exp2(s * qk_scale - m_new[:, None])
        alpha = gl.exp2(m_i - m_new)
        l_i = l_i * alpha + gl.sum(p, axis=1)
        m_i = m_new
        acc = acc * gl.convert_layout(alpha, gl.SliceLayout(1, o_layout))[:, None]
        p16 = gl.convert_layout(p.to(gl.float16), p_layout)
        # GEMM0(j+1) issued before GEMM1(j)
        nj = j + 1
        has_next = nj < n_blocks
        nst = nj % STAGES
        mbarrier.wait(kv_ready.index(nst), (nj // STAGES) & 1, pred=has_next)
        s = warpgroup_mma(q, k_smem.index(nst).permute((1, 0)), s_zero, use_acc=False, is_async=True)
        acc = warpgroup_mma(p16, v_smem.index(st), acc, is_async=True)
        s = warpgroup_mma_wait(num_outstanding=1, deps=(s, ))
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
        mbarrier.arrive(kv_empty.index(st), count=1)
    l_o = gl.convert_layout(l_i, gl.SliceLayout(1, o_layout))
    o = acc / l_o[:, None]
    ob = o_smem.index(WG)
    ob.store(o.to(gl.float16))
    fence_async_shared()
    tma.async_copy_shared_to_global(o_desc, [q_off + WG * BLOCK_M, 0], ob)
    lse_layout: gl.constexpr = gl.BlockedLayout([1], [32], [4], [0])
    lse = gl.convert_layout((m_i + gl.log2(l_i)) * 0.6931471805599453, lse_layout)
    gl.store(lse_ptr + lse_off + WG * BLOCK_M + gl.arange(0, BLOCK_M, lse_layout), lse)
    tma.store_wait(0)

@gluon.jit
def consumer0(*args):
    consumer(0, *args)

@gluon.jit
def consumer1(*args):
    consumer(1, *args)

@gluon.jit
def attn_fwd_ws(q_desc, k_desc, v_desc, o_desc, lse_ptr, N_CTX, qk_scale, STAGES: gl.constexpr):
    BLOCK_M: gl.constexpr = q_desc.block_type.shape[0]   # per consumer WG
    BLOCK_N: gl.constexpr = k_desc.block_type.shape[0]
    pid_m = gl.program_id(0); bh = gl.program_id(1)
    row0 = bh * N_CTX
    q_off = row0 + pid_m * (2 * BLOCK_M)
    lse_off = bh * N_CTX + pid_m * (2 * BLOCK_M)
    n_blocks = N_CTX // BLOCK_N
    q_smem = gl.allocate_shared_memory(q_desc.dtype, [2] + q_desc.block_type.shape, q_desc.layout)
    o_smem = gl.allocate_shared_memory(o_desc.dtype, [2] + o_desc.block_type.shape, o_desc.layout)
    k_smem = gl.allocate_shared_memory(k_desc.dtype, [STAGES] + k_desc.block_type.shape, k_desc.layout)
    v_smem = gl.allocate_shared_memory(v_desc.dtype, [STAGES] + v_desc.block_type.shape, v_desc.layout)
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    kv_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    kv_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    for i in gl.static_range(STAGES):
        mbarrier.init(kv_ready.index(i), count=1)
        mbarrier.init(kv_empty.index(i), count=2)
    cargs = (o_desc, lse_ptr, q_smem, k_smem, v_smem, o_smem, q_bar, kv_ready, kv_empty, q_off, lse_off, n_blocks, qk_scale)
    gl.warp_specialize([
        (consumer0, cargs),
        (consumer1, cargs),
        (load_part, (q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, kv_ready, kv_empty, q_off, row0, n_blocks)),
    ], [4, 1], [240, 24])

if __name__ == "__main__":
    BM, BN, D = 64, 128, 128
    qs, _ = desc_sig("fp16", [BM, D], gl.float16); ks, _ = desc_sig("fp16", [BN, D], gl.float16)
    import sys
    maxnreg = int(sys.argv[1]) if len(sys.argv) > 1 else None
    opts = dict(num_warps=4)
    if maxnreg: opts["maxnreg"] = maxnreg
    k = compile_for_sm90(attn_fwd_ws, {"q_desc": qs, "k_desc": ks, "v_desc": ks, "o_desc": qs, "lse_ptr": "*fp32",
                     "N_CTX": "i32", "qk_scale": "fp32", "STAGES": "constexpr"}, {"STAGES": 2}, **opts)
    import re; print(re.findall(r"\.maxnreg \d+|\.reqntid \d+|\.maxntid \d+(?:, \d+)*", k.asm["ptx"]))
