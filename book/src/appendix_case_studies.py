# %% [markdown]
# (appendix-case-studies)=
# # Case studies: tuning on Hopper GPUs
#
# The chapters keep the lesson and one measured result each. This appendix keeps the diary: what
# was tried to make each kernel fast, what it changed, and whether it stayed. Every number is read
# from a run recorded on a GPU (`flashedu/recorded/data/`), with the machine it ran on; on a
# machine without a GPU the page shows those records, and a cell that needs one says so.
#
# Each study opens with a table (idea, measured effect, kept or not) and then says why.
# Read them as method more than results: change one thing, time it beside the kernel as it was
# in the same process, keep what wins, and write down what lost.

# %%
# Set-up. On Colab this installs flashedu (torch and triton are already there);
# elsewhere it does nothing.
import importlib.util
if importlib.util.find_spec("flashedu") is None:
    %pip install -q "flashedu @ git+{REPOSITORY_URL}"

import torch
import flashedu
from flashedu.chapter import setup, glue

rt = setup()

# %% [markdown]
# ## 1. The v2 forward: what each knob is worth
#
# `python -m flashedu.bench` records four ablations beside its sweep, each changing one thing
# of {ref}`chapter 4 <ch-flash-v2>`'s kernels:
#
# - **v1 against v2** (`v1-vs-v2`): the loop swap and the parallelism over $Q$ tiles it
#   brings, forward and backward, per $N$ (with this
#   book's literal v1: one program per head, see {ref}`chapter 8 <ch-benchmarks>`).
# - **Causal skipping** (`causal-skip`): the forward's time without a mask over its time with
#   one. A kernel that skips every masked tile does half the work, so 2 is the ideal; v2 cannot
#   turn its skipping off, so the unmasked run stands in for "masking without skipping". The naive
#   torch attention masks but computes every score, and is *slower* with the mask.
# - **Pipelining** (`num-stages`): v2's forward with 1 to 5 $K$/$V$ tiles in flight.
# - **Tile shape** (`block-sizes`): v2's forward at fixed $B_r \times B_c$ and warp counts.
#
# All four, at $d = 128$, from the same recorded run:

# %%
from flashedu import recorded
from flashedu.provenance import label
from flashedu.recorded.bench import latest
from flashedu.viz.speedups import ablations_figure
bench = latest()
print(label(bench["info"]))
if bench["ablations"]:
    ablations_figure(bench, D=128).show()
else:
    print("No ablations in this file; python -m flashedu.bench --no-sweep "
          "--ablation causal-skip records one.")

# %% [markdown]
# The file holds every shape the sweeps ran (both head dims, $N$ = 4k and 16k, with and without
# the mask); `flashedu.bench.report.ablation_table(name, bench["ablations"][name])` prints them
# as text. {ref}`Chapter 4 <ch-flash-v2>` reads two of them as it walks the kernel: what the
# software pipeline buys, and what skipping the tiles above the diagonal does.
#
# ### The backward: two kernels, or one with atomic adds?
#
# Chapter 4's backward is two kernels: one walks each $K/V$ tile past every $Q$ tile for
# $dK$ and $dV$, the other walks each $Q$ tile past every $K/V$ tile for $dQ$, computing
# $S$ and $dP$ a second time (seven matrix products per pair of tiles). FlashAttention-2
# itself uses one kernel: the $K/V$ walk also computes each $Q$ tile's share of $dQ$,
# $dS\,K_j$, and adds it into an fp32 buffer with atomic adds, since many programs add into
# the same rows (five products, plus a read-modify-write of a $B_r \times d$ fp32 tile per
# pair). `flashedu/ops/v2/kernel_bwd_atomic.py` is that layout, and
# `python -m flashedu.bench.ablate_v2_bwd` timed it beside ours and cuDNN's:

# %%
from flashedu.recorded.v2_bwd import atomic_dq_table, atomic_dq_text
bwd_run = recorded.latest("v2_bwd_ablation")
print(label(bwd_run["provenance"]))
print(atomic_dq_text(bwd_run))

# %% tags=["hide-input"]
# Bookkeeping: values the text quotes, and checks that keep it true.
bwd_rows = atomic_dq_table(bwd_run)
glue("bwd_atomic_lo", min(r["ratio"] for r in bwd_rows))
glue("bwd_atomic_hi", max(r["ratio"] for r in bwd_rows))
# the prose: never clearly faster; slowest on causal or short rows
assert max(r["ratio"] for r in bwd_rows) < 1.02
worst = min(bwd_rows, key=lambda r: r["ratio"])
assert worst["causal"] or worst["N"] == min(r["N"] for r in bwd_rows)
# the prose: the fastest atomic config spilled (where the run read registers)
spills = [r for r in bwd_run["rows"] if r["impl"] == "atomic dQ" and "n_spills" in r
          and tuple(r["config"]) == bwd_rows[0]["config"]]
assert spills and all(r["n_spills"] > 0 and r["n_regs"] == 255 for r in spills)
# the Gluon column (a Hopper run): a little faster than the Triton atomic
# kernel, never clearly past ours
g_rows = [r for r in bwd_rows if "gluon" in r]
g_vs_atomic = [r["gluon"] / r["atomic"] for r in g_rows]
assert g_vs_atomic and 1 <= min(g_vs_atomic) and max(g_vs_atomic) < 1.1
glue("bwd_gluon_atomic_lo", min(g_vs_atomic))
glue("bwd_gluon_atomic_hi", max(g_vs_atomic))
glue("bwd_gluon_hi", max(r["gluon_ratio"] for r in g_rows))
assert max(r["gluon_ratio"] for r in g_rows) < 1.05

# %% [markdown]
# Two products fewer bought nothing: the one-kernel layout ran at
# {glue:text}`bwd_atomic_lo:.2f`–{glue:text}`bwd_atomic_hi:.2f` times our speed, level on long
# rows and slower on causal or short ones. One program now holds $K_j$, $V_j$, the $dK_j$ and
# $dV_j$ accumulators *and* a $dQ$ tile: at its fastest tile shape the compiler used all 255
# registers a thread may have and spilled the rest to memory, and every atomic add is a round
# trip to L2. So the split stays: more arithmetic, but each kernel owns its output, needs no
# zeroed buffer and gives the same bits every run.
#
# The last two columns are the same one-kernel layout written by hand in Gluon for Hopper's
# asynchronous tensor cores ({ref}`chapter 6 <ch-flash-v3-bwd>`): 128 keys a program over two
# warpgroups, no spills in its main loop. It ran
# {glue:text}`bwd_gluon_atomic_lo:.2f`–{glue:text}`bwd_gluon_atomic_hi:.2f` times the Triton
# version's speed and at most {glue:text}`bwd_gluon_hi:.2f` times ours: fewer spills were not
# what the layout lacked.
#
# ## 2. Block-sparse: reading a list as fast as a pointer
#
# {ref}`Chapter 5 <ch-block-sparse>`'s kernel is v2's with the loop bounds read from the mask's
# lists. On a GPU, a list costs what a pointer does not: each step's tile index is a load the
# next load waits for. Three changes closed that gap, each timed against the kernel without it:

# %%
from flashedu.recorded import block_sparse as bsm
bs_run = recorded.latest("block_sparse")
if bs_run:
    print(label(bs_run["provenance"]))
else:
    print("No block-sparse run is recorded (flashedu/recorded/data/block_sparse/).")

# %% tags=["hide-input"]
# Bookkeeping: values the text quotes, and checks that keep it true.
if bs_run:
    facts = bsm.summary(bs_run)
    for name, value in facts.items():
        glue(name, value)
    # What the prose says of them: each ablation was slower somewhere, and the
    # shortest forward is about as long on the GPU as one eager call on the CPU.
    assert min(facts["prefetch_hi_d128"], facts["prefetch_hi_d64"],
               facts["walk_hi_d64"]) > 1
    assert 0.5 < facts["gpu_min_us"] / facts["host_hi_us"] < 2

# %% [markdown]
# | idea | measured effect (time without it over time with it) | kept |
# |---|---|---|
# | read the next tile's index one step early | random masks {glue:text}`prefetch_lo_d128:.2f`–{glue:text}`prefetch_hi_d128:.2f`× at $d$ = 128, {glue:text}`prefetch_lo_d64:.2f`–{glue:text}`prefetch_hi_d64:.2f`× at $d$ = 64 | yes |
# | consecutive tiles by pointer, no list | dense mask {glue:text}`walk_lo_d64:.2f`–{glue:text}`walk_hi_d64:.2f`× at $d$ = 64, {glue:text}`walk_lo_d128:.2f`–{glue:text}`walk_hi_d128:.2f`× at $d$ = 128 | yes |
# | tiles timed per shape | picked {glue:text}`tiles_d128` at $d$ = 128, {glue:text}`tiles_d64` at $d$ = 64 | yes |
#
# *Reading the list early.* Each step of the list loop needs its tile's index before it can
# address $K_j$, where v2 just advances a pointer: a load that the next load waits for. The
# kernel reads the next entry's index one iteration ahead, so that wait overlaps the current
# tile's work.
#
# *No list for a run.* When a row's clean tiles are consecutive (a dense row, a band, the causal
# part left of the diagonal) the kernel skips the list and runs v2's own loop over them,
# pointers and all. Once the index is read early the list costs little, and the pointer loop
# saves what is left. With both, the dense mask took at most {glue:text}`dense_d128:.2f`× dense
# v2 at $d$ = 128 and {glue:text}`dense_d64:.2f`× at $d$ = 64 (forward and backward:
# {glue:text}`dense_fb_d128:.2f`× and {glue:text}`dense_fb_d64:.2f`×).
#
# *Tiles for short rows.* A row of {glue:text}`meas_small_k`k keys has
# {glue:text}`row_tiles_small` tiles; at 10% it computes about {glue:text}`row_tiles_10:.0f`, so
# what a program pays once (loading $Q_i$, filling the pipeline, writing $O_i$) weighs as much
# as its loop. The kernel times its candidate tiles once per shape and keeps the fastest. The
# $d$ = 128 tile holds {glue:text}`tiles_kb_d128:.0f` KiB of shared memory, so
# {glue:text}`tiles_per_sm_d128` programs fit on one SM of the {glue:text}`meas_gpu`, and one
# program's start-up runs under another's loop.
#
# *How it was timed.* These are GPU times, from calls replayed out of a CUDA graph. The shortest
# forward took {glue:text}`gpu_min_us:.0f` µs on the GPU, and one eager call spent
# {glue:text}`host_lo_us:.0f`–{glue:text}`host_hi_us:.0f` µs on the CPU (input checks, the layout
# lookup, Triton's launch): about as long. Events around eager calls would partly have timed
# Python. A model hides that cost in the same way, with CUDA graphs or `torch.compile`.
#
# Every ratio the run recorded, ours and FlexAttention's with the same mask, as time over dense
# v2's (darker is faster; 1 is dense v2):

# %%
from flashedu.viz.block_sparse import ratio_heatmap
if bs_run:
    bs_rows = bsm.ratios(bs_run)
    ratio_heatmap(bs_rows, pass_="fwd",
                  title="Forward time over dense v2's").show()
    ratio_heatmap(bs_rows, pass_="fwd+bwd",
                  title="Forward + backward time over dense v2's").show()

# %% [markdown]
# ### The backward against FlexAttention
#
# FlexAttention's backward runs the same tiles as ours (its defaults on Hopper are our tables'
# first entries), yet at $d$ = 128 it was the faster one until the two changes below.
# `python -m flashedu.bench.ablate_block_sparse_bwd` times our backward with each change on and off,
# beside FlexAttention's with the same mask; each cell is FlexAttention's time over ours, so
# above 1 ours is faster:

# %%
from IPython.display import Markdown, display
bwd_abl = recorded.latest("block_sparse_bwd_ablation")
if bwd_abl:
    print(label(bwd_abl["provenance"]))
    display(Markdown(bsm.bwd_ablation_markdown(bwd_abl)))
else:
    print("No backward ablation is recorded "
          "(flashedu/recorded/data/block_sparse_bwd_ablation/).")

# %% tags=["hide-input"]
# Bookkeeping: values the text quotes, and checks that keep it true.
if bwd_abl:
    early = bsm.bwd_gain(bwd_abl, "no prefetch", "prefetch")
    joint = bsm.bwd_gain(bwd_abl, "prefetch", "prefetch, one launch")
    glue("bwd_early_lo", min(early))
    glue("bwd_early_hi", max(early))
    glue("bwd_joint_lo", min(joint))
    glue("bwd_joint_hi", max(joint))
    assert min(early) > 1 and min(joint) > 1  # "each helped at every density"

