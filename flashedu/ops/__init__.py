"""Attention implementations, one folder per algorithm; importing this registers them all.

Each folder holds ``reference.py`` (readable PyTorch, the paper's loop order, fp32 inside) and,
where the chapter has one, ``triton_impl.py`` (the GPU kernel, same arguments).
"""
from flashedu.ops import standard  # noqa: F401  (chapter 1)
from flashedu.ops import online  # noqa: F401  (chapter 2)
from flashedu.ops import v1, v2  # noqa: F401  (chapters 3, 4)
from flashedu.ops import block_sparse  # noqa: F401  (chapter 5)
from flashedu.ops import fa3  # noqa: F401  (chapter 6)
from flashedu.ops import split_kv, ring  # noqa: F401  (chapter 7)
