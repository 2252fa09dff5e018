# %% [markdown]
# (ch-flash-v2)=
# # FlashAttention v2: swapping the loops
#
# **You will learn**
# - the loop swap: $Q$ blocks outside, $K$/$V$ blocks inside, so $O$, $\ell$ and $m$ never leave
#   the chip; delayed normalisation, and storing only the logsumexp $L$;
# - v1 against v2 in HBM traffic, recorded by the memory model beside the closed-form counts;
# - parallelism: why v2 fills a GPU with small batches, and why its warps exchange no partial
#   results;
# - causal masking that skips work instead of masking it; the backward pass;
# - a Triton kernel for all of it, and how fast it is beside torch's own kernels.

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
# ## The loop swap
#
# FlashAttention-2 {cite:p}`dao2023flashattention2` reorders the loops: for each block of
# queries $Q_i$, stream the blocks $K_j$, $V_j$ and keep a running $(m_i, \ell_i, O_i)$ on
# chip; divide once at the end. (FA2 credits this swap, and parallelising over the sequence,
# to Phil Tillet's Triton kernel.) flashedu's reference, written against the memory model, with
# any block size and the causal mask:

# %%
from flashedu.listing import reference, region, show
from flashedu.ops.v2 import kernel as v2_kernel, reference as v2_ref
v2_reference_view = reference(v2_ref, "v2-reference")
show(v2_reference_view)

# %% [markdown]
# Three things changed from Algorithm 1 ({ref}`chapter 3 <ch-flash-v1>`):
#
# 1. **The loops are swapped.** Each program owns one $Q_i$ and visits every $K_j$, $V_j$, so
#    $O_i$, $\ell_i$, $m_i$ stay in SRAM from the first $K_j$ to the last. They are written once.
# 2. **Normalisation is delayed.** $O_i$ is kept as a running *sum*
#    $\sum_j e^{S_{ij} - m_i} V_j$, rescaled by $e^{m_i^{old} - m_i^{new}}$ when the max grows,
#    and divided by $\ell_i$ once at the end: {ref}`chapter 2 <ch-online-softmax>`'s running sum instead of v1's running
#    average, one rescaling per step instead of two. FA2 makes this and similar tweaks to cut
#    non-matmul FLOPs: on an A100 each one costs as much as 16 matmul FLOPs (312 against
#    19.5 TFLOP/s) {cite:p}`dao2023flashattention2`. {ref}`Chapter 6 <ch-flash-v3>` counts the
#    same cost for the exponentials on an H100.
# 3. **Only the logsumexp is stored**, $L_i = m_i + \log \ell_i$: one number per row is enough
#    for the backward pass to recompute $P_{ij} = e^{S_{ij} - L_i}$.
#
# Each inner step is {ref}`chapter 2 <ch-online-softmax>`'s merge $\oplus$ of the row's state with a block's state.

# %%
q, k, v = random_qkv(B=2, H=2, N=300, D=64, device="cpu", dtype=torch.float64)
for causal in (False, True):
    o2 = flashedu.get("v2_reference").fn(q, k, v, causal=causal)
    o1 = flashedu.get("v1_reference").fn(q, k, v, causal=causal)
    print(f"causal={causal}: max |v2 - v1| = {(o2 - o1).abs().max().item():.1e}")

# %% [markdown]
# ## v1 against v2 in HBM traffic
#
# Counted the same way as v1's in {ref}`chapter 3 <ch-flash-v1>`, element by element as a
# common write-up counts them (FA1 gives only the order; $T_r = \lceil N/B_r \rceil$,
# $T_c = \lceil N/B_c \rceil$):
#
# | | reads | writes |
# |---|---|---|
# | v1 | $2Nd + 2T_cNd$ | $T_cNd + 2T_cN$ |
# | v2 | $Nd + 2T_rNd$ | $Nd + N$ |
#
# v2 reads $K$ and $V$ once per $Q$ block instead of reading $Q$ and $O$ once per $K$/$V$ block,
# and writes $O$ once instead of $T_c$ times. At the same blocks, the memory model records:

# %%
from flashedu.iomodel import simulate, formula
N, d = 4096, 64
r2 = simulate("v2", N=N, d=d)
r1 = simulate("v1", N=N, d=d, block_r=r2.block_r, block_c=r2.block_c)
print(f"blocks Br = {r2.block_r}, Bc = {r2.block_c}, N = {N}, d = {d}")
print(f"{'':4s} {'count reads':>12s} {'count writes':>12s} "
      f"{'recorded reads':>15s} {'recorded writes':>16s}")
for r in (r1, r2):
    f = formula(r.algorithm, N=N, d=d, block_r=r.block_r, block_c=r.block_c)
    print(f"{r.algorithm:4s} {f.seed.reads:12,d} {f.seed.writes:12,d} "
          f"{r.read_elements:15,d} {r.write_elements:16,d}")

# %% tags=["hide-input"]
# Bookkeeping: values the text quotes, and checks that keep it true.
glue("v2_traffic_gain", r1.total_elements / r2.total_elements)
# f is v2's formula
assert (r2.read_elements, r2.write_elements) == (f.seed.reads, f.seed.writes)

