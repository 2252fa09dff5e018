# %% [markdown]
# (ch-online-softmax)=
# # From the running mean to online softmax
#
# **You will learn**
# - two ways to keep a running mean, and why they are FlashAttention v1 and v2 in miniature;
# - why softmax subtracts the maximum, and what goes wrong in fp16 when it does not;
# - online softmax: the max and the sum in one streaming pass;
# - the merge operator $\oplus$ on softmax states, and why it being associative is what makes
#   tiling, split-KV decoding and ring attention possible.

# %%
# Set-up. On Colab this installs flashedu (torch and triton are already there);
# elsewhere it does nothing.
import importlib.util
if importlib.util.find_spec("flashedu") is None:
    %pip install -q "flashedu @ git+{REPOSITORY_URL}"

import math
import torch
import flashedu
from flashedu.chapter import setup, glue, random_qkv

rt = setup()

# %% [markdown]
# ## A running mean, two ways
#
# Numbers arrive one at a time and we want their mean. **Keep the average**: after $n$ numbers
# the mean is $\mu_n$; when $x_{n+1}$ arrives, rescale the old mean and add the newcomer's share,
# $\mu_{n+1} = \mu_n \cdot \frac{n}{n+1} + \frac{x_{n+1}}{n+1}$. The value kept is always a finished
# answer, at the price of a rescaling every step. **Keep the sum**: add $x_{n+1}$ to a running
# total and divide by the count once, at the very end.
#
# The two are FlashAttention in miniature: v1 {cite:p}`dao2022flashattention` keeps a running
# *average* (its output is renormalised after every block of keys), v2
# {cite:p}`dao2023flashattention2` keeps a running *sum* and divides once.
#
# **Predict first.** Six numbers arrive. How many divisions does each way do, and which of the
# two kept values is a finished answer after every step?
#
# :::{dropdown} Answer
# Keeping the average divides at every arrival ({glue:text}`ch2_n` divisions, each a rescale of
# the old mean), and its value is the mean of what has arrived so far after every step. Keeping
# the sum divides once, at the end, and until then holds a number that is not a mean at all.
# FlashAttention v1 pays the first price per block of keys; v2 pays the second once per row.
# :::
#
# Press **Play**.

# %%
from flashedu.viz.softmax import running_mean_animation
arrivals = [4, 8, 15, 16, 23, 42]
running_mean_animation(arrivals).show()

# %% tags=["hide-input"]
# Bookkeeping: the answer above.
glue("ch2_n", len(arrivals))

# %% [markdown]
# ## Softmax, and why it subtracts the max
#
# Softmax turns a row of logits $x_1, \dots, x_N$ into weights
# $p_j = e^{x_j} / \sum_k e^{x_k}$. Written that way it overflows: fp16's largest number is
# 65504, so $e^{x}$ is already infinite for $x >$ {glue:text}`fp16_exp_limit:.2f`, and
# $\infty / \infty$ is NaN. Because $e^{x_j - c} / \sum_k e^{x_k - c}$ is the same for any constant
# $c$, *safe softmax* picks $c = m = \max_k x_k$: every exponent is then $\le 0$ and nothing
# overflows. It makes **three passes** over the row: find $m$, sum $\ell = \sum_k e^{x_k - m}$, write
# $p_j = e^{x_j - m}/\ell$.

# %%
from flashedu.softmax import naive_softmax, safe_softmax, online_softmax

x = torch.tensor([10.0, 12.0, 3.0], dtype=torch.float16)
print("logits (fp16):      ", x.tolist())
print("exp(x) in fp16:     ", torch.exp(x).tolist())
print("naive softmax:      ", naive_softmax(x).tolist())
print("safe softmax:       ", safe_softmax(x).tolist())

# %% tags=["hide-input"]
# Bookkeeping: values the text quotes, and checks that keep it true.
glue("fp16_exp_limit", math.log(torch.finfo(torch.float16).max))

