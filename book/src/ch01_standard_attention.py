# %% [markdown]
# (ch-standard)=
# # Standard attention and the memory wall
#
# **You will learn**
# - the three steps of standard attention, and which of them write an $N \times N$ matrix to HBM;
# - FLOPs versus memory access cost (MAC), arithmetic intensity and the roofline: why standard
#   attention is limited by memory, not arithmetic;
# - how to call any attention implementation in `flashedu` (they are all called the same way);
# - what the unfused GPU version really does: three kernels, and the traffic between them.

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
# where the softmax normalises each row of $S$. The *standard* implementation
# (the baseline FlashAttention replaces {cite:p}`dao2022flashattention`) runs these as three separate steps, each reading its
# inputs from the GPU's large, slow memory (HBM) and writing its result back:
#
# 1. load $Q$, $K$ by blocks from HBM, compute $S = QK^\top$, **write $S$ to HBM**;
# 2. read $S$ from HBM, compute $P = \operatorname{softmax}(S)$, **write $P$ to HBM**;
# 3. load $P$ and $V$ by blocks from HBM, compute $O = PV$, write $O$ to HBM.
#
# $S$ and $P$ have $N^2$ entries each, while $Q$, $K$, $V$, $O$ have $Nd$: at $N = 4096$ and
# $d = 64$ each intermediate is $N/d$ = {glue:text}`ratio_n_d` times larger than an input.

