# %% [markdown]
# (ch-beyond-one-block)=
# # Beyond one program: split-KV decoding and ring attention
#
# **You will learn**
# - why FlashAttention-2 leaves a GPU idle when a model *decodes* (one new query against a long
#   K/V cache), and how split-KV ("flash-decoding" {cite:p}`dao2023flashdecoding`) fixes it by splitting the keys instead;
# - grouped-query attention {cite:p}`ainslie2023gqa`, and packing a group's query heads into one tile;
# - ring attention {cite:p}`liu2023ring`: a sequence too long for one GPU, sharded over several, K/V shards passed
#   around a ring, run here for real in several processes;
# - why causal attention unbalances the ring, and the zig-zag and striped fixes;
# - when the ring's transfers hide under its compute.
#
# Both rest on {ref}`chapter 2 <ch-online-softmax>`'s merge $\oplus$ of softmax states: it does not care *where* two
# partial states were computed, in one program, in two programs, or on two GPUs.

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
# ## Decoding: one query, a long cache
#
# A language model writes one token at a time. Each new token's query attends to the keys and
# values of every token before it, kept in a K/V cache: the query has **one row**, the cache
# thousands. FlashAttention-2 launches one program per ($Q$ block, head) ({ref}`ch-flash-v2`):
# with one row there is one $Q$ block, so a batch of one with 32 heads runs 32 programs, and
# each walks the whole cache alone.

# %%
from flashedu.iomodel.parallel import occupancy
from flashedu.hardware import gpu
h100 = gpu("H100")
occ = occupancy("v2", batch=1, heads=32, N=1, gpu="H100")
print(f"v2 decoding, batch 1, 32 heads: {occ.programs} programs on {h100.sms} SMs, "
      f"{100 * occ.utilization:.0f}% of the SMs busy")
heads, kv_heads = 32, 8

# %% tags=["hide-input"]
# Bookkeeping: values the text quotes, and checks that keep it true.
# Decoding does 4·N_k·d FLOPs per head and reads K and V once:
# 2·N_k·d·2 bytes per K/V head.
intensity = (4 * heads) / (2 * 2 * kv_heads)
glue("dec_busy", 100 * occ.utilization)
glue("dec_programs", occ.programs)
glue("dec_intensity", intensity)
glue("dec_ridge", h100.ridge_point())

# %% [markdown]
# Only {glue:text}`dec_busy:.0f`% of the SMs have work. Worse, decoding is **memory-bound**: each
# cached key is used by a handful of queries only, {glue:text}`dec_intensity:.0f` FLOPs per byte
# here (32 query heads sharing 8 K/V heads), against the H100's ridge point of
# {glue:text}`dec_ridge:.0f` (vendor datasheet figures, {ref}`chapter 1 <ch-standard>`). Its speed is how fast the
# cache can be read, and one SM alone reads only a small slice of HBM's bandwidth: the idle SMs
# are idle *bandwidth*.
#
# ## Split the keys
#
# Split-KV also splits the *keys* into $n_s$ ranges. One program per (head, split) computes the
# softmax state $(m_s, \ell_s, o_s)$ of the query against its range and stores it; a second,
# small kernel merges the $n_s$ states of each row with $\oplus$ and divides once:
#
# $$
# m = \max_s m_s, \qquad \ell = \sum_s e^{m_s - m}\,\ell_s, \qquad
# O = \frac{1}{\ell}\sum_s e^{m_s - m}\, o_s .
# $$
#
# The reference runs both passes through the memory model. Its splits fall on whole tiles, and
# their number follows the flash-attn library's flash-decoding heuristic
# {cite:p}`dao2023flashdecoding`: split until the programs nearly fill the GPU. "Nearly" is
# stricter here than there (the last wave at least {glue:text}`wave_fill_pct:.0f`% as full as
# the best split count's, not {glue:text}`wave_fill_fa_pct:.0f`%): on an H200 the count that
# kept every SM streaming was the faster one.

# %%
from flashedu.ops.split_kv.plan import num_splits_heuristic, split_ranges
S = num_splits_heuristic(programs=1 * kv_heads, n_blocks=32768 // 128, sms=h100.sms)
print(f"batch 1, {kv_heads} K/V heads, 32k keys in tiles of 128: "
      f"{S} splits, {S * kv_heads} programs")
print("first splits:", split_ranges(32768, S, 128)[:3], "...")

# %% tags=["hide-input"]
# Bookkeeping: values the text quotes, and checks that keep it true.
glue("dec_splits", S)
from flashedu.ops.split_kv.plan import WAVE_FILL, FLASH_ATTN_WAVE_FILL
glue("wave_fill_pct", 100 * WAVE_FILL)
glue("wave_fill_fa_pct", 100 * FLASH_ATTN_WAVE_FILL)
glue("dec_split_programs", S * kv_heads)

# %% [markdown]
# With {glue:text}`dec_splits` splits, {glue:text}`dec_split_programs` programs share the work.
#
# **Grouped-query attention.** Modern models let several query heads share one K/V head
# ($H_{kv} < H$), which shrinks the cache. flashedu's split-KV takes k and v shaped
# $[B, H_{kv}, N_k, d]$ and packs the $G = H / H_{kv}$ query rows of a group into the rows of one
# tile, so each K/V tile is loaded once for the whole group. Against fp64 attention:

# %%
from flashedu.ops.split_kv import split_kv_attention, simulate_split_kv
# q: [B, H, 1, d], one new token; k, v: [B, H_kv, N_k, d]
q = torch.randn(2, 8, 1, 64, dtype=torch.float64)
k, v = (torch.randn(2, 2, 1000, 64, dtype=torch.float64) for _ in range(2))
o, report = split_kv_attention(q, k, v, num_splits=6, return_report=True)
exact = torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True)
import textwrap
print(f"max |split-KV - SDPA| = {(o - exact).abs().max().item():.1e}")
print(textwrap.fill(report.summary(), 78))

