"""What the FA3 paper measured, for the model's results to be set beside (cited, not computed)."""
from __future__ import annotations

# FA3 paper, Table 2 (H100, fp16, batch 4, 16 heads, D = 128, N = 8448), all three rows, in the
# paper's words. Keys name the schedule of ours that we read each row as; the paper does not map
# its rows to schedules, so that reading is ours. "no_ws" (pipelining kept, warp specialisation
# off) matches no schedule of the model, which has no pipelining without warp specialisation,
# so `flashedu.viz.gantt.schedule_bars` does not draw it.
PAPER_ABLATION = {
    "fa3": ("FlashAttention-3", 661),
    "pingpong": ("no GEMM-softmax pipelining, warp specialisation (read as schedule (c))", 582),
    "no_ws": ("GEMM-softmax pipelining, no warp specialisation", 570),
}
