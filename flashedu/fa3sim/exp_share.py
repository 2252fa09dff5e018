"""How long softmax's exponentials take next to the two GEMMs of a tile, from the presets.

Per score S_ij the two GEMMs do 4·D FLOPs (2·D for Q Kᵀ, 2·D for P V) on the tensor cores, and
softmax does one exponential on the special-function units (MUFU). So the exponentials take

    (1 / exp rate) / (4·D / matmul rate) = matmul rate / (4·D · exp rate)

of the GEMMs' time: on an H100, 989 / 3.9 ≈ 256 and 4·D = 512 at D = 128, so one half.
"""
from __future__ import annotations

from dataclasses import dataclass

from flashedu.hardware import gpu as _gpu


@dataclass(frozen=True)
class ExpShare:
    gpu: str
    d: int
    dtype: str
    gemm_s_per_score: float  # seconds of tensor-core time per score (4·D FLOPs)
    exp_s_per_score: float  # seconds of MUFU time per score (one exponential)

    @property
    def ratio(self) -> float:
        """Exponential time over GEMM time for the same scores."""
        return self.exp_s_per_score / self.gemm_s_per_score


def exp_share(d: int, device: str = "H100", *, dtype: str = "fp16") -> ExpShare:
    """Exponentials vs GEMMs per score for head dim ``d`` on ``device`` (``dtype`` of the GEMMs)."""
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise ValueError(f"d must be a positive int, got {d!r}")
    g = _gpu(device)
    return ExpShare(g.name, d, dtype, 4.0 * d / g.matmul_flops(dtype), 1.0 / g.sfu_ops)


def exp_share_table(dims=(64, 128, 256), device: str = "H100", dtype: str = "fp16") -> list[ExpShare]:
    """:func:`exp_share` for each head dim in ``dims``."""
    return [exp_share(d, device, dtype=dtype) for d in dims]
