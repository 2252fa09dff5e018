# %% [markdown]
# (ch-flash-v1)=
# # FlashAttention v1: tiling and recomputation
#
# **You will learn**
# - how FlashAttention computes exact attention without ever writing $S$ or $P$ to HBM: kernel
#   fusion and tiling, with {ref}`chapter 2 <ch-online-softmax>`'s softmax state carried from block to block;
# - Algorithm 1 of the paper line by line, and where its block sizes come from;
# - its IO complexity, $\Theta(N^2 d^2 / M)$ against standard attention's $\Theta(Nd + N^2)$,
#   derived and then recorded by the memory model;
# - recomputation: why the backward pass stores $(\ell, m)$ instead of $P$ and recomputes $P$.

# %%
# Set-up. On Colab this installs flashedu (torch and triton are already there);
# elsewhere it does nothing.
import importlib.util
if importlib.util.find_spec("flashedu") is None:
    %pip install -q "flashedu @ git+{REPOSITORY_URL}"

import torch
import flashedu
from flashedu.chapter import setup, glue, random_qkv

rt = setup()

# %% [markdown]
# ## Fusion and tiling
#
# The idea {cite:p}`dao2022flashattention`, in three steps: load a *part* of $Q$, $K$, $V$ from HBM into SRAM;
# compute that part of attention; update the output in HBM, **without storing $S$ and $P$**.
# Split $K$ and $V$ into blocks $K_1, K_2, \dots$ and $V_1, V_2, \dots$: a query row's softmax
# over all keys is not known until every block has been seen, but {ref}`chapter 2 <ch-online-softmax>`'s state
# $(m, \ell, o)$ of the blocks seen so far is enough to continue. All of attention becomes one
# kernel (*fusion*) that visits $Q$ and $K$/$V$ tile by tile (*tiling*).
#
# ## Algorithm 1, literally
#
# The FlashAttention paper's {cite:p}`dao2022flashattention` forward pass, with an SRAM of $M$ elements:
#
# 1. block sizes $B_c = \lceil M / 4d \rceil$, $B_r = \min(\lceil M/4d \rceil, d)$;
# 2. initialise $O = 0$, $\ell = 0$, $m = -\infty$ **in HBM**;
# 3. for each block $j$ of $K$, $V$ ($T_c = \lceil N/B_c \rceil$ of them): load $K_j$, $V_j$;
# 4. for each block $i$ of $Q$ ($T_r = \lceil N/B_r \rceil$): load $Q_i$, $O_i$, $\ell_i$, $m_i$;
#    compute $S_{ij} = Q_i K_j^\top$ (Algorithm 1 omits the scale $1/\sqrt d$; the paper's
#    Algorithm 2, and flashedu, include it), $\tilde m_{ij} = \operatorname{rowmax}(S_{ij})$,
#    $\tilde P_{ij} = e^{S_{ij} - \tilde m_{ij}}$, $\tilde\ell_{ij} = \operatorname{rowsum}(\tilde P_{ij})$;
#    then $m_i^{new} = \max(m_i, \tilde m_{ij})$,
#    $\ell_i^{new} = e^{m_i - m_i^{new}}\ell_i + e^{\tilde m_{ij} - m_i^{new}}\tilde\ell_{ij}$, and
#
# $$
# O_i \leftarrow \operatorname{diag}(\ell_i^{new})^{-1}\bigl(\operatorname{diag}(\ell_i)\,
# e^{m_i - m_i^{new}} O_i + e^{\tilde m_{ij} - m_i^{new}} \tilde P_{ij} V_j\bigr);
# $$
#
# 5. write $O_i$, $\ell_i \leftarrow \ell_i^{new}$, $m_i \leftarrow m_i^{new}$ back to HBM.
#
# The update is {ref}`chapter 2 <ch-online-softmax>`'s merge $\oplus$ of the row's state with the
# new block's state, kept in the *running average* form: $O_i$ is always normalised, so
# each step first un-normalises it ($\operatorname{diag}(\ell_i)$), rescales both parts to the new
# maximum, and normalises again. That is the running mean that renormalises at every step.
#
# Because $K$/$V$ blocks are the **outer** loop, every $O_i$, $\ell_i$, $m_i$ makes a round trip
# to HBM once per $K$/$V$ block. The reference does exactly this, line for line, on the memory
# model's simulated chip: every `chip.load` and `chip.store` is an HBM transfer that the model
# counts. (Shown here is its reading view: the lines that only tell the model what to count are
# left out, which is why the line numbers jump.)

# %%
from flashedu.listing import reference, region, show
from flashedu.ops.v1 import kernel as v1_kernel, reference as v1_ref
# The causal tile skip is left out here: the kernel's loop bound does it (below).
v1_reference_view = reference(v1_ref, "v1-reference",
                              hide=("if causal and fully_masked",))
