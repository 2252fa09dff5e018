# %% [markdown]
# (ch-block-sparse)=
# # Block-sparse FlashAttention: skipping tiles
#
# **You will learn**
# - what a block mask is: which tiles of the score matrix are computed, skipped, or computed
#   with a token mask; the patterns of sparse Transformers (local, strided, global + local,
#   butterfly, random);
# - why a kernel wants the mask as lists (CSR), not as a bitmap;
# - how much HBM traffic and time block sparsity saves, from the memory model and the roofline,
#   and (where recorded) measured on a GPU;
# - a Triton kernel, forward and backward, that visits only the listed tiles; FlexAttention's
#   `BlockMask`, the same idea in torch.

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
# ## What the paper claims
#
# The FlashAttention paper {cite:p}`dao2022flashattention` extends its algorithm to *block-sparse* attention: given a mask over
# blocks of the score matrix, skip the zero blocks entirely. It makes these claims, which this
# chapter checks where a laptop can:

# %% tags=["hide-input"]
FA1_PAPER = {"speedup_lo": 2, "speedup_hi": 4, "max_len_k": 64, "lra_speedup": 2.8,
             "path256_acc": 63.1}
for key, value in FA1_PAPER.items():
    glue(f"paper_{key}", value)

# %% [markdown]
# - block-sparse FlashAttention is {glue:text}`paper_speedup_lo`–{glue:text}`paper_speedup_hi`
#   times faster than FlashAttention and scales to sequences of {glue:text}`paper_max_len_k`k;
# - its IO complexity is smaller than FlashAttention's **by a factor proportional to the
#   sparsity** (the paper: $\Theta(Nd + N^2d^2M^{-1}s)$, $s$ the fraction of non-zero blocks);
# - on the Long-Range Arena it gives a {glue:text}`paper_lra_speedup`× speed-up at the accuracy
#   of standard attention, and it made Path-256 (sequence length 64k) solvable:
#   {glue:text}`paper_path256_acc`% accuracy, the first better-than-chance result.
#
# The last two are training results we do not reproduce. The IO claim we count exactly, and the
# speed-up we predict with the roofline and, where a GPU run is recorded, measure.
#
# ## A block mask
#
# Cut the $N \times N$ score matrix into $T_r \times T_c$ tiles of $B_r \times B_c$ scores, the
# tiles FlashAttention computes one at a time. A **block mask** says, for every tile, whether it
# is computed. A token mask (which query sees which key) becomes a block mask tile by tile:
#
# - a tile with **no** kept score is **skipped**: its $K_j$, $V_j$ are never loaded;
# - a tile with **every** score kept is **full**: computed as in v2, no mask at all;
# - the others are **partial**: computed, with that tile of the token mask applied.
#
# A sliding window (each query sees keys within 40 positions) on 256 tokens, at 32 × 32 tiles:

# %%
import textwrap
from flashedu.ops.block_sparse import masks as bs
window = bs.sliding_window(256, window=40, block=32)
listed, partial = window.blocks[0], window.partial()[0]
print(textwrap.fill(str(window), 78))
print("tiles: 1 = full, 2 = partial, 0 = skipped")
print((listed.int() + partial.int()).numpy())

# %% tags=["hide-input"]
# Bookkeeping: values the text quotes, and checks that keep it true.
glue("win_tiles", window.Tr * window.Tc)
glue("win_full", int((listed & ~partial).sum()))
glue("win_partial", int(partial.sum()))
glue("win_skipped", int((~listed).sum()))