# %% [markdown]
# Two more cases every kernel in this book must get right: logits of $\pm 10^4$ (a naive softmax
# overflows even in fp32), and a row where every key is masked ($x_k = -\infty$ for all $k$). Such
# a row has no keys to attend to; this book defines its output as **0**, not NaN.

# %%
rows = torch.tensor([[1e4, -1e4, 0.0],
                     [-math.inf, -math.inf, -math.inf],
                     [-math.inf, 2.0, -math.inf]])
print("naive:", naive_softmax(rows).tolist())
print("safe: ", safe_softmax(rows).tolist())

# %% [markdown]
# ## Online softmax: the max and the sum in one pass
#
# The first two passes can be fused {cite:p}`milakov2018online`. Keep a running max $m^{(i)}$ and
# a running sum $\ell^{(i)} = \sum_{k \le i} e^{x_k - m^{(i)}}$ *relative to the current max*
# (the superscript counts elements; from chapter 3 on, subscripts number blocks of rows). When
# $x_{i+1}$ arrives,
#
# $$
# m^{(i+1)} = \max(m^{(i)}, x_{i+1}), \qquad
# \ell^{(i+1)} = \ell^{(i)}\, e^{m^{(i)} - m^{(i+1)}} + e^{x_{i+1} - m^{(i+1)}} .
# $$
#
# The factor $e^{m^{(i)} - m^{(i+1)}}$ re-expresses the old sum relative to the new max. Every
# online softmax needs this rescaling, v2 included. It is not the running mean's division by
# $n$: in attention that is the division by $\ell$, which v1 repeats every step and v2 does once.
# After the last element $\ell^{(N)} = \sum_k e^{x_k - m^{(N)}}$, exactly the safe softmax's
# denominator, so a second pass writes $p_j = e^{x_j - m^{(N)}}/\ell^{(N)}$: **two passes**
# instead of three. In the animation, a new maximum shrinks every earlier weight (red).

# %%
from flashedu.viz.softmax import online_softmax_animation
online_softmax_animation([1.0, 3.0, 2.0, 5.0, 0.5, 4.5, 6.0, 2.5]).show()

# %% [markdown]
# The reference streams the row a block of columns at a time; any block size gives the same
# answer as safe softmax, up to rounding:

# %%
x = torch.randn(4, 1000, dtype=torch.float64) * 5
errors = {}
for block in (1, 7, 128, 1000):
    errors[block] = (online_softmax(x, block=block)
                     - torch.softmax(x, -1)).abs().max().item()
    print(f"block = {block:4d}: max |online - torch.softmax| = {errors[block]:.1e}")

# %% tags=["hide-input"]
# Bookkeeping: checks that keep the text true.
assert max(errors.values()) < 1e-12

# %% [markdown]
# ## Your first Triton kernel
#
# On a GPU these loops run as a **kernel**: one function that many **programs** run at the same
# time, each on its own piece of the data. [Triton](https://triton-lang.org) lets us write what one
# program does, in Python syntax, on whole blocks of numbers at once, and compiles it for the GPU.
# Every kernel in this book is Triton. Here is online softmax as a kernel, launched with one
# program per row of `x`; the second tab is the Python function that launches it.

# %%
from flashedu.listing import region, show
from flashedu.ops.online import softmax_kernel
show(region(softmax_kernel, "softmax-kernel", title="kernel: one program per row"),
     region(softmax_kernel.softmax_triton, title="launch (host side)"))

