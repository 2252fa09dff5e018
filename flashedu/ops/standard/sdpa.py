"""torch's own scaled_dot_product_attention, registered so every comparison can name it."""
from __future__ import annotations

import torch.nn.functional as F

from flashedu.validate import check_qkv


def sdpa_attention(q, k, v, *, causal: bool = False, scale: float | None = None):
    scale = check_qkv(q, k, v, causal=causal, scale=scale, name="sdpa")
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
