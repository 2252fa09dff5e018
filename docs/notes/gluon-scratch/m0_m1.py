from harness import *
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import tma, mbarrier, fence_async_shared, warpgroup_mma, warpgroup_mma_wait

@gluon.jit
def tma_copy(in_desc, out_desc):
    smem = gl.allocate_shared_memory(in_desc.dtype, in_desc.block_type.shape, in_desc.layout)
    bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    mbarrier.init(bar, count=1)
    off = gl.program_id(0) * in_desc.block_type.shape[0]
    mbarrier.expect(bar, in_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(in_desc, [off, 0], bar, smem)
    mbarrier.wait(bar, 0)
    mbarrier.invalidate(bar)
    fence_async_shared()
    tma.async_copy_shared_to_global(out_desc, [off, 0], smem)
    tma.store_wait(0)

@gluon.jit
def attn_fwd_1wg(q_desc, k_desc, v_desc, o_desc, lse_ptr, N_CTX, qk_scale,
                 BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr, STAGES: gl.constexpr):
    # q/k/v/o descs are over [B*H*N_CTX, HEAD_DIM]
    pid_m = gl.program_id(0); bh = gl.program_id(1)
    row0 = bh * N_CTX
    q_off = row0 + pid_m * BLOCK_M
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BLOCK_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, HEAD_DIM, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    q_smem = gl.allocate_shared_memory(q_desc.dtype, q_desc.block_type.shape, q_desc.layout)
    k_smem = gl.allocate_shared_memory(k_desc.dtype, [STAGES] + k_desc.block_type.shape, k_desc.layout)
    v_smem = gl.allocate_shared_memory(v_desc.dtype, [STAGES] + v_desc.block_type.shape, v_desc.layout)
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    kv_bar = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    for i in gl.static_range(STAGES):
        mbarrier.init(kv_bar.index(i), count=1)
    mbarrier.expect(q_bar, q_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(q_desc, [q_off, 0], q_bar, q_smem)
    kv_bytes: gl.constexpr = k_desc.block_type.nbytes + v_desc.block_type.nbytes
    n_blocks = N_CTX // BLOCK_N
    for i in gl.static_range(STAGES - 1):
        mbarrier.expect(kv_bar.index(i), kv_bytes)
        tma.async_copy_global_to_shared(k_desc, [row0 + i * BLOCK_N, 0], kv_bar.index(i), k_smem.index(i))
        tma.async_copy_global_to_shared(v_desc, [row0 + i * BLOCK_N, 0], kv_bar.index(i), v_smem.index(i))
    m_i = gl.full([BLOCK_M], float("-inf"), gl.float32, gl.SliceLayout(1, s_layout))
    l_i = gl.full([BLOCK_M], 1.0, gl.float32, gl.SliceLayout(1, s_layout))
    acc = gl.zeros([BLOCK_M, HEAD_DIM], gl.float32, o_layout)
    s_zero = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, s_layout)
    mbarrier.wait(q_bar, 0)
    for j in range(n_blocks):
        # prefetch block j+STAGES-1 (its stage was consumed in iteration j-1, whose MMAs were waited)
        nxt = j + STAGES - 1
        st_n = nxt % STAGES
        pred = nxt < n_blocks
        mbarrier.expect(kv_bar.index(st_n), kv_bytes, pred=pred)
        tma.async_copy_global_to_shared(k_desc, [row0 + nxt * BLOCK_N, 0], kv_bar.index(st_n), k_smem.index(st_n), pred=pred)
        tma.async_copy_global_to_shared(v_desc, [row0 + nxt * BLOCK_N, 0], kv_bar.index(st_n), v_smem.index(st_n), pred=pred)
        st = j % STAGES
        mbarrier.wait(kv_bar.index(st), (j // STAGES) & 1)
        s = warpgroup_mma(q_smem, k_smem.index(st).permute((1, 0)), s_zero, use_acc=False, is_async=True)
        s = warpgroup_mma_wait(num_outstanding=0, deps=(s, ))
        m_new = gl.maximum(m_i, gl.max(s, axis=1) * qk_scale)
        p = gl.exp2(s * qk_scale - m_new[:, None])
        alpha = gl.exp2(m_i - m_new)
        l_i = l_i * alpha + gl.sum(p, axis=1)
        acc = acc * gl.convert_layout(alpha, gl.SliceLayout(1, o_layout))[:, None]
        p16 = gl.convert_layout(p.to(gl.float16), p_layout)
        acc = warpgroup_mma(p16, v_smem.index(st), acc, is_async=True)
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
        m_i = m_new
    for i in gl.static_range(STAGES):
        mbarrier.invalidate(kv_bar.index(i))
    mbarrier.invalidate(q_bar)
    l_o = gl.convert_layout(l_i, gl.SliceLayout(1, o_layout))
    o = acc / l_o[:, None]
    o_smem = gl.allocate_shared_memory(o_desc.dtype, o_desc.block_type.shape, o_desc.layout)
    o_smem.store(o.to(gl.float16))
    fence_async_shared()
    tma.async_copy_shared_to_global(o_desc, [q_off, 0], o_smem)
    lse_layout: gl.constexpr = gl.BlockedLayout([1], [32], [4], [0])
    lse = gl.convert_layout((m_i + gl.log2(l_i)) * 0.6931471805599453, lse_layout)
    offs = pid_m * BLOCK_M + gl.arange(0, BLOCK_M, lse_layout)
    gl.store(lse_ptr + bh * N_CTX + offs, lse)
    tma.store_wait(0)

if __name__ == "__main__":
    sig, _ = desc_sig("fp16", [128, 64], gl.float16)
    compile_for_sm90(tma_copy, {"in_desc": sig, "out_desc": sig}, {}, num_warps=4)
    BM, BN, D = 64, 128, 128
    qs, _ = desc_sig("fp16", [BM, D], gl.float16); ks, _ = desc_sig("fp16", [BN, D], gl.float16)
    compile_for_sm90(attn_fwd_1wg, {"q_desc": qs, "k_desc": ks, "v_desc": ks, "o_desc": qs, "lse_ptr": "*fp32",
                     "N_CTX": "i32", "qk_scale": "fp32", "BLOCK_M": "constexpr", "BLOCK_N": "constexpr", "HEAD_DIM": "constexpr", "STAGES": "constexpr"},
                     {"BLOCK_M": BM, "BLOCK_N": BN, "HEAD_DIM": D, "STAGES": 2}, num_warps=4)