# %% [markdown]
# Read it top to bottom; each line is one idea that every later kernel uses.
#
# - **`tl.program_id(0)`** is which program this is. The launch
#   `_softmax_rows_kernel[(rows,)](...)` starts one program per row, so program `row` owns row
#   `row`. Chapters 3 and 4 are, in large part, about choosing what one program owns.
# - **Pointers.** `x_ptr` is the address of `x`'s first element; `x_ptr + row * stride_x` is where
#   this program's row starts (the stride is how far apart two rows are in memory).
# - **`tl.arange(0, BLOCK)`** is a block of offsets $0, 1, \dots, \text{BLOCK}-1$. Adding it to a
#   pointer gives a block of addresses, and every operation after that acts on the whole block:
#   there is no loop over the elements of a block, only over blocks. `BLOCK` must be a power of 2.
# - **A masked `tl.load`.** The last block of a row usually runs past its end. `mask=ok` loads
#   only the lanes inside the row; the others get `other=-inf`, which `exp` turns into 0, so they
#   drop out of the max and the sum by themselves. Every attention kernel masks the same way,
#   for the end of the sequence and for causal masking.
# - **Reductions.** `tl.max(x, axis=0)` and `tl.sum(..., axis=0)` fold a block into one number:
#   the running $m$ and $\ell$ of the previous section, updated a block at a time.
# - **A masked `tl.store`** writes only the lanes inside the row.
# - **`tl.constexpr`.** `ONLINE` and `BLOCK` are fixed when the kernel is compiled: each value
#   gives its own compiled kernel, and the `if ONLINE:` is decided then, not per element.
#
# What is missing here is `tl.dot`, a product of two blocks that runs on the GPU's tensor cores;
# attention needs it for $QK^\top$ and $PV$, and it arrives in chapter 3.
#
# **Where it runs.** Without a GPU, Triton's interpreter (`TRITON_INTERPRET=1`, which flashedu
# sets for you) runs each program with NumPy on the CPU, one program after another: the same
# answers, but slowly, so the sizes here stay small. On a GPU the kernel is compiled once per
# value of the `constexpr` arguments and the programs run in parallel across the SMs. This page
# ran as: {glue:text}`ch02_runtime`. Run both kernels against torch's softmax:

# %%
from flashedu.ops.online.softmax_kernel import softmax_triton
n = rt.size(cpu=300, gpu=32768)
x = torch.randn(64, n, device=rt.device) * 5
errors = {}
for online in (False, True):
    y = softmax_triton(x, online=online)
    errors[online] = (y.double() - torch.softmax(x.double(), -1)).abs().max().item()
    print(f"{'online' if online else 'safe  '} Triton softmax, "
          f"{x.shape[0]} rows of {n}: max error {errors[online]:.1e}")

# %% tags=["hide-input"]
# Bookkeeping: values the text quotes, and checks that keep it true.
assert max(errors.values()) < 1e-5
glue("ch02_runtime",
     "compiled on a GPU" if rt.compiled else "the interpreter on a CPU")

# %% [markdown]
# **Change it.** `softmax_triton(x, block=...)` picks `BLOCK`. Predict first: does the answer
# change with the block size? How many blocks does each program walk for a row of 300 columns at
# `block=16`? Then run the cell, and try a row length that is not a multiple of the block.

# %%
x_small = torch.randn(3, 300, device=rt.device) * 5
for block in (16, 64, 512):
    y = softmax_triton(x_small, block=block)
    err = (y.double() - torch.softmax(x_small.double(), -1)).abs().max().item()
    print(f"block = {block:3d}: {-(-300 // block):2d} blocks per row, "
          f"max error {err:.1e}")

