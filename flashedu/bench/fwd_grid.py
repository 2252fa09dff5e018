"""The forward-speed grid that ``v2_speed`` and ``fa3_gluon`` share: fp16, hidden size 2048
(H = 2048 / D), B = 16384 / N, causal or not; every candidate's output checked against SDPA's
cuDNN backend before it is timed (median of calls replayed from a CUDA graph), one row each.

Each case's candidates are timed in ``rounds`` interleaved rounds (all of them once, then all
again), and a row's ``ms`` is the median of its rounds (``ms_rounds``): one kernel timed twice
among one case's candidates had differed by a few percent (the fa3_gluon_tuning "knobs" run,
case study 5), the size of the effects the grid is asked to tell apart.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable


class Grid:
    """``Grid(recorder)`` keeps the rows, saving after each; :meth:`run` walks the cases.
    ``tokens`` (B·N), ``hidden`` (H·D) and ``device`` are the papers' shapes on a GPU, smaller
    in the tests."""

    def __init__(self, recorder, *, tokens: int = 16384, hidden: int = 2048,
                 device: str = "cuda"):
        self.rec = recorder
        self.rows: list[dict] = []
        self.tokens, self.hidden, self.device = tokens, hidden, device

    def row(self, **r) -> None:
        self.rows.append(r)
        self.rec.save(self.rows)
        shown = {k: v for k, v in r.items() if k not in ("error", "config")}
        print(shown | ({"error": r["error"][:160]} if "error" in r else {}), flush=True)

    def run(self, Ds, Ns, *, candidates: Callable, deadline: float,
            after_case: Callable | None = None, rounds: int = 3,
            causals=(False, True)) -> None:
        """For each (D, causal, N): ``candidates(q, k, v, causal)`` gives {name: (fn, extra)}
        (``extra``: fields for the row); each is checked and timed, in ``rounds`` interleaved
        rounds. ``after_case(D, causal, N)`` may add rows. Stops starting cases ``deadline``
        seconds after the call."""
        import torch

        from flashedu.bench.peers import sdpa_peer
        from flashedu.bench.recorder import gpu_time

        cudnn = sdpa_peer("sdpa_cudnn")
        t_start = time.time()
        for D in Ds:
            for causal in causals:
                for N in Ns:
                    if time.time() - t_start > deadline:
                        self.row(note="deadline reached", D=D, causal=causal, N=N)
                        self.rec.save(self.rows, final=True)
                        return
                    B, H = self.tokens // N, self.hidden // D
                    flops = 4 * B * H * N * N * D / (2 if causal else 1)
                    q, k, v = (torch.randn(B, H, N, D, device=self.device,
                                           dtype=torch.float16) for _ in range(3))
                    ref = cudnn(q, k, v, causal=causal)
                    cands = {"sdpa_cudnn": (lambda: cudnn(q, k, v, causal=causal), {})}
                    cands.update(candidates(q, k, v, causal))
                    timed = []  # (row, fn) of the candidates that ran
                    for name, (fn, extra) in cands.items():
                        r = dict(impl=name, D=D, causal=causal, N=N, B=B, H=H, **extra)
                        t0 = time.time()
                        try:
                            with torch.no_grad():
                                o = fn()
                                if o.is_cuda:
                                    torch.cuda.synchronize()
                                r["err"] = (o.float() - ref.float()).abs().max().item()
                                r["first_call_s"] = round(time.time() - t0, 1)
                                r.update(gpu_time(fn))
                            r["tflops"] = round(flops / (r["ms"] * 1e-3) / 1e12, 1)
                        except Exception as exc:  # noqa: BLE001  (a failing variant is a result)
                            r["error"] = f"{type(exc).__name__}: {exc}"[:400]
                        self.row(**r)
                        if "ms" in r:
                            timed.append((self.rows[-1], fn))
                    self._more_rounds(timed, rounds, flops, gpu_time)
                    if after_case:
                        after_case(D, causal, N)
                    del q, k, v, ref
                    if self.device == "cuda":
                        torch.cuda.empty_cache()
        self.rec.save(self.rows, final=True)

    def _more_rounds(self, timed, rounds: int, flops: float, gpu_time) -> None:
        """Time every candidate of a case again, ``rounds - 1`` times, in turn; each row's ms
        becomes the median of its rounds."""
        import torch

        for r, _ in timed:
            r["ms_rounds"] = [r["ms"]]
        for _ in range(rounds - 1):
            for r, fn in timed:
                with torch.no_grad():
                    r["ms_rounds"].append(gpu_time(fn)["ms"])
        for r, _ in timed:
            r["ms"] = statistics.median(r["ms_rounds"])
            r["tflops"] = round(flops / (r["ms"] * 1e-3) / 1e12, 1)
        if timed:
            self.rec.save(self.rows)