# %% [markdown]
# Of {glue:text}`win_tiles` tiles, {glue:text}`win_full` are full, {glue:text}`win_partial`
# partial and {glue:text}`win_skipped` skipped. The FlashAttention paper's block-sparse attention
# has only full and skipped tiles: the sparsity is chosen per block, not per token. flashedu
# supports both, because real masks (windows, documents packed into one sequence) have edges.
#
# ## The patterns
#
# Sparse Transformers chose their block masks by hand. A few classics, on a {glue:text}`bf_T` × {glue:text}`bf_T`
# grid of tiles:
#
# - **local**: a band around the diagonal (each block sees its neighbours);
# - **strided** (dilated): every $s$-th diagonal, reaching far with few tiles;
# - **global + local** (Longformer {cite:p}`beltagy2020longformer`): the band plus a few global blocks that see, and are seen
#   by, everything; **BigBird** {cite:p}`zaheer2020bigbird` adds random tiles to each row;
# - **butterfly**: tile $(i, j)$ when $i \oplus j$ (bitwise XOR) is 0 or a power of two, the
#   union of the $\log_2 T$ factors of a butterfly matrix; the pattern the FlashAttention paper
#   trains with (from Pixelated Butterfly);
# - **random**: tiles at a given density, the worst case for any locality.

# %%
from flashedu.viz.block_sparse import pattern_gallery
N_demo, blk = 2048, 128
patterns = {
    "local": bs.local(N_demo, block=blk, width=1),
    "strided": bs.strided(N_demo, block=blk, stride=4),
    "global + local": bs.global_local(N_demo, block=blk, width=1, n_global=1),
    "BigBird": bs.bigbird(N_demo, block=blk, width=1, n_global=1, n_random=2),
    "butterfly": bs.butterfly(N_demo, block=blk),
    "random 25%": bs.random_blocks(N_demo, block=blk, density=0.25),
}
pattern_gallery(patterns).show()

# %% tags=["hide-input"]
# Bookkeeping: values the text quotes, and checks that keep it true.
glue("bf_per_row", int(patterns["butterfly"].blocks[0].sum(-1)[0]))
glue("bf_T", patterns["butterfly"].Tr)

# %% [markdown]
# Each butterfly row holds {glue:text}`bf_per_row` of {glue:text}`bf_T` tiles, $1 + \log_2 T$:
# its density falls as $N$ grows, while every pair of blocks stays connected through
# $\log_2 T$ layers.
#
# ## The algorithm: v2 over a list
#
# FA1's block-sparse algorithm (its Algorithm 5) {cite:p}`dao2022flashattention` is
# Algorithm 1 with the zero blocks skipped: $K$/$V$ stay the outer loop, and a skipped
# $(i, j)$ saves the round trip of $Q_i$, $O_i$, $\ell_i$, $m_i$. flashedu builds on v2
# ({ref}`chapter 4 <ch-flash-v2>`) instead, with one change: the inner loop runs
# over the $K$/$V$ blocks that row $i$'s list holds, not over all of them. A skipped tile costs
# nothing: no load, no matmul, no exponential. A row that sees no key at all ends with
# $\ell_i = 0$: its output is 0 (not NaN) and $L_i = -\infty$, so the backward pass gives it zero
# gradients. The reference, written against the memory model like every other:

# %%
from flashedu.listing import reference, region, show
from flashedu.ops.block_sparse import kernel as bs_kernel, reference as bs_ref
bs_reference_view = reference(bs_ref, "block-sparse-reference")
show(bs_reference_view)

# %% [markdown]
# It agrees with dense attention under the expanded token mask (the mask every tile stands for),
# here with one mask per head, partial tiles, and a query row that sees nothing:

# %%
def masked_attention(q, k, v, keep):
    """Dense attention with token mask keep [H, N, N_k]; a row with no key
    gives 0."""
    s = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).masked_fill(
        ~keep, float("-inf"))
    p = torch.softmax(s, dim=-1).nan_to_num(0.0)
    return p @ v

