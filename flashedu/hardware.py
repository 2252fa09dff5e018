"""GPU presets and the roofline: how long a kernel that moves B bytes and does F FLOPs must take.

Figures are **vendor datasheet figures** (dense, no sparsity), except the special-function (exp)
rate, which NVIDIA does not list: it is derived as SMs × 16 results per clock per SM (the SFU
throughput of the CUDA programming guide's arithmetic-instruction table) × boost clock, which
reproduces the 3.9 TFLOP/s the FlashAttention-3 paper quotes for the H100. Each preset's
``source`` says which is which. Real kernels reach a fraction of these ceilings.
"""
from __future__ import annotations

from dataclasses import dataclass

KIB = 1024


@dataclass(frozen=True)
class GPU:
    """One GPU's ceilings. Rates in operations per second, bandwidth in bytes per second."""

    name: str
    sms: int
    sram_per_sm_bytes: int  # shared memory a thread block can use (what the tiles must fit)
    hbm_bandwidth: float  # bytes/s
    fp16_flops: float  # dense fp16/bf16 tensor-core matmul, FLOP/s
    fp8_flops: float | None  # dense fp8 tensor-core matmul, FLOP/s; None: no fp8 tensor cores
    sfu_ops: float  # special-function unit results/s (exp2, the softmax's exponentials)
    boost_clock_hz: float
    source: str

    def matmul_flops(self, dtype: str = "fp16") -> float:
        """Peak matmul rate for ``dtype`` "fp16" (also bf16) or "fp8"."""
        if dtype in ("fp16", "bf16"):
            return self.fp16_flops
        if dtype == "fp8":
            if self.fp8_flops is None:
                raise ValueError(f"{self.name} has no fp8 tensor cores")
            return self.fp8_flops
        raise ValueError(f"dtype must be 'fp16', 'bf16' or 'fp8', got {dtype!r}")

    def ridge_point(self, dtype: str = "fp16") -> float:
        """FLOPs per byte above which a kernel is compute-bound rather than memory-bound."""
        return self.matmul_flops(dtype) / self.hbm_bandwidth


def _sfu(sms: int, clock_hz: float) -> float:
    return sms * 16 * clock_hz


_DATASHEET = "NVIDIA datasheet (dense, without sparsity)"
_DERIVED_SFU = "exp rate derived: SMs × 16 SFU results/clock × boost clock"

GPUS: dict[str, GPU] = {g.name: g for g in (
    GPU("A100", sms=108, sram_per_sm_bytes=192 * KIB, hbm_bandwidth=2.039e12, fp16_flops=312e12,
        fp8_flops=None, sfu_ops=_sfu(108, 1.41e9), boost_clock_hz=1.41e9,
        source=f"{_DATASHEET}, A100 SXM4 80 GB (the 40 GB part has 1.555 TB/s); 192 KB is the "
               f"combined L1/shared memory per SM; {_DERIVED_SFU}"),
    GPU("H100", sms=132, sram_per_sm_bytes=228 * KIB, hbm_bandwidth=3.35e12, fp16_flops=989e12,
        fp8_flops=1979e12, sfu_ops=_sfu(132, 1.83e9), boost_clock_hz=1.83e9,
        source=f"{_DATASHEET}, H100 SXM5 80 GB; {_DERIVED_SFU} (≈3.9 T/s, as the FA3 paper says)"),
    GPU("H200", sms=132, sram_per_sm_bytes=228 * KIB, hbm_bandwidth=4.8e12, fp16_flops=989e12,
        fp8_flops=1979e12, sfu_ops=_sfu(132, 1.83e9), boost_clock_hz=1.83e9,
        source=f"{_DATASHEET}, H200 SXM 141 GB: the H100's compute with faster HBM3e; {_DERIVED_SFU}"),
    GPU("T4", sms=40, sram_per_sm_bytes=64 * KIB, hbm_bandwidth=320e9, fp16_flops=65e12,
        fp8_flops=None, sfu_ops=_sfu(40, 1.59e9), boost_clock_hz=1.59e9,
        source=f"{_DATASHEET}, T4 (GDDR6, not HBM); {_DERIVED_SFU}"),
    GPU("L4", sms=58, sram_per_sm_bytes=100 * KIB, hbm_bandwidth=300e9, fp16_flops=121e12,
        fp8_flops=242e12, sfu_ops=_sfu(58, 2.04e9), boost_clock_hz=2.04e9,
        source=f"{_DATASHEET}, L4 (GDDR6, not HBM); {_DERIVED_SFU}"),
)}


