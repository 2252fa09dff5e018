"""Lab 5, a solution: block-sparse attention over a CSR list of tiles (Dao et al., 2022,
Algorithm 5, in FA2's loop order)."""
from __future__ import annotations

import math

import torch


# [block_sparse-solution-start]
def block_sparse_attention(q, k, v, csr, *, block_r, block_c, causal, scale):
    N, D = q.shape  # q, k, v: [N, D]
    o = torch.empty_like(q)
    for i in range(-(-N // block_r)):  # one Q tile at a time, as one program would
        r0, r1 = i * block_r, min(N, (i + 1) * block_r)
        m = torch.full((r1 - r0, 1), -math.inf, dtype=q.dtype)
        l = torch.zeros((r1 - r0, 1), dtype=q.dtype)
        acc = torch.zeros((r1 - r0, D), dtype=q.dtype)
        for e in range(int(csr.ptr[i]), int(csr.ptr[i + 1])):  # only the listed tiles
            j = int(csr.index[e])
            c0, c1 = j * block_c, min(N, (j + 1) * block_c)
            s = scale * q[r0:r1] @ k[c0:c1].T  # [Br, Bc]
            if causal:  # a diagonal tile also hides the keys after each query
                s = s.masked_fill(torch.arange(c0, c1)[None, :] > torch.arange(r0, r1)[:, None],
                                  -math.inf)
            m_new = torch.maximum(m, s.amax(dim=1, keepdim=True))
            shift = torch.where(m_new > -math.inf, m_new, torch.zeros_like(m_new))
            alpha = torch.exp(m - shift)  # 0 while m = -inf
            p = torch.exp(s - shift)
            l = alpha * l + p.sum(dim=1, keepdim=True)
            acc = alpha * acc + p @ v[c0:c1]
            m = m_new
        # A tile with an empty list (or rows that saw no key) has l = 0: its rows are 0.
        o[r0:r1] = acc / torch.where(l > 0, l, torch.ones_like(l))
    return o
# [block_sparse-solution-end]