# %% [markdown]
# v2's recorded count equals the closed form exactly: $Q$ is read once, $K$ and $V$ once per
# $Q$ tile ($T_r$ times), $O$ and $L = m + \log \ell$ are written once; $\ell$ and $m$ never leave
# the chip. At equal blocks v1 moves
# {glue:text}`v2_traffic_gain:.2f` times as many elements; in addition, none of v2's writes
# happen inside the loop.
#
# **Predict first.** Both run at $N = 512$, $d = 64$ with the same {glue:text}`ch4_br` ×
# {glue:text}`ch4_bc` tiles. How many elements of $O$ has v1 written after its first $j$ columns,
# and v2 after its first $i$ rows?
#
# :::{dropdown} Answer
# v1: $(j + 1) \cdot Nd$, all of $O$ once per column plus the zeros it starts from; by the end
# {glue:text}`ch4_v1_o_writes:,d` elements. v2: $i \cdot B_r d$, only the rows it has finished;
# by the end $Nd$ = {glue:text}`ch4_v2_o_writes:,d`, each element once.
# :::
#
# Press **Play** to watch both at once: v1 sweeps the grid column by column and writes $O$ every
# step; v2 sweeps it row by row and writes each $O_i$ once (32 KiB SRAM, so that the tiles are
# small enough to see).

# %%
from flashedu.viz import side_by_side, traffic_explorer
a = simulate("v1", N=512, d=64, sram_bytes=32 * 1024)
b = simulate("v2", N=512, d=64, sram_bytes=32 * 1024,
             block_r=a.block_r, block_c=a.block_c)
side_by_side(a, b, concurrent=False).show()

# %% tags=["hide-input"]
# Bookkeeping: the answer above, from the recordings.
from flashedu.iomodel import n_tiles
glue("ch4_br", a.block_r)
glue("ch4_bc", a.block_c)
glue("ch4_v1_o_writes", a.per_tensor["O"].write_elements)
glue("ch4_v2_o_writes", b.per_tensor["O"].write_elements)
assert a.per_tensor["O"].write_elements == (n_tiles(512, a.block_c) + 1) * 512 * 64
assert b.per_tensor["O"].write_elements == 512 * 64

# %% [markdown]
# The explorer below sweeps $N$ for standard attention, v1 and v2 (16 heads); the sliders pick
# the head dimension and the SRAM size, and the lower panel turns bytes into a predicted time on an
# H100 with the roofline of {ref}`chapter 1 <ch-standard>`. v1 and v2 use the same tiles, as in
# the count above, so the gap is the loop order alone. (FA1's own rule, $B_c = \lceil M/4d
# \rceil$, gives v1 wider $K$/$V$ tiles and fewer outer steps; with those, at 228 KiB and
# $d = 64$, v1's count is {glue:text}`v1_own_tiles_16k:.2f` of v2's at $N = 16\text{k}$:
# `traffic_explorer(same_tiles=False)` shows it. Bytes alone then no longer separate them; v1
# still writes $O$ inside its loop and runs one program per head.) The model has no L2 cache: on
# a GPU, programs that run at the same time share $K_j$, $V_j$ through L2, so measured HBM
# traffic is lower than this count.

# %%
traffic_explorer(gpu="H100").show()

# %% tags=["hide-input"]
# Bookkeeping: values the text quotes, and checks that keep it true.
from flashedu.viz.traffic import traffic_curves
own = [traffic_curves(a, Ns=[16384], d=64, sram_bytes=228 * 1024, heads=16)[0][0]
       for a in ("v1", "v2")]
glue("v1_own_tiles_16k", float(own[0] / own[1]))

# %% [markdown]
# ### The model against a real GPU
#
# `flashedu/bench/ncu.py` launched the three Triton kernels of chapters 1, 3 and 4 once each on a
# GPU and read the bytes that actually crossed the DRAM interface with Nsight Compute
# (`dram__bytes_read.sum`, `dram__bytes_write.sum`), beside the memory model run at the kernel's
# own block sizes:

# %%
from flashedu import recorded
from flashedu.viz.measured_traffic import model_vs_measured_figure
ncu = recorded.latest("ncu")
model_vs_measured_figure(ncu).show()

# %% tags=["hide-input"]
# Bookkeeping: values the text quotes, and checks that keep it true.
from flashedu.recorded.ncu import by_case
by = by_case(ncu)
std, v2 = by[("standard_triton", 4096, False)], by[("v2_triton", 4096, False)]
glue("ncu_std_write_ratio", std["write_bytes"] / std["model_write_bytes"])
glue("ncu_v2_read_ratio", v2["model_read_bytes"] / v2["read_bytes"])
glue("ncu_gpu", ncu["provenance"]["gpu"])

