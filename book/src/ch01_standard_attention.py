# %% [markdown]
# (ch-standard)=
# # Standard attention and the memory wall
#
# **You will learn**
# - the three steps of standard attention, and which of them write an $N \times N$ matrix to HBM;
# - how to call any attention implementation in `flashedu` (they are all called the same way);
# - what the unfused GPU version really does: three kernels, and the traffic between them.

# %%
# Set-up. On Colab this installs flashedu (torch and triton are already there); elsewhere it does nothing.
import importlib.util
if importlib.util.find_spec("flashedu") is None:
    %pip install -q "flashedu @ git+https://github.com/flashedu/flashedu"

import torch
import flashedu
from flashedu.chapter import setup, random_qkv

rt = setup()

# %% [markdown]
# ## Attention in three steps
#
# For one head, with queries $Q$, keys $K$ and values $V$ of shape $N \times d$, attention computes
#
# $$
# S = \frac{Q K^\top}{\sqrt{d}} \in \mathbb{R}^{N \times N}, \qquad
# P = \operatorname{softmax}(S) \in \mathbb{R}^{N \times N}, \qquad
# O = P V \in \mathbb{R}^{N \times d},
# $$
#
# where the softmax normalises each row of $S$. The *standard* implementation (the one seed
# documents describe, and the one every framework had before FlashAttention) runs these as three
# separate steps, each reading its inputs from the GPU's large, slow memory (HBM) and writing its
# result back:
#
# 1. load $Q$, $K$ by blocks from HBM, compute $S = QK^\top$, **write $S$ to HBM**;
# 2. read $S$ from HBM, compute $P = \operatorname{softmax}(S)$, **write $P$ to HBM**;
# 3. load $P$ and $V$ by blocks from HBM, compute $O = PV$, write $O$ to HBM.
#
# $S$ and $P$ have $N^2$ entries each while $Q$, $K$, $V$, $O$ have only $Nd$: at $N = 4096$ and
# $d = 64$ the two intermediates are 64 times larger than an input. That is the memory wall this
# book climbs over.

# %% [markdown]
# ## Every implementation is called the same way
#
# `flashedu` keeps one registry of attention implementations. Each takes `q`, `k`, `v` shaped
# `[B, H, N, D]` (batch, heads, sequence, head dim), exactly like
# `torch.nn.functional.scaled_dot_product_attention`, and returns `o` of the same shape.

# %%
for impl in flashedu.registry():
    print(f"{impl.name:20s} ch.{impl.chapter}  {impl.backend:9s}  {impl.summary}")

# %% [markdown]
# The readable reference follows the three steps literally, in fp32:

# %%
import inspect
from flashedu.ops.standard import reference
print(inspect.getsource(reference.standard_attention))

# %% [markdown]
# Run it, and the three-kernel Triton version, on the same inputs. On a GPU the Triton kernels are
# compiled; without one they run under Triton's interpreter on the CPU, so the sizes are small.

# %%
N = rt.size(cpu=128, gpu=4096)
dtype = torch.float32 if rt.interpreted else torch.float16
q, k, v = random_qkv(B=1, H=2, N=N, D=64, dtype=dtype)

o_ref = flashedu.get("standard_reference").fn(q, k, v, causal=True)
o_tri, S, P = flashedu.ops.standard.triton_impl.standard_attention_triton(
    q, k, v, causal=True, return_intermediates=True)
err = (o_tri.float() - o_ref.float()).abs().max().item()
print(f"N = {N}, dtype = {dtype}: max |triton - reference| = {err:.1e}")
assert err < (1e-5 if dtype == torch.float32 else 2e-2)

# %% [markdown]
# The Triton version returned its intermediates, so we can look at what it stored in HBM. Each row
# of $P$ sums to one; with `causal=True` everything above the diagonal is zero.

# %%
import plotly.graph_objects as go

bytes_in = sum(t.nbytes for t in (q, k, v))
print(f"q, k, v together: {bytes_in / 2**20:.2f} MiB;  S and P together: {(S.nbytes + P.nbytes) / 2**20:.2f} MiB")
show = P[0, 0, :128, :128].float().cpu()
fig = go.Figure(go.Heatmap(z=show, colorscale="Viridis", colorbar=dict(title="P[i, j]")))
fig.update_layout(title="The attention matrix P that standard attention writes to HBM (first 128 rows)",
                  xaxis_title="key j", yaxis_title="query i", height=460,
                  yaxis=dict(autorange="reversed", scaleanchor="x"))
fig.show()

# %% [markdown]
# ## Watching the three kernels
#
# Press **Play**. Each frame is a group of programs (GPU thread blocks) of one kernel. Kernel 1
# writes $S$ tile by tile; kernel 2 reads every row of $S$ back and writes $P$; kernel 3 reads $P$
# and $V$ to produce $O$. The bars count HBM bytes, from the kernels' launch grids, at
# $N = 512$, $d = 64$, fp16.

# %%
from flashedu.viz.standard import three_kernel_animation
three_kernel_animation(N=512, D=64, block=64).show()

# %% [markdown]
# ## Summary
#
# - Standard attention materialises two $N \times N$ matrices, $S$ and $P$, in HBM.
# - Every `flashedu` implementation is called as `fn(q, k, v, *, causal=False, scale=None)` on
#   `[B, H, N, D]` tensors, like torch's SDPA.
# - The unfused GPU version is three kernels, and most of its HBM traffic is $S$ and $P$ going out and
#   coming back.
#
# ## Exercises
#
# 1. Call `flashedu.get("sdpa").fn` on the `q, k, v` above and check it against `o_ref`.
# 2. Change `causal=True` to `causal=False`. Which entries of `P` change?