q, k, v = random_qkv(B=1, H=2, N=200, D=32, device="cpu", dtype=torch.float64)
pos = torch.arange(200)
# sparse, near the diagonal
token = (torch.rand(2, 200, 200) < 0.3) & ((pos[:, None] - pos[None, :]).abs() < 50)
token[1, 7] = False  # query 7 of head 1 sees no key
m = bs.from_token_mask(token, block_r=32)
o = flashedu.get("block_sparse_reference").fn(q, k, v, block_mask=m)
err = (o - masked_attention(q, k, v, m.dense())).abs().max().item()
print(textwrap.fill(str(m), 78))
print(f"max |block-sparse - dense masked| = {err:.1e}; "
      f"row 7 of head 1 is {o[0, 1, 7].abs().max().item()}")

# %% tags=["hide-input"]
# Bookkeeping: values the text quotes, and checks that keep it true.
assert err < 1e-12

# %% [markdown]
# ## How a kernel reads the mask: lists, not a bitmap
#
# A GPU program owns one $Q$ block $i$ and must find row $i$'s tiles. With the $T_r \times T_c$
# bitmap it would loop over all $T_c$ bits and branch on each: a row with 3 tiles out of 512
# still pays 512 iterations. With **compressed sparse rows** (CSR) it loops over exactly its
# tiles: `ptr[i]` to `ptr[i+1]` index a list of $K$/$V$ block numbers. The count is a
# subtraction and the loop has no branch:

# %%
small = bs.from_blocks(torch.tensor([[1, 1, 0, 0],
                                     [0, 0, 0, 0],
                                     [1, 0, 1, 1],
                                     [0, 1, 0, 1]], dtype=torch.bool),
                       block_r=16)
csr = bs.to_csr(small.blocks)
print("ptr   =", csr.ptr.tolist())
print("index =", csr.index.tolist())
print("count per row =", csr.counts[0].tolist(),
      "(row 1 is empty: its output is 0)")

# %% tags=["hide-input"]
# Bookkeeping: values the text quotes, and checks that keep it true.
assert (bs.from_csr(csr) == small.blocks).all()

# %% [markdown]
# flashedu's kernels read one refinement of this (`kernel_layout`): each row's list puts the
# tiles that need no mask first (full, off the causal diagonal, not the short last tile) and the
# masked ones after, so the kernel runs v2's two loops, a mask-free one and a masked one, with
# bounds read from HBM. The order of tiles does not change the answer: {ref}`chapter 2 <ch-online-softmax>`'s merge $\oplus$
# is associative and commutative. The backward's $dK$/$dV$ kernel owns a $K$/$V$ block and needs
# the transpose, a list of $Q$ blocks per column, so the layout holds both. Partial tiles carry
# their $B_r \times B_c$ piece of the token mask, one byte per score.
#
# ## IO against density
#
# The memory model runs the reference shape-only. Only $K$ and $V$ reads shrink: each $Q$ tile
# still reads $Q_i$ once and writes $O_i$, $L_i$ once. For $N$ a multiple of the blocks and no
# partial tile the count is exact:
#
# $$\text{reads} = Nd + 2\,d\,B_c \cdot \text{nnz}, \qquad \text{writes} = Nd + N,$$
#
# where nnz is the number of listed tiles; with $s = \text{nnz}/(T_rT_c)$ this is v2's
# $Nd + 2T_rNd$ with the second term multiplied by $s$: the paper's factor proportional to the
# sparsity. (In the paper's $K$/$V$-outer version it is the $Q$/$O$ traffic that shrinks; both
# are proportional to $s$.)

# %%
from flashedu.iomodel import simulate, formula
N, d, Br = 4096, 64, 128
rows, closed = [], []
for s in (1.0, 0.5, 0.25, 0.1):
    mask = bs.random_blocks(N, block=Br, density=s)
    r = simulate("block_sparse", N=N, d=d, block_mask=mask)
    rows.append((s, mask.nnz(), r.read_elements, r.write_elements))
    # the closed form, by hand and from flashedu.iomodel.formula (checked below)
    exact = N * d + 2 * d * Br * mask.nnz()
    closed.append((exact, formula("block_sparse", N=N, d=d, block_r=Br,
                                  block_c=Br, block_mask=mask).exact.reads))