# %% [markdown]
# Where the model and the GPU disagree, the GPU's L2 cache (tens of MB, between the SMs and HBM)
# is the reason, and the model says so plainly by leaving it out:
#
# - **Standard attention's writes agree** (measured/model {glue:text}`ncu_std_write_ratio:.2f` at
#   $N = 4096$): $S$ and $P$ are far larger than L2, so they really go out to HBM.
# - **Re-reads shrink.** The model charges v2 for reading $K_j$, $V_j$ once per $Q$ block; on the
#   {glue:text}`ncu_gpu` the programs that run at the same time share those tiles through L2, and
#   DRAM saw {glue:text}`ncu_v2_read_ratio:.0f` times fewer bytes than the model counts, close to
#   reading $Q$, $K$, $V$ once. v1's $O$ round trips likewise stay in L2 at these sizes.
# - **Small outputs may not be written at all** during the kernel: they sit in L2 when it ends and
#   reach HBM later (the zeros in the figure).
#
# The model counts what the *algorithm* asks of memory, the quantity the papers' IO analysis is
# about; a cache can only make the real number smaller.

# %% [markdown]
# ## Parallelism
#
# FlashAttention v1 runs one thread block per attention head, $B \times H$ blocks in all
# {cite:p}`dao2023flashattention2`. On an A100 with 108 SMs that works when $B \times H \ge 80$
# or so; with long sequences the batch is small and most SMs sit idle. v2 also splits the
# sequence: one program per $Q$ block, so $B \times H \times T_r$ programs, each doing $1/T_r$ of
# a head's work.
#
# **Predict first.** One sequence of 16 heads at $N = 8192$ on an A100: which finishes first?
# Time runs on one clock for both, in units of one v2 program (a v1 program, doing all
# $T_r =$ {glue:text}`sm_tr` of its head's $Q$ tiles, lasts {glue:text}`sm_tr` units).
#
# :::{dropdown} Answer
# v2, at $t =$ {glue:text}`sm_v2_finish` against v1's {glue:text}`sm_v1_finish`. Both do the
# same work; v1 puts it on {glue:text}`sm_v1_programs` SMs, v2 spreads it over all of them.
# :::

# %%
from flashedu.viz.parallelism import sm_waves_figure, warp_partition_figure
from flashedu.iomodel.parallel import occupancy
sm_waves_figure(batch=1, heads=16, N=8192, gpu="A100").show()

# %% tags=["hide-input"]
# Bookkeeping: values the text quotes.
from flashedu.hardware import gpu as gpu_preset
sm_v1 = occupancy("v1", batch=1, heads=16, N=8192, gpu="A100")
sm_v2 = occupancy("v2", batch=1, heads=16, N=8192, gpu="A100")
glue("sm_tr", sm_v1.program_time)
glue("sm_v1_programs", sm_v1.programs)
glue("sm_idle", gpu_preset("A100").sms - sm_v1.programs)
glue("sm_v2_programs", sm_v2.programs)
glue("sm_v1_finish", sm_v1.finish_time)
glue("sm_v2_finish", sm_v2.finish_time)
assert sm_v2.finish_time < sm_v1.finish_time

# %% [markdown]
# v1's {glue:text}`sm_v1_programs` programs keep as many SMs busy from start to end while the
# other {glue:text}`sm_idle` idle; v2's {glue:text}`sm_v2_programs` short programs fill every
# SM, wave after wave, and are done long before. With a large batch of short
# sequences ($16 \times 16$ heads, $N = 1024$) v1 has enough programs too, and the two finish
# close together:

# %%
sm_waves_figure(batch=16, heads=16, N=1024, gpu="A100").show()
for B, H, N in ((1, 16, 8192), (16, 16, 1024)):
    for alg in ("v1", "v2"):
        o = occupancy(alg, batch=B, heads=H, N=N, gpu="A100")
        print(f"B={B:2d} H={H} N={N:5d} {alg}: {o.programs:5d} programs, "
              f"{o.waves:2d} waves, done at t = {o.finish_time:3d}, "
              f"SMs busy {100 * o.utilization:3.0f}%")

# %% [markdown]
# Inside a program the work is split across warps (groups of 32 threads). v1 splits $K_j$, $V_j$
# across warps ("split-K"): every warp holds part of every row's output, and the partial $O_i$
# must be summed through shared memory. v2 splits $Q_i$ ("split-Q"): each warp owns whole rows of
# $S$, $P$ and $O$ and needs no exchange of partial results with other warps (they still share
# each $K_j$, $V_j$ tile).

# %%
warp_partition_figure(block_r=64, block_c=64, d=64, warps=4).show()

# %% [markdown]
# ## Causal masking skips work
#
# With a causal mask, query $i$ sees keys $j \le i$. A tile entirely above the diagonal is all
# masked: v2 does not load or compute it at all; the diagonal tiles are masked inside. Roughly
# half of the tiles, and half of the FLOPs, disappear:

# %%
full = simulate("v2", N=1024, d=64)
causal = simulate("v2", N=1024, d=64, causal=True)
print(f"tiles computed: full {full.tiles_computed}, causal {causal.tiles_computed} "
      f"({causal.tiles_skipped} skipped); "
      f"HBM reads {full.read_bytes / 2**20:.1f} → "
      f"{causal.read_bytes / 2**20:.1f} MiB")

