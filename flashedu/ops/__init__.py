"""Attention implementations, one folder per algorithm; importing this registers them all.

Each folder holds ``reference.py`` (readable PyTorch, the paper's loop order, fp32 inside) and,
where the chapter has one, ``triton_impl.py`` (the GPU kernel, same arguments).
"""
from . import standard  # noqa: F401
from . import online  # noqa: F401
from . import v1, v2  # noqa: E402,F401
from . import split_kv, ring  # noqa: E402,F401  (chapter 7)
from . import block_sparse  # noqa: E402,F401  (chapter 5)