# %% [markdown]
# ## Softmax times V in one pass, and the merge operator
#
# Attention does not need the weights $p_j$ themselves, only $o = \sum_j p_j v_j$. Carry the
# unnormalised output along with $(m, \ell)$ ($\ell$ for the running sum, as the FlashAttention
# papers write it; Milakov and Gimelshein call it $d$, which this book keeps for the head dimension). For a query row and a set of keys $J$, its **state** is
#
# $$
# m_J = \max_{j \in J} s_j, \qquad \ell_J = \sum_{j\in J} e^{s_j - m_J}, \qquad
# o_J = \sum_{j \in J} e^{s_j - m_J}\, v_j ,
# $$
#
# and attention over $J$ is $o_J / \ell_J$. Two states over disjoint key sets combine without
# looking at a single logit again:
#
# $$
# (m_1, \ell_1, o_1) \oplus (m_2, \ell_2, o_2) = \bigl(m,\ \ell_1 e^{m_1 - m} + \ell_2 e^{m_2 - m},\
# o_1 e^{m_1 - m} + o_2 e^{m_2 - m}\bigr),
# $$
#
# where $m = \max(m_1, m_2)$.
#
# **$\oplus$ is associative and commutative.** Merging any number of states in any grouping gives
# $m = \max_i m_i$ and $\ell = \sum_i \ell_i e^{m_i - m}$, $o = \sum_i o_i e^{m_i - m}$: each
# is the same expression whatever the grouping (for three states, both $(a \oplus b) \oplus c$
# and $a \oplus (b \oplus c)$ rescale $\ell_a$ by $e^{m_a - m_{ab}} e^{m_{ab} - m} = e^{m_a - m}$),
# and symmetric in the inputs. Its identity is the state over no keys,
# $(-\infty, 0, 0)$. So key blocks can be visited in any order and grouping: one after another
# inside a kernel ({ref}`chapter 4 <ch-flash-v2>`), by different GPU programs (split-KV decoding, {ref}`chapter 7 <ch-beyond-one-block>`), or on
# different GPUs (ring attention, {ref}`chapter 7 <ch-beyond-one-block>`). Here it is, as flashedu has it:

# %%
import inspect
from flashedu.softmax import state
print(inspect.getsource(state.merge))

# %% [markdown]
# Check it on real data: split the keys at random places, make a state per piece, merge the
# pieces in a random order, and compare with attention computed all at once.

# %%
from flashedu.softmax import state_of_block, merge_all, finalize
g = torch.Generator().manual_seed(1)
s = torch.randn(3, 50, generator=g, dtype=torch.float64) * 3  # 3 queries, 50 keys
v = torch.randn(50, 8, generator=g, dtype=torch.float64)
cuts = [0, *sorted(torch.randperm(49, generator=g)[:5].add(1).tolist()), 50]
parts = [state_of_block(s[:, a:b], v[a:b]) for a, b in zip(cuts, cuts[1:])]
order = torch.randperm(len(parts), generator=g).tolist()
merged = finalize(merge_all([parts[i] for i in order]))
exact = torch.softmax(s, -1) @ v
print(f"pieces {list(zip(cuts, cuts[1:]))}")
print(f"merged in order {order}")
print(f"max |merged - exact| = {(merged - exact).abs().max().item():.1e}")

# %% [markdown]
# Streaming the keys block by block through $\oplus$ is a complete attention algorithm that never
# forms the $N \times N$ matrix. flashedu registers it as `online_reference`; it is called like
# every other implementation:

# %%
q, k, v = random_qkv(B=2, H=2, N=129, D=32, device="cpu")
o_online = flashedu.get("online_reference").fn(q, k, v, causal=True)
o_standard = flashedu.get("standard_reference").fn(q, k, v, causal=True)
print(f"max |online - standard| = {(o_online - o_standard).abs().max().item():.1e}")

# %% [markdown]
# ## The same as a Triton kernel
#
# `online_triton` is that loop as a kernel. Each program takes a few query rows and keeps their
# $(m, \ell, o)$ in registers while the keys and values stream past a block at a time; the merge
# $\oplus$ of the running state with a block's state is written out as its four lines. Compare the
# two tabs line by line:
#
# | reference (PyTorch) | kernel (Triton) |
# |---|---|
# | `for start in range(0, N_K, block)` | `for start in range(0, hi, BLOCK_N)` |
# | `s = (Q @ K_blockᵀ) * scale` | `s = tl.sum(q[:, None, :] * k[None, :, :], axis=2) * scale` |
# | `s.masked_fill(cols > rows, -inf)` | `tl.where(keep, s, -inf)` |
# | `merge(state, state_of_block(s, V_block))` | the `m_new`, `alpha`, `p`, `l`, `o` lines |
# | `finalize(state)` | `o = o / l[:, None]` |