# %% [markdown]
# **Predict first.** In the animation below ($N = 512$, 32 KiB SRAM), which $Q$ tile's program
# finishes first, and does any program load a $K_j$ tile that lies above the diagonal?
#
# :::{dropdown} Answer
# The first row's: it stops at the diagonal, after one tile, while the last row computes
# {glue:text}`ch4_last_row`. No: a skipped tile is never loaded, so causal v2
# reads {glue:text}`ch4_causal_reads:.2f` of the unmasked pass's bytes. This is why
# {ref}`the kernel <ch4-kernel-walk>` starts the longest rows first.
# :::

# %%
from flashedu.viz import tile_schedule
causal_512 = simulate("v2", N=512, d=64, sram_bytes=32 * 1024, causal=True)
tile_schedule(causal_512).show()

# %% tags=["hide-input"]
# Bookkeeping: the answer above, from the recording.
full_512 = simulate("v2", N=512, d=64, sram_bytes=32 * 1024)
tr_ = n_tiles(512, causal_512.block_r)
assert causal_512.block_r == causal_512.block_c
glue("ch4_last_row", tr_)
glue("ch4_causal_reads", causal_512.read_bytes / full_512.read_bytes)
assert causal_512.tiles_computed == tr_ * (tr_ + 1) // 2

# %% [markdown]
# ## The backward pass, derived
#
# Training needs $dQ$, $dK$, $dV$ from $dO$, the gradient of the loss with respect to the output.
# Take one query row: scores $s_j = \text{scale}\cdot q \cdot k_j$, weights $p = \operatorname{softmax}(s)$,
# output $o = \sum_j p_j v_j$.
#
# - **Through the product $o = \sum_j p_j v_j$:** $dv_j \mathrel{+}= p_j\, do$ and
#   $dp_j = do \cdot v_j$. For all rows at once: $dV = P^\top dO$ and $dP = dO\, V^\top$.
# - **Through the softmax.** Its Jacobian is $\partial p_j / \partial s_k = p_j(\delta_{jk} - p_k)$,
#   so
#
# $$
# ds_k = \sum_j dp_j\, p_j (\delta_{jk} - p_k) = p_k \Bigl(dp_k - \sum_j p_j\, dp_j\Bigr).
# $$
#
#   The sum looks as if it needs the whole row of $P$, but
#   $\sum_j p_j\, dp_j = \sum_j p_j\,(do \cdot v_j) = do \cdot \sum_j p_j v_j = do \cdot o$.
#   So with $D_i = \operatorname{rowsum}(dO_i \circ O_i)$, one number per row computed from $O$
#   and $dO$ alone,
#
# $$
# dS = P \circ (dP - D).
# $$
#
# - **Through $S = \text{scale}\cdot QK^\top$:** $dQ = \text{scale}\cdot dS\,K$ and
#   $dK = \text{scale}\cdot dS^\top Q$.
#
# Every term is now local to a tile $(i, j)$: $P_{ij}$ from $S_{ij}$ and $L_i$, $dP_{ij}$ from
# $dO_i$ and $V_j$, and $D_i$ from a pass over $O$ and $dO$ before the loop. That is what lets
# the backward run tile by tile like the forward.
#
# **Recompute or store?** Count the matrix products per tile. With $P$ stored by the forward, the
# backward needs four: $dV$, $dP$, $dQ$, $dK$. Without it, one more, $S_{ij} = Q_i K_j^\top$, to
# rebuild $P_{ij} = e^{S_{ij} - L_i}$ from the stored logsumexp: five, 25% more backward FLOPs
# (the forward has two, which is why a backward is counted as 2.5 forwards). What it saves is the
# $N \times N$ tensor: $P$ is never written, so the memory kept for the backward is $O$ and $L$,
# linear in $N$ instead of quadratic. FA2's Algorithm 2, as the reference runs it on the chip:

# %%
from flashedu.ops.v2 import reference_bwd as v2_ref_bwd
v2_backward_view = reference(v2_ref_bwd, "v2-backward-reference",
                             title="reference backward (Algorithm 2)")
show(v2_backward_view)

# %% [markdown]
# The outer loop is over $K$/$V$ tiles, so $dK_j$ and $dV_j$ stay on chip for their whole column.
# $dQ_i$ gets a contribution from every column, from programs that run in parallel, so the
# paper's line 15 reads, adds to and writes back $dQ_i$ in HBM (kept in fp32: an fp16 sum of many
# tiles would round at every add). It matches torch's gradients:

# %%
from flashedu.chapter import check_against_fp64
q, k, v = random_qkv(B=1, H=2, N=129, D=32, device="cpu", dtype=torch.float64)
check_against_fp64("v2_reference", q, k, v, causal=True)