# %% [markdown]
# Each helped at every density. *Reading the next index early*, as the forward does, made the
# backward {glue:text}`bwd_early_lo:.2f`–{glue:text}`bwd_early_hi:.2f`× faster: the dK/dV
# program walks a column's list of $Q$ tiles and the dQ program a row's list of $K$/$V$ tiles,
# and each waited on its index as the forward's loop did. *One launch for both passes*
# ({glue:text}`bwd_joint_lo:.2f`–{glue:text}`bwd_joint_hi:.2f`×): with two launches, the dK/dV
# launch ends in a tail, its last programs running while the SMs that finished wait, and the
# dQ launch starts only after it. In one grid (dK/dV programs first, then dQ programs, as FlexAttention's
# backward is laid out) the dQ programs start on the SMs that free up. Both are now the default;
# {ref}`chapter 8 <ch-benchmarks>` has the whole comparison from the block-sparse record.

# %% [markdown]
# ## 3. Hopper's copy engine: TMA, stages, warp specialisation
#
# `python -m flashedu.bench.fa3` timed {ref}`chapter 6 <ch-flash-v3>`'s ablation: plain pointer
# loads (`v2_triton`), TMA loads with 1–4 stages, and the same with `warp_specialize=True`
# where it compiled: fp16, non-causal, hidden size 2048, $B \cdot N$ = 16k, two tile shapes
# ($128 \times 128$ and $128 \times 64$) per cell, the faster one kept. $N = 8448$, $d = 128$
# (16 heads) are the paper's ablation's; its batch is 4, ours {glue:text}`fa3_b_8448` at that
# $N$, to keep $B \cdot N$ near 16k.

# %%
from flashedu.hardware import sm_rates
from flashedu.fa3sim import simulate
from flashedu.viz.gantt import PAPER_ABLATION
from flashedu.recorded.fa3 import ablation_summary
from flashedu.viz.fa3_measured import ablation_figure
fa3_run = recorded.latest("fa3")
if fa3_run:
    ablation_figure(fa3_run).show()
else:
    print("No FA3 ablation is recorded (flashedu/recorded/data/fa3/).")

# %% tags=["hide-input"]
# Bookkeeping: values the text quotes, and checks that keep it true.
# The model's load latency: a trip to HBM of the order of a microsecond.
LOAD_LATENCY = round(0.8e-6 * sm_rates("H100").clock_hz)
glue("hbm_trip", LOAD_LATENCY)
if fa3_run:
    fa3 = ablation_summary(fa3_run, paper_tflops=PAPER_ABLATION["fa3"][1])
    for name, value in fa3.items():
        glue(name, value)
    # The prose below describes these outcomes: keep it true to the data.
    assert (fa3["fa3_tma_4096"] > fa3["fa3_ptr_4096"]
            and fa3["fa3_tma_16384"] > fa3["fa3_ptr_16384"])
    assert (abs(fa3["fa3_tma_8448"] / fa3["fa3_ptr_8448"] - 1) < 0.02
            and fa3["fa3_tma_64"] < 1 and fa3["fa3_ws_hi"] < 2)
    s1, s2, s3 = (fa3[f"fa3_stages_{s_}"] for s_ in (1, 2, 3))
    assert s3 - s2 > s2 - s1 > 0 and any(
        "shared memory" in r.get("error", "")
        and (r["D"], r["block_n"], r["stages"]) == (128, 128, 4)
        for r in fa3_run["rows"])
    # Batch and heads at N = 8448, d = 128, set beside the paper's in the prose.
    bh = {(r["B"], r["H"]) for r in fa3_run["rows"]
          if r.get("kind") == "time" and (r["N"], r["D"]) == (8448, 128)}
    assert bh == {(1, 16)}
    glue("fa3_b_8448", next(iter(bh))[0])
for ws_ in (False, True):
    glue(f"model_ws_{ws_}", simulate("warp_specialized", d=128, stages=2,
                                     warp_specialize=ws_,
                                     load_latency=LOAD_LATENCY).tflops)
for s_ in (1, 2):
    glue(f"model_stages_{s_}", simulate("warp_specialized", d=128, stages=s_,
                                        warp_specialize=False,
                                        load_latency=LOAD_LATENCY).tflops)

# %% [markdown]
# | idea | measured effect | kept |
# |---|---|---|
# | TMA loads instead of pointers, $d$ = 128 | {glue:text}`fa3_ptr_16384:.0f` → {glue:text}`fa3_tma_16384:.0f` TFLOP/s at $N$ = 16k; a tie at 8448 | yes (`v2_tma_triton`) |
# | TMA loads, $d$ = 64 | at best {glue:text}`fa3_tma_64:.2f`× pointer loads | no |
# | 1 → 2 → 3 stages, $N$ = 8448 | {glue:text}`fa3_stages_1:.0f` → {glue:text}`fa3_stages_2:.0f` → {glue:text}`fa3_stages_3:.0f` TFLOP/s | 3 |
# | `warp_specialize=True` | {glue:text}`fa3_ws_lo:+.1f`% to {glue:text}`fa3_ws_hi:+.1f`% | no |
#
# Measured on an {glue:text}`fa3_gpu` on {glue:text}`fa3_date` (an H200 has the H100's tensor
# cores and a faster memory):
#
# - **TMA against pointers.** At $d = 128$ the best TMA kernel beat pointer loads at $N = 4096$
#   ({glue:text}`fa3_tma_4096:.0f` against {glue:text}`fa3_ptr_4096:.0f` TFLOP/s) and at
#   $N = 16384$, and tied at $N = 8448$ ({glue:text}`fa3_tma_8448:.0f` against
#   {glue:text}`fa3_ptr_8448:.0f`). At $d = 64$ it never caught up. The copy engine saves the
#   consumers address arithmetic and masks; in these kernels that paid off only with the larger
#   tiles of $d = 128$.
# - **Stages.** The third stage gained most. The model of chapter 6, with a
#   {glue:text}`hbm_trip`-cycle load latency, puts the whole gain in the second
#   ({glue:text}`model_stages_1:.0f`, then {glue:text}`model_stages_2:.0f` TFLOP/s) and nothing
#   after. On the GPU, with every SM loading at once, a copy's trip is evidently longer than one
#   tile's compute, which is when the model says more stages pay. Four stages of
#   $128 \times 128$ tiles at $d = 128$ do not fit in shared memory: the 4-stage cells of those
#   rows are $128 \times 64$ tiles.
# - **Warp specialisation** compiled in {glue:text}`fa3_ws_ok` of the {glue:text}`fa3_ws_probed`
#   configurations tried, and did not help. That is what the model predicts for schedule (b)
#   alone: with two or more stages, a producer warpgroup ({glue:text}`model_ws_True:.0f` TFLOP/s
#   in the model) gains nothing over consumers issuing their own copies
#   ({glue:text}`model_ws_False:.0f`). The copies were already off the critical path; what
#   remains on it is softmax between the GEMMs, which only schedules (c) and (d) move. (Triton's
#   `warp_specialize` is not FA3's hand-written producer/consumer split, so this says nothing
#   about the paper's Table 2; see {ref}`chapter 6 <ch-flash-v3>`.)
#
# ## 4. FP8: what made it faster than fp16
#
# `python -m flashedu.bench.fp8` timed several layouts of {ref}`chapter 6 <ch-flash-v3>`'s
# `fp8_triton` beside fp16 `v2_triton` (hidden size 2048, $B \cdot N$ = 16k, non-causal), on
# inputs already quantised, as FA3 times its kernel. A separate tuning run
# (`flashedu/recorded/data/fp8_tuning`) tried the exponentials on the FMA units.

