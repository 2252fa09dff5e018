"""Standard attention's three steps as separate kernels, each with its own FLOPs and HBM bytes,
taken from a simulation's per-tensor counts, so each can be placed on the roofline."""
from __future__ import annotations

from dataclasses import dataclass

# Softmax's work per score: max, subtract, exp, add, divide. Not tensor-core FLOPs: they run on
# the CUDA cores and the exp unit, which is why the step is placed at its own intensity.
SOFTMAX_OPS_PER_SCORE = 5


@dataclass(frozen=True)
class Step:
    name: str
    flops: float
    bytes: float

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes


def standard_steps(report) -> list[Step]:
    """S = QKᵀ, P = softmax(S), O = PV for a ``simulate("standard", ...)`` report."""
    if report.algorithm != "standard":
        raise ValueError(f"report must be of the standard algorithm, got {report.algorithm!r}")
    t = report.per_tensor
    scores = report.batch * report.heads * report.N * report.N_k
    matmul = 2.0 * scores * report.d
    return [
        Step("S = QKᵀ", matmul, t["Q"].read_bytes + t["K"].read_bytes + t["S"].write_bytes),
        Step("P = softmax(S)", SOFTMAX_OPS_PER_SCORE * scores, t["S"].read_bytes + t["P"].write_bytes),
        Step("O = PV", matmul, t["P"].read_bytes + t["V"].read_bytes + t["O"].write_bytes),
    ]
