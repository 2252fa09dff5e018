"""FlashAttention-1 backward in Triton: Algorithm 4 (Dao et al., 2022, no dropout) in v1's schedule.

The readable version is :mod:`flashedu.ops.v1.reference_bwd`; this kernel walks the same loops::

    dQ = 0 in HBM (fp32)                                              (line 5)
    for j in 1..Tc:                         one program per (batch, head) walks every tile
        load K_j, V_j;  dK̃_j = dṼ_j = 0 on chip (fp32)                   (lines 6-8)
        for i in 1..Tr:                     causal: tiles above the diagonal are skipped
            load Q_i, O_i, dO_i, dQ_i, ℓ_i, m_i                         (line 10)
            S_ij = scale · Q_i K_jᵀ;  P_ij = diag(ℓ_i)⁻¹ exp(S_ij − m_i)   (lines 11-13)
            dṼ_j += P_ijᵀ dO_i;  dP_ij = dO_i V_jᵀ                        (lines 16-17)
            D_i = rowsum(dO_i ∘ O_i);  dS_ij = P_ij ∘ (dP_ij − D_i)       (lines 19-20)
            dQ_i += scale · dS_ij K_j;  store dQ_i                      (line 21)
            dK̃_j += scale · dS_ijᵀ Q_i                                  (line 22)
        store dK_j, dV_j                                                (line 24)

dQ makes a round trip through HBM every inner step, as O did in the forward; no other program
touches this (batch, head), so the read-modify-write needs no atomics, only a barrier between the
store of dQ_i and its reload one outer step later (Triton orders shared memory, not global
memory). dQ is summed in fp32 (Tc additions in fp16 would round each one) and cast to q's dtype
by the host afterwards.

What FA2's backward (:mod:`flashedu.ops.v2.kernel_bwd`) changes: D once in a preprocess instead
of reloading O_i every step, L = m + log ℓ instead of ℓ and m, and one program per K/V tile (plus
one per Q tile for dQ) instead of one per (batch, head).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from flashedu import runtime


@triton.jit
def _v1_bwd_kernel(Q, K, V, O, DO, Lsum, Mmax, DQ, DK, DV,
                   stride_qz, stride_qh, stride_qm, stride_qd,
                   stride_kz, stride_kh, stride_kn, stride_kd,
                   stride_vz, stride_vh, stride_vn, stride_vd,
                   stride_oz, stride_oh, stride_om, stride_od,
                   stride_dz, stride_dh, stride_dm, stride_dd,
                   H, N_Q, N_K, scale,
                   CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
    bh = tl.program_id(0)  # the whole (batch, head) is one program, as in the forward
    z, h = (bh // H).to(tl.int64), (bh % H).to(tl.int64)
    Q += z * stride_qz + h * stride_qh
    K += z * stride_kz + h * stride_kh
    V += z * stride_vz + h * stride_vh
    O += z * stride_oz + h * stride_oh
    DO += z * stride_dz + h * stride_dh
    # ℓ, m: the forward's contiguous [B, H, N_Q]; dQ, dK, dV: allocated by the host, contiguous.
    Lsum += bh.to(tl.int64) * N_Q
    Mmax += bh.to(tl.int64) * N_Q
    DQ += bh.to(tl.int64) * N_Q * HEAD_DIM
    DK += bh.to(tl.int64) * N_K * HEAD_DIM
    DV += bh.to(tl.int64) * N_K * HEAD_DIM
    offs_d = tl.arange(0, HEAD_DIM)
    rows = tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)

    # Line 5: dQ = 0 in HBM. dK and dV need no zeros: each column is written once, at line 24.
    for start_m in range(0, N_Q, BLOCK_M):
        offs_m = start_m + rows
        tl.store(DQ + offs_m[:, None] * HEAD_DIM + offs_d[None, :],
                 tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32), mask=(offs_m < N_Q)[:, None])
    tl.debug_barrier()

    for start_n in range(0, N_K, BLOCK_N):  # outer loop over K_j, V_j (line 6)
        offs_n = start_n + cols
        col_ok = offs_n < N_K
        k = tl.load(K + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd,
                    mask=col_ok[:, None], other=0.0)  # [BLOCK_N, D]
        v = tl.load(V + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                    mask=col_ok[:, None], other=0.0)  # [BLOCK_N, D]
        dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)  # dK̃_j (line 8)
        dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)  # dṼ_j (line 8)
        # Causal: Q tiles whose last row is before this K tile's first column see none of it,
        # so P_ij = 0 there and the tile adds nothing to any gradient.
        first_m = (start_n // BLOCK_M) * BLOCK_M if CAUSAL else 0
        for start_m in range(first_m, N_Q, BLOCK_M):  # inner loop over Q tiles (line 9)
            offs_m = start_m + rows
            row_ok = offs_m < N_Q
            # Line 10. Rows past N_Q load ℓ = 0: with the check on ℓ below their P is 0, so they
            # add nothing to dK, dV (and their dQ is never stored).
            q = tl.load(Q + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
                        mask=row_ok[:, None], other=0.0)  # [BLOCK_M, D]
            o = tl.load(O + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od,
                        mask=row_ok[:, None], other=0.0)  # [BLOCK_M, D]
            do = tl.load(DO + offs_m[:, None] * stride_dm + offs_d[None, :] * stride_dd,
                         mask=row_ok[:, None], other=0.0)  # [BLOCK_M, D]
            dq_ptrs = DQ + offs_m[:, None] * HEAD_DIM + offs_d[None, :]
            dq = tl.load(dq_ptrs, mask=row_ok[:, None], other=0.0)  # [BLOCK_M, D] fp32
            l_i = tl.load(Lsum + offs_m, mask=row_ok, other=0.0)  # [BLOCK_M]
            m_i = tl.load(Mmax + offs_m, mask=row_ok, other=float("-inf"))  # [BLOCK_M]

            # Lines 11-13: recompute P_ij from ℓ_i and m_i instead of reading a stored P.
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale  # S_ij [BLOCK_M, BLOCK_N]
            keep = col_ok[None, :] & (l_i > 0.0)[:, None]
            if CAUSAL:
                keep = keep & (offs_m[:, None] >= offs_n[None, :])
            # A row whose forward saw no key has ℓ = 0, m = -inf and no probabilities: P = 0,
            # so its gradients are 0, not NaN. Masked scores must be 0 even where exp overflows
            # (a padded column has S = 0, which can be far above m), hence where, not a product.
            m_sub = tl.where(m_i == float("-inf"), 0.0, m_i)
            l_div = tl.where(l_i > 0.0, l_i, 1.0)
            p = tl.where(keep, tl.exp(s - m_sub[:, None]) / l_div[:, None], 0.0)  # P_ij

            # Line 16: P is rounded to the input dtype for the MMA, as in every FA kernel.
            dv = tl.dot(tl.trans(p.to(do.dtype)), do, dv, input_precision=PRECISION)  # [BLOCK_N, D]
            dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)  # dP_ij (line 17) [BLOCK_M, BLOCK_N]
            # Line 19, inside the loop as Algorithm 4 has it: O_i is loaded every step anyway
            # (line 10), so D_i costs a multiply-add per element and no extra HBM traffic.
            d_i = tl.sum(do.to(tl.float32) * o.to(tl.float32), 1)  # D_i [BLOCK_M]
            ds = p * (dp - d_i[:, None])  # dS_ij (line 20) [BLOCK_M, BLOCK_N]
            # Line 21: dQ_i += scale · dS_ij K_j, written back to HBM at once.
            dq += scale * tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)  # [BLOCK_M, D]
            tl.store(dq_ptrs, dq, mask=row_ok[:, None])
            # Line 22 without its scale: one multiply per element at line 24 instead of every step.
            dk = tl.dot(tl.trans(ds.to(q.dtype)), q, dk, input_precision=PRECISION)  # [BLOCK_N, D]
            # The next outer step reloads this dQ_i, perhaps in other threads.
            tl.debug_barrier()

        # Line 24: dK_j, dV_j leave the chip once, at the end of their column.
        out = offs_n[:, None] * HEAD_DIM + offs_d[None, :]
        tl.store(DK + out, (dk * scale).to(DK.dtype.element_ty), mask=col_ok[:, None])
        tl.store(DV + out, dv.to(DV.dtype.element_ty), mask=col_ok[:, None])


def attention_backward(do, q, k, v, o, lsum, mmax, *, causal: bool, scale: float,
                       block_m: int, block_n: int):
    """dq, dk, dv of o = softmax(scale·q kᵀ) v by Algorithm 4 in v1's schedule.

    q, o, do ``[B, H, N_Q, D]``, k, v ``[B, H, N_K, D]`` with unit stride in D (others are copied);
    lsum, mmax ``[B, H, N_Q]`` fp32: the forward's ℓ (row sums) and m (row maxima of the scaled
    scores). Block sizes are validated by the caller. Returns contiguous gradients in q's dtype.
    """
    B, H, N_Q, D = q.shape
    N_K = k.shape[2]
    for name, t, shape, dtype in (("o", o, q.shape, q.dtype), ("do", do, q.shape, q.dtype),
                                  ("lsum", lsum, (B, H, N_Q), torch.float32),
                                  ("mmax", mmax, (B, H, N_Q), torch.float32)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"v1_triton backward: {name} must be a torch.Tensor, got {type(t).__name__}")
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"v1_triton backward: {name} must have shape {tuple(shape)}, "
                             f"got {tuple(t.shape)}")
        if t.dtype != dtype:
            raise TypeError(f"v1_triton backward: {name} must be {dtype}, got {t.dtype}")
        if t.device != q.device:
            raise ValueError(f"v1_triton backward: {name} must be on {q.device}, got {t.device}")
    q, k, v, o, do = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v, o, do))
    lsum, mmax = lsum.contiguous(), mmax.contiguous()
    dq = torch.empty(B, H, N_Q, D, device=q.device, dtype=torch.float32)  # zeroed by the kernel
    dk = torch.empty(B, H, N_K, D, device=q.device, dtype=q.dtype)
    dv = torch.empty(B, H, N_K, D, device=q.device, dtype=q.dtype)
    # On chip: dK̃_j, dṼ_j and dQ_i in fp32; 8 warps keep them in registers at D = 128.
    warps = 8 if runtime.current().compiled and D >= 128 else 4
    _v1_bwd_kernel[(B * H,)](
        q, k, v, o, do, lsum, mmax, dq, dk, dv,
        *q.stride(), *k.stride(), *v.stride(), *o.stride(), *do.stride(), H, N_Q, N_K, scale,
        CAUSAL=causal, HEAD_DIM=D, BLOCK_M=block_m, BLOCK_N=block_n,
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=warps, num_stages=1)  # stages 1: no prefetch may run ahead of line 21's stores
    return dq.to(q.dtype), dk, dv