# %%
from flashedu.recorded.fp8 import fp8_config_table, fp8_summary, tuning_cost
from IPython.display import Markdown, display
fp8_run = recorded.latest("fp8")
if fp8_run:
    print(label(fp8_run["provenance"]))
else:
    print("No FP8 run is recorded (flashedu/recorded/data/fp8/).")

# %% tags=["hide-input"]
# Bookkeeping: values the text quotes, and checks that keep it true.
if fp8_run:
    f8 = fp8_summary(fp8_run)
    for name, value in f8.items():
        glue(name, value)
    assert f8["fp8_two_acc_lo"] > 0 and f8["fp8_rows128_lo"] > 0
tuning = recorded.latest("fp8_tuning")
if tuning:
    exp_fma = tuning_cost(tuning, "fold_v exp_fma", "fold_v") + tuning_cost(
        tuning, "64x128 4w s2 regs168 exp_fma", "64x128 4w s2 regs168")
    glue("fp8_expfma_lo", min(exp_fma))
    glue("fp8_expfma_hi", max(exp_fma))
    # the prose says the FMA exponentials were slower everywhere
    assert min(exp_fma) > 0

# %% [markdown]
# | idea | measured effect (slower than the best, $d$ = 128) | kept |
# |---|---|---|
# | one accumulator, $V$'s descale folded into the rescale | a second accumulator: {glue:text}`fp8_two_acc_lo:.0f`–{glue:text}`fp8_two_acc_hi:.0f`% slower | yes |
# | 64-row tiles, 4 warps, several programs per SM | 128-row tiles, 8 warps: {glue:text}`fp8_rows128_lo:.1f`–{glue:text}`fp8_rows128_hi:.1f`% slower | yes |
# | exponentials by a cubic on the FMA units | {glue:text}`fp8_expfma_lo:.0f`–{glue:text}`fp8_expfma_hi:.0f`% slower | no |
#
# - *One accumulator.* $V$'s per-tile descale must multiply $PV$ before it joins the running
#   sum. Adding $PV \cdot s_V$ to $O$ after the product needs a second $[B_r, d]$ fp32
#   accumulator. Keeping $O$ in units of the last tile's descale instead (rescale $O$ by
#   $\alpha \cdot s_{\text{old}} / s_{\text{new}}$, then let the tensor core add $PV$ straight
#   into it) frees those registers.
# - *Several programs per SM* ({term}`occupancy`). With 128-row tiles and 8 warps a program
#   needs more than 128 registers a thread, the most that lets two such programs share an SM's
#   65,536, so an SM holds one and its softmax waits between its GEMMs. With 64-row tiles and 4
#   warps two or three programs share an SM, and while one computes exponentials another's GEMM
#   runs: the warp scheduler does by itself what FA3's ping-pong does by hand.
# - *$V$ quantised in the layout the kernel reads* ($V^\top$), which saves a transposing copy on
#   every call, a fixed cost that weighed most at small $N$. FA3 rejects a pre-transposed $V$
#   for inference and transposes each tile inside the kernel instead
#   ({ref}`chapter 6 <ch-flash-v3>`); we fold the transpose into the quantisation pass, which
#   writes $V$ anyway.
# - *A tried idea that lost:* computing the exponentials with a cubic polynomial on the FMA
#   units instead of MUFU (as later Blackwell kernels do). The FMA units are busy too, with the
#   scaling, the running max and sum, and the rescaling of $O$.
#
# Every configuration timed at $d = 128$ (tile: query rows × keys; reg. cap: registers per
# thread; P·V acc.: accumulators), as speed-up over fp16 `v2_triton` in the same run, the
# fastest per $N$ in bold. On a large problem `fp8_triton` times its list (the rows with one
# accumulator) once per shape and keeps the fastest, as the autotuner does for v2:

# %%
if fp8_run:
    display(Markdown(fp8_config_table(fp8_run, D=128)))

# %% [markdown]
# ## 5. FA3 in Gluon: the switches and the knobs
#
# `python -m flashedu.bench.fa3_gluon` timed {ref}`chapter 6 <ch-flash-v3>`'s Gluon kernel
# with each of FA3's ideas switched off (the record chapter 6 reads); tuning runs with
# `--extra` turned the knobs left at their defaults (the ring's depth, the width of a $K/V$
# tile, a persistent grid, the mask out of the loop), each against the default kernel timed
# beside it in the same run (`flashedu/recorded/data/fa3_gluon_tuning`). fp16, hidden size
# 2048, $B \cdot N$ = 16k, every row checked against cuDNN before it was timed.

# %%
from flashedu.recorded import fa3_gluon as fa3g_rec
g_run = recorded.latest("fa3_gluon")
if g_run:
    print(label(g_run["provenance"]))
    for D in (128, 64):
        print(f"d = {D}, N = 16384, TFLOP/s:")
        for name, tf in fa3g_rec.ablation(g_run, D=D, N=16384).items():
            print(f"  {name:32s} {tf:4.0f}")
else:
    print("No run of fa3_gluon is recorded (flashedu/recorded/data/fa3_gluon/).")

# %% tags=["hide-input"]
# Bookkeeping: values the table quotes, and checks that keep it true.
from flashedu.ops.fa3 import gluon as fa3g


tuning_runs = recorded.load("fa3_gluon_tuning")


