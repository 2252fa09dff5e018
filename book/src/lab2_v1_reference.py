# %% [markdown]
# (lab-v1-reference)=
# # Lab 2: Algorithm 1 on the simulated chip
#
# **Goal.** Write FlashAttention's Algorithm 1 {cite:p}`dao2022flashattention` tile by tile
# against flashedu's simulated chip, which counts every element moved between HBM and SRAM.
# The grader checks your output against attention in fp64 *and* your HBM traffic, tensor by
# tensor, against the closed-form count: a correct answer that loads a tile too often fails.
#
# **You need** {ref}`chapter 3 <ch-flash-v1>`.

# %%
# Set-up. On Colab this installs flashedu (torch and triton are already there);
# elsewhere it does nothing.
import importlib.util
if importlib.util.find_spec("flashedu") is None:
    %pip install -q "flashedu @ git+{REPOSITORY_URL}"

import math
import torch
from flashedu.chapter import setup
from flashedu.iomodel import formula
from flashedu.labs import grade

rt = setup()

# %% [markdown]
# ## The algorithm
#
# $K$/$V$ tiles in the outer loop, $Q$ tiles in the inner one. $O$, $\ell$ and $m$ live in HBM
# and make a round trip every inner step:
#
# 1. (line 2) store $O = 0$, $\ell = 0$, $m = -\infty$ to HBM;
# 2. for each $j$: load $K_j$, $V_j$ (line 6); for each $i$: load $Q_i$, $O_i$, $\ell_i$,
#    $m_i$ (line 8), then with $S_{ij} = \text{scale}\cdot Q_i K_j^\top$,
#    $\tilde m = \operatorname{rowmax}(S_{ij})$, $\tilde P = e^{S_{ij} - \tilde m}$,
#    $\tilde\ell = \operatorname{rowsum}(\tilde P)$, $m_\text{new} = \max(m_i, \tilde m)$,
#
#    $$
#    \ell_\text{new} = e^{m_i - m_\text{new}} \ell_i + e^{\tilde m - m_\text{new}} \tilde\ell,
#    \qquad
#    O_i \leftarrow \frac{\ell_i e^{m_i - m_\text{new}} O_i
#                   + e^{\tilde m - m_\text{new}} \tilde P V_j}{\ell_\text{new}}
#    $$
#
#    and store $O_i$, $\ell_\text{new}$, $m_\text{new}$ (lines 12–13).
#
# Causal: skip a tile $(i, j)$ whose first key $j B_c$ comes after its last query; inside the
# diagonal tiles, a key after the query gets $S = -\infty$.
#
# **The chip.** `chip.load("Q", r0, r1, into="Q_i", i=i, j=j)` copies rows `r0:r1` of HBM
# tensor `Q` into the SRAM buffer `Q_i` and returns them as `[B, H, rows, d]`;
# `chip.store("O", value, r0, r1, from_="O_i", i=i, j=j)` writes them back. Every call is
# counted. The grader's chip holds `Q`, `K`, `V` and, filled with NaN, `O`, `l`, `m`.
# What the count must come to, for one shape:

# %%
f = formula("v1", N=129, d=64, block_r=32, block_c=16)
for name, (reads, writes) in f.exact.per_tensor.items():
    print(f"{name}: reads {reads:>7,}  writes {writes:>7,}")

# %% [markdown]
# ## Your turn

# %%
def v1_forward(chip, *, N, d, scale, causal, block_r, block_c):
    br, bc = block_r, block_c
    Tr, Tc = -(-N // br), -(-N // bc)  # the last tiles may be short
    for name, rows in (("K_j", bc), ("V_j", bc), ("Q_i", br), ("O_i", br)):
        chip.buffer(name, rows, d)  # SRAM, reserved once
    for name in ("l_i", "m_i"):
        chip.buffer(name, br, 1, acc=True)
    B, H = chip.batch, chip.heads
    for i in range(Tr):  # line 2: O = 0, l = 0, m = -inf in HBM
        r0, r1 = i * br, min(N, (i + 1) * br)
        zeros = torch.zeros(B, H, r1 - r0, 1, dtype=chip.work_dtype)
        chip.store("O", zeros.expand(B, H, r1 - r0, d), r0, r1, from_="O_i", i=i)
        chip.store("l", zeros, r0, r1, from_="l_i", i=i)
        chip.store("m", zeros - math.inf, r0, r1, from_="m_i", i=i)
    for j in range(Tc):
        c0, c1 = j * bc, min(N, (j + 1) * bc)
        raise NotImplementedError("fill in: load K_j and V_j")
        for i in range(Tr):
            r0, r1 = i * br, min(N, (i + 1) * br)
            raise NotImplementedError(
                "fill in: skip (causal), load Q_i O_i l_i m_i, update, store")

# %%
grade("v1_reference", v1_forward)

# %% [markdown]
# **Hints.**
# 1. The rescale factors are 0 while a max is $-\infty$: write them as
#    `torch.where(mi > -math.inf, torch.exp(mi - m_new), 0.0)`.
# 2. The traffic column shows reads against the formula; a diagnosis such as "Q: reads 2.0× the
#    formula" means a tile is loaded twice where Algorithm 1 loads it once.
# 3. $K_j$ and $V_j$ are loaded once per $j$, before the inner loop: that is what the formula
#    counts, and why v1 reads $Q$ (and $O$, $\ell$, $m$) $T_c$ times.
#
# ## Solution

# %% tags=["hide-output"]
from flashedu.listing import region, show
from flashedu.labs.solutions import v1_reference as solution
show(region(solution, "v1_reference-solution", title="solution"))

# %% [markdown]
# A passing report looks like this:

# %%
grade("v1_reference", solution.v1_forward)