# %% [markdown]
# **What it costs in HBM.** The memory model counts the reference's bytes. Like v1's forward
# ({ref}`chapter 3 <ch-flash-v1>`), the backward re-reads $Q_i$, $dO_i$ (and moves $dQ_i$) once
# per $K$/$V$ tile: $\Theta(T_c N d) = \Theta(N^2 d^2 / M)$ bytes, so doubling the SRAM budget
# (and with it the tiles) halves the traffic until the tiles reach their largest size:

# %%
N, d = 4096, 64
for kib in (32, 64, 128, 228):
    r = simulate("v2", N=N, d=d, backward=True, sram_bytes=kib * 1024)
    print(f"SRAM {kib:3d} KiB: tiles {r.block_r:3d} × {r.block_c:<3d}  "
          f"backward moves {(r.read_bytes + r.write_bytes) / 2**20:6.1f} MiB")

# %% [markdown]
# Against what? An unfused backward (each step a separate kernel, as autograd runs
# {ref}`chapter 1 <ch-standard>`'s attention) reads the stored $P$ for $dV$, writes $dP$, reads
# $P$ and $dP$ for the softmax's backward and writes $dS$, then reads $dS$ for $dQ$ and again
# for $dK$: seven $N \times N$ transfers per head
# (`formula("standard", backward=True)` counts them with the rest). Beside it, Algorithm 2 as
# above, and the three passes `v2_triton` runs, which the next section shows: $dQ$ gets a pass
# of its own, so it is written once instead of travelling through HBM in fp32 with every tile
# (`simulate("v2_split_bwd", backward=True)`). All three at the same tiles:

# %%
from flashedu.ops.v2.reference_bwd_split import backward_traffic
rows = [backward_traffic(N, d) for N in (1024, 4096, 16384) for d in (64, 128)]
print("    N    d   Algorithm 2   three passes   unfused   (MiB)")
for r in rows:
    print(f"{r.N:5d}  {r.d:3d}  {r.algorithm2 / 2**20:12.0f}  "
          f"{r.three_passes / 2**20:13.0f}  {r.unfused / 2**20:8.0f}")

# %% tags=["hide-input"]
# Bookkeeping: values the text quotes, and checks that keep it true.
at_4k = {r.d: r for r in rows if r.N == 4096}  # by d
glue("bwd_tile", at_4k[64].tile)
for d_, r in at_4k.items():
    glue(f"bwd_alg2_{d_}", r.algorithm2 / r.unfused)
    glue(f"bwd_split_{d_}", r.three_passes / r.unfused)
glue("p_store_gib", 32 * 16384**2 * 2 / 2**30)  # P of 32 heads at N = 16k, fp16
# The prose: at these tiles the ratios hardly move with N (both counts grow as
# N squared), the three passes move fewer bytes than Algorithm 2, and Algorithm 2
# moves more than the unfused backward at d = 128.
assert all(abs(r.algorithm2 / r.unfused * at_4k[r.d].unfused / at_4k[r.d].algorithm2
               - 1) < 0.1 for r in rows)
assert all(r.three_passes < r.algorithm2 for r in rows)
assert at_4k[128].algorithm2 > at_4k[128].unfused
assert {r.tile for r in rows} == {at_4k[64].tile}  # one tile size throughout

# %% [markdown]
# At $N = 4096$, Algorithm 2 moves {glue:text}`bwd_alg2_64:.2f` times the unfused backward's
# bytes at $d = 64$ and {glue:text}`bwd_alg2_128:.2f` times at $d = 128$; the three passes
# {glue:text}`bwd_split_64:.2f` and {glue:text}`bwd_split_128:.2f` times. The ratios hardly move
# with $N$: at fixed tiles both counts grow as $N^2$, the tiled one as $N^2 d / B$. So what
# decides the bytes is the tile size $B$, and this model's tiles are small,
# {glue:text}`bwd_tile` × {glue:text}`bwd_tile`, because it keeps every buffer of the backward
# on chip ($dK_j$, $dV_j$, $dQ_i$, $S_{ij}$ and $dP_{ij}$ in fp32). Real kernels keep the
# accumulators in registers and use larger $K$/$V$ tiles, and the re-read tiles are small and
# shared by the programs running at the same moment, so on a GPU they mostly come from the L2
# cache, while $N \times N$ tensors are far larger than L2 and really go to HBM (this chapter's
# Nsight Compute measurement above showed the same for the forward). Measured on a GPU, the
# fused pass wins clearly: FlashAttention's forward and backward moved 4.4 GB against standard
# attention's 40.3 GB (GPT-2 medium, $N = 1024$, $d = 64$, A100)
# {cite:p}`dao2022flashattention`.
#
# Recomputation also wins on **memory**: storing $P$ for 32 heads at $N = 16\text{k}$ in fp16
# takes {glue:text}`p_store_gib:.0f` GiB per sequence, which is why long-context training needs
# a backward that never stores it.

