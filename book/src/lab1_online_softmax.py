# %% [markdown]
# (lab-online-softmax)=
# # Lab 1: online softmax
#
# **Goal.** Write softmax the way every FlashAttention kernel computes it: one pass over the
# row, a block of columns at a time, keeping only a running max $m$ and a running sum $\ell$;
# then one pass to normalise. A grader runs your function on fresh random rows and says exactly
# what is wrong.
#
# **You need** {ref}`chapter 2 <ch-online-softmax>` (the running max and the rescale).

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

rt = setup()

# %% [markdown]
# ## The algorithm
#
# Split a row $x_1, \dots, x_N$ into blocks of $B$ columns (the last one may be shorter).
# Start from $m = -\infty$, $\ell = 0$; for each block $b$:
#
# $$
# m_\text{new} = \max\big(m, \max_{j \in b} x_j\big), \qquad
# \ell \leftarrow \ell \, e^{m - m_\text{new}} + \sum_{j \in b} e^{x_j - m_\text{new}}, \qquad
# m \leftarrow m_\text{new}.
# $$
#
# The factor $e^{m - m_\text{new}}$ is the whole trick {cite:p}`milakov2018online`: the terms
# already in $\ell$ were taken relative to the old max, and this puts them under the new one.
# Then $\operatorname{softmax}(x)_j = e^{x_j - m} / \ell$.
#
# Two rows must not give NaN: a row whose logits are all $-\infty$ (fully masked) has output 0,
# and while $m = -\infty$ the factor $e^{m - m_\text{new}}$ is 0, not
# $e^{-\infty - (-\infty)}$.
#
# ## Your turn
#
# Fill in the blanks (each raises `NotImplementedError` until you do). `x` is `[R, N]`, fp64.

# %%
def online_softmax(x, block):
    R, N = x.shape
    m = torch.full((R, 1), -math.inf, dtype=x.dtype)  # running max
    l = torch.zeros((R, 1), dtype=x.dtype)  # running sum of e^(x - m)
    for c0 in range(0, N, block):
        xb = x[:, c0:c0 + block]  # [R, ≤ block]
        raise NotImplementedError("fill in: m_new, then l rescaled, plus the block")
    raise NotImplementedError("fill in: pass 2, e^(x - m) / l (0 if masked)")

# %% [markdown]
# Grade it. The report lists every case, the first failing one first, with a diagnosis.

# %%
grade("online_softmax", online_softmax)

# %% [markdown]
# **Hints.**
# 1. A masked row keeps $m = -\infty$. Subtract `torch.where(m_new > -math.inf, m_new, 0)`
#    instead of `m_new`, and the rescale $e^{-\infty - 0} = 0$ comes out right by itself.
# 2. Divide by `torch.where(l > 0, l, 1)`: a masked row has $\ell = 0$ and numerator 0.
# 3. The grader's diagnosis names the rows that are wrong: if only rows whose max is *not* in the
#    first block are wrong, look at the rescale.
#
# ## Solution
#
# Click to show the solution (the file the final cell grades).

# %% tags=["hide-output"]
from flashedu.listing import region, show
from flashedu.labs.solutions import online_softmax as solution
show(region(solution, "online_softmax-solution", title="solution"))

# %% [markdown]
# A passing report looks like this:

# %%
grade("online_softmax", solution.online_softmax)