show(v1_reference_view)

# %% [markdown]
# It computes the same attention as the standard algorithm, for any $N$ (the last tiles are
# partial) and with the causal mask (tiles entirely above the diagonal are skipped):

# %%
q, k, v = random_qkv(B=2, H=2, N=200, D=64, device="cpu", dtype=torch.float64)
for causal in (False, True):
    o1 = flashedu.get("v1_reference").fn(q, k, v, causal=causal)
    o0 = flashedu.get("standard_reference").fn(q, k, v, causal=causal)
    print(f"causal={causal}: max |v1 - standard| = "
          f"{(o1 - o0).abs().max().item():.1e}")

# %% [markdown]
# ## Block sizes from the SRAM
#
# Line 1 sizes the blocks so that $K_j$, $V_j$ ($B_c \times d$ each) and $Q_i$, $O_i$
# ($B_r \times d$ each) fit: $4 B_c d \le M$. But the tile $S_{ij}$ ($B_r \times B_c$), and
# $\ell_i$, $m_i$, must be on chip too. With $M$ taken as the whole of an H100's 228 KiB, the
# literal block sizes do not fit, and the model says so:

# %%
import textwrap
from flashedu.iomodel import simulate, fa1_block_sizes, DEFAULT_SRAM_BYTES
from flashedu.iomodel.hbm_sram import SRAMOverflowError

M_all = DEFAULT_SRAM_BYTES // 2  # fp16 elements in 228 KiB
br, bc = fa1_block_sizes(M_all, 64)
print(f"M = {M_all} elements, d = 64: Br = {br}, Bc = {bc}")
try:
    simulate("v1", N=2048, d=64, block_r=br, block_c=bc)
except SRAMOverflowError as err:
    print(textwrap.fill(f"SRAMOverflowError: {err}", 78))

# %% [markdown]
# flashedu therefore takes $M$ as **half** the SRAM by default, which leaves room for $S_{ij}$
# and the statistics; the paper's formula is unchanged, only its $M$ is the budget for the four
# $Q$/$K$/$V$/$O$ tiles.

# %%
import textwrap
r = simulate("v1", N=2048, d=64)
print(textwrap.fill(r.summary(), 78))

# %% [markdown]
# ## Watching v1
#
# Press **Play**. Kernel and K/V tile $j$ go column by column (the outer loop); in each column
# every $Q$ tile is visited in turn, and its $O_i$ goes back to HBM each time: the written bytes
# grow with every column ($N = 512$, $d = 64$, a 32 KiB SRAM so the tiles are small enough to see).
#
# **Predict first.** By the end, how many times has each $O_i$ been written to HBM?
#
# :::{dropdown} Answer
# {glue:text}`ch3_o_writes` times: once per column, $T_c =$ {glue:text}`ch3_tc` columns of
# {glue:text}`ch3_bc` keys, plus once at the start, when Algorithm 1 (line 2) fills $O$ with
# zeros in HBM. Every column visits every $Q$ tile and sends its $O_i$ back, because the
# running average has to survive in HBM until the next column's visit.
# :::

# %%
from flashedu.viz import tile_schedule
v1_512 = simulate("v1", N=512, d=64, sram_bytes=32 * 1024)
tile_schedule(v1_512, concurrent=False).show()

# %% tags=["hide-input"]
# Bookkeeping: the answer above, from the recording.
from flashedu.iomodel import n_tiles
o_writes = v1_512.per_tensor["O"].write_elements / (512 * 64)
assert o_writes == n_tiles(512, v1_512.block_c) + 1
glue("ch3_o_writes", int(o_writes))
glue("ch3_tc", n_tiles(512, v1_512.block_c))
glue("ch3_bc", v1_512.block_c)

# %% [markdown]
# With a live kernel (Jupyter, Colab) you can change the algorithm, $N$, $d$, the SRAM size and
# the mask and watch the schedule recomputed: run
# `from flashedu.viz.panel import schedule_panel; schedule_panel("v1")` in a cell. (This page has
# no kernel behind it, so it shows the precomputed animation above.)

