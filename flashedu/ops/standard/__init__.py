"""Standard attention: S = QKᵀ and P = softmax(S) are materialised in HBM (chapter 1)."""
from flashedu._registry import Impl, register
from flashedu.iomodel.models import Model, register_model
from flashedu.ops.standard.reference import standard_attention, standard_forward
from flashedu.ops.standard.naive_torch import naive_attention
from flashedu.ops.standard.sdpa import sdpa_attention
from flashedu.ops.standard.kernel import standard_attention_triton

import torch

register_model(Model("standard", forward=standard_forward))
register(Impl(
    name="standard_reference", algorithm="standard", backend="reference", chapter=1,
    fn=standard_attention, backward=True,
    summary="Three steps of seed 002: S = QKᵀ, P = softmax(S), O = PV, each a full N×N tensor.",
))
register(Impl(
    name="standard_triton", algorithm="standard", backend="triton", chapter=1,
    fn=standard_attention_triton,
    dtypes=(torch.float16, torch.bfloat16, torch.float32),
    summary="Three Triton kernels (matmul → row softmax → matmul); S and P go through HBM.",
))
register(Impl(
    name="sdpa", algorithm="standard", backend="torch", chapter=1,
    fn=sdpa_attention, backward=True,
    summary="torch.nn.functional.scaled_dot_product_attention, whichever backend torch picks.",
))
register(Impl(
    name="standard_torch", algorithm="standard", backend="torch", chapter=1,
    fn=naive_attention, backward=True,
    summary="Three torch ops in the input dtype (matmul, softmax, matmul), as frameworks did before fusion.",
))
