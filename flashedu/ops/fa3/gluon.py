"""The host side of the Gluon FA3 forward (:mod:`flashedu.ops.fa3.gluon_kernel`): launch
configurations (one switch per FA3 idea), tensor descriptors, the launch, the measured timeline,
and what it needs: a Hopper GPU (sm_90: wgmma and TMA) and a Triton with Gluon's Hopper module.
"""
from __future__ import annotations

import functools
import heapq
from dataclasses import dataclass, replace

import torch

from flashedu import runtime
from flashedu.ops._triton import LOG2E
from flashedu.ops.fa3.gluon_host import DTYPE_NAMES, compile_report, descriptor, gl_dtype
from flashedu.ops.fa3.kernel import tma_ready
from flashedu.ops.v2.kernel import FlashAttentionV2
from flashedu.validate import check_qkv

NAME = "fa3_gluon"
DTYPES = (torch.float16, torch.bfloat16)
# Run and checked on an H200 at these; 16 and 32 compile for sm_90 (tests/test_fa3_gluon.py)
# but have not run on a GPU yet.
HEAD_DIMS = (64, 128, 256)
COMPILED_HEAD_DIMS = (16, 32) + HEAD_DIMS
BLOCK_M = 128  # query rows per program by default: two consumer warpgroups of 64
# Registers the warpgroups may ask for with setmaxnreg, together (of the SM's 65 536): more and
# the consumers' setmaxnreg.inc waits forever. The producer warp's warpgroup keeps 24 each.
REGISTER_BUDGET = 64512
PRODUCER_REGS = 24


def max_consumer_regs(consumers: int) -> int:
    """Registers per thread each of ``consumers`` 128-thread warpgroups can have: 240 for
    two, 160 for three."""
    return (REGISTER_BUDGET - 128 * PRODUCER_REGS) // (128 * consumers) // 8 * 8


@dataclass(frozen=True)
class GluonConfig:
    """One launch: the K/V tile, the ring's depth, and a switch for each of FA3's ideas."""

    block_n: int = 128
    stages: int = 2
    warp_specialize: bool = True   # a producer warp + two consumer warpgroups
    pingpong: bool = True          # the consumers take turns issuing GEMMs (needs the above)
    intra: bool = True             # softmax(j+1) under GEMM1(j), FA3's Algorithm 2
    # Two loops, one without the mask's selects, one with (run-time test in one loop otherwise).
    # Timed on the H200: no faster than one loop (recorded kind fa3_gluon_tuning), so off.
    split_mask: bool = False
    # One program per SM, looping over (query tile, batch·head) work items, so the producer
    # loads the next item while the consumers finish this one. O gets shared memory of its own
    # (fits at D ≤ 128 with the default stages). On by default where items are short and
    # equal: see default_config.
    persistent: bool = False
    consumer_regs: int = 240       # registers per thread of each worker consumer warpgroup
    # Consumer warpgroups of 64 query rows each: 2, or 3 (FA3's 192-row tile at D = 64, where
    # the softmax, not the GEMMs, sets the pace; consumer_regs must then leave room for three).
    consumers: int = 2
    # Causal and persistent: which program runs which work item (see causal_schedule). False:
    # the paired rounds; True: balanced by a model of each item's time, which lost on the
    # H200 (recorded kind fa3_gluon_tuning, "balanced").
    balanced: bool = False
    # Persistent: Q buffers per consumer warpgroup. Two: the producer loads the next work
    # item's Q while this one runs; one: only once this item's last GEMM0 has read it.
    q_buffers: int = 2
    # Causal, two consumers: warpgroup 0 computes the left half of its last (diagonal) K/V
    # tile only, the half its rows can see. On by shape (default_config), where causal.
    half_diagonal: bool = False

    def __post_init__(self):
        if self.q_buffers not in (1, 2):
            raise ValueError(f"config: q_buffers must be 1 or 2, got {self.q_buffers}")
        if self.consumers not in (2, 3):
            raise ValueError(f"config: consumers must be 2 or 3, got {self.consumers}")
        if self.consumers != 2 and not self.warp_specialize:
            raise ValueError("config: consumers=3 needs warp_specialize")
        if self.consumer_regs > max_consumer_regs(self.consumers):
            raise ValueError(f"config: consumer_regs={self.consumer_regs} is more than "
                             f"{self.consumers} consumer warpgroups can have "
                             f"({max_consumer_regs(self.consumers)})")
        if self.half_diagonal and (not self.warp_specialize or self.consumers != 2):
            raise ValueError("config: half_diagonal needs two consumer warpgroups (warp "
                             "specialised): warpgroup 0's rows end halfway into a K/V tile")
        if self.pingpong and not self.warp_specialize:
            raise ValueError("config: pingpong needs warp_specialize (two consumer warpgroups)")
        if self.persistent and not self.warp_specialize:
            raise ValueError("config: persistent needs warp_specialize (a producer warp to run "
                             "ahead into the next work item)")

    @property
    def num_warps(self) -> int:
        """The kernel's own warps: consumer warpgroup 0 (the producer and consumer 1 are extra
        warps), or the whole block without warp specialisation."""
        return 4 if self.warp_specialize else 8

    @property
    def q_rows(self) -> int:
        """Rows of one Q copy: a consumer warpgroup's 64, or the block's 128."""
        return 64 if self.warp_specialize else BLOCK_M

    @property
    def block_m(self) -> int:
        """Query rows per program (a work item, persistent)."""
        return 64 * self.consumers if self.warp_specialize else BLOCK_M


