# %% [markdown]
# (lab-block-sparse)=
# # Lab 5: block-sparse attention over a list of tiles
#
# **Goal.** Block-sparse FlashAttention {cite:p}`dao2022flashattention` computes only the
# tiles a mask lists. A kernel does not scan a bitmap: each $Q$ tile walks its own *list* of
# $K$/$V$ tiles, stored as compressed sparse rows (CSR). Write that walk in PyTorch.
#
# **You need** {ref}`chapter 5 <ch-block-sparse>` and {ref}`lab 1 <lab-online-softmax>`.

# %%
# Set-up. On Colab this installs flashedu (torch and triton are already there);
# elsewhere it does nothing.
import importlib.util
if importlib.util.find_spec("flashedu") is None:
    %pip install -q "flashedu @ git+{REPOSITORY_URL}"

import math
import torch
from flashedu.chapter import setup
from flashedu.labs import grade
from flashedu.ops.block_sparse.masks.csr import to_csr

rt = setup()

# %% [markdown]
# ## The list
#
# Row $i$'s tiles are `csr.index[csr.ptr[i] : csr.ptr[i + 1]]`; a row may list none.

# %%
blocks = torch.tensor([[1, 0, 1], [0, 0, 0], [1, 1, 0]], dtype=torch.bool)
csr = to_csr(blocks)
print("ptr  ", csr.ptr.tolist())
print("index", csr.index.tolist())

# %% [markdown]
# ## The algorithm
#
# For each $Q$ tile $i$: $(m, \ell, \text{acc}) = (-\infty, 0, 0)$; for each listed $j$, the
# online update of {ref}`lab 3 <lab-v2-forward>` with $S = \text{scale}\cdot Q_i K_j^\top$
# ($-\infty$ past the diagonal when causal); then $O_i = \text{acc}/\ell$. A row that saw no
# key has $\ell = 0$ and output 0.
#
# ## Your turn
#
# `q`, `k`, `v` are `[N, D]` (one head, fp64); return `o`, `[N, D]`.

# %%
def block_sparse_attention(q, k, v, csr, *, block_r, block_c, causal, scale):
    N, D = q.shape
    o = torch.empty_like(q)
    for i in range(-(-N // block_r)):
        r0, r1 = i * block_r, min(N, (i + 1) * block_r)
        m = torch.full((r1 - r0, 1), -math.inf, dtype=q.dtype)
        l = torch.zeros((r1 - r0, 1), dtype=q.dtype)
        acc = torch.zeros((r1 - r0, D), dtype=q.dtype)
        raise NotImplementedError("fill in: walk row i's list, online update")
        raise NotImplementedError("fill in: o[r0:r1] = acc / l (0 where l = 0)")
    return o

# %%
grade("block_sparse", block_sparse_attention)

# %% [markdown]
# **Hints.**
# 1. `for e in range(int(csr.ptr[i]), int(csr.ptr[i + 1])): j = int(csr.index[e])`.
# 2. The causal mask inside a tile: key `c` is hidden from query `r` when `c > r`.
# 3. With $m = -\infty$ still (nothing seen yet), subtract 0 instead of $m$ before `exp`.
#
# ## Solution

# %% tags=["hide-output"]
from flashedu.listing import region, show
from flashedu.labs.solutions import block_sparse as solution
show(region(solution, "block_sparse-solution", title="solution"))

# %% [markdown]
# A passing report looks like this:

# %%
grade("block_sparse", solution.block_sparse_attention)
