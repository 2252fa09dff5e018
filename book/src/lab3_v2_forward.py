# %% [markdown]
# (lab-v2-forward)=
# # Lab 3: FlashAttention-2's forward in Triton
#
# **Goal.** Fill in a Triton kernel for FlashAttention-2's forward pass
# {cite:p}`dao2023flashattention2`: the pointers of each tile, the online update, the final
# divide and the logsumexp $L$ the backward needs. Without a GPU it runs under the Triton
# interpreter; on a GPU it is compiled, and the grader also times it against the book's own
# kernel.
#
# **You need** {ref}`chapter 4 <ch-flash-v2>` and {ref}`lab 1 <lab-online-softmax>`.

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
# One program per ($Q_i$, batch·head). $Q_i$ is loaded once; the $K_j$, $V_j$ tiles stream
# past; $(m_i, \ell_i, \text{acc})$ stay in registers:
#
# $$
# m_\text{new} = \max(m_i, \operatorname{rowmax} S_{ij}), \quad
# \alpha = e^{m_i - m_\text{new}}, \quad
# P = e^{S_{ij} - m_\text{new}}, \quad
# \ell_i \leftarrow \alpha \ell_i + \operatorname{rowsum} P, \quad
# \text{acc} \leftarrow \alpha\, \text{acc} + P V_j .
# $$
#
# After the last tile, $O_i = \text{acc} / \ell_i$ (once) and $L_i = m_i + \log \ell_i$.
# The kernel works in base 2: `qk_scale` is $\text{scale} \cdot \log_2 e$, so `tl.math.exp2`
# replaces `exp` and $m$ is in $\log_2$ units; $L$ is stored in natural log,
# $L = (m_2 + \log_2 \ell) \ln 2$.
#
# The tensors are contiguous `[B, H, N, D]`: row `r` of head `bh` starts at
# `base + r * D` with `base = bh * N * D`. Mask every load and store that may pass row $N$:
# the grader puts NaN right after each tensor, and fills `o` and `L` with NaN before your
# kernel runs.
#
# ## Your turn
#
# Replace each `___`. While one is left, the host function raises `NotImplementedError`.

# %%
@triton.jit
def v2_forward_kernel(Q, K, V, O, L, N, qk_scale, CAUSAL: tl.constexpr,
                      D: tl.constexpr, BLOCK_M: tl.constexpr,
                      BLOCK_N: tl.constexpr):
    i = tl.program_id(0)  # which Q tile
    bh = tl.program_id(1)  # which (batch, head)
    base = bh.to(tl.int64) * N * D
    offs_m = i * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    row_ok = offs_m < N
    q = tl.load(___, mask=row_ok[:, None], other=0.0)  # Q_i [BLOCK_M, D]
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # log2
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, D], dtype=tl.float32)
    hi = tl.minimum(N, (i + 1) * BLOCK_M) if CAUSAL else N
    for start in range(0, hi, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        col_ok = offs_n < N
        k = tl.load(___, mask=___, other=0.0)  # K_j [BLOCK_N, D]
        v = tl.load(___, mask=___, other=0.0)  # V_j [BLOCK_N, D]
        s = tl.dot(q, tl.trans(k)) * qk_scale  # [BLOCK_M, BLOCK_N]
        keep = col_ok[None, :]
        if CAUSAL:
            keep = keep & (offs_n[None, :] <= offs_m[:, None])
        s = tl.where(keep, s, float("-inf"))
        m_new = ___
        alpha = ___
        p = ___
        l_i = ___
        acc = ___  # tl.dot(p.to(v.dtype), v) is P V_j
        m_i = m_new
    o = ___
    tl.store(O + base + offs_m[:, None] * D + offs_d[None, :],
             o.to(O.dtype.element_ty), mask=row_ok[:, None])
    tl.store(L + bh.to(tl.int64) * N + offs_m, ___, mask=row_ok)


def v2_forward(q, k, v, o, L, *, causal, scale):
    require_filled(v2_forward_kernel)  # "not attempted yet" while a ___ is left
    B, H, N, D = q.shape
    block = 64 if rt.compiled else 32
    grid = (triton.cdiv(N, block), B * H)
    v2_forward_kernel[grid](q, k, v, o, L, N, scale * 1.4426950408889634,
                            CAUSAL=causal, D=D, BLOCK_M=block, BLOCK_N=block)

# %% [markdown]
# Grade it (under the interpreter this takes a few seconds: every program runs in NumPy).

# %%
grade("v2_forward", v2_forward)

# %% [markdown]
# **Hints.**
# 1. The pointers of $K_j$: `K + base + offs_n[:, None] * D + offs_d[None, :]`, masked with
#    `col_ok[:, None]`.
# 2. `alpha = tl.math.exp2(m_i - m_new)` and `p = tl.math.exp2(s - m_new[:, None])`: key 0 is
#    visible to every row, so `m_new` is finite from the first tile on.
# 3. Do not divide inside the loop: `acc` stays a sum until the one divide after it.
#
# ## Solution

# %% tags=["hide-output"]
from flashedu.listing import region, show
from flashedu.labs.solutions import v2_forward as solution
show(region(solution, "v2_forward-solution", title="solution"))

# %% [markdown]
# A passing report looks like this (on a GPU it ends with the time beside `v2_triton`):

# %%
grade("v2_forward", solution.v2_forward)