# A persistent grid where a query tile meets at most this many K/V tiles (N ≤ 4k at 128-row
# tiles), causal or not. Timed on the H200 (recorded kind fa3_gluon_tuning, "persistent"): it
# gains where each program has few tiles, whose prologue and epilogue it hides, and, causal,
# with a causal schedule (causal_schedule) evening out the programs' work; at 16k it was
# level without causality and lost with it.
PERSISTENT_MAX_TILES = 32


def default_config(head_dim: int, *, n_k: int | None = None, causal: bool = False) -> GluonConfig:
    """The configuration a call runs with: two stages of 128-row K/V tiles at D=128 (three fit,
    and were slower on the H200), three at D ≤ 64, 64-row tiles at D=256. Given the call's
    ``n_k`` and ``causal``: persistent where a query tile meets at most
    :data:`PERSISTENT_MAX_TILES` K/V tiles; past that, at D ≤ 64, three consumer warpgroups
    (192 query rows a program, FA3's tile there), persistent if causal. Causal with two
    consumers: the half diagonal. Each rule is a timed row of a recorded run."""
    if head_dim == 256:
        return GluonConfig(block_n=64)
    base = GluonConfig(stages=3) if head_dim <= 64 else GluonConfig()
    if n_k is None:
        return base
    if -(-n_k // base.block_n) <= PERSISTENT_MAX_TILES:
        cfg = replace(base, persistent=True)
    elif head_dim <= 64:
        cfg = replace(base, consumers=3, consumer_regs=max_consumer_regs(3), persistent=causal)
    else:
        # D = 128, one item a program: FA3's whole schedule. (At 16k, without ping-pong was up
        # to 2.4% faster in some runs and up to 4.5% slower in others: docs/notes/gluon-fa3.md.)
        cfg = base
    # Causal, two consumers: warpgroup 0 skips the right half of its diagonal tile, which its
    # rows cannot see (+6.5% at D = 64, N = 1k, c34e2c6's record; level at D = 128).
    return replace(cfg, half_diagonal=causal and cfg.consumers == 2)


# FA3's Table 2, as switches: each row turns one idea off.
ABLATIONS = {
    "FA3 (all three ideas)": {},
    "no ping-pong": {"pingpong": False},
    "no intra-warpgroup pipelining": {"intra": False},
    "no warp specialisation": {"warp_specialize": False, "pingpong": False},
}


def ablation_configs(head_dim: int) -> dict[str, GluonConfig]:
    base = default_config(head_dim)
    return {name: replace(base, **change) for name, change in ABLATIONS.items()}


@functools.lru_cache(maxsize=None)
def _sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def paired_order(n_m: int, bh: int, programs: int) -> list[int]:
    """The causal work items in the paired order, each ``bh · n_m + m`` (batch·head, query
    tile), for ``programs`` programs taking items p, p + P, p + 2P, ...

    Each head's query tiles pair up, longest with shortest (n_m - 1 - i with i: n_m + 1 K/V
    tiles a pair). A program takes a pair's long tile in one round and its short tile in the
    next, so every two full rounds give each program the same work; the pairs in flight at once
    are consecutive, a few heads' worth, whose K and V stay in L2. Items past the last two full
    rounds: every leftover pair's long tile, then every short one. An odd n_m leaves each
    head's middle tile unpaired; those go first (a pair's halves stay P items apart, so on one
    program, whatever comes before them)."""
    P = min(programs, n_m * bh)
    pairs = [(b, n_m - 1 - i, i) for b in range(bh) for i in range(n_m // 2)]
    order = [b * n_m + n_m // 2 for b in range(bh)] if n_m % 2 else []
    full = len(pairs) // P * P  # pairs that fill two rounds of P programs
    for k in range(0, full, P):
        order += [b * n_m + long for b, long, _ in pairs[k:k + P]]
        order += [b * n_m + short for b, _, short in pairs[k:k + P]]
    order += [b * n_m + long for b, long, _ in pairs[full:]]
    order += [b * n_m + short for b, _, short in pairs[full:]]
    return order


# A work item's fixed cost (its first GEMM, alone, and its epilogue), in K/V tiles' time: the
# balanced schedule's model of an item, tiles + ITEM_OVERHEAD.
ITEM_OVERHEAD = 1.0


def causal_schedule(n_m: int, bh: int, programs: int, tiles: list[int], *,
                    balanced: bool = False) -> list[list[int]]:
    """Each program's causal work items, in the order it runs them. ``tiles[m]``: the K/V
    tiles query tile m meets.

    Paired (``balanced=False``): program p takes every P-th item of :func:`paired_order`. The
    pairs even out the full rounds, but the last round is ragged (d = 64, N = 1k: 2048 pairs
    on 132 programs leave 68 over, so 4 programs run a long and a short tile more, the others
    one of them). Balanced: the same order, each item given to the program
    with the least work so far (list scheduling, as a dynamic scheduler would), the last 2·P
    items longest first, so the programs finish within about one short item of each other
    (Graham's LPT rule); neighbouring items still run at about the same time, sharing L2.
    Where that is no more even than the pairs (rounds that come out whole), the pairs."""
    P = min(programs, n_m * bh)
    order = paired_order(n_m, bh, P)
    paired = [order[p::P] for p in range(P)]
    if not balanced:
        return paired

    def cost(code: int) -> float:
        return tiles[code % n_m] + ITEM_OVERHEAD

    bulk, tail = order[:-2 * P], sorted(order[-2 * P:], key=cost, reverse=True)
    heap = [(0.0, p) for p in range(P)]  # (work so far, program)
    items: list[list[int]] = [[] for _ in range(P)]
    for code in bulk + tail:
        load, p = heapq.heappop(heap)
        items[p].append(code)
        heapq.heappush(heap, (load + cost(code), p))
    # Where the pairs fill every round (no ragged end), they are already even, and exactly.
    busiest = max(load for load, _ in heap)
    return items if busiest < max(schedule_work(paired, tiles)) else paired


def schedule_work(items: list[list[int]], tiles: list[int]) -> list[float]:
    """Each program's work under the balanced schedule's model: its items' K/V tiles, plus
    ITEM_OVERHEAD per item (``tiles[m]`` as for :func:`causal_schedule`)."""
    n_m = len(tiles)
    return [sum(tiles[code % n_m] + ITEM_OVERHEAD for code in mine) for mine in items]


def causal_tiles(n_m: int, block_m: int, block_n: int, n_k: int) -> list[int]:
    """K/V tiles each causal query tile meets (the kernel's _work_item)."""
    return [-(-min((m + 1) * block_m, n_k) // block_n) for m in range(n_m)]


@functools.lru_cache(maxsize=64)
def _schedule_tensor(n_m: int, bh: int, programs: int, block_m: int, block_n: int, n_k: int,
                     balanced: bool, device: torch.device) -> torch.Tensor:
    """The table the kernel reads: program p's items are entries P + 1 + [start[p], start[p+1])
    after P + 1 offsets."""
    tiles = causal_tiles(n_m, block_m, block_n, n_k)
    items = causal_schedule(n_m, bh, programs, tiles, balanced=balanced)
    starts = [0]
    for mine in items:
        starts.append(starts[-1] + len(mine))
    flat = [code for mine in items for code in mine]
    return torch.tensor(starts + flat, dtype=torch.int32, device=device)


def _transposed_descriptor(vt: torch.Tensor, n_k: int, cols: int):
    """A TMA descriptor over Vᵀ stored [B, H, D, N_K padded] (FP8's K-major V) seen as
    [B·H, D, N_K]; one copy moves a [1, D, cols] box, keys past N_K arrive as zeros."""
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    B, H, D, n_pad = vt.shape
    box = [1, D, cols]
    layout = gl.NVMMASharedLayout.get_default_for(box, gl_dtype(vt.dtype))
    return TensorDescriptor(vt, shape=[B * H, D, n_k], strides=[D * n_pad, n_pad, 1],
                            block_shape=box, layout=layout)


def _launch(q, k, v, *, causal, scale, config, stamps=None, stamp_pid=0, stamp_iters=0,
            fp8=None):
    """fp8: e4m3 q and k, v the [B, H, D, N_K padded] Vᵀ, and ``fp8`` = (q, k, v descales
    [B, H, tiles] fp32, q_block, kv_block); o comes out fp16."""
    from flashedu.ops.fa3.gluon_kernel import fa3_fwd_kernel

    B, H, N_Q, D = q.shape
    N_K = k.shape[2]
    o = torch.empty(B, H, N_Q, D, device=q.device,
                    dtype=q.dtype if fp8 is None else torch.float16)
    lse = torch.empty(B, H, N_Q, device=q.device, dtype=torch.float32)
    if fp8 is None:
        v_desc = descriptor(v, config.block_n)
        descales = (lse, lse, lse, 0, 0, 1, 0)  # read only by an FP8 build
    else:
        dq, dk, dv, q_block, kv_block = fp8
        v_desc = _transposed_descriptor(v, N_K, config.block_n)
        shift = (kv_block // config.block_n).bit_length() - 1  # K/V tiles per block: 2^shift
        descales = (dq, dk, dv, dq.shape[-1], dk.shape[-1], q_block, shift)
    n_m = (N_Q + config.block_m - 1) // config.block_m
    schedule = lse  # read only by a causal persistent build
    if config.persistent:  # one program per SM, or per work item where there are fewer
        grid = (min(_sm_count(q.device), n_m * B * H), 1)
        if causal:
            schedule = _schedule_tensor(n_m, B * H, grid[0], config.block_m, config.block_n,
                                        N_K, config.balanced, q.device)
    else:
        grid = (n_m, B * H)
    fa3_fwd_kernel[grid](
        descriptor(q, config.q_rows), descriptor(k, config.block_n), v_desc,
        descriptor(o, config.q_rows), lse, lse if stamps is None else stamps, schedule, N_Q,
        N_K, scale * LOG2E, stamp_pid, B * H, *descales, CAUSAL=causal, STAGES=config.stages,
        WARP_SPEC=config.warp_specialize, PINGPONG=config.pingpong, INTRA=config.intra,
        SPLIT_MASK=config.split_mask,
        PERSISTENT=config.persistent, CONSUMERS=config.consumers,
        CONSUMER_REGS=config.consumer_regs, Q_BUFFERS=config.q_buffers,
        HALF_DIAGONAL=config.half_diagonal, STAMP_ITERS=stamp_iters, num_warps=config.num_warps)
    return o, lse


def gluon_forward(q, k, v, *, causal: bool, scale: float, config: GluonConfig | None = None):
    """o [B, H, N_Q, D] and L [B, H, N_Q] (fp32, natural log) from validated inputs."""
    q, k, v = (tma_ready(t) for t in (q, k, v))
    return _launch(q, k, v, causal=causal, scale=scale,
                   config=config or default_config(q.shape[-1], n_k=k.shape[2], causal=causal))


def gluon_fp8_forward(q, k, vt, *, causal: bool, scale: float, q_descale, k_descale, v_descale,
                      q_block: int, kv_block: int, config: GluonConfig | None = None):
    """o [B, H, N_Q, D] fp16 and L from validated e4m3 q, k and Vᵀ [B, H, D, N_K padded to 16]
    with per-tile descales (:func:`flashedu.ops.fp8.gluon.flash_attention_fp8_gluon` checks
    them). Each warpgroup's 64 query rows and each K/V tile must lie in one quantisation block:
    q_block a multiple of 64, kv_block a power-of-two multiple of the config's block_n."""
    config = config or default_config(q.shape[-1], n_k=k.shape[2], causal=causal)
    tiles = kv_block // config.block_n
    if q_block % 64 or kv_block % config.block_n or tiles & (tiles - 1):
        raise ValueError(f"{NAME} fp8: q_block={q_block} must be a multiple of 64 and "
                         f"kv_block={kv_block} a power-of-two multiple of {config.block_n}")
    if not config.warp_specialize:
        raise ValueError(f"{NAME} fp8: the config must be warp-specialised")
    q, k = tma_ready(q), tma_ready(k)
    return _launch(q, k, vt, causal=causal, scale=scale, config=config,
                   fp8=(q_descale, k_descale, v_descale, q_block, kv_block))


def _gluon_kernel(q, k, v, *, causal: bool, scale: float):
    """The Gluon forward for chapter 4's autograd (its backward reads q, k, v, o and L)."""
    q, k, v = (tma_ready(t) for t in (q, k, v))
    return (q, k, v, *gluon_forward(q, k, v, causal=causal, scale=scale))


def check(q, k, v, causal, scale) -> float:
    """Validate inputs, then say why this kernel cannot run here, if it cannot."""
    scale = check_qkv(q, k, v, causal=causal, scale=scale, dtypes=DTYPES, head_dims=HEAD_DIMS,
                      name=NAME)
    reason = runtime.current().why_not_gluon(device=q.device.type, dtype=q.dtype)
    if reason:
        raise RuntimeError(f"{NAME} cannot run here: {reason}")
    return scale


# The backward of flash_attention_fa3: chapter 4's Triton kernels, or (True) the Gluon backward
# of flashedu.ops.fa3.gluon_bwd at the head dims it has. It passes the oracle on a GPU but is no
# faster than chapter 4's (appendix, case study 1), so it stays off.
GLUON_BACKWARD = False


def _backward_for(head_dim: int):
    """The backward kernel flash_attention_fa3 hands autograd (None: chapter 4's)."""
    if not GLUON_BACKWARD:
        return None
    from flashedu.ops.fa3 import gluon_bwd

    return gluon_bwd.gluon_backward if head_dim in gluon_bwd.HEAD_DIMS else None


def flash_attention_fa3(q, k, v, *, causal: bool = False, scale: float | None = None) -> torch.Tensor:
    """FlashAttention-3's forward (Gluon: warp-specialised, ping-pong, intra-warpgroup
    pipelined) on ``[B, H, N, D]`` fp16/bf16 inputs, D in {64, 128, 256}, any N, on a Hopper GPU.
    Differentiable (chapter 4's backward, or the Gluon one: :data:`GLUON_BACKWARD`). Returns o
    like q."""
    scale = check(q, k, v, causal, scale)
    return FlashAttentionV2.apply(q, k, v, causal, scale, _gluon_kernel,
                                  _backward_for(q.shape[-1]))


# ----------------------------------------------------------------------------------------------
# Compiled for Hopper without one
# ----------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _resources(head_dim: int, dtype: torch.dtype, causal: bool, config: GluonConfig) -> dict:
    return compile_report(dict(head_dim=head_dim, dtype=DTYPE_NAMES[dtype], causal=causal,
                               **config.__dict__), NAME)


def hopper_resources(head_dim: int = 128, dtype: torch.dtype = torch.float16, *,
                     causal: bool = False, config: GluonConfig | None = None) -> dict:
    """Compile the kernel for sm_90 on any machine (no GPU needed: Triton's compiler and the
    ptxas it ships) and read what the chip would give it (``torch.float8_e4m3fn``: the FP8
    build, Vᵀ and fp16 O): shared memory, registers per thread,
    stack (spills), the setmaxnreg budgets, threads, wgmma instructions, and the consumers' main
    loop in machine code (its length, selects and exponentials). Runs in a process of its own
    (see :mod:`flashedu.ops.fa3.gluon_compile`), once per argument set; raises RuntimeError,
    with the compiler's last line, where the installed Triton cannot compile it."""
    return dict(_resources(head_dim, dtype, causal, config or default_config(head_dim)))


# ----------------------------------------------------------------------------------------------
# The measured timeline
# ----------------------------------------------------------------------------------------------
EVENTS = ("turn", "issued", "s_ready", "softmax_done", "o_ready")  # the kernel's EV_* order


def timeline(q, k, v, *, causal: bool = False, config: GluonConfig | None = None,
             iters: int = 6, program: int | None = None) -> dict:
    """Run a stamps build once and return, per consumer warpgroup, the clock (ns from the
    program's start) at each event of its first ``iters`` loop iterations.

    ``program`` is the query tile whose program is stamped (head 0 of batch 0); by default the
    last, which (causal) has the most K/V tiles. Cycles become ns by the program's own
    %globaltimer / %clock64 ratio.
    """
    scale = check(q, k, v, causal, None)
    config = config or default_config(q.shape[-1])
    if config.persistent:
        raise ValueError("timeline: a persistent program runs many work items; stamp a "
                         "persistent=False config")
    q, k, v = (tma_ready(t) for t in (q, k, v))
    n_m = (q.shape[2] + config.block_m - 1) // config.block_m
    program = n_m - 1 if program is None else program
    wgs = config.consumers if config.warp_specialize else 1
    stamps = torch.full((wgs, iters + 1, 8), -1, device=q.device, dtype=torch.int64)
    _launch(q, k, v, causal=causal, scale=scale, config=config, stamps=stamps,
            stamp_pid=program, stamp_iters=iters)
    torch.cuda.synchronize()
    s = stamps.cpu().tolist()
    t0 = min(s[w][0][0] for w in range(wgs))
    out = {"config": config.__dict__, "program": program, "iters": iters, "warpgroups": []}
    for w in range(wgs):
        clk0, gt0, clk1, gt1 = s[w][0][:4]
        ns_per_cycle = (gt1 - gt0) / max(clk1 - clk0, 1)
        rows = [{ev: (s[w][i][e] - t0) * ns_per_cycle if s[w][i][e] >= 0 else None
                 for e, ev in enumerate(EVENTS)} for i in range(1, iters + 1)]
        out["warpgroups"].append({"ns_per_cycle": ns_per_cycle, "start_ns": (clk0 - t0) * ns_per_cycle,
                                  "end_ns": (clk1 - t0) * ns_per_cycle, "iterations": rows})
    return out


__all__ = ["ABLATIONS", "BLOCK_M", "DTYPES", "EVENTS", "GluonConfig", "HEAD_DIMS", "NAME",
           "ablation_configs", "default_config", "flash_attention_fa3", "gluon_forward",
           "hopper_resources", "timeline"]