# %% tags=["hide-input"]
glue("ratio_n_d", 4096 // 64)

# %% [markdown]
# ## Where the bytes go: SRAM, HBM and DRAM
#
# A GPU has a small, fast memory on the chip (SRAM: the shared memory of each streaming
# multiprocessor, SM) and a large, slower one beside it (HBM). The FlashAttention paper {cite:p}`dao2022flashattention` draws the
# hierarchy like this:

# %%
from flashedu import hardware
print(f"{'level':10s} {'bandwidth':>12s} {'capacity':>10s}   where")
for lvl in hardware.MEMORY_HIERARCHY:
    print(f"{lvl.name:10s} {lvl.bandwidth / 1e12:9.4g} TB/s "
          f"{lvl.capacity / 1e9:7.4g} GB   {lvl.where}")
print(f"(source: {hardware.MEMORY_HIERARCHY_SOURCE})")

# %% [markdown]
# Every arithmetic operation reads its operands from SRAM or registers; whatever does not fit
# there must travel to and from HBM. Standard attention cannot keep an $N \times N$ matrix on
# chip, so $S$ and $P$ make the trip.
#
# ## FLOPs and memory access cost
#
# Two numbers describe a kernel: the floating-point operations it does (FLOPs) and the bytes it
# moves between HBM and the chip (memory access cost, MAC). Their ratio, the **arithmetic
# intensity** (FLOPs per byte), decides which one limits its speed: a GPU that does $F$ FLOP/s
# and moves $W$ bytes/s needs at least $\max(\text{FLOPs}/F,\ \text{bytes}/W)$. Below the *ridge
# point* $F/W$ a kernel is **memory-bound**: the arithmetic units wait for data.
#
# flashedu does not estimate the bytes: its reference algorithms are written against a model of
# the chip (HBM plus an SRAM of fixed size) that counts every tile loaded and stored while the
# algorithm runs. Here is one head at $N = 4096$, $d = 64$, fp16, on an SRAM the size of an H100's:

# %%
from flashedu.iomodel import simulate
from flashedu.iomodel.steps import standard_steps

import textwrap
report = simulate("standard", N=4096, d=64, dtype=torch.float16)
print(textwrap.fill(report.summary(), 78))

# %% tags=["hide-input"]
# Bookkeeping: values the text quotes, and checks that keep it true.
inter = sum(report.per_tensor[n].read_bytes + report.per_tensor[n].write_bytes
            for n in ("S", "P"))
glue("std_total_mib", report.total_bytes / 2**20)
glue("std_sp_share", 100 * inter / report.total_bytes)

# %% [markdown]
# Of the {glue:text}`std_total_mib:.0f` MiB that move, {glue:text}`std_sp_share:.0f`% are $S$ and
# $P$ going out to HBM and coming back. (Steps 1 and 3 also re-read $K$ and $V$ once per tile of
# $Q$ rows; the model counts that too.) Place each step on the roofline of an H100: the two matrix
# products sit well up the memory-bound slope (at $d = 64$ still below the ridge), and the
# softmax, a handful of operations per score for four bytes moved, sits far down it.

# %%
from flashedu.viz.roofline import roofline_figure
steps = standard_steps(report)
for s in steps:
    r = hardware.predict(s.flops, s.bytes, "H100")
    print(f"{s.name:15s} {s.intensity:7.2f} FLOP/B  {r.bound}-bound  "
          f"predicted {r.time_s * 1e6:6.1f} µs")
roofline_figure([(s.name, s.flops, s.bytes) for s in steps], "H100").show()

# %% tags=["hide-input"]
# Bookkeeping: values the text quotes, and checks that keep it true.
times = [hardware.predict(s.flops, s.bytes, "H100") for s in steps]
glue("softmax_share", 100 * times[1].time_s / sum(t.time_s for t in times))
glue("softmax_flop_share", 100 * steps[1].flops / sum(s.flops for s in steps))
glue("matmul_intensity", steps[0].intensity)
glue("ridge_h100", hardware.gpu("H100").ridge_point())

# %% [markdown]
# On this model the softmax does {glue:text}`softmax_flop_share:.1f`% of the FLOPs yet takes {glue:text}`softmax_share:.0f`%
# of the predicted time. Even the matrix products, at {glue:text}`matmul_intensity:.0f` FLOP/B
# against a ridge of {glue:text}`ridge_h100:.0f`, wait on memory: all three steps are
# memory-bound. Fusing the three steps, so that $S$ and $P$ never leave the chip, is the
# whole idea of FlashAttention (chapters 3 and 4).
#
# ## Watching the traffic
#
# Press **Play**. The grid is the $N \times N$ score matrix in tiles of the model's block size;
# each frame is one step of the recording: kernel 1 computing $S$ tile by tile and writing each
# tile to HBM (green), the softmax reading rows of $S$ back (purple) and writing $P$ (green),
# then $O = PV$ reading every tile of $P$ back (purple). The strips show which tiles of $Q$, $K$,
# $V$ and $O$ sit in SRAM, and the bars the HBM bytes so far ($N = 512$, $d = 64$, fp16).
#
# **Predict first.** When the pass is over, what share of the bytes written to HBM are $S$ and
# $P$? ($O$ is $N \times d$; $S$ and $P$ are $N \times N$ each.)
#
# :::{dropdown} Answer
# {glue:text}`ch1_sp_write_share:.1f`%. $S$ and $P$ are $2N^2$ elements, $O$ is $Nd$: at
# $N = 512$ and $d = 64$ that is $2N/d$ = {glue:text}`ch1_sp_over_o:.0f` elements of $S$ and $P$
# for every element of the output. Watch the "written" bar grow while $O$ is still empty.
# :::

# %%
from flashedu.viz import tile_schedule
std_512 = simulate("standard", N=512, d=64)
tile_schedule(std_512).show()

# %% tags=["hide-input"]
# Bookkeeping: the answer above, from the recording.
written = {n: t.write_elements for n, t in std_512.per_tensor.items()}
glue("ch1_sp_write_share",
     100 * (written["S"] + written["P"]) / sum(written.values()))
glue("ch1_sp_over_o", (written["S"] + written["P"]) / written["O"])

# %% [markdown]
# ## The memory wall grows as $N^2$
#
# The same recording at growing $N$: the traffic of $S$ and $P$ grows as $N^2$; for one head
# its share of the total settles at {glue:text}`sp_share_16k:.0f`% ($N$ = 16384) with this model's
# tiles, because the re-reads of $K$ and $V$ (once per tile of $B_r$ query rows) grow as $N^2$
# too: $2N^2d/B_r$ elements against $4N^2$ for $S$ and $P$.

# %%
from flashedu.viz.growth import standard_growth_figure, standard_traffic_by_tensor
standard_growth_figure(d=64).show()

# %% tags=["hide-input"]
# Bookkeeping: values the text quotes, and checks that keep it true.
last = standard_traffic_by_tensor([16384], d=64)[0]
glue("sp_share_16k", 100 * last["intermediates"] / last["total"])

# %% [markdown]
# Traffic costs time; footprint costs memory. Training keeps $P$ for the backward pass, so the
# peak memory of a forward and backward pass grows as $N^2$ too. Measured on a real GPU (one
# forward + backward, 16 heads of $d = 128$, fp16), against torch's FlashAttention-2 backend,
# which never stores $P$:

# %%
from flashedu import recorded
from flashedu.viz.peak_memory import memory_figure
mem = recorded.latest("memory")
# On a GPU, measure the reader's own at small N and draw it beside the record.
live = None
if rt.compiled:
    from flashedu.bench.peak_memory import measure
    live = measure(("standard_torch", "sdpa_flash"), Ns=(1024, 2048, 4096))
memory_figure(mem, live=live,
              live_label=torch.cuda.get_device_name() if live else "",
              providers=("standard_torch", "sdpa_flash")).show()

# %% tags=["hide-input"]
# Bookkeeping: values the text quotes, and checks that keep it true.
from flashedu.recorded.memory import peaks
by = peaks(mem)
glue("mem_std_16k", by[("standard_torch", 16384)] / 2**30)
glue("mem_flash_16k", by[("sdpa_flash", 16384)] / 2**20)
glue("mem_gpu", mem["provenance"]["gpu"])

# %% [markdown]
# At $N = 16384$ the standard version peaked at {glue:text}`mem_std_16k:.1f` GiB above its
# inputs on the {glue:text}`mem_gpu`; the FlashAttention-2 backend at
# {glue:text}`mem_flash_16k:.0f` MiB, linear in $N$.
#
# ## Every implementation is called the same way
#
# `flashedu` keeps one registry of attention implementations. Each takes `q`, `k`, `v` shaped
# `[B, H, N, D]` (batch, heads, sequence, head dim), exactly like
# `torch.nn.functional.scaled_dot_product_attention`, and returns `o` of the same shape.

# %%
for impl in flashedu.registry():
    print(f"{impl.name:22s} ch.{impl.chapter}  {impl.backend:9s}  "
          f"{textwrap.shorten(impl.summary, 40)}")

# %% [markdown]
# (Each line is cut short here; `flashedu.get(name).summary` has the whole description.)
# The standard reference is the three steps above, tile by tile, written against the memory model
# (that is how the counts were recorded). Its GPU counterpart is three Triton kernels: a matrix
# product writing $S$, a row softmax writing $P$, a matrix product writing $O$. Here are the
# three launches beside the reference (its reading view: the lines that only tell the memory
# model what to count are left out). Each launch reads its inputs from HBM and writes its whole
# output back, $N \times N$ numbers for $S$ and for $P$; {ref}`chapter 2 <ch-online-softmax>`
# opens up a Triton kernel line by line.

# %%
from flashedu.listing import reference, region, show
from flashedu.ops.standard import kernel as std_kernel, reference as std_ref
show(region(std_kernel, "standard-launches", title="three kernels (host side)"),
     reference(std_ref, "standard-reference"))

# %% [markdown]
# On a GPU the kernels are compiled; without one they run under Triton's interpreter on the CPU,
# so the sizes are small.

# %%
N = rt.size(cpu=128, gpu=4096)
dtype = torch.float32 if rt.interpreted else torch.float16
q, k, v = random_qkv(B=1, H=2, N=N, D=64, dtype=dtype)

o_ref = flashedu.get("standard_reference").fn(q, k, v, causal=True)
o_tri, S, P = flashedu.ops.standard.kernel.standard_attention_triton(
    q, k, v, causal=True, return_intermediates=True)
err = (o_tri.float() - o_ref.float()).abs().max().item()
print(f"N = {N}, {dtype}, on {rt.device}: max |triton - reference| = {err:.1e}")

# %% tags=["hide-input"]
# Bookkeeping: values the text quotes, and checks that keep it true.
# fp32 rounding of two different summation orders; one build saw 4.9e-5
# (not reproduced since).
assert err < (1e-4 if dtype == torch.float32 else 2e-2)

# %% [markdown]
# The Triton version can return its intermediates, so we can look at what it stored in HBM. Each
# row of $P$ sums to one; with `causal=True` everything above the diagonal is zero.

# %%
import plotly.graph_objects as go

print(f"q, k, v together: {sum(t.nbytes for t in (q, k, v)) / 2**20:.2f} MiB;  "
      f"S and P together: {(S.nbytes + P.nbytes) / 2**20:.2f} MiB")
P_top = P[0, 0, :128, :128].float().cpu()
fig = go.Figure(go.Heatmap(z=P_top, colorscale="Viridis",
                           colorbar=dict(title="P[i, j]")))
fig.update_layout(title="The attention matrix P that standard attention writes "
                        "to HBM (first 128 rows)",
                  xaxis_title="key j", yaxis_title="query i", height=460, width=600,
                  xaxis=dict(constrain="domain"),
                  yaxis=dict(autorange="reversed", scaleanchor="x"))
fig.show()

# %% [markdown]
# ## Summary
#
# - Standard attention materialises two $N \times N$ matrices, $S$ and $P$, in HBM; they are
#   most of its memory traffic and, in training, most of its memory.
# - Arithmetic intensity places a kernel on the roofline; the softmax step is deep in the
#   memory-bound region, and at $d = 64$ even the matrix products sit below the ridge.
# - Every `flashedu` implementation is called as `fn(q, k, v, *, causal=False, scale=None)` on
#   `[B, H, N, D]` tensors, like torch's SDPA.
#
# ## Exercises
#
# **1.** Write `s_and_p_bytes(N, heads, itemsize)`: the bytes standard attention *writes* to HBM
# for $S$ and $P$ together, for one batch. Check it with
# `flashedu.exercises.check_s_and_p_bytes(s_and_p_bytes)`.
#
# **2.** Change `causal=True` to `causal=False` in the Triton cell. Which entries of `P` change,
# and does the traffic of standard attention change? (Compare `simulate("standard", ..., causal=True)`.)
#
# **3.** Using `hardware.predict`, find the smallest head dimension $d$ for which the step
# $S = QK^\top$ at $N = 4096$ becomes compute-bound on an H100.

# %% tags=["hide-cell"]
# Solutions (click to show).
from flashedu.exercises import check_s_and_p_bytes

def s_and_p_bytes(N, heads, itemsize):
    return 2 * N * N * heads * itemsize  # S and P, N×N each, written once

assert check_s_and_p_bytes(s_and_p_bytes)

# 2: the masked entries of P become 0, but standard attention still computes and
#    writes all of S and P: the recorded traffic is the same.
assert (simulate("standard", N=512, d=64, causal=True).total_bytes
        == simulate("standard", N=512, d=64).total_bytes)

# 3: the intensity of S = QKᵀ grows with d; search for the first compute-bound d.
for d in range(16, 1025, 16):
    st = standard_steps(simulate("standard", N=4096, d=d))[0]
    if hardware.predict(st.flops, st.bytes, "H100").bound == "compute":
        print(f"S = QKᵀ becomes compute-bound at d = {d}")
        break