# %% [markdown]
# ## IO complexity
#
# Count the HBM traffic of Algorithm 1. FA1 proves only its order, $\Theta(Nd + N d T_c)$
# (Theorem 2) {cite:p}`dao2022flashattention`. Counting element by element, as a common
# write-up does: $K$ and $V$ are read once ($2Nd$). For each of the $T_c$ outer steps, all of
# $Q$ and $O$ are read ($2Nd$) and $O$ is written ($Nd$), with the statistics $\ell$, $m$ ($2N$
# written):
#
# $$
# \text{reads} = 2Nd + 2 T_c N d, \qquad \text{writes} = T_c N d + 2 T_c N .
# $$
#
# With $T_c = N / B_c$ and $B_c = \Theta(M/d)$ the traffic is $\Theta(N^2 d^2 / M)$, against
# standard attention's $\Theta(Nd + N^2)$. For $d$ = 64–128 and $M$ of some 50k–100k elements
# (100–200 KB of fp16), $d^2/M$ is about 0.04–0.3: several times fewer accesses, before
# constants. The count is lopsided: it counts the writes of $\ell$ and $m$ but not their reads.
# The memory model records the same count, plus two terms this count drops:

# %%
from flashedu.iomodel import formula
f = formula("v1", N=4096, d=64, block_r=r.block_r, block_c=r.block_c)
rec = simulate("v1", N=4096, d=64, block_r=r.block_r, block_c=r.block_c)
print(f"the count: reads {f.seed.reads:,}  writes {f.seed.writes:,}")
print(f"exact:     reads {f.exact.reads:,}  writes {f.exact.writes:,}")
print(f"recorded:  reads {rec.read_elements:,}  writes {rec.write_elements:,}")

# %% tags=["hide-input"]
# Bookkeeping: values the text quotes, and checks that keep it true.
assert (rec.read_elements, rec.write_elements) == (f.exact.reads, f.exact.writes)

# %% [markdown]
# The count drops two lower-order terms that Algorithm 1 also moves: the paper's line 8 reads
# $\ell_i$ and $m_i$ with $Q_i$ and $O_i$ in every inner step ($+2T_cN$ reads), and its line 2
# initialises $O$, $\ell$, $m$ in HBM ($+Nd + 2N$ writes). Both are smaller than the $T_cNd$
# terms by a factor $d$ (or $T_c$), so the order, $\Theta(T_cNd) = \Theta(N^2 d^2/M)$, is
# unchanged.
#
# Now sweep the SRAM size. The recorded traffic falls as $1/M$, the count (crosses)
# sits just under it, and standard attention barely moves, because no SRAM holds $S$. With a
# small SRAM, v1 is no better than standard attention; with an H100's, it moves several times
# fewer elements:

# %%
from flashedu.viz.io_complexity import traffic_vs_sram, traffic_vs_sram_figure
traffic_vs_sram_figure(N=4096, d=64).show()

# %% tags=["hide-input"]
# Bookkeeping: values the text quotes, and checks that keep it true.
rows = {r["sram_kib"]: r for r in traffic_vs_sram(N=4096, d=64, sram_kib=(228,))}
glue("v1_gain_228", rows[228]["standard"] / rows[228]["v1"])

# %% [markdown]
# At 228 KiB, v1 moves {glue:text}`v1_gain_228:.1f` times fewer elements than standard attention
# at $N = 4096$, $d = 64$.
#
# ## The backward pass: recomputation
#
# Training needs gradients, and the standard backward pass reads $P$ ($N^2$ numbers) that its
# forward pass stored. FlashAttention stores only the softmax statistics $\ell$ and $m$ ($2N$
# numbers) with $O$, and **recomputes** $S_{ij}$ and $P_{ij} = \operatorname{diag}(\ell_i)^{-1}
# e^{S_{ij} - m_i}$ tile by tile in the backward pass. That is more FLOPs (the forward's matrix
# products are done again) but far fewer bytes, and on a memory-bound problem, bytes win.
# The reference does it through the memory model (the paper's Algorithm 4) and matches torch's
# gradients:

# %%
from flashedu.chapter import check_against_fp64
q, k, v = random_qkv(B=1, H=2, N=129, D=32, device="cpu", dtype=torch.float64)
errors = check_against_fp64("v1_reference", q, k, v, causal=True)

# %%
N, d = 4096, 64
bwd = simulate("v1", N=N, d=d, backward=True)
print(textwrap.fill(bwd.summary(), 78))
print(f"kept for the backward pass: standard P = {N * N:,} elements;")
print(f"                            v1 ℓ and m = {2 * N:,} elements")

# %% [markdown]
# ## A Triton kernel with v1's schedule
#
# The same loop order as a GPU kernel: one program per (batch, head), $K$/$V$ blocks outer, $Q$
# blocks inner, $O$, $\ell$, $m$ re-read and re-written in HBM in every inner step; its backward
# pass is Algorithm 4 in the same order, with $dQ$ read, updated and written back in HBM. It is
# faithful, not fast: one program per head leaves most of a GPU's SMs idle when batch × heads is
# small, and the $O$ round trips cost bandwidth. {ref}`Chapter 4 <ch-flash-v2>` measures what
# swapping the loops buys. The kernel's forward loops, beside the reference's:

# %%
show(region(v1_kernel, "v1-kernel", title="kernel (Triton)"), v1_reference_view)

# %% [markdown]
# The two read alike, and the differences are what a GPU needs:
#
# - **`tl.dot`** computes $Q_i K_j^\top$ and $\tilde P_{ij} V_j$, the two products
#   {ref}`chapter 2 <ch-online-softmax>` spelled out as a broadcast multiply and a sum. It runs on
#   the tensor cores, takes blocks of at least 16 × 16, and accumulates in fp32; `tl.trans(k)`
#   reads $K_j$ transposed without copying it.
# - **Pointers instead of `chip.load`.** Each tile is a masked `tl.load` of a block of addresses,
#   as in chapter 2's softmax; the masks (`row_ok`, `col_ok`) handle the last, partial tiles.
# - **$O$, $\ell$, $m$ round-trip through HBM**, as Algorithm 1 says: loaded at the top of the inner
#   loop (line 8), stored at its end (lines 12–13). `tl.debug_barrier()` makes every thread's stores
#   land before the next outer step loads the same $O_i$: Triton orders the threads of a program
#   for shared memory by itself, not for global memory.
# - **Guards for $-\infty$.** A row that sees none of a causal tile has $\tilde m_{ij} = -\infty$;
#   the `tl.where` lines keep $e^{-\infty - (-\infty)}$ from becoming NaN, as the reference's
#   `exp_diff` and `finite_or_zero` do.
# - **Causal tiles are skipped by the loop bound** (`first_m`), not tested tile by tile.
#
# Run it forward and backward against fp64:

# %%
N = rt.size(cpu=100, gpu=4096)
dtype = torch.float32 if rt.interpreted else torch.float16
q, k, v = random_qkv(B=1, H=2, N=N, D=64, dtype=dtype)
# Forward, then the kernel's backward (Algorithm 4 in v1's loop order),
# against fp64:
errors = check_against_fp64("v1_triton", q, k, v, causal=True,
                            fallback="v1_reference")

# %% [markdown]
# ## Summary
#
# - FlashAttention fuses the three steps into one kernel and tiles $Q$, $K$, $V$; each query row's
#   softmax state travels from block to block, so $S$ and $P$ never reach HBM.
# - Algorithm 1 loops over $K$/$V$ blocks outside and $Q$ blocks inside, keeping $O$ as a running
#   average in HBM; its traffic is $2Nd + 2T_cNd$ reads and $T_cNd + 2T_cN$ writes (a common
#   write-up's count of Algorithm 1; FA1 proves only the order), plus two lower-order terms,
#   $\Theta(N^2 d^2/M)$ in all.
# - The backward pass stores $\ell$ and $m$ instead of $P$ and recomputes $P$ block by block.
#
# ## Exercises
#
# **1.** Write `fa1_blocks(M, d)` returning $(B_r, B_c)$ from Algorithm 1's line 1. Check it with
# `flashedu.exercises.check_fa1_blocks(fa1_blocks)`.
#
# **2.** Write `v1_traffic(N, d, Br, Bc)` returning the exact (reads, writes) in elements of
# Algorithm 1, for $N$ a multiple of both blocks: the count above plus the two terms it drops.
# Check it with `flashedu.exercises.check_v1_traffic(v1_traffic)`.
#
# **3.** In the SRAM sweep, below which SRAM size does v1 move *more* than standard attention at
# $N = 4096$, $d = 64$? Why can that happen?

# %% tags=["hide-cell"]
# Solutions (click to show).
import math
from flashedu.exercises import check_fa1_blocks, check_v1_traffic

def fa1_blocks(M, d):
    bc = math.ceil(M / (4 * d))
    return min(bc, d), bc

def v1_traffic(N, d, Br, Bc):
    Tc = N // Bc
    # the last term: ℓ_i, m_i read with Q_i, O_i every step
    reads = 2 * N * d + 2 * Tc * N * d + 2 * Tc * N
    # the last two terms: O, ℓ, m initialised in HBM (line 2)
    writes = Tc * N * d + 2 * Tc * N + N * d + 2 * N
    return reads, writes

assert check_fa1_blocks(fa1_blocks)
assert check_v1_traffic(v1_traffic)

# 3: with tiny tiles, Tc = N / Bc is large and O makes Tc round trips (about
#    3·Tc·N·d elements), which grows past standard attention's 4N² for S and P
#    once Bc is small enough.
worse = [r["sram_kib"]
         for r in traffic_vs_sram(N=4096, d=64, sram_kib=(16, 24, 32, 48))
         if r["v1"] > r["standard"]]
print("v1 moves more than standard at SRAM sizes (KiB):", worse)