def gpu(name: str | GPU) -> GPU:
    """A preset by name ("A100", "H100", "H200", "T4", "L4"), case-insensitive."""
    if isinstance(name, GPU):
        return name
    for key, g in GPUS.items():
        if isinstance(name, str) and key.lower() == name.lower():
            return g
    raise ValueError(f"gpu must be one of {', '.join(GPUS)}, got {name!r}")


def arithmetic_intensity(flops: float, nbytes: float) -> float:
    """FLOPs per byte of HBM traffic."""
    if nbytes <= 0:
        raise ValueError(f"nbytes must be positive, got {nbytes!r}")
    return flops / nbytes


@dataclass(frozen=True)
class Roofline:
    """The roofline prediction for one kernel on one GPU (all times in seconds)."""

    gpu: str
    flops: float
    bytes: float
    intensity: float  # FLOPs per byte
    compute_s: float
    memory_s: float
    time_s: float  # max(compute_s, memory_s)
    bound: str  # "compute" or "memory"

    @property
    def achieved_flops(self) -> float:
        return self.flops / self.time_s


def predict(flops: float, nbytes: float, device: str | GPU = "H100", *, dtype: str = "fp16") -> Roofline:
    """Roofline time: max(FLOPs / matmul rate, bytes / HBM bandwidth) on ``device``."""
    g = gpu(device)
    compute_s = flops / g.matmul_flops(dtype)
    memory_s = nbytes / g.hbm_bandwidth
    return Roofline(g.name, flops, nbytes, arithmetic_intensity(flops, nbytes), compute_s, memory_s,
                    max(compute_s, memory_s), "compute" if compute_s >= memory_s else "memory")


def predicted_time(flops: float, nbytes: float, device: str | GPU = "H100", *, dtype: str = "fp16") -> float:
    """Seconds: max(FLOPs / rate, bytes / bandwidth)."""
    return predict(flops, nbytes, device, dtype=dtype).time_s


def roofline(report, device: str | GPU = "H100", *, dtype: str = "fp16") -> Roofline:
    """The roofline prediction for a :class:`flashedu.iomodel.Report` (its FLOPs and bytes)."""
    return predict(report.flops, report.read_bytes + report.write_bytes, device, dtype=dtype)


@dataclass(frozen=True)
class MemoryLevel:
    name: str
    bandwidth: float  # bytes/s
    capacity: float  # bytes
    where: str


# The memory hierarchy as the FlashAttention paper draws it (Dao et al. 2022, Figure 1 left, for
# an A100 40 GB): cited figures, not measured here.
MEMORY_HIERARCHY_SOURCE = "FlashAttention paper (Dao et al., 2022), Figure 1, A100 40 GB"
MEMORY_HIERARCHY = (
    MemoryLevel("GPU SRAM", 19e12, 20e6, "on chip: shared memory of all SMs"),
    MemoryLevel("GPU HBM", 1.5e12, 40e9, "off chip, on the GPU package"),
    MemoryLevel("CPU DRAM", 12.8e9, 1e12, "main memory, across PCIe"),
)


# --- One streaming multiprocessor, per clock (chapter 6's FlashAttention-3 simulator) ---------
# The presets above are whole-GPU rates; the simulator schedules one SM, so it divides them by
# SMs × boost clock. Two figures are not in the presets: the FP32 lanes (the CUDA programming
# guide's arithmetic-instruction table: 128 FP32 results per clock per SM on sm_80 and sm_90)
# and the rate at which an SM's copy engine receives K/V tiles, which the book treats as an
# assumption (see ``SM_LOAD_NOTE``).
SM_FP32_PER_CLK = 128
SM_REGISTER_BYTES = 65536 * 4  # 64 K 32-bit registers per SM on sm_80 and sm_90
SM_LOAD_BYTES_PER_CLK = 32.0
SM_LOAD_NOTE = ("assumed: K/V tiles arrive from L2 at 32 bytes per clock per SM (≈7.7 TB/s over "
                "an H100's 132 SMs at boost clock). Not a datasheet figure: at 128 query rows per "
                "program each K/V byte feeds 128 FLOPs, so FA3's 740 TFLOP/s needs at least "
                "5.8 TB/s of tiles, more than HBM's 3.35 TB/s: most tiles must come from L2.")