# %% [markdown]
# (ch4-kernel-walk)=
# ## The Triton kernel, line by line
#
# `v2_triton` is FlashAttention-2 as one forward and three backward Triton kernels ($D$, then
# $dK$/$dV$, then $dQ$) behind a
# `torch.autograd.Function`: any $N$, head dims 16 to 256, fp16 and bf16 on a GPU (fp32 too). Its
# forward is the reference above with the chip calls turned into loads and stores, plus four
# choices that change no result, only the speed. Here is the whole forward: the program
# (`_fwd_kernel`) and its inner loop over $K$/$V$ tiles (`_fwd_inner`), beside the reference.

# %%
show(region(v2_kernel, "v2-kernel", title="kernel: one program per Q tile"),
     region(v2_kernel, "v2-inner", title="kernel: the K/V loop (_fwd_inner)"),
     v2_reference_view)

# %% [markdown]
# **The program.** The launch grid is $(T_r, B \cdot H)$: `tl.program_id(0)` picks the $Q$ tile,
# `tl.program_id(1)` the head. $Q_i$ is loaded once; `acc`, `l_i`, `m_i` (the reference's `Oi`,
# `li`, `mi`) are registers that live until the end, so nothing but the final $O_i$ and $L_i$ is
# ever written; $L_i$ only when a backward will read it (`STORE_LSE` is a `tl.constexpr`, and a
# call made without gradients runs a build of the kernel without that store). The inner loop is
# the reference's `for j` loop with `tl.dot` for both products.
#
# **1. Base 2, with $\log_2 e$ folded into the scale.** The host passes
# `qk_scale = scale · log2(e)` and the kernel computes `exp2(s · qk_scale − m)`. Since
# $e^x = 2^{x \log_2 e}$ this is the same number, but a GPU's special-function unit computes
# $2^x$ natively: `exp` costs an extra multiply per score, and there are $N^2$ scores. $m_i$ is
# therefore kept in log-2 units, and the last line converts back: $L_i = (m_i + \log_2 \ell_i)
# \ln 2$. The unmasked loop takes the row max of the unscaled tile and scales only that
# (`tl.max(s, 1) * qk_scale`, legal because the scale is positive), so it makes no scaled copy
# of the tile; each score's scale and max-subtraction then fuse into one FMA feeding `exp2`.
#
# **2. Mask-free and masked loops.** `MASKED` is a `tl.constexpr`, so `_fwd_inner` is compiled
# twice: once with the bounds checks and the `tl.where`, once without. A full tile, far from the
# end of the sequence and from the diagonal, needs no mask, and FA2's paper counts such
# elementwise work as the "non-matmul FLOPs" that tensor cores cannot do. Without a causal mask:
# every full tile unmasked, then at most one partial tile masked.
#
# **3. The causal split.** With a causal mask, the tiles left of the diagonal are all visible
# (mask-free loop from 0 to `start_m`), the diagonal block is masked (`start_m` to
# `start_m + BLOCK_M`), and the tiles right of it are never visited: the loop bounds do the
# skipping, as the reference's `fully_masked` test does. The measured effect is below.
#
# **4. Longest rows first.** Under a causal mask, program $i$ visits $i + 1$ tiles, so programs
# differ in length by up to $T_r$ times. The GPU starts programs roughly in launch order;
# `pid_m = n_m − 1 − program_id(0)` launches the longest ones first, so the short ones fill in at
# the end instead of one long program running alone after the others are done. (Not measured on
# its own here.)
#
# Two recorded ablations from the same run of the benchmark harness
# ({glue:text}`abl_gpu`) put numbers on the loop structure. **Pipelining** (`num_stages`, the
# $K$/$V$ tiles in flight while the current one is used): at $d = 128$, $N = 16\text{k}$ the
# forward ran at {glue:text}`abl_stage1:.0f` TFLOP/s with one stage and
# {glue:text}`abl_stage3:.0f` with three. **Skipping causal tiles:** the causal forward took
# {glue:text}`abl_skip_lo:.2f`–{glue:text}`abl_skip_hi:.2f` times less time than the unmasked
# one from $N = 512$ to $16\text{k}$ ($d = 128$), approaching the 2 of perfect skipping as the
# diagonal's share of the tiles shrinks.

# %% tags=["hide-input"]
from flashedu.recorded.bench import causal_skip, stage_ladder
from flashedu.recorded.bench import latest as latest_bench
harness = latest_bench()
stages = stage_ladder(harness, D=128, N=16384, causal=False)
skip = list(causal_skip(harness, D=128)["v2_triton"].values())
glue("abl_gpu", harness["info"]["gpu"])
glue("abl_stage1", stages[1])
glue("abl_stage3", stages[3])
glue("abl_skip_lo", min(skip))
glue("abl_skip_hi", max(skip))

