# %% [markdown]
# (lab-v2-backward)=
# # Lab 4: the dK/dV kernel of FlashAttention-2's backward
#
# **Goal.** Write the heart of the backward pass {cite:p}`dao2023flashattention2` in Triton:
# one program per $K_j$, $V_j$ tile that walks the $Q$ tiles, recomputes $P$ from the stored
# logsumexp $L$, and accumulates $dK_j$ and $dV_j$. $D_i = \operatorname{rowsum}(dO_i \circ O_i)$
# is given; $dQ$ is another kernel (chapter 4). The grader compares with autograd in fp64.
#
# **You need** {ref}`chapter 4 <ch-flash-v2>` (the backward section).

# %%
# Set-up. On Colab this installs flashedu (torch and triton are already there);
# elsewhere it does nothing.
import importlib.util
if importlib.util.find_spec("flashedu") is None:
    %pip install -q "flashedu @ git+{REPOSITORY_URL}"

import torch
from flashedu.chapter import setup
from flashedu.labs import grade, require_filled

rt = setup()  # before triton is imported: it picks the interpreter without a GPU
import triton
import triton.language as tl

# %% [markdown]
# ## The algorithm
#
# For each $Q$ tile $i$ that can see tile $j$:
#
# $$
# P_{ij} = e^{\text{scale}\cdot Q_i K_j^\top - L_i}, \quad
# dV_j \mathrel{+}= P_{ij}^\top dO_i, \quad
# dP_{ij} = dO_i V_j^\top, \quad
# dS_{ij} = P_{ij} \circ (dP_{ij} - D_i), \quad
# dK_j \mathrel{+}= \text{scale} \cdot dS_{ij}^\top Q_i .
# $$
#
# The kernel keeps the transposes ($S^\top$ is `[BLOCK_N, BLOCK_M]`) so that each update is a
# plain `tl.dot` with the key rows first. $L$ is in natural log: in base 2,
# $P = 2^{(S - L)\log_2 e}$. Causal: $P = 0$ where key $>$ query, and the $Q$ tiles before
# this key tile are skipped. Loads past row $N$ read NaN in the grader's buffers.
#
# ## Your turn

# %%
@triton.jit
def dkdv_kernel(Q, K, V, DO, L, Dl, DK, DV, N, scale, CAUSAL: tl.constexpr,
                D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    j = tl.program_id(0)  # which K/V tile
    bh = tl.program_id(1)  # which (batch, head)
    base = bh.to(tl.int64) * N * D
    offs_n = j * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    col_ok = offs_n < N
    kv = base + offs_n[:, None] * D + offs_d[None, :]
    k = tl.load(K + kv, mask=col_ok[:, None], other=0.0)  # [BLOCK_N, D]
    v = tl.load(V + kv, mask=col_ok[:, None], other=0.0)
    dk = tl.zeros([BLOCK_N, D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, D], dtype=tl.float32)
    lo = (j * BLOCK_N // BLOCK_M) * BLOCK_M if CAUSAL else 0
    for start in range(lo, N, BLOCK_M):
        offs_m = start + tl.arange(0, BLOCK_M)
        row_ok = offs_m < N
        qo = base + offs_m[:, None] * D + offs_d[None, :]
        q = tl.load(Q + qo, mask=___, other=0.0)  # [BLOCK_M, D]
        do = tl.load(DO + qo, mask=___, other=0.0)
        lse = tl.load(L + bh * N + offs_m, mask=row_ok, other=0.0)
        delta = tl.load(Dl + bh * N + offs_m, mask=row_ok, other=0.0)
        sT = tl.dot(k, tl.trans(q)) * scale  # S^T [BLOCK_N, BLOCK_M]
        pT = ___  # P^T recomputed from L
        if CAUSAL:
            pT = tl.where(___, pT, 0.0)
        pT = tl.where(row_ok[None, :], pT, 0.0)
        dv += ___
        dpT = ___
        dsT = ___
        dk += ___
    tl.store(DK + kv, ___, mask=col_ok[:, None])
    tl.store(DV + kv, dv.to(DV.dtype.element_ty), mask=col_ok[:, None])


def v2_backward_dkdv(q, k, v, do, L, Dl, dk, dv, *, causal, scale):
    require_filled(dkdv_kernel)  # "not attempted yet" while a ___ is left
    B, H, N, D = q.shape
    block = 64 if rt.compiled else 32
    grid = (triton.cdiv(N, block), B * H)
    dkdv_kernel[grid](q, k, v, do, L, Dl, dk, dv, N, scale, CAUSAL=causal, D=D,
                      BLOCK_M=block, BLOCK_N=block)

# %%
grade("v2_backward", v2_backward_dkdv)

# %% [markdown]
# **Hints.**
# 1. `pT = tl.math.exp2((sT - lse[None, :]) * 1.4426950408889634)`.
# 2. `dv += tl.dot(pT.to(do.dtype), do)`; `dpT = tl.dot(v, tl.trans(do))`.
# 3. The scale enters $dK$ once: multiply at the store, `(dk * scale)`.
#
# ## Solution

# %% tags=["hide-output"]
from flashedu.listing import region, show
from flashedu.labs.solutions import v2_backward as solution
show(region(solution, "v2_backward-solution", title="solution"))

# %% [markdown]
# A passing report looks like this (on a GPU it ends with the time beside the book's own dK/dV
# kernel):

# %%
grade("v2_backward", solution.v2_backward_dkdv)