dense_reads = rows[0][2]
for s, nnz, reads, writes in rows:
    print(f"density {s:4.0%}: {nnz:5d} tiles, reads {reads:>10,d} "
          f"({reads / dense_reads:.3f} of dense), writes {writes:,d}")

# %% tags=["hide-input"]
# Bookkeeping: values the text quotes, and checks that keep it true.
# the simulated reads are the closed form's, at every density
assert all(r[2] == a == b for r, (a, b) in zip(rows, closed))
glue("io_25", rows[2][2] / dense_reads)
glue("io_10", rows[3][2] / dense_reads)

# %% [markdown]
# At 25% of the tiles the forward reads {glue:text}`io_25:.3f` of dense v2's elements, at 10%
# {glue:text}`io_10:.3f`: slightly more than the density, because $Q$ is read in full.
#
# Turning bytes and FLOPs into time with the roofline of {ref}`chapter 1 <ch-standard>` ($N = 4096$, $d = 64$,
# 16 heads, an H100's datasheet ceilings): FLOPs scale exactly with the tiles computed, bytes
# almost exactly, so whichever bound applies, the predicted time falls in proportion to the
# density. (Here the model calls dense v2 memory-bound: it charges every
# $K_j$, $V_j$ re-read to HBM, where a GPU's L2 cache absorbs most of them, as {ref}`chapter 4 <ch-flash-v2>` measured.)

# %%
from flashedu import hardware
from flashedu.viz.block_sparse import density_figure
dens = [1.0, 0.75, 0.5, 0.35, 0.25, 0.15, 0.1, 0.05]

def model_ratios(N, d, heads=16, gpu="H100"):
    dense = simulate("block_sparse", N=N, d=d, heads=heads)
    io, t = [], []
    for s in dens:
        r = simulate(
            "block_sparse", N=N, d=d, heads=heads,
            block_mask=bs.random_blocks(N, block=dense.block_r, density=s))
        io.append(r.total_bytes / dense.total_bytes)
        t.append(hardware.roofline(r, gpu).time_s
                 / hardware.roofline(dense, gpu).time_s)
    return io, t

io4, t4 = model_ratios(4096, 64)
curves = {"HBM traffic, model (N=4k, d=64)": (dens, io4),
          "roofline time, H100 (N=4k, d=64)": (dens, t4)}

# %% tags=["hide-input"]
# Bookkeeping: values the text quotes, and checks that keep it true.
glue("t_25", t4[dens.index(0.25)])
# The prose above calls dense v2 memory-bound in the model: keep it true.
assert hardware.roofline(simulate("block_sparse", N=4096, d=64, heads=16),
                         "H100").bound == "memory"

# %% [markdown]
# ## What a GPU measured
#
# `flashedu/bench/block_sparse.py` times the Triton kernel below against the dense v2 kernel of
# chapter 4 and against FlexAttention (`torch.compile`d, same block mask) with the
# FlashAttention papers' shapes (hidden size 2048, $B \cdot N$ = 16k tokens), random and local
# masks at 128 × 128 tiles, and stores the medians with their provenance in
# `flashedu/recorded/data/block_sparse/`. Every number below is a ratio to dense v2's time in the same
# run.

# %%
from flashedu import recorded
from flashedu.recorded import block_sparse as bsm
run = recorded.latest("block_sparse")
if not run:
    print("No GPU measurement is recorded (flashedu/recorded/data/block_sparse/ "
          "is empty): the figure shows the model only.")
density_figure(curves, measured=bsm.figure_points(run) if run else None,
               title="Block-sparse forward against density<br>"
                     "<sup>relative to dense v2; random tiles</sup>").show()

# %% tags=["hide-input"]
# Bookkeeping: values the text quotes, and a check that keeps "but only" true.
if run:
    meas = bsm.summary(run)
    for name, value in meas.items():
        glue(name, value)
    assert meas["flex_bwd_hi_d128"] < meas["flex_bwd_lo_d64"]