@dataclass(frozen=True)
class SMRates:
    """Throughput of one SM per clock cycle, derived from a :class:`GPU` preset."""

    gpu: str
    clock_hz: float
    tensor_flops_per_clk: float  # fp16 tensor-core FLOPs (preset rate / SMs / clock)
    fp8_flops_per_clk: float | None
    sfu_per_clk: float  # exponentials (MUFU results)
    fp32_per_clk: float  # FP32 ALU results (max, add, FMA, conversions)
    load_bytes_per_clk: float  # K/V tile bytes the copy engine delivers (an assumption)
    register_bytes: int
    source: str

    def gemm_flops_per_clk(self, dtype: str = "fp16") -> float:
        """Tensor-core FLOPs per clock for ``dtype`` "fp16"/"bf16" or "fp8"."""
        if dtype in ("fp16", "bf16"):
            return self.tensor_flops_per_clk
        if dtype == "fp8":
            if self.fp8_flops_per_clk is None:
                raise ValueError(f"{self.gpu} has no fp8 tensor cores")
            return self.fp8_flops_per_clk
        raise ValueError(f"dtype must be 'fp16', 'bf16' or 'fp8', got {dtype!r}")


def sm_rates(device: str | GPU = "H100", *, load_bytes_per_clk: float = SM_LOAD_BYTES_PER_CLK) -> SMRates:
    """One SM of ``device`` per clock: the preset's rates divided by SMs × boost clock."""
    if not (isinstance(load_bytes_per_clk, (int, float)) and load_bytes_per_clk > 0):
        raise ValueError(f"load_bytes_per_clk must be a positive number, got {load_bytes_per_clk!r}")
    g = gpu(device)
    per = g.sms * g.boost_clock_hz
    return SMRates(g.name, g.boost_clock_hz, g.fp16_flops / per,
                   None if g.fp8_flops is None else g.fp8_flops / per, g.sfu_ops / per,
                   SM_FP32_PER_CLK, float(load_bytes_per_clk), SM_REGISTER_BYTES,
                   source=f"{g.source}; per SM: ÷ {g.sms} SMs ÷ {g.boost_clock_hz / 1e9:.2f} GHz; "
                          f"FP32 lanes from the CUDA guide; loads {SM_LOAD_NOTE}")


@dataclass(frozen=True)
class Link:
    """A GPU-to-GPU connection (chapter 7's ring). ``bandwidth`` is bytes/s in *one* direction:
    a ring step sends one shard out and takes one in at the same time, so that is its speed."""

    name: str
    bandwidth: float  # bytes/s, each direction
    source: str


_LINK_DATASHEET = "vendor datasheet figure: total (both directions) ÷ 2"
LINKS: dict[str, Link] = {l.name: l for l in (
    Link("NVLink 4", 450e9, f"{_LINK_DATASHEET}; H100/H200 SXM: 900 GB/s per GPU"),
    Link("NVLink 3", 300e9, f"{_LINK_DATASHEET}; A100 SXM: 600 GB/s per GPU"),
    Link("PCIe 5.0 x16", 64e9, f"{_LINK_DATASHEET}; PCIe 5.0 x16: 128 GB/s"),
    Link("PCIe 4.0 x16", 32e9, f"{_LINK_DATASHEET}; PCIe 4.0 x16: 64 GB/s"),
    Link("InfiniBand NDR", 50e9, "vendor datasheet figure: 400 Gb/s per port, each direction (ConnectX-7)"),
)}


def link(name: str | Link) -> Link:
    """An interconnect preset by name ("NVLink 4", "PCIe 5.0 x16", ...), case-insensitive."""
    if isinstance(name, Link):
        return name
    for key, l in LINKS.items():
        if isinstance(name, str) and key.lower() == name.lower():
            return l
    raise ValueError(f"link must be one of {', '.join(LINKS)}, got {name!r}")