def change(D, variant, N=16384):  # % change of a schedule against the default
    a = fa3g_rec.ablation(g_run, D=D, N=N)
    return 100 * (a[variant] / a["FA3 (all three ideas)"] - 1)


def tuned(D, variant, N=16384):  # % change of a knob, in the run that turned it
    ratios = fa3g_rec.variant_effect(tuning_runs, variant)["ratios"]
    return 100 * (ratios[(D, False, N)] - 1)


if g_run:
    for key, variant in (("ws", "no warp specialisation"), ("pp", "no ping-pong"),
                         ("intra", "no intra-warpgroup pipelining")):
        glue(f"cs5_{key}", change(128, variant))
    # "at most a few percent either way"
    assert all(abs(change(128, v)) < 5
               for v in ("no ping-pong", "no intra-warpgroup pipelining"))
    for key, variant in (("st3", "3 stages"), ("bn64", "64-row K/V tiles")):
        glue(f"cs5_{key}", tuned(128, variant))
    d64 = [tuned(64, "2 stages", N) for N in (1024, 4096, 16384)]
    glue("cs5_d64_lo", min(d64))
    glue("cs5_d64_hi", max(d64))
    # The table's "kept" column is the code's default config.
    c128, c64 = fa3g.default_config(128), fa3g.default_config(64)
    assert (c128.stages, c128.block_n, c64.stages) == (2, 128, 3)
    assert not c128.split_mask
    assert tuned(128, "3 stages") < 0 and tuned(128, "64-row K/V tiles") < -5
    assert change(128, "no warp specialisation") < -10 and max(d64) < 2
    try:  # compiled for sm_90 here; a Triton whose Gluon lacks a piece cannot
        base = fa3g.hopper_resources(128)["loop_instructions"]
        split_loop = fa3g.hopper_resources(
            128, config=fa3g.GluonConfig(split_mask=True))["loop_instructions"]
        glue("cs5_nosplit", base)
        glue("cs5_split", split_loop)
        glue("cs5_cut", 100 * (1 - split_loop / base))
    except RuntimeError as e:
        print(e)
split_run = fa3g_rec.variant_effect(recorded.load("fa3_gluon_tuning"), "split mask")
glue("cs5_split_lo", 100 * (split_run["low"] - 1))
glue("cs5_split_hi", 100 * (split_run["high"] - 1))
D_w, causal_w, N_w = split_run["worst"]
glue("cs5_split_worst", f"d = {D_w}{', causal' if causal_w else ''}, N = {N_w}")
assert split_run["high"] < 1.02  # no case gained enough to switch the default
# "persistent" was timed with the first causal schedule, then the paired one; a
# third run timed knobs on it at short rows (the registered kernel persistent)
pers, paired, knob_run = fa3g_rec.variant_effects(tuning_runs, "persistent")
for N_ in (1024, 4096, 16384):
    glue(f"cs5_pers_{N_ // 1024}k", 100 * (pers["ratios"][(128, False, N_)] - 1))