# %% [markdown]
# On the {glue:text}`meas_gpu` ({glue:text}`meas_date`), the forward with random tiles took at
# most {glue:text}`meas_50:.2f`, {glue:text}`meas_25:.2f` and {glue:text}`meas_10:.2f` of dense
# v2's time at 50%, 25% and 10% of the tiles, over every length and head dimension; the
# roofline predicted {glue:text}`t_25:.2f` at 25%. Time follows density, as the IO count says
# it should: computing half or a quarter of the tiles is a {glue:text}`speedup_50:.1f`× to
# {glue:text}`speedup_25:.1f`× speed-up, against the paper's {glue:text}`paper_speedup_lo`–{glue:text}`paper_speedup_hi`×.
# Forward and backward together: {glue:text}`meas_25_fb:.2f` at 25% and {glue:text}`meas_10_fb:.2f`
# at 10%.
#
# Three things in the kernel are there because a GPU said so: reading each list entry one step
# early, walking consecutive tiles by pointer instead of by list, and timing the tile shape per
# problem. What each was worth, and every ratio the run recorded, is the second of the
# {ref}`case studies <appendix-case-studies>`.
#
# FlexAttention with the same mask took up to
# {glue:text}`flex_over_ours_25:.2f`× our time at {glue:text}`meas_big_k`k and 25% of the tiles.
# Over every mask and length, its forward took {glue:text}`flex_fwd_lo:.2f`–{glue:text}`flex_fwd_hi:.2f`×
# ours, and its backward {glue:text}`flex_bwd_lo_d64:.2f`–{glue:text}`flex_bwd_hi_d64:.2f`× ours at
# $d = 64$ but only {glue:text}`flex_bwd_lo_d128:.2f`–{glue:text}`flex_bwd_hi_d128:.2f`× at $d = 128$.
# Both backwards run the same tiles (FlexAttention's defaults on Hopper are the first entries of
# our tables) in one launch, so what is left between them is the code each compiles; the
# {ref}`case studies <appendix-case-studies>` list what was tried and {ref}`chapter 8
# <ch-benchmarks>` has the table. FlexAttention's strength is the `mask_mod`/`score_mod`
# functions it compiles, which this kernel does not have.

# %% [markdown]
# ## Watch it run
#
# Pick a pattern and press **Play**: each row's program walks its own list, so rows with short
# lists finish early; the bar shows the HBM bytes moved so far, and the subtitle the whole pass
# against dense v2 on an H100's roofline ($N = 2048$, 16 heads).
#
# **Predict first.** Of the four patterns below, which moves the fewest HBM bytes? (Look at the
# gallery above: what decides the bytes is the number of tiles, not where they are.)
#
# :::{dropdown} Answer
# {glue:text}`ch5_fewest_name`, with {glue:text}`ch5_fewest_tiles` tiles:
# {glue:text}`ch5_fewest_bytes:.2f` of dense v2's bytes. Each listed tile costs one load of
# $K_j$ and $V_j$; $Q$ and $O$ cost the same for every pattern.
# :::

# %%
from flashedu.viz.block_sparse import pattern_explorer
shown = {k: patterns[k]
         for k in ("local", "butterfly", "global + local", "random 25%")}
pattern_explorer(shown).show()

# %% tags=["hide-input"]
# Bookkeeping: the answer above, from the model (as the explorer runs it).
moved = {k: simulate("block_sparse", N=m.N, d=64, heads=16,
                     block_mask=m).total_bytes for k, m in shown.items()}
fewest = min(moved, key=moved.get)
m0 = shown[fewest]
dense_bytes = simulate("block_sparse", N=m0.N, d=64, heads=16, block_r=m0.block_r,
                       block_c=m0.block_c).total_bytes
