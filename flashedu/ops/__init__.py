"""Attention implementations, one folder per algorithm; importing this registers them all.

Each folder holds an algorithm's whole story: ``reference.py`` (readable PyTorch in the paper's loop
order, written against the memory model's chip; ``reference_bwd.py`` for the backward), beside
``kernel.py`` (the Triton kernel, called the same way; ``kernel_bwd.py``), its own helpers, and an
``__init__.py`` that registers its implementations (and plugs its references into
:mod:`flashedu.iomodel`). ``_triton.py`` holds the host-side launch helpers every kernel shares.
Arrows point down: an algorithm may build on an earlier one (block-sparse on v2), never the
reverse.
"""
from flashedu.ops import standard  # noqa: F401  (chapter 1)
from flashedu.ops import online  # noqa: F401  (chapter 2)
from flashedu.ops import v1, v2  # noqa: F401  (chapters 3, 4)
from flashedu.ops import block_sparse  # noqa: F401  (chapter 5)
from flashedu.ops import fa3, fp8  # noqa: F401  (chapter 6)
from flashedu.ops import split_kv, ring  # noqa: F401  (chapter 7)
