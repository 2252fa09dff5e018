# %% [markdown]
# (lab-split-kv)=
# # Lab 6: merging split-KV states
#
# **Goal.** At decode time a few query rows face a long K/V cache. Flash-decoding
# {cite:p}`dao2023flashdecoding` splits the *keys* over many programs; each returns a partial
# state $(m_s, \ell_s, o_s)$ over its split, and a second pass merges them. Write that merge.
#
# **You need** {ref}`chapter 2 <ch-online-softmax>` ($\oplus$) and
# {ref}`chapter 7 <ch-beyond-one-block>`.

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
# Split $s$ holds, for each row, $m_s = \max$ of its logits, $\ell_s = \sum e^{x - m_s}$ and
# $o_s = \sum e^{x - m_s} v$ (not divided by $\ell_s$). With $m = \max_s m_s$,
#
# $$
# O = \frac{\sum_s e^{m_s - m}\, o_s}{\sum_s e^{m_s - m}\, \ell_s}.
# $$
#
# This is $\oplus$ applied $S$ times at once. A split that saw no key has
# $(m_s, \ell_s, o_s) = (-\infty, 0, 0)$ and must weigh 0; a row no split saw gives 0.
# Maxima can be far apart (the grader uses $|m_s|$ up to $10^4$), so never form $e^{m_s}$.
#
# ## Your turn
#
# `o` is `[S, R, D]`, `m` and `l` are `[S, R]`, all fp64; return `[R, D]`.

# %%
def merge_splits(o, m, l):
    m_all = m.amax(dim=0)  # [R]
    raise NotImplementedError("fill in: weights e^(m_s - m), 0 if split empty")
    raise NotImplementedError("fill in: weighted sums of o and l, one divide")

# %%
grade("split_kv", merge_splits)

# %% [markdown]
# **Hints.**
# 1. `torch.where(m > -math.inf, torch.exp(m - shift), 0.0)` with `shift` = $m$ where finite
#    and 0 where a row saw nothing.
# 2. Divide once, by `torch.where(l_all > 0, l_all, 1)`.
#
# ## Solution

# %% tags=["hide-output"]
from flashedu.listing import region, show
from flashedu.labs.solutions import split_kv as solution
show(region(solution, "split_kv-solution", title="solution"))

# %% [markdown]
# A passing report looks like this:

# %%
grade("split_kv", solution.merge_splits)