# %% tags=["hide-input"]
# Bookkeeping: values the text quotes, and checks that keep it true.
glue("dec_ref_err", (o - exact).abs().max().item())

# %% [markdown]
# The error is {glue:text}`dec_ref_err:.0e`: merging by $\oplus$ is exact. What the splits cost
# in traffic: each split writes its state in fp32 and the merge reads it back. Packing the group
# saves far more than that, against running each query head on its own (the K/V cache read $G$
# times):

# %%
shape = dict(N_k=32768, d=128, heads=32, batch=1)
packed = simulate_split_kv(kv_heads=8, **shape)
# the same cache, one K/V head per query head
unpacked = simulate_split_kv(kv_heads=32, **shape)
kv_bytes = sum(packed.per_tensor[n].read_bytes for n in ("K", "V"))
split_bytes = sum(packed.per_tensor[n].write_bytes + packed.per_tensor[n].read_bytes
                  for n in ("O_split", "m_split", "l_split"))
print(f"K/V read {kv_bytes / 2**20:.1f} MiB; "
      f"partial states written and read back {split_bytes / 2**20:.2f} MiB")
print(f"total traffic, packed groups {packed.total_bytes / 2**20:.1f} MiB "
      f"vs one K/V head per query head {unpacked.total_bytes / 2**20:.1f} MiB")

# %% tags=["hide-input"]
# Bookkeeping: values the text quotes, and checks that keep it true.
glue("dec_split_overhead", 100 * split_bytes / kv_bytes)
glue("dec_gqa_saving", unpacked.total_bytes / packed.total_bytes)

# %% [markdown]
# The partial states add {glue:text}`dec_split_overhead:.1f`% to the K/V traffic; a cache with
# a K/V head per query head moves {glue:text}`dec_gqa_saving:.1f` times as much.
#
# **Predict first.** One token, 32 query heads, 32k cached keys, an H100. FA2 runs one program
# per (batch, query head), each reading its head's whole cache. How many SMs have work?
#
# :::{dropdown} Answer
# {glue:text}`ch7_fa2_programs` of {glue:text}`ch7_sms`: one per head. The other
# {glue:text}`ch7_idle` wait while each busy SM reads {glue:text}`ch7_tiles` tiles one after
# another. Split-KV cuts each head's cache into slices so that every SM reads one.
# :::
#
# Press **Play**: the SMs of an H100 while one token is decoded against 32k cached keys. FA2's
# programs read their whole cache one tile after another while the other SMs wait; split-KV's
# programs each read a slice, then merge (time in tiles read per program; the merge is drawn as
# one tile's time).

# %%
from flashedu.viz.decode import decode_figure, split_weights_figure
decode_figure(batch=1, heads=32, kv_heads=8, N_k=32768, gpu="H100").show()