# %% [markdown]
# ### The backward kernels
#
# The reference's line 15 makes every $K$/$V$ program add into the same $dQ_i$ in HBM. A kernel
# has three ways out. FA2's own kernels use **atomic adds** into an fp32 $dQ$: correct, but each
# of the $T_r T_c$ tiles adds a $B_r \times d$ block that many programs contend for, the result
# depends on the order the adds land in (not bit-for-bit reproducible), and a cast pass turns the
# fp32 buffer into the output. `v2_triton` takes the second way: **separate $dK$/$dV$ and $dQ$
# kernels** (after a first, small kernel that computes $D$). One program
# per $K$/$V$ tile computes $dK_j$ and $dV_j$ (the reference's loop, without line 15); one program
# per $Q$ tile walks the $K$/$V$ tiles and computes $dQ_i$ alone. Each program owns its output,
# so there are no atomics and no zero-filled buffers, at the price of recomputing $S_{ij}$ and
# $dP_{ij}$ in the $dQ$ kernel: seven products per tile instead of five. In bytes it trades
# the fp32 round trips of $dQ_i$ for a second stream of $K$ and $V$ past every $Q$ tile: the
# "three passes" of the count above, fewer bytes than Algorithm 2 at every shape there. (The
# third way, storing $dS$ for a later $dQ = dS\,K$, brings back an $N \times N$ tensor.)

# %%
from flashedu.ops.v2 import kernel_bwd as v2_kernel_bwd
show(region(v2_kernel_bwd, "v2-bwd-dkdv",
            title="kernel 2: dK, dV (one program per K/V tile)"),
     region(v2_kernel_bwd, "v2-bwd-dq",
            title="kernel 3: dQ (one program per Q tile)"),
     v2_backward_view)

# %% [markdown]
# The $dK$/$dV$ kernel works on transposed tiles ($S^\top$, $P^\top$, $dS^\top$, with the
# $K$/$V$ rows first), so that $dV_j \mathrel{+}= P^\top dO$ and $dK_j \mathrel{+}= dS^\top Q$
# are plain `tl.dot`s accumulating into the same registers. Both kernels rebuild $P$ as
# `exp2(s · qk_scale − L · log2 e)`, the forward's base-2 trick, from the $L$ it stored; kernel 1
# (not shown) computes $D$.
#
# Run it forward and backward against fp64 on this machine:

# %%
N = rt.size(cpu=100, gpu=4096)
dtype = torch.float32 if rt.interpreted else torch.float16
q, k, v = random_qkv(B=1, H=2, N=N, D=64, dtype=dtype)
errors = check_against_fp64("v2_triton", q, k, v, causal=True,
                            fallback="v2_reference")

# %% [markdown]
# ## How fast, measured
#
# `flashedu/bench/tune_v2.py` timed the kernels on a GPU beside torch's own attention backends at the
# FlashAttention papers' shapes (fp16, hidden size 2048, $B \cdot N$ = 16k), median of
# `triton.testing.do_bench`. The buttons switch between forward, backward and both, head
# dimension and mask. These are recorded numbers, shown with the machine they came from:

# %%
from flashedu.recorded.bench import ratio, v2_tuning
from flashedu.viz.tflops import tflops_figure
bench = v2_tuning()
tflops_figure(bench).show()
cases = [(p, D, c) for p in ("fwd", "bwd") for D in (64, 128)
         for c in (False, True)]
vs_flash = {(p, D, c, N): ratio(bench, impl="v2_triton", peer="sdpa_flash",
                                pass_=p, D=D, causal=c, N=N)
            for p, D, c in cases for N in (2048, 4096, 8192, 16384)}
print("v2_triton speed over SDPA's flash backend, N = 2k…16k:")
for p, D, c in cases:
    vals = "  ".join(f"{vs_flash[(p, D, c, N)]:.2f}x"
                     for N in (2048, 4096, 8192, 16384))
    print(f"  {p:3s} D{D:<3d} {'causal' if c else 'full  '}  {vals}")

# %% tags=["hide-input"]
# Bookkeeping: values the text quotes, and checks that keep it true.
v1_vs_v2 = [ratio(bench, impl="v2_triton", peer="v1_triton",
                  pass_="fwd", D=D, causal=False, N=16384)
            for D in (64, 128)]
glue("bench_gpu", bench["info"]["gpu"])
glue("v2_fwd_min", min(v for (p, *_), v in vs_flash.items() if p == "fwd"))
glue("v2_bwd_min", min(v for (p, *_), v in vs_flash.items() if p == "bwd"))
glue("v1_v2_16k", min(v1_vs_v2))
# The prose below says cuDNN is faster in every case: keep that true to the data.
assert all(ratio(bench, impl="v2_triton", peer="sdpa_cudnn",
                 pass_=p, D=D, causal=c, N=N) < 1
           for p, D, c in cases for N in (2048, 4096, 8192, 16384))

# %% [markdown]
# On the {glue:text}`bench_gpu`, at $N \ge 2048$ the v2 kernel's forward pass is at least
# {glue:text}`v2_fwd_min:.2f` times as fast as torch's FlashAttention-2 backend and its backward
# pass at least {glue:text}`v2_bwd_min:.2f` times; cuDNN's attention, written for Hopper with the
# ideas of {ref}`chapter 6 <ch-flash-v3>`, is faster still.
#
# The lead over torch's backend is not an algorithmic win. Torch's flash backend is FA2's
# Ampere kernel, which issues Ampere's synchronous `mma.sync` even on Hopper; Triton compiles
# the same algorithm to Hopper's asynchronous `wgmma` ({ref}`chapter 6 <ch-flash-v3>`). On an
# A100, where both use `mma.sync`, there would be no such lead to expect.

