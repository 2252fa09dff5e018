"""GPU presets carry the figures targets.md lists, and the roofline picks the binding ceiling."""
from __future__ import annotations

import pytest

from flashedu import hardware
from flashedu.bench.flops import attention_flops
from flashedu.iomodel import simulate


def test_presets_match_the_datasheet_figures():
    g = hardware.GPUS
    assert set(g) == {"A100", "H100", "H200", "T4", "L4"}
    assert (g["H100"].sms, g["H100"].sram_per_sm_bytes, g["H100"].hbm_bandwidth, g["H100"].fp16_flops) == \
        (132, 228 * 1024, 3.35e12, 989e12)
    assert g["H200"].hbm_bandwidth == 4.8e12 and g["H200"].fp16_flops == g["H100"].fp16_flops
    assert (g["A100"].sms, g["A100"].sram_per_sm_bytes, g["A100"].fp16_flops) == (108, 192 * 1024, 312e12)
    assert 1.5e12 <= g["A100"].hbm_bandwidth <= 2.1e12
    assert (g["T4"].sms, g["T4"].sram_per_sm_bytes, g["T4"].hbm_bandwidth, g["T4"].fp16_flops) == \
        (40, 64 * 1024, 320e9, 65e12)
    assert (g["L4"].sms, g["L4"].sram_per_sm_bytes, g["L4"].hbm_bandwidth, g["L4"].fp16_flops) == \
        (58, 100 * 1024, 300e9, 121e12)
    # The FA3 paper's 3.9 TFLOP/s of special functions on an H100.
    assert g["H100"].sfu_ops == pytest.approx(3.9e12, rel=0.02)
    for gpu in g.values():
        assert "datasheet" in gpu.source and "derived" in gpu.source


def test_lookup_and_fp8():
    assert hardware.gpu("h100") is hardware.GPUS["H100"]
    with pytest.raises(ValueError, match="gpu must be one of"):
        hardware.gpu("V100")
    with pytest.raises(ValueError, match="no fp8"):
        hardware.GPUS["A100"].matmul_flops("fp8")
    assert hardware.GPUS["H100"].matmul_flops("fp8") == 1979e12  # datasheet: about twice fp16


def test_roofline_takes_the_larger_time():
    h = hardware.GPUS["H100"]
    mem = hardware.predict(1e9, 1e9, "H100")
    assert mem.bound == "memory" and mem.time_s == pytest.approx(1e9 / h.hbm_bandwidth)
    comp = hardware.predict(1e15, 1e9, "H100")
    assert comp.bound == "compute" and comp.time_s == pytest.approx(1e15 / h.fp16_flops)
    assert hardware.arithmetic_intensity(100.0, 4.0) == 25.0
    assert h.ridge_point() == pytest.approx(989e12 / 3.35e12)
    with pytest.raises(ValueError, match="nbytes"):
        hardware.arithmetic_intensity(1.0, 0)


def test_roofline_of_a_simulation():
    r = simulate("v2", N=1024, d=64)
    rl = hardware.roofline(r, "A100")
    assert rl.flops == r.flops == attention_flops("fwd", B=1, H=1, N=1024, D=64, causal=False)
    assert rl.bytes == r.read_bytes + r.write_bytes
    assert attention_flops("fwd", B=1, H=2, N=1024, D=64, causal=True) == r.flops
    # Standard attention moves more bytes for the same FLOPs: lower intensity.
    assert hardware.roofline(simulate("standard", N=1024, d=64)).intensity < hardware.roofline(r).intensity