# %%
from flashedu.ops.online import kernel as online_kernel, reference as online_ref
show(region(online_ref, "online-reference", title="reference (PyTorch)"),
     region(online_kernel, "online-kernel", title="kernel (Triton)"))

# %% [markdown]
# The two products are spelled out as a broadcast multiply and a sum, so each line is arithmetic
# you can check by hand: `q[:, None, :] * k[None, :, :]` is a `[rows, keys, d]` block of
# products and summing over `d` gives every score $q_i \cdot k_j$. That is a matrix product, and
# `tl.dot(q, tl.trans(k))` computes it on the tensor cores, far faster; chapter 3 makes that
# change and makes the tiles big enough for it to pay. Both implementations give the same output:

# %%
o_kernel = flashedu.get("online_triton").fn(
    *(t.to(rt.device) for t in (q, k, v)), causal=True).cpu()
print(f"max |online_triton - online_reference| = "
      f"{(o_kernel - o_online).abs().max().item():.1e}")

# %% tags=["hide-input"]
# Bookkeeping: values the text quotes, and checks that keep it true.
assert (o_kernel - o_online).abs().max().item() < 1e-5

# %% [markdown]
# ## Summary
#
# - Keeping an average renormalises every step; keeping a sum divides once. In attention, v1
#   rescales for the max *and* divides by $\ell$ every step; v2 only rescales for the max, and
#   divides once.
# - Safe softmax subtracts the max (three passes); online softmax keeps a running max and a
#   rescaled running sum (two passes).
# - A query row's softmax state $(m, \ell, o)$ over a set of keys merges with $\oplus$, which is
#   associative and commutative with identity $(-\infty, 0, 0)$: attention can be computed a block
#   of keys at a time, in any order.
# - A row with every key masked has $\ell = 0$ and output 0.
#
# ## Exercises
#
# **1.** Write `my_merge(a, b)` returning the merged state `(m, l, o)` of two states with fields
# `a.m`, `a.l`, `a.o`. Make sure that merging with the empty state $(-\infty, 0, 0)$ gives no NaN.
# Check it with `flashedu.exercises.check_merge(my_merge)`.
#
# **2.** Write `my_softmax(x)` for a 2-d tensor with the online algorithm (one pass for $m$ and
# $\ell$, one to normalise). Check it with `flashedu.exercises.check_softmax(my_softmax)`; the
# hidden cases include logits of $\pm 10^4$ and fully masked rows.
#
# **3.** How many times does the safe Triton kernel above read each row from memory, and how many
# times the online kernel? Count the `tl.load` loops in the first listing of this chapter.

# %% tags=["hide-cell"]
# Solutions (click to show).
from flashedu.exercises import check_merge, check_softmax

def my_merge(a, b):
    m = torch.maximum(a.m, b.m)
    # both empty: m = -inf
    m_safe = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    alpha, beta = torch.exp(a.m - m_safe), torch.exp(b.m - m_safe)
    return m, a.l * alpha + b.l * beta, a.o * alpha + b.o * beta

def my_softmax(x):
    m = torch.full(x.shape[:-1] + (1,), -math.inf, dtype=x.dtype)
    l = torch.zeros_like(m)
    for j in range(x.shape[-1]):  # pass 1: running max and rescaled running sum
        xj = x[..., j:j + 1]
        m_new = torch.maximum(m, xj)
        m_safe = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
        l = l * torch.exp(m - m_safe) + torch.exp(xj - m_safe)
        m = m_new
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return torch.exp(x - m) / torch.where(l > 0, l, torch.ones_like(l))  # pass 2

assert check_merge(my_merge)
assert check_softmax(my_softmax)
# 3: safe: three loops over the row (max, sum, write);
#    online: two (max and sum together, write).