glue("ch5_fewest_name", fewest)
glue("ch5_fewest_tiles", int(m0.nnz()))
glue("ch5_fewest_bytes", moved[fewest] / dense_bytes)
# "the number of tiles decides": the fewest bytes go with the fewest tiles
assert m0.nnz() == min(m.nnz() for m in shown.values())

# %% [markdown]
# With a live kernel (Jupyter, Colab) you can draw your own mask: run
# `from flashedu.viz.panel import block_mask_panel; panel = block_mask_panel()` in a cell, start
# from a pattern, and click tiles on and off; the schedule, the HBM bytes and the roofline time
# are recomputed at each click, and `panel.mask()` is the mask you drew, ready for
# `block_sparse_flash_attention(q, k, v, block_mask=panel.mask())`. (This page has no kernel
# behind it, so it shows the precomputed patterns above.)

# %% [markdown]
# ## The Triton kernel
#
# `block_sparse_triton` is v2's Triton kernels with the loop bounds read from the CSR layout:
# per program, a mask-free loop over the clean entries and a masked loop over the rest, where
# the keep-mask is the key range, the causal test and the tile of the token mask. The backward
# is v2's $\Delta$ kernel and one launch of two kinds of program: $dK$/$dV$ programs walk the
# column lists, $dQ$ programs the row lists. The forward program, and the head of its loop over
# a row's list (the body is v2's), beside the reference:

# %%
show(region(bs_kernel, "block-sparse-kernel",
            title="kernel: one program per Q tile"),
     region(bs_kernel, "block-sparse-inner", title="kernel: walking the list"),
     bs_reference_view)

# %% [markdown]
# Three things are new against v2's kernel ({ref}`chapter 4 <ch-flash-v2>`):
#
# - **The loop bounds come from memory.** `Ptr[row]` and `Ptr[row + 1]` say where this row's
#   entries start and end in `Index`, the CSR layout of the section above; `Clean[row]` how many
#   of them need no mask. The loop `for e in range(lo, hi)` has bounds only known at run time,
#   which Triton compiles like any other loop.
# - **Reading the next index early.** The block a loop step works on is itself a load
#   (`tl.load(Index + e)`), and the $K$ load cannot start until it arrives. With
#   `PREFETCH_INDEX` the next entry's index is read one step ahead, so it is there when needed;
#   the case study in the appendix measured what that buys.
# - **Runs by pointer.** When a row's clean entries are consecutive blocks (a dense row, a band,
#   the causal part left of the diagonal), the program calls v2's own loop on that range:
#   no index loads at all.
#
# Run it on this machine:

# %%
from flashedu.chapter import check_against_fp64
N = rt.size(cpu=128, gpu=4096)
dtype = torch.float32 if rt.interpreted else torch.float16
mask = bs.sliding_window(N, window=N // 8, block=32 if rt.interpreted else 128)
q, k, v = random_qkv(B=1, H=2, N=N, D=64, dtype=dtype)
print(f"{mask.density(causal=True):.0%} of the tiles are computed")
errors = check_against_fp64("block_sparse_triton", q, k, v, causal=True,
                            block_mask=mask, token_mask=mask.dense(causal=True),
                            fallback="block_sparse_reference")

# %% [markdown]
# ## FlexAttention: the same idea in torch
#
# torch's FlexAttention (`torch.nn.attention.flex_attention`) takes a `BlockMask` that holds the
# same lists, padded per row instead of packed: `kv_num_blocks` (the counts) and `kv_indices`,
# once for partial tiles, which run a `mask_mod` function, and once for full tiles, which skip
# it. `bs.to_flex` and `bs.from_flex` convert both ways, and a `BlockMask` can be passed as
# `block_mask` to flashedu's implementations:

# %%
avail = bs.flex_available()
if avail is None:
    from torch.nn.attention.flex_attention import create_block_mask
    fm = bs.to_flex(window, causal=True)
    print(fm)
    back = bs.from_flex(fm)
    print("round trip keeps every score:",
          bool((back.dense() == window.dense(causal=True)).all()))
    made = create_block_mask(lambda b, h, qi, ki: (qi - ki).abs() <= 40,
                             None, None, 256, 256, device="cpu", BLOCK_SIZE=32)
    print("torch's own sliding window =")
    print(textwrap.fill(str(bs.from_flex(made)), 78))
else:
    print(f"FlexAttention is not available here: {avail}")

# %% [markdown]
# ## Summary
#
# - A block mask lists the tiles of the score matrix to compute; tiles are full, partial (with a
#   token mask) or skipped. Skipped tiles cost no load and no FLOP.
# - Block-sparse FlashAttention is v2 with the inner loop over a list; kernels read the mask as
#   CSR, counts and lists, ordered mask-free first.
# - Its reads are $Nd + 2dB_c\cdot\text{nnz}$: v2's $K$/$V$ stream scaled by the fraction of tiles,
#   the paper's IO factor proportional to sparsity; at these sizes the roofline time scales with
#   the density too.
# - A row with no key gives output 0 and zero gradients; causal masking composes with any mask.
# - On a GPU the list costs little once each index is read an iteration ahead; short rows want
#   tiles small enough that programs share an SM; and a kernel this short is timed from a CUDA
#   graph, or its Python is timed with it.
#
# ## Exercises
#
# **1.** Write `block_sparse_reads(N, d, Br, Bc, nnz)`: the elements the forward reads from HBM
# when nnz tiles are listed (no partial tile, N a multiple of the blocks). Check it with
# `flashedu.exercises.check_block_sparse_reads(block_sparse_reads)`.
#
# **2.** Write `csr(grid)` returning `(ptr, index)` for a bool `[Tr, Tc]` grid. Check it with
# `flashedu.exercises.check_csr(csr)`.
#
# **3.** With `simulate`, find the density of random tiles at which the forward's HBM traffic is
# half of dense v2's ($N = 4096$, $d = 64$, 128 × 128 tiles). Why is it below 50%?
#
# **4.** Write `programs_per_sm(block_m, block_n, stages, d, sram_kb)`: how many forward programs
# fit side by side in an SM's shared memory, each holding its fp16 $Q_i$ tile and `stages`
# buffers of a $K_j$ and a $V_j$ tile. Check it with
# `flashedu.exercises.check_programs_per_sm(programs_per_sm)`. How many 128 × 128 programs with
# 3 stages fit at $d$ = 128 in 228 KiB, and how many of the 64 × 64 ones the kernel picked?

# %% tags=["hide-cell"]
# Solutions (click to show).
from flashedu.exercises import (check_block_sparse_reads, check_csr,
                                check_programs_per_sm)

def block_sparse_reads(N, d, Br, Bc, nnz):
    return N * d + 2 * nnz * Bc * d

def csr(grid):
    ptr = [0] + grid.sum(-1).cumsum(0).tolist()
    # row-major: each row's columns in order
    index = torch.nonzero(grid)[:, 1].tolist()
    return ptr, index

def programs_per_sm(block_m, block_n, stages, d, sram_kb):
    return int(sram_kb * 1024 // (2 * d * (block_m + 2 * stages * block_n)))

assert check_block_sparse_reads(block_sparse_reads)
assert check_csr(csr)
assert check_programs_per_sm(programs_per_sm)
print(f"d = 128, 228 KiB: {programs_per_sm(128, 128, 3, 128, 228)} "
      f"program of 128 × 128, {programs_per_sm(64, 64, 3, 128, 228)} of 64 × 64")
dense_bytes = simulate("block_sparse", N=4096, d=64).total_bytes
half = next(s / 100 for s in range(100, 0, -1)
            if simulate("block_sparse", N=4096, d=64,
                        block_mask=bs.random_blocks(4096, block=128,
                                                    density=s / 100)).total_bytes
            <= dense_bytes / 2)
print(f"half the traffic at {half:.0%} of the tiles:")
print("  Q is read and O, L written in full whatever the density")
