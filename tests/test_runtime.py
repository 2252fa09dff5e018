"""Runtime decisions with the machine faked: decide() is pure, so every case is checked here."""
import torch

from flashedu.runtime import decide


def test_no_gpu_uses_interpreter():
    rt = decide(cuda=False)
    assert rt.interpreted and rt.device == "cpu"
    assert rt.size(cpu=64, gpu=4096) == 64
    assert "interpreter" in rt.describe()


def test_hopper_compiles_everything():
    rt = decide(cuda=True, capability=(9, 0), gpu_name="NVIDIA H100")
    assert rt.compiled and rt.device == "cuda"
    assert rt.size(cpu=64, gpu=4096) == 4096
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float8_e4m3fn):
        assert rt.why_not_triton(device="cuda", dtype=dtype) is None
    assert "sm_90" in rt.describe() and "H100" in rt.describe()


def test_t4_falls_back_for_bf16_fp8_and_tma_kernels():
    rt = decide(cuda=True, capability=(7, 5), gpu_name="Tesla T4")
    assert rt.compiled
    assert rt.why_not_triton(device="cuda", dtype=torch.float16) is None
    assert "sm_80" in rt.why_not_triton(device="cuda", dtype=torch.bfloat16)
    assert "sm_89" in rt.why_not_triton(device="cuda", dtype=torch.float8_e4m3fn)
    # A Hopper-only kernel (TMA) declares min_capability=(9, 0).
    assert "sm_90" in rt.why_not_triton(device="cuda", dtype=torch.float16, min_capability=(9, 0))


def test_interpreter_has_no_bf16_and_wrong_device_is_named():
    rt = decide(cuda=False)
    assert "bfloat16" in rt.why_not_triton(device="cpu", dtype=torch.bfloat16)
    assert rt.why_not_triton(device="cpu", dtype=torch.float32) is None
    assert "tensors are on cuda" in rt.why_not_triton(device="cuda", dtype=torch.float32)


def test_force_cpu_and_preset_interpreter_env_win_over_a_gpu():
    assert decide(cuda=True, capability=(9, 0), gpu_name="H100", force_cpu=True).interpreted
    assert decide(cuda=True, capability=(9, 0), gpu_name="H100", interpret_env="1").interpreted


def test_triton_imported_too_early_or_missing_or_gpu_too_old():
    early = decide(cuda=False, triton_imported=True, interpret_env=None)
    assert early.mode == "unavailable" and "import flashedu first" in early.reason
    assert decide(cuda=False, triton_imported=True, interpret_env="1").interpreted
    missing = decide(cuda=True, capability=(9, 0), triton_installed=False)
    assert missing.mode == "unavailable" and "pip install triton" in missing.reason
    old = decide(cuda=True, capability=(6, 1), gpu_name="GTX 1080")
    assert old.mode == "unavailable" and "sm_70" in old.reason
    assert old.why_not_triton(device="cuda", dtype=torch.float16) == old.reason


def test_this_process_set_the_interpreter_variable_before_triton():
    import os
    import flashedu

    if flashedu.runtime.current().interpreted:
        assert os.environ["TRITON_INTERPRET"] == "1"


def test_chapter_run_falls_back_with_a_message(capsys, monkeypatch):
    import flashedu
    from flashedu import chapter, runtime

    # Pretend this is a T4: the compiled runtime refuses bf16 for Triton kernels.
    monkeypatch.setattr(runtime, "_CURRENT", runtime.decide(cuda=True, capability=(7, 5), gpu_name="Tesla T4"))
    q = torch.randn(1, 1, 5, 16, dtype=torch.bfloat16)
    o, ran = chapter.run("standard_triton", q, q, q)
    assert ran == "standard_reference" and o.shape == q.shape
    reason = flashedu.get("standard_triton").why_not(device="cpu", dtype=torch.bfloat16)
    assert f"standard_triton cannot run here ({reason})" in capsys.readouterr().out


def test_require_triton_names_the_kernel_and_the_reason(monkeypatch):
    from flashedu import runtime

    monkeypatch.setattr(runtime, "_CURRENT", runtime.decide(cuda=False))
    import pytest
    with pytest.raises(RuntimeError, match="my_kernel cannot run here: the Triton interpreter has no bfloat16"):
        runtime.require_triton("my_kernel", torch.zeros(1, dtype=torch.bfloat16))
    assert runtime.require_triton("my_kernel", torch.zeros(1)).interpreted