D_w, causal_w, N_w = pers["worst"]
glue("cs5_pers_worst", 100 * (pers["low"] - 1))
glue("cs5_pers_loss", 100 * (1 - pers["low"]))
glue("cs5_pers_worst_at", f"d = {D_w}{', causal' if causal_w else ''}, N = {N_w}")
# the prose: it pays where programs have few tiles each, and loses on causal work
full = {N_: pers["ratios"][(128, False, N_)] for N_ in (1024, 16384)}
assert full[1024] > 1.03 > full[16384]
assert causal_w and pers["low"] < 0.95
bn128 = fa3g.default_config(128).block_n
glue("cs5_tiles_1k", 1024 // bn128)  # K/V tiles of one program at N = 1k
glue("cs5_causal_spread", N_w // bn128)  # causal rows at N_w: 1 to this many tiles
glue("cs5_pers_64_1k", 100 * (pers["ratios"][(64, False, 1024)] - 1))
glue("cs5_pers_tiles", fa3g.PERSISTENT_MAX_TILES)
assert pers["ratios"][(64, False, 1024)] > 1.03
# the paired schedule: causal gains at 1k and 4k, a loss at d = 128, 16k
for D_ in (128, 64):
    for N_ in (1024, 4096):
        gain = paired["ratios"][(D_, True, N_)]
        glue(f"cs5_pair_{D_}c_{N_ // 1024}k", 100 * (gain - 1))
        assert gain > 1.01
glue("cs5_pair_128c_16k", 100 * (paired["ratios"][(128, True, 16384)] - 1))
glue("cs5_pair_128_4k", 100 * (paired["ratios"][(128, False, 4096)] - 1))
assert paired["ratios"][(128, True, 16384)] < 0.97
assert paired["ratios"][(128, False, 4096)] > 1
# three consumer warpgroups at d = 64: a gain at 16k, a loss at 1k
three = fa3g_rec.variant_effect(tuning_runs, "192-row tiles")["ratios"]
three_p = fa3g_rec.variant_effect(tuning_runs,
                                  "192-row tiles, persistent")["ratios"]
glue("cs5_three_16k", 100 * (three[(64, False, 16384)] - 1))
glue("cs5_three_p_c16k", 100 * (three_p[(64, True, 16384)] - 1))
glue("cs5_three_1k", 100 * (three[(64, False, 1024)] - 1))
glue("cs5_three_c1k", 100 * (three[(64, True, 1024)] - 1))
assert three[(64, False, 16384)] > 1.03 and three_p[(64, True, 16384)] > 1.03
assert max(three[(64, False, 1024)], three[(64, True, 1024)]) < 0.9
assert three_p[(64, True, 16384)] > three[(64, True, 16384)]
glue("cs5_three_regs", fa3g.max_consumer_regs(3))
# the "kept" column: persistent up to the tile limit, causal or not (4k, not 16k);
# past it, three consumers at d = 64 (persistent if causal)
assert fa3g.default_config(128, n_k=4096, causal=True).persistent
assert not fa3g.default_config(128, n_k=16384).persistent
assert 4096 // bn128 <= fa3g.PERSISTENT_MAX_TILES < 16384 // bn128
long64 = fa3g.default_config(64, n_k=16384, causal=True)
assert long64.consumers == 3 and long64.persistent
assert fa3g.default_config(64, n_k=4096).consumers == 2
# one more knob on the persistent grid: within what separates two timings of one
# kernel ("persistent" and the registered kernel are one config at these shapes)
same = max(abs(r - 1) for r in knob_run["ratios"].values())
glue("cs5_same_kernel", 100 * same)
knobs = [fa3g_rec.variant_effect(tuning_runs, f"persistent, {k}")
         for k in ("no ping-pong", "2 stages")]
glue("cs5_knob_lo", 100 * (min(k["low"] for k in knobs) - 1))
glue("cs5_knob_hi", 100 * (max(k["high"] for k in knobs) - 1))
assert all(max(abs(k["low"] - 1), abs(k["high"] - 1)) < 2 * same for k in knobs)
split_p = fa3g_rec.variant_effect(tuning_runs, "persistent, split mask")
glue("cs5_split_p_worst", 100 * (split_p["low"] - 1))
assert split_p["worst"] == (64, True, 1024) and split_p["low"] < 0.95
# the balanced causal schedule (its own run): each case, balanced against paired
bal = fa3g_rec.variant_effect(tuning_runs, "persistent, paired schedule")
bal_gain = {case: 1 / ratio - 1 for case, ratio in bal["ratios"].items()}
glue("cs5_bal_128_1k", 100 * bal_gain[(128, True, 1024)])
glue("cs5_bal_128_4k", 100 * bal_gain[(128, True, 4096)])
glue("cs5_bal_64_1k", 100 * bal_gain[(64, True, 1024)])
glue("cs5_bal_64_4k", 100 * bal_gain[(64, True, 4096)])
assert max(bal_gain.values()) > 0 > min(bal_gain.values())
assert sum(g < 0 for g in bal_gain.values()) == 3  # it lost three of the four cases
# what the host's model says of the two schedules at d = 64, causal, 1k, on
# that run's GPU: B·H heads of n_m query tiles, one program per SM
bal_run = next(r for r in tuning_runs
               if r["provenance"]["commit"] in bal["commits"])
sms_ = bal_run["provenance"]["sms"]
c64 = fa3g.default_config(64, n_k=1024, causal=True)
n_m_ = 1024 // c64.block_m
heads_ = (16384 // 1024) * (2048 // 64)  # the grid's B·H at d = 64, N = 1k
tiles_ = fa3g.causal_tiles(n_m_, c64.block_m, c64.block_n, 1024)
glue("cs5_heads", heads_)
glue("cs5_pairs", heads_ * n_m_ // 2)
glue("cs5_sms", sms_)
for key, balanced in (("paired", False), ("bal", True)):
    items_ = fa3g.causal_schedule(n_m_, heads_, sms_, tiles_, balanced=balanced)
    work_ = fa3g.schedule_work(items_, tiles_)
    glue(f"cs5_{key}_over", 100 * (max(work_) * len(work_) / sum(work_) - 1))
    glue(f"cs5_{key}_items_lo", min(map(len, items_)))
    glue(f"cs5_{key}_items_hi", max(map(len, items_)))
glue("cs5_item_overhead", fa3g.ITEM_OVERHEAD)
assert not fa3g.GluonConfig().balanced
# two Q buffers a warpgroup (the record's own rows): two against one, each
# persistent case
one_q = fa3g_rec.variant_effect([g_run], "persistent, one Q buffer")["ratios"]
two_q = {case: 1 / ratio - 1 for case, ratio in one_q.items()}
glue("cs5_q2_lo", 100 * min(two_q.values()))
glue("cs5_q2_hi", 100 * max(two_q.values()))
glue("cs5_q2_wins", sum(v > 0 for v in two_q.values()))
glue("cs5_q2_cases", len(two_q))
q2_mean = sum(two_q.values()) / len(two_q)
glue("cs5_q2_mean", round(100 * q2_mean, 1) + 0.0)  # + 0.0: no "-0.0%"
glue("cs5_q2_commit", g_run["provenance"]["commit"])
# the prose: won some cases, lost others, level on average; the default stays
assert min(two_q.values()) < 0 < max(two_q.values()) and abs(q2_mean) < 0.01
assert fa3g.GluonConfig().q_buffers == 2
# the half diagonal (the record's own rows): half against whole, each causal
# two-consumer case (d = 64 at 16k runs three consumers, so it has none)
whole = fa3g_rec.variant_effect([g_run], "whole diagonal")["ratios"]
half = {case: 1 / ratio - 1 for case, ratio in whole.items()}
glue("cs5_half_64_1k", 100 * half[(64, True, 1024)])
glue("cs5_half_64_4k", 100 * half[(64, True, 4096)])
half128 = [v for c, v in half.items() if c[0] == 128]
glue("cs5_half_128_lo", 100 * min(half128))
glue("cs5_half_128_hi", 100 * max(half128))
# the prose: it pays at d = 64, short rows most; at d = 128 within 2% either way
assert half[(64, True, 1024)] > max(0.03, half[(64, True, 4096)])
assert max(abs(v) for v in half128) < 0.02
assert fa3g.default_config(64, n_k=1024, causal=True).half_diagonal
# rows past N in the last 192-row tile, as a share of the rows computed
for N_ in (1024, 16384):
    rows_ = -(-N_ // long64.block_m) * long64.block_m
    glue(f"cs5_three_pad_{N_ // 1024}k", 100 * (rows_ - N_) / rows_)

# %% [markdown]
# | idea (at $d$ = 128, $N$ = 16k unless said) | measured effect | kept |
# |---|---|---|
# | switching warp specialisation off | {glue:text}`cs5_ws:+.0f`% | no: it stays on |
# | switching ping-pong off | {glue:text}`cs5_pp:+.1f`% | no: it stays on (FA3's schedule) |
# | switching the intra-warpgroup pipeline off | {glue:text}`cs5_intra:+.1f`% | no: it stays on |
# | 3 stages instead of 2 | {glue:text}`cs5_st3:+.1f`% | no |
# | $K/V$ tiles of 64 rows instead of 128 | {glue:text}`cs5_bn64:+.0f`% | no |
# | $d$ = 64: 2 stages instead of 3 | {glue:text}`cs5_d64_lo:+.1f`% to {glue:text}`cs5_d64_hi:+.1f`% over $N$ | not yet |
# | a persistent grid: one program per SM, looping over work items | {glue:text}`cs5_pers_1k:+.0f`% at $N$ = 1k, {glue:text}`cs5_pers_4k:+.1f`% at 4k, {glue:text}`cs5_pers_16k:+.1f`% at 16k; {glue:text}`cs5_pers_worst:+.0f`% at {glue:text}`cs5_pers_worst_at` | yes, with the schedule below |
# | its causal work paired per head (longest query tile with shortest) | causal, $N$ = 1k: {glue:text}`cs5_pair_128c_1k:+.0f`%, $d$ = 64 {glue:text}`cs5_pair_64c_1k:+.0f`%; 4k: {glue:text}`cs5_pair_128c_4k:+.1f`%, $d$ = 64 {glue:text}`cs5_pair_64c_4k:+.1f`%; 16k: {glue:text}`cs5_pair_128c_16k:+.1f`% | where rows are short: at most {glue:text}`cs5_pers_tiles` $K/V$ tiles, causal or not |
# | $d$ = 64: three consumer warpgroups, 192 query rows a program | {glue:text}`cs5_three_16k:+.1f`% at 16k ({glue:text}`cs5_three_p_c16k:+.0f`% causal, persistent); {glue:text}`cs5_three_1k:+.0f`% at 1k ({glue:text}`cs5_three_c1k:+.0f`% causal) | past the persistent grid's reach |
# | the causal work dealt by a model of each item's time instead of in pairs | $d$ = 128: {glue:text}`cs5_bal_128_1k:+.1f`% at 1k, {glue:text}`cs5_bal_128_4k:+.1f`% at 4k; $d$ = 64: {glue:text}`cs5_bal_64_1k:+.1f`%, {glue:text}`cs5_bal_64_4k:+.1f`% | no |
# | two $Q$ buffers a consumer warpgroup on the persistent grid | {glue:text}`cs5_q2_lo:+.1f`% to {glue:text}`cs5_q2_hi:+.1f`% over the persistent cases, ahead in {glue:text}`cs5_q2_wins` of {glue:text}`cs5_q2_cases`; {glue:text}`cs5_q2_mean:.1f`% on average | yes (level) |
# | causal: warpgroup 0 computes only the half of its diagonal tile its rows can see | $d$ = 64: {glue:text}`cs5_half_64_1k:+.1f`% at 1k, {glue:text}`cs5_half_64_4k:+.1f`% at 4k; $d$ = 128: {glue:text}`cs5_half_128_lo:+.1f`% to {glue:text}`cs5_half_128_hi:+.1f`% | yes, causal with two consumer warpgroups |
# | the mask out of the main loop (`split_mask`) | {glue:text}`cs5_nosplit` → {glue:text}`cs5_split` instructions per iteration; {glue:text}`cs5_split_lo:+.1f`% to {glue:text}`cs5_split_hi:+.1f`% over the grid | no |
#
# - **Only warp specialisation is worth its cost here.** Ping-pong and the pipeline inside a
#   warpgroup stay on because they are FA3's schedule and cost at most a few percent either
#   way (ping-pong off: {glue:text}`cs5_pp:+.1f`% in this record, close to what separates
#   two timings of one kernel, {glue:text}`cs5_same_kernel:.1f`%, so one run does not decide
#   it); the measured timeline in chapter 6 shows why they gain so little on this kernel:
#   issuing a GEMM already waits for the tensor cores, and the softmax is longer than the
#   other warpgroup's GEMMs.
# - **A deeper ring does not help.** Two stages of $128 \times 128$ tiles already hide the copies
#   (the producer runs $K$ one tile ahead of $V$); a third stage fills shared memory and was
#   slower. A narrower tile doubles the softmax's fixed costs per score computed (row maxima and
#   sums across threads, the rescale of $O$) and lost most.
# - **A shorter loop is not a faster one.** The consumers' loop tests "does this tile need
#   the mask?" at run time; the compiler turns that into selects on every score of every tile.
#   Two loops, one without the mask, shorten the loop body by {glue:text}`cs5_cut:.0f`%, and
#   the kernel ran no faster: within {glue:text}`cs5_split_lo:+.1f`% and
#   {glue:text}`cs5_split_hi:+.1f`% of the default at every case of the grid, worst at
#   {glue:text}`cs5_split_worst` (a separate run, its commit in the record). The selects issue
#   in slots the softmax leaves idle while it waits on exponentials and on the reductions
#   across threads; counting instructions said where the time could go, the GPU said it was
#   not going there.
# - **A persistent grid pays where programs are short.** With one program per query tile,
#   each program's first $QK^\top$ and softmax and its last $PV$ and store run with nothing
#   beside them; at $N$ = 1k a program has only {glue:text}`cs5_tiles_1k` $K/V$ tiles, so
#   that is a large share. One program per SM, looping over the tiles (the producer warp
#   loads the next tile's $Q$ and $K/V$ while the consumers finish this one), gained at $N$ =
#   1k ({glue:text}`cs5_pers_64_1k:+.0f`% at $d$ = 64 too), was level at 4k and lost a little
#   at 16k, where programs are long and the ring's bookkeeping across tiles costs
#   instructions in the loop. So the registered kernel went persistent by shape, for
#   attention that is not causal with few $K/V$ tiles.
# - **On causal attention it lost, even dealt out evenly.** Causal query tiles meet from 1 to
#   {glue:text}`cs5_causal_spread` $K/V$ tiles at {glue:text}`cs5_pers_worst_at`, so the
#   persistent programs took the work longest first, across all heads, every other round in
#   reverse, and each SM's total number of tiles came out nearly the same. It still lost, by
#   {glue:text}`cs5_pers_loss:.0f`% at that shape. Our guess: dealt out that way, the items
#   running at once belong to many different heads, each with its own $K$ and $V$ to fetch,
#   where the one-item grid runs a few heads' tiles side by side and shares their $K$ and $V$
#   in L2.
# - **Paired per head, it won.** The schedule became a table the host writes
#   (`causal_schedule`): each head's longest query tile paired with its shortest, on one
#   program in consecutive rounds, so every two rounds give each program the same work, and
#   the pairs in flight at once are a few heads' worth, so their $K$ and $V$ stay shared.
#   Timed again against the one-item grid, causal work now gained
#   {glue:text}`cs5_pair_128c_1k:.0f`% at $N$ = 1k ({glue:text}`cs5_pair_64c_1k:.0f`% at $d$ =
#   64) and a little at 4k, and still lost at 16k ({glue:text}`cs5_pair_128c_16k:+.1f`% at $d$
#   = 128), where programs are long and their start and end weigh little. That supports the
#   guess above, though we read no L2 counter to confirm it. The same run had non-causal 4k
#   ahead too ({glue:text}`cs5_pair_128_4k:+.1f`%, level in the first run: a few percent is
#   within what separates two runs), so the registered kernel now goes persistent wherever a
#   query tile meets at most {glue:text}`cs5_pers_tiles` $K/V$ tiles, causal or not.
# - **Below the noise, stop.** A third run turned one more knob on the persistent grid at
#   $N$ = 1k and 4k. Without ping-pong, or with the other stage count, it moved
#   {glue:text}`cs5_knob_lo:+.1f`% to {glue:text}`cs5_knob_hi:+.1f`%; the same kernel timed
#   twice in that run (the registered kernel and the "persistent" variant are one build at
#   those shapes) differed by up to {glue:text}`cs5_same_kernel:.1f`%. Those knobs stay as
#   they are. The mask taken out of the loop lost there
#   ({glue:text}`cs5_split_p_worst:.0f`% at $d$ = 64, causal, 1k). We did not measure why; a
#   query tile there meets one to {glue:text}`cs5_tiles_1k` $K/V$ tiles, so the loop without
#   the mask runs a few times at most, while each work item pays for entering two loops.
# - **Even on paper is not even on the GPU.** The paired schedule leaves a ragged last
#   round: at $d$ = 64, causal, 1k ({glue:text}`cs5_heads` heads, {glue:text}`cs5_pairs`
#   pairs on {glue:text}`cs5_sms` programs) the busiest
#   program has {glue:text}`cs5_paired_over:.1f`% more work than the average, counting each
#   item as its $K/V$ tiles plus {glue:text}`cs5_item_overhead:.0f` for its start and end.
#   So we dealt the same items out one at a time, each to the program with the least work so
#   far, the last round's longest first (the LPT rule from scheduling theory), and the model
#   said {glue:text}`cs5_bal_over:.1f`%. On the GPU it lost three cases of four:
#   {glue:text}`cs5_bal_128_1k:+.1f`% at $d$ = 128, 1k and {glue:text}`cs5_bal_128_4k:+.1f`%
#   at 4k, {glue:text}`cs5_bal_64_1k:+.1f`% at $d$ = 64, 1k; it won only at $d$ = 64, 4k
#   ({glue:text}`cs5_bal_64_4k:+.1f`%). The balanced programs ran from
#   {glue:text}`cs5_bal_items_lo` to {glue:text}`cs5_bal_items_hi` items each, the paired
#   ones {glue:text}`cs5_paired_items_lo` or {glue:text}`cs5_paired_items_hi`. Our reading:
#   the model's price of an item's start and end is wrong, and a schedule that is even only
#   under the model is uneven wherever the model is; the pairs are even in tiles *and* in
#   items, whatever an item's start costs. The paired schedule stays (`balanced=False`).
# - **Load the next $Q$ early.** With one $Q$ buffer per warpgroup the producer can load the
#   next work item's $Q$ only once this item's last $QK^\top$ has read it, so each item
#   starts by waiting for a copy. Two buffers let it arrive while this item runs. Timed in
#   the record itself, two buffers against one: {glue:text}`cs5_q2_lo:+.1f`% to
#   {glue:text}`cs5_q2_hi:+.1f`%, ahead in {glue:text}`cs5_q2_wins` of the
#   {glue:text}`cs5_q2_cases` persistent cases, {glue:text}`cs5_q2_mean:.1f`% on average.
#   The record before this one (commit 030dae6, in the repository's history) had two
#   buffers ahead at every case at $d$ = 128; this one, with the half diagonal below
#   switched on, has them behind at $d$ = 128 causal. An effect that changes sign between
#   two runs is no effect we can claim. Two buffers stay, as they cost nothing on average;
#   the copy they hide is not what bounds these items.
# - **Half a diagonal tile.** A causal program of two consumer warpgroups owns 128 query
#   rows and walks $K/V$ tiles of 128 keys. Its last tile is the diagonal one, and the first
#   warpgroup's 64 rows end halfway into it: the tile's right half lies wholly above their
#   diagonal, masked. Computing it anyway costs that warpgroup a full tile of GEMMs and
#   exponentials that all come out zero. With `half_diagonal` the warpgroup issues its last
#   $QK^\top$ and $PV$ on the left 64 keys only (a GEMM of half the width) and exponentiates
#   half the scores. That saves a quarter of the diagonal tile's work per program, which
#   weighs most where rows are short: {glue:text}`cs5_half_64_1k:+.1f`% at $d$ = 64,
#   $N$ = 1k, {glue:text}`cs5_half_64_4k:+.1f`% at 4k, and
#   {glue:text}`cs5_half_128_lo:+.1f`% to {glue:text}`cs5_half_128_hi:+.1f`% at $d$ = 128,
#   where a tile's GEMMs are twice as long and the saving hides under them. It is on for
#   every causal call with two consumer warpgroups; the three-warpgroup tile at $d$ = 64
#   does not have it.
# - **At $d$ = 64, a third consumer warpgroup.** There a tile's GEMMs take half as long as at
#   $d$ = 128 while its softmax does not, so the tensor cores wait on the softmax. FA3's tile
#   at $d$ = 64 has 192 query rows: three consumer warpgroups of 64 rows sharing each $K/V$
#   tile, three softmaxes to interleave with the GEMMs, each warpgroup at
#   {glue:text}`cs5_three_regs` registers (the register file split three ways, where two
#   consumers get 240). It gained {glue:text}`cs5_three_16k:.1f`% at $N$ = 16k
#   ({glue:text}`cs5_three_p_c16k:.0f`% causal, with the persistent grid) and lost at 1k
#   ({glue:text}`cs5_three_1k:.0f`%, causal {glue:text}`cs5_three_c1k:.0f`%): a
#   sequence of 1024 rows fills five tiles of 192 and a third of a sixth, so
#   {glue:text}`cs5_three_pad_1k:.0f`% of the rows it computes are padding, against
#   {glue:text}`cs5_three_pad_16k:.1f`% at 16k. So it runs past the persistent grid's reach,
#   and persistent when causal.

# %% [markdown]
# ## What the five have in common
#
# - **Time the change beside the kernel without it, in one process.** Clocks, thermals and the
#   other tenants of a GPU move absolute numbers by a few percent between runs; a ratio in one
#   run does not.
# - **Latency, not bandwidth, is what most of these ideas hide.** The early index read, the
#   third stage and several programs per SM all give the GPU something to do while a load or an
#   exponential is on its way.
# - **A model says where to look, a GPU says how much.** The SM model predicted that warp
#   specialisation alone would not help and it did not; it also put the gain of stages in the
#   wrong place, because it has no notion of every SM loading at once.