# %% tags=["hide-input"]
# Bookkeeping: the answer above (the figure's own counts: 128-key tiles).
from flashedu.hardware import gpu as gpu_preset
sms_h100 = gpu_preset("H100").sms
glue("ch7_fa2_programs", 1 * 32)
glue("ch7_sms", sms_h100)
glue("ch7_idle", sms_h100 - 32)
glue("ch7_tiles", 32768 // 128)

# %% [markdown]
# How the merge weighs the splits: for one query row, each split's running max $m_s$ and its
# share $e^{m_s - m}\ell_s/\ell$ of the final softmax. The split holding a key close to the query
# dominates; the others still count.

# %%
split_weights_figure(N_k=4096, num_splits=8).show()

# %% [markdown]
# ## The Triton kernels
#
# `split_kv_triton` is two passes: pass 1, one program per (packed $Q$ block, split, batch
# × K/V head), stores fp32 states $[n_s, B, H, N, \cdot]$; pass 2, one program per query row,
# merges them. Pass 2 is {ref}`chapter 2 <ch-online-softmax>`'s $\oplus$ over all the splits at
# once (the first tab), beside $\oplus$ of two states in PyTorch; pass 1 is v2's loop over one
# split's keys, ending with a store of the unnormalised state instead of a division. (Here
# they are two kernels; the host side, below, is why pass 2 can also run inside pass 1's
# launch.)

# %%
from flashedu.listing import region, show
from flashedu.ops.split_kv import kernel as skv_kernel
from flashedu.softmax import state as softmax_state
show(region(skv_kernel, "split-kv-merge",
            title="pass 2: merge the splits (Triton)"),
     region(softmax_state.merge, title="⊕ of two states (PyTorch, ch. 2)"),
     region(skv_kernel, "split-kv-split", title="pass 1: one split (Triton)"))

# %% [markdown]
# Because $\oplus$ is associative, the merge does not fold the splits one at a time: with
# $m = \max_s m_s$ and weights $w_s = e^{m_s - m}$, the merged state is
# $\ell = \sum_s w_s \ell_s$ and $o = \sum_s w_s o_s$, one `tl.max` and two `tl.sum`s over the
# block of splits. An empty split ($m_s = -\infty$, for a causal query) gets weight 0. On this
# machine (the interpreter runs it on the CPU at a small size):

# %%
from flashedu.ops.split_kv import split_kv_partials, merge_partials
from flashedu.softmax.state import State, finalize, merge_all
dtype = torch.float32 if rt.interpreted else torch.float16
n_k = rt.size(cpu=300, gpu=65536)
q = torch.randn(2, 8, 1, 64).to(rt.device, dtype)
k, v = (torch.randn(2, 2, n_k, 64).to(rt.device, dtype) for _ in range(2))
reason = flashedu.get("split_kv_triton").why_not(device=rt.device, dtype=dtype,
                                                 head_dim=64)
# a GPU older than the kernel (a T4): the reference above did the same arithmetic
if reason:
    print(f"split_kv_triton cannot run here: {reason}")
else:
    state, ranges = split_kv_partials(q, k, v)
    o = merge_partials(state, dtype=dtype)
    exact = torch.nn.functional.scaled_dot_product_attention(
        q.double().cpu(), k.double().cpu(), v.double().cpu(), enable_gqa=True)
    # ⊕ is commutative and associative: merge the kernel's partial states in
    # reverse, in Python.
    parts = [State(state.m[s], state.l[s], state.o[s])
             for s in reversed(range(len(ranges)))]
    again = finalize(merge_all(parts)).to(dtype)
    print(f"{len(ranges)} splits over {n_k} keys; "
          f"max error {(o.double().cpu() - exact).abs().max().item():.1e}")
    print("reversed Python merge vs kernel merge: "
          f"{(again - o).abs().max().item():.1e}")

# %% [markdown]
# ### Measured on a GPU
#
# `flashedu/bench/decode.py` times decoding on a GPU at fp16, $d = 128$, 64 query heads sharing 8
# K/V heads, batch 1–16 and 4k–128k cached keys: split-KV (with its heuristic, and with one split),
# SDPA with `enable_gqa`, and SDPA's flash backend and {ref}`chapter 4 <ch-flash-v2>`'s v2 kernel on a K/V cache
# expanded to 64 heads. Decoding is memory-bound, so the measure is GB/s of cache read, in the
# GPU's own time (calls replayed from a CUDA graph; what an eager call adds comes after).

# %% tags=["hide-input"]
from flashedu import recorded
from flashedu.recorded import decode as decode_reader
from flashedu.viz.decode import measured_decode_figure
decode = recorded.latest("decode")
if decode:
    measured_decode_figure(decode).show()
    dm = decode_reader.summary(decode)
    glue("dec_gpu", dm["gpu"])
    glue("dec_date", dm["date"])
    glue("dec_meas_Nk_k", dm["N_k"] // 1024)
    glue("dec_meas_splits", dm["splits"])
    glue("dec_fa_splits", dm["fa_splits"])
    glue("dec_fa_programs", dm["fa_programs"])
    glue("dec_our_programs", dm["programs"])
    glue("dec_sms", dm["sms"])
    # "flash-attn's rule would stop at fewer splits, SMs idle": keep it true
    assert dm["fa_splits"] < dm["splits"] and dm["programs"] <= dm["sms"]
    glue("dec_meas_split_TBps", dm["split_GBps"] / 1e3)
    glue("dec_meas_one_GBps", dm["one_split_GBps"])
    glue("dec_meas_v2_GBps", dm["v2_GBps"])
    glue("dec_meas_speedup", dm["split_speedup"])
    glue("dec_hbm_TBps", dm["hbm_GBps"] / 1e3)
    glue("dec_meas_split_hbm", 100 * dm["split_hbm"])
    glue("dec_meas_sdpa_TBps", dm["sdpa_GBps"] / 1e3)
    glue("dec_meas_sdpa_hbm", 100 * dm["sdpa_hbm"])
    glue("dec_meas_sdpa_over_split", dm["sdpa_over_split"])
    glue("dec_meas_B_small", dm["B_small"])
    glue("dec_meas_B_big", dm["B_big"])
    glue("dec_meas_big_splits", dm["big_splits"])
    glue("dec_meas_big_split_hbm", 100 * dm["big_split_hbm"])
    glue("dec_meas_big_sdpa_hbm", 100 * dm["big_sdpa_hbm"])
    glue("dec_meas_small_k", dm["small_N_k"] // 1024)
    glue("dec_meas_small_split_us", 1e3 * dm["small_split_ms"])
    glue("dec_meas_small_one_us", 1e3 * dm["small_one_split_ms"])
    glue("dec_meas_small_eager_us", 1e3 * dm["small_split_eager_ms"])
    glue("dec_meas_err", dm["max_err"])
    # "the last step to SDPA's speed": level with it at the longest cache, batch 1
    assert dm["sdpa_over_split"] < 1.05
else:
    print("No GPU measurement of decoding is recorded "
          "(flashedu/recorded/data/decode/): "
          "run python -m flashedu.bench.decode on a GPU.")

# %% [markdown]
# Measured on an {glue:text}`dec_gpu` on {glue:text}`dec_date` (every output within
# {glue:text}`dec_meas_err:.0e` of fp32 attention). At batch {glue:text}`dec_meas_B_small` and
# {glue:text}`dec_meas_Nk_k`k cached keys the heuristic cut the cache into
# {glue:text}`dec_meas_splits` splits, and split-KV read it at
# {glue:text}`dec_meas_split_TBps:.1f` TB/s. The same kernel with one split, one program per K/V
# head walking the whole cache as FA2's programs do, read {glue:text}`dec_meas_one_GBps:.0f` GB/s
# (v2 itself, on the expanded cache: {glue:text}`dec_meas_v2_GBps:.0f` GB/s). **The splits bought
# a factor of {glue:text}`dec_meas_speedup:.1f`**, and reached
# {glue:text}`dec_meas_split_hbm:.0f`% of the datasheet HBM bandwidth,
# {glue:text}`dec_hbm_TBps:.1f` TB/s.
#
# torch's own SDPA with `enable_gqa` read the same cache at
# {glue:text}`dec_meas_sdpa_TBps:.1f` TB/s ({glue:text}`dec_meas_sdpa_hbm:.0f`% of HBM): split-KV
# took {glue:text}`dec_meas_sdpa_over_split:.2f` times SDPA's time. The splits are what take
# decoding from a few percent of the bandwidth to most of it. The last steps to SDPA's speed
# were the key tile and the split count. A decode step is memory-bound: doubling the keys of a
# tile (three stages deep, where shared memory holds them) doubles the bytes each SM has in
# flight, and {glue:text}`dec_meas_splits` splits make {glue:text}`dec_our_programs` programs
# for the {glue:text}`dec_sms` SMs, where flash-attn's rule would stop at
# {glue:text}`dec_fa_splits` ({glue:text}`dec_fa_programs` programs) and leave SMs that could
# stream the cache idle.
#
# At batch {glue:text}`dec_meas_B_big` the batch alone gives enough programs, and the heuristic
# chose {glue:text}`dec_meas_big_splits` split: split-KV then read the cache at
# {glue:text}`dec_meas_big_split_hbm:.0f`% of HBM's bandwidth, SDPA at
# {glue:text}`dec_meas_big_sdpa_hbm:.0f`%. Even a short cache is worth splitting on the GPU: at
# batch {glue:text}`dec_meas_B_small` and {glue:text}`dec_meas_small_k`k keys the splits took
# {glue:text}`dec_meas_small_split_us:.0f` µs of GPU time against
# {glue:text}`dec_meas_small_one_us:.0f` µs for one split (both replayed from a CUDA graph, so
# no host time is in them). An eager call took {glue:text}`dec_meas_small_eager_us:.0f` µs: at
# that size the time goes to the host, the subject of the next subsection. (At batch {glue:text}`dec_meas_B_big`
# the lines of the expanded cache stop early: a copy of a longer cache with one K/V head per
# query head was too large to make.)

# %% [markdown]
# ### The host side of a decode step
#
# A decode step is short on the GPU: reading an 8k-token cache takes microseconds. The Python
# that launches it is not. Each call of a Triton kernel, `kernel[grid](...)`, binds the
# arguments to the signature, works out how each integer and pointer specialises the kernel
# (is it 1? divisible by 16?), hashes that into a key, looks the compiled kernel up, evaluates
# the grid, and only then calls the launcher. For one call shape the answers never change, so
# flashedu asks once and keeps the compiled kernel bound to them
# (`flashedu/ops/_bound.py`); every later call with that shape is this, plus the allocation of
# the output. Two more things came off the host side. A call whose shapes, strides, dtypes
# and devices equal those of a call already checked skips the checks (they would pass again;
# only the scale is looked at). And the launcher gets addresses, not tensors: handed a tensor,
# it asks the driver where that memory lives, pointer by pointer, on every call.

# %%
from flashedu.ops import _bound
show(region(_bound, "bound-call", title="a bound launch"))

# %% [markdown]
# Binding leaves one cost that no amount of Python trimming removes: split-KV is two launches,
# and the second pays the host again while the GPU, done with pass 1, waits for it. So pass 2
# can run inside pass 1's launch. Each program, once its state is stored, takes a ticket from
# an atomic counter of its row block; the program that draws the last ticket knows every other
# split's state is in memory, and merges them all. It first finds the merged maximum $m$, then
# adds $e^{m_s - m}\,o_s$ a few splits at a time: with $m$ known no term waits for another, so
# their loads from L2 are in flight together. Last, it sets the counter back to zero for the
# next launch. (With one split there is nothing to merge: the program writes $o$ itself.)

# %%
show(region(skv_kernel, "split-kv-last",
            title="pass 2 inside pass 1's launch: the last split merges (Triton)"))

# %% [markdown]
# `python -m flashedu.bench.host` measures the CPU time of one call (the GPU held busy, so
# calls only queue work) beside the GPU's time for it (replayed from a CUDA graph, no host in
# it), the time of an eager call (`eager`, do_bench's, which flushes the L2 cache between
# calls) and a step of a loop of {glue:text}`host_loop_calls` calls back to back (`loop`:
# what a decode loop sees, the longer of host and GPU time). flashedu's kernels run bound
# (`bound`), bound but handing the launcher tensors (`tensors`), and through Triton's own
# path (`triton`), beside torch SDPA.
# `v2_triton_lse` is the forward that also stores L and checks its inputs on every call, as
# every forward did before the steps above; `split_kv_1launch` and `split_kv_2launch` force
# the merge into the split launch or into a second kernel:

# %%
from flashedu.recorded import host as host_reader
host_run = recorded.latest("host")
if host_run:
    print(host_reader.table_text(host_run))
else:
    print("No host-time run is recorded (flashedu/recorded/data/host/): "
          "run python -m flashedu.bench.host on a GPU.")

# %% tags=["hide-input"]
# Bookkeeping: values the text quotes, and checks that keep it true.
from flashedu.bench.host import LOOP_CALLS
glue("one_launch_mib", skv_kernel.ONE_LAUNCH_MAX_BYTES // 2**20)
glue("host_loop_calls", LOOP_CALLS)
if host_run:
    hs = host_reader.summary(host_run)
    glue("host_gpu", hs["host_gpu"])
    glue("host_date", hs["host_date"])
    glue("host_triton_us", hs["host_triton_us"])
    glue("host_bound_us", hs["host_bound_us"])
    glue("host_sdpa_us", hs["host_sdpa_us"])
    glue("host_lse_us", hs["host_lse_us"])
    glue("host_grad_bound_us", hs["host_grad_bound_us"])
    glue("host_grad_sdpa_us", hs["host_grad_sdpa_us"])
    glue("host_dec8_sdpa_us", hs["host_dec8_sdpa_us"])
    glue("host_dec8_1l_us", hs["host_dec8_1l_us"])
    glue("host_dec8_2l_us", hs["host_dec8_2l_us"])
    glue("gpu_dec8_1l_us", hs["gpu_dec8_1l_us"])
    glue("gpu_dec8_2l_us", hs["gpu_dec8_2l_us"])
    glue("loop_dec8_us", hs["loop_dec8_us"])
    glue("loop_dec8_sdpa_us", hs["loop_dec8_sdpa_us"])
    glue("loop_dec8_2l_us", hs["loop_dec8_2l_us"])
    glue("lx_dec8", hs["lx_dec8"])
    glue("lx_dec32", hs["lx_dec32"])
    glue("hx_dec8_gpu", hs["hx_dec8_gpu"])
    # the prose: binding cuts a forward's host time by more than half, skipping
    # the checks and L cut it further; one launch nearly halves a decode step's
    # host time and costs GPU time; in a loop the default is within 1.5x of SDPA
    # at 8k keys (two launches forced are slower) and level with it at 32k
    assert hs["host_bound_us"] < 0.5 * hs["host_triton_us"]
    assert hs["host_bound_us"] < hs["host_lse_us"]
    assert hs["host_dec8_1l_us"] < 0.6 * hs["host_dec8_2l_us"]
    assert hs["gpu_dec8_1l_us"] > hs["gpu_dec8_2l_us"]
    assert hs["lx_dec8"] < 1.5 and hs["loop_dec8_2l_us"] > 1.3 * hs["loop_dec8_us"]
    assert 0.95 < hs["lx_dec32"] < 1.05
    assert hs["hx_dec8_gpu"] < 1.3  # "about as long on the GPU"

# %% [markdown]
# Measured on an {glue:text}`host_gpu` ({glue:text}`host_date`): a forward call's host time
# went from {glue:text}`host_triton_us:.0f` µs through Triton's path to
# {glue:text}`host_bound_us:.0f` µs bound ({glue:text}`host_lse_us:.0f` µs for the bound
# forward that checks its inputs and stores L); SDPA's, a C++ path with no Python in it, was
# {glue:text}`host_sdpa_us:.0f` µs. A forward whose inputs need gradients pays for autograd's
# bookkeeping on top: {glue:text}`host_grad_bound_us:.0f` µs against SDPA's
# {glue:text}`host_grad_sdpa_us:.0f`. (Host times are medians of single calls; they move from
# run to run with the machine's CPU, SDPA's with them.)
#
# At 8k cached keys the second launch was half of a decode step's host time: two launches
# took {glue:text}`host_dec8_2l_us:.0f` µs, one {glue:text}`host_dec8_1l_us:.0f`, SDPA
# {glue:text}`host_dec8_sdpa_us:.0f`. One launch has a price on the GPU: one program per row
# block merges every split after the last one lands, where the second kernel spreads the same
# work over a program per row, so the GPU took {glue:text}`gpu_dec8_1l_us:.0f` µs instead of
# {glue:text}`gpu_dec8_2l_us:.0f`. Which matters depends on which side is longer, so
# `split_kv_triton` chooses per call: one launch for an eager call on a cache of at most
# {glue:text}`one_launch_mib` MiB, two for longer caches and for calls captured into a CUDA
# graph (a graph replays no host time). In a loop, the default's step at 8k keys took
# {glue:text}`loop_dec8_us:.0f` µs against SDPA's {glue:text}`loop_dec8_sdpa_us:.0f`
# ({glue:text}`lx_dec8:.2f` times; with two launches forced,
# {glue:text}`loop_dec8_2l_us:.0f` µs), and at 32k keys, where the GPU's time is the longer,
# {glue:text}`lx_dec32:.2f` times SDPA's. The `eager` column is the noisy one: do_bench's cache
# flush between calls hides whatever host time is shorter than the flush. A model that decodes
# token after token removes the host from the step by capturing it in a CUDA graph, where
# split-KV took {glue:text}`hx_dec8_gpu:.2f` times SDPA's time at 8k keys.

# %% [markdown]
# ## Ring attention
#
# Now the opposite problem: one sequence so long that its attention does not fit one GPU, in
# memory or in time. Split it over $n_p$ processes (GPUs). Each keeps its shard of the queries;
# the K/V shards **travel around a ring**: at every step each rank sends the shard it holds to
# the next rank, receives one from the previous, and folds the state of its queries against the
# shard in hand into its running $(m, \ell, o)$ with $\oplus$. After $n_p$ steps every query has
# met every key, and no rank ever held more than two K/V shards.
#
# First the ring with nothing but labels, in four real processes talking through
# `torch.distributed` (the gloo backend, on this CPU): each starts with its own rank number and
# passes what it holds on.

# %%
from flashedu.ops.ring import run_processes, ring_attention_processes
from flashedu.ops.ring.tasks import pass_around_task
for rank, seen in enumerate(run_processes(pass_around_task, 4)):
    print(f"rank {rank} held the shards of ranks {seen}")

# %% [markdown]
# Rank $r$ holds rank $(r - t) \bmod n_p$'s shard at step $t$. Now real attention: four processes,
# each given its shard of $Q$, $K$, $V$ (causal, zig-zag layout, explained below), and the output
# rows put back together:

# %%
import time
q, k, v = random_qkv(B=1, H=4, N=256, D=32, device="cpu", dtype=torch.float64)
t0 = time.perf_counter()
ring = ring_attention_processes(q, k, v, world_size=4, causal=True, layout="zigzag")
seconds = time.perf_counter() - t0
exact = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
err = (ring["o"] - exact).abs().max().item()
steps = ring["ranks"][1]["stats"]
print(f"4 processes, {seconds:.1f} s in all; max |ring - one process| = {err:.1e}")
for t, s in enumerate(steps):
    print(f"rank 1, step {t}: holds rank {s['holder']}'s shard, "
          f"sends {s['sent_bytes']:,} B")

# %% tags=["hide-input"]
# Bookkeeping: values the text quotes, and checks that keep it true.
glue("ring_err", err)
glue("ring_seconds", seconds)

# %% [markdown]
# The ring agrees with one-process attention to {glue:text}`ring_err:.0e` (fp64), and took
# {glue:text}`ring_seconds:.1f` s, starting the processes included. Each step sends the next
# shard *before* computing on the current one, so the transfer and the compute overlap. The
# backward pass runs the ring once more: $K$, $V$ travel with their gradients $dK$, $dV$, which
# collect each rank's contribution and make one extra hop home at the end:

# %%
do = torch.randn_like(q)
ring = ring_attention_processes(q, k, v, world_size=3, causal=True,
                                layout="striped", do=do)
leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
torch.nn.functional.scaled_dot_product_attention(
    *leaves, is_causal=True).backward(do)
grad_err = max((ring[f"d{n}"] - t.grad).abs().max().item()
               for n, t in zip("qkv", leaves))
print(f"3 processes: max gradient error {grad_err:.1e}")

# %% tags=["hide-input"]
# Bookkeeping: values the text quotes, and checks that keep it true.
glue("ring_grad_err", grad_err)

# %% [markdown]
# Gradients agree to {glue:text}`ring_grad_err:.0e`. For the registry, `ring_reference` simulates
# the ranks with a loop in one process (the same shards, visiting order and $\oplus$), so it can
# be called like every other implementation.
#
# ### Causal attention unbalances the ring
#
# Give rank $r$ the $r$-th contiguous slice of the sequence, and let the ring run with a causal
# mask.
#
# **Predict first.** With four ranks, at how many of the four steps does rank 0 have work, and
# the last rank? Every step lasts as long as its busiest rank: what does that cost?
#
# :::{dropdown} Answer
# Rank 0 at {glue:text}`ch7_rank0_steps` step, the last rank at all
# {glue:text}`ch7_last_steps`. Rank 0's queries only see rank 0's keys, so after step 0 it has
# nothing to do, while the last rank's queries see every key. Each step waits for the last
# rank, so the ranks do useful work {glue:text}`ch7_eff4:.0f`% of the time (the figure's
# subtitle).
# :::
#
# Press **Play**:

# %%
from flashedu.ops.ring.layout import work_matrix, step_efficiency
from flashedu.viz.ring import ring_figure, overlap_figure
ring_figure(world=4, n=32, layout="contiguous").show()
eff = {lay: step_efficiency(work_matrix(4096, 8, lay))
       for lay in ("contiguous", "zigzag", "striped")}
for lay, e in eff.items():
    print(f"{lay:10s}: 8 ranks, 4096 tokens, causal: "
          f"busiest-rank efficiency {100 * e:.1f}%")

# %% tags=["hide-input"]
# Bookkeeping: values the text quotes, and checks that keep it true.
glue("eff_contiguous", 100 * eff["contiguous"])
work4 = work_matrix(32, 4, "contiguous")  # [rank, step], as in the figure
glue("ch7_rank0_steps", int((work4[0] > 0).sum()))
glue("ch7_last_steps", int((work4[-1] > 0).sum()))
glue("ch7_eff4", 100 * step_efficiency(work4))
glue("eff_zigzag", 100 * eff["zigzag"])
glue("eff_striped", 100 * eff["striped"])

# %% [markdown]
# With 8 ranks the contiguous layout wastes nearly half the time: efficiency
# {glue:text}`eff_contiguous:.0f`%. The fix is to give every rank both early and late tokens.
# **Zig-zag**: cut the sequence into $2n_p$ chunks and give rank $r$ chunks $r$ and $2n_p-1-r$;
# **striped**: give rank $r$ tokens $r, r + n_p, r + 2n_p, \dots$. Both reach
# {glue:text}`eff_zigzag:.1f`% and {glue:text}`eff_striped:.1f`%: after step 0 every rank does
# the same work.

# %%
ring_figure(world=4, n=32, layout="zigzag").show()

# %% [markdown]
# ### When does the transfer hide?
#
# At each step a rank sends one K/V shard, $2 H_{kv} n d$ elements for $n = N/n_p$ tokens, while it
# computes $4 H n^2 d$ FLOPs (half when causal). Compute grows as $n^2$ and traffic as $n$, so
# past some $n^*$ the transfer is free:
#
# $$ n^* = \frac{H_{kv} \cdot \text{bytes} \cdot F}{2 c H \cdot BW} $$
#
# with $F$ the kernel's FLOP rate, $BW$ the link's one-way bandwidth and $c = 1$ (or $\tfrac12$
# causal). With an H100 at half of its peak and the links' datasheet bandwidths:

# %%
from flashedu.ops.ring.model import overlap_threshold
from flashedu.hardware import LINKS
for name in ("NVLink 4", "PCIe 5.0 x16", "InfiniBand NDR"):
    n_star = overlap_threshold(heads=32, kv_heads=8, causal=True, gpu="H100",
                               link=name)
    print(f"{name:15s} {LINKS[name].bandwidth / 1e9:4.0f} GB/s: "
          f"transfers hide above {n_star:6.0f} tokens per GPU")
overlap_figure(gpu="H100", heads=32, kv_heads=8, causal=True).show()

# %% tags=["hide-input"]
# Bookkeeping: values the text quotes, and checks that keep it true.
glue("nstar_nvlink", overlap_threshold(heads=32, kv_heads=8, causal=True,
                                       gpu="H100", link="NVLink 4"))
glue("nstar_pcie", overlap_threshold(heads=32, kv_heads=8, causal=True,
                                     gpu="H100", link="PCIe 5.0 x16"))

# %% [markdown]
# Over NVLink a few hundred tokens per GPU already hide the ring
# ({glue:text}`nstar_nvlink:.0f`); over PCIe it takes about {glue:text}`nstar_pcie:,.0f`. Ring
# attention is for sequences of hundreds of thousands of tokens, far past both.
#
# ### Measured on GPUs
#
# `flashedu/bench/ring.py` runs the same ring with NCCL on every GPU of one machine, each step with
# {ref}`chapter 4 <ch-flash-v2>`'s Triton kernel, and times it beside one GPU doing the whole sequence alone.

# %% tags=["hide-input"]
from flashedu.recorded import ring as ring_reader
from flashedu.viz.ring import measured_ring_figure
ring_run = recorded.latest("ring")
if ring_run:
    measured_ring_figure(ring_run).show()
    rm = ring_reader.summary(ring_run)
    N, small = rm["N"], rm["N_small"]
    glue("ring_gpu", rm["gpu"])
    glue("ring_world", rm["world"])
    glue("ring_date", rm["date"])
    glue("ring_meas_err", rm["max_err"])
    glue("ring_check_N", rm["check_N"])
    glue("ring_meas_Nk", N // 1024)
    glue("ring_meas_per_gpu_k", N // rm["world"] // 1024)
    glue("ring_speed_full", rm["speedup"][("contiguous", False)][N])
    glue("ring_speed_contiguous", rm["speedup"][("contiguous", True)][N])
    glue("ring_speed_zigzag", rm["speedup"][("zigzag", True)][N])
    glue("ring_speed_striped", rm["speedup"][("striped", True)][N])
    busy = rm["busy"][("contiguous", True)]
    glue("ring_busy_least_ms", 1e3 * min(busy))
    glue("ring_busy_most_ms", 1e3 * max(busy))
    glue("ring_eff_meas_contiguous", 100 * rm["eff_measured"][("contiguous", True)])
    glue("ring_eff_model_contiguous", 100 * rm["eff_model"][("contiguous", True)])
    glue("ring_eff_meas_zigzag", 100 * rm["eff_measured"][("zigzag", True)])
    glue("ring_eff_meas_striped", 100 * rm["eff_measured"][("striped", True)])
    glue("ring_small_k", small // 1024)
    causal_layouts = ("contiguous", "zigzag", "striped")
    glue("ring_small_best_causal",
         max(rm["speedup"][(lay, True)][small] for lay in causal_layouts))
    glue("ring_wait_max_ms", 1e3 * rm["wait_max_s"])
    glue("ring_wait_share", 100 * rm["wait_share"])
    glue("ring_send_ms", rm["send_ms"])
    glue("ring_send_GBps", rm["send_GBps"])
    glue("ring_step_ms", rm["step_ms"])
else:
    print("No GPU measurement of the ring is recorded "
          "(flashedu/recorded/data/ring/): "
          "run python -m flashedu.bench.ring on several GPUs.")

# %% [markdown]
# Measured on {glue:text}`ring_world` × {glue:text}`ring_gpu` on {glue:text}`ring_date` (NCCL,
# NVLink multicast off). **Correct:** for every layout, causal or not, each rank's rows matched one
# GPU running v2 on the whole {glue:text}`ring_check_N`-token sequence to within
# {glue:text}`ring_meas_err:.1e`, no more than one step of fp16's last bit for an output between
# 2 and 4: rounding, not error.
#
# **Faster, and balanced by the layouts.** At {glue:text}`ring_meas_Nk`k tokens
# ({glue:text}`ring_meas_per_gpu_k`k per GPU), non-causal attention ran
# {glue:text}`ring_speed_full:.2f` times as fast as on one GPU (the ideal is
# {glue:text}`ring_world`). Causal with contiguous shards managed only
# {glue:text}`ring_speed_contiguous:.2f` times: one rank computed for
# {glue:text}`ring_busy_least_ms:.0f` ms, the other for {glue:text}`ring_busy_most_ms:.0f` ms. The
# step efficiency of the measured compute, {glue:text}`ring_eff_meas_contiguous:.0f`%, is the
# model's {glue:text}`ring_eff_model_contiguous:.0f`% for this many ranks. Zig-zag and striped
# fixed it: {glue:text}`ring_eff_meas_zigzag:.0f`% and {glue:text}`ring_eff_meas_striped:.0f`%
# efficient, {glue:text}`ring_speed_zigzag:.2f` and {glue:text}`ring_speed_striped:.2f` times one
# GPU. Not at every size: at {glue:text}`ring_small_k`k tokens every causal ring was slower than
# one GPU (at best {glue:text}`ring_small_best_causal:.2f` times its speed), too little work per
# GPU to pay for the ring's launches and synchronisations.
#
# **The transfers hid.** After computing a step, no rank ever waited more than
# {glue:text}`ring_wait_max_ms:.2f` ms for the next shard, at most
# {glue:text}`ring_wait_share:.1f`% of its time in any run. Sent alone, one K/V shard at
# {glue:text}`ring_meas_Nk`k tokens took {glue:text}`ring_send_ms:.1f` ms
# ({glue:text}`ring_send_GBps:.0f` GB/s) while the step it overlapped computed for at least
# {glue:text}`ring_step_ms:.0f` ms. {glue:text}`ring_meas_per_gpu_k`k tokens per GPU lie far to
# the right of the crossings in the figure above.

# %% [markdown]
# ## Summary
#
# - At decode time FA2's one program per ($Q$ block, head) leaves most SMs, and most of HBM's
#   bandwidth, idle. Split-KV splits the keys, stores one partial $(m, \ell, o)$ per split and
#   merges them with $\oplus$; exact, in any order.
# - A short decode step is host-bound: bind the compiled kernel once per shape, and merge
#   in the same launch (the last split to finish does it) rather than in a second kernel.
# - Grouped-query attention packs a group's query heads into one tile: the cache is read once
#   per K/V head.
# - Ring attention shards a long sequence over $n_p$ GPUs; K/V shards travel the ring and each step
#   is merged with $\oplus$. The next transfer overlaps the current compute, and hides entirely
#   once each GPU holds more than $n^*$ tokens.
# - Causal attention with contiguous shards leaves early ranks idle; zig-zag and striped layouts
#   give every rank the same work.
#
# ## Exercises
#
# **1.** Write `merge_splits(m, l, o)`: $n_s$ partial states ($m$, $\ell$ shaped $[n_s, R]$, $o$
# shaped $[n_s, R, D]$, unnormalised; an empty split has $m = -\infty$) merged into the output
# $[R, D]$. Check it with `flashedu.exercises.check_merge_splits(merge_splits)`.
#
# **2.** Write `zigzag(N, P, rank)`: the positions rank `rank` holds in the zig-zag layout over
# `P` $= n_p$ ranks ($N$ a multiple of $2n_p$). Check it with `flashedu.exercises.check_zigzag(zigzag)`.
#
# **3.** Write `threshold(heads, kv_heads, bytes_per_element, flops, bandwidth, causal)`: the
# tokens per GPU where a ring step's compute equals its transfer. Check it with
# `flashedu.exercises.check_overlap_threshold(threshold)`.

# %% tags=["hide-cell"]
# Solutions (click to show).
import math
from flashedu.exercises import (check_merge_splits, check_overlap_threshold,
                                check_zigzag)

def merge_splits(m, l, o):
    top = m.max(dim=0).values  # [R]
    # w: [n_s, R]; 0 if empty
    w = torch.exp(m - torch.where(torch.isfinite(top), top, torch.zeros_like(top)))
    return (w[..., None] * o).sum(0) / (w * l).sum(0)[:, None]

def zigzag(N, P, rank):
    c = N // (2 * P)
    late = 2 * P - 1 - rank
    return (list(range(rank * c, (rank + 1) * c))
            + list(range(late * c, (late + 1) * c)))

def threshold(heads, kv_heads, bytes_per_element, flops, bandwidth, causal):
    return (kv_heads * bytes_per_element * flops
            / (2 * (0.5 if causal else 1.0) * heads * bandwidth))

assert check_merge_splits(merge_splits)
assert check_zigzag(zigzag)
assert check_overlap_threshold(threshold)