# %% tags=["hide-input"]
# Bookkeeping: v2 beside the Triton tutorial (chapter 8's run), quoted below.
from flashedu.recorded import v2_speed as v2s
speed_run = recorded.latest("v2_speed")
peer_rows = v2s.peer_table(speed_run) if speed_run else []
if peer_rows:
    lo, hi = v2s.ratio_range(peer_rows, "v2_peer")
    glue("c4_peer_lo", lo)
    glue("c4_peer_hi", hi)
    glue("c4_peer_gpu", speed_run["provenance"]["gpu"])
    assert 0.9 < lo and hi < 1.1  # "level with"

# %% [markdown]
# So is v2 a good *Triton* kernel? Beside the Triton tutorial's fused attention, compiled by the
# same Triton and timed in one run on an {glue:text}`c4_peer_gpu`, v2's forward runs at
# {glue:text}`c4_peer_lo:.2f`–{glue:text}`c4_peer_hi:.2f` times its speed: level with it
# ({ref}`chapter 8 <ch-benchmarks>` has the table).

# %% [markdown]
# The v1 kernel, one program per head, is {glue:text}`v1_v2_16k:.0f` or more times slower than
# v2 at $N = 16384$, where the batch is 1 and 16 programs leave most of the SMs idle. Most of
# that is the parallelism section above, measured; the loop swap's own share is the $O$ round
# trips, and this v1 is a literal, serial Algorithm 1, not FA1's tuned kernel. FA2's paper
# measures FA2 about 2× (1.7–3.0×) faster than FA1's own kernel
# {cite:p}`dao2023flashattention2`.

# %% [markdown]
# Memory, measured the same way as in {ref}`chapter 1 <ch-standard>` (one forward and backward pass, 16 heads of
# $d = 128$, fp16): the v2 kernel keeps only $O$ and $L$ for the backward pass, so its peak grows
# linearly in $N$.

# %%
from flashedu.viz.peak_memory import memory_figure
mem = recorded.latest("memory")
memory_figure(mem, providers=("standard_torch", "sdpa_flash",
                              "v1_triton", "v2_triton")).show()

# %% tags=["hide-input"]
# Bookkeeping: values the text quotes, and checks that keep it true.
from flashedu.recorded.memory import peaks
peak = peaks(mem)
glue("mem_v2_vs_flash", peak[("v2_triton", 16384)] / peak[("sdpa_flash", 16384)])
glue("mem_v2_growth", peak[("v2_triton", 16384)] / peak[("v2_triton", 1024)])

# %% [markdown]
# From $N = 1024$ to $16384$ (16 times longer) the v2 kernel's peak grew
# {glue:text}`mem_v2_growth:.1f` times, and at $N = 16384$ it is {glue:text}`mem_v2_vs_flash:.2f`
# of torch's FlashAttention-2 backend's.

# %% [markdown]
# ## Summary
#
# - v2 swaps v1's loops: $Q$ blocks outside, $K$/$V$ inside; $O$, $\ell$, $m$ stay on chip and
#   are written once; normalisation is delayed to the end; only $L = m + \log\ell$ is stored.
# - Its traffic is $Nd + 2T_rNd$ reads and $Nd + N$ writes, exactly the closed form.
# - One program per $Q$ block fills the GPU at small batch; with split-Q the warps exchange no
#   partial results.
# - Causal attention skips the tiles above the diagonal; the backward pass recomputes $P$ from
#   $L$, keeps $dK_j$, $dV_j$ on chip and accumulates $dQ$.
#
# ## Exercises
#
# **1.** Write `v2_traffic(N, d, Br, Bc)` returning v2's (reads, writes) in elements. Check it
# with `flashedu.exercises.check_v2_traffic(v2_traffic)`.
#
# **2.** Write `n_programs(algorithm, batch, heads, N, block_r)`: how many programs v1 and v2
# launch. Check it with `flashedu.exercises.check_programs(n_programs)`.
#
# **3.** With `occupancy`, find the smallest batch at which v1 keeps an H100's 132 SMs at least
# 90% busy with 16 heads.

# %% tags=["hide-cell"]
# Solutions (click to show).
import math
from flashedu.exercises import check_v2_traffic, check_programs

def v2_traffic(N, d, Br, Bc):
    Tr = N // Br
    return N * d + 2 * Tr * N * d, N * d + N

def n_programs(algorithm, batch, heads, N, block_r):
    return batch * heads * (1 if algorithm == "v1" else math.ceil(N / block_r))

assert check_v2_traffic(v2_traffic)
assert check_programs(n_programs)
batch = next(
    b for b in range(1, 200)
    if occupancy("v1", batch=b, heads=16, N=4096, gpu="H100").utilization >= 0.9)
print(f"v1 needs batch {batch} (×16 heads = {batch * 16} programs) "
      "to keep 90% of 132 SMs busy")
