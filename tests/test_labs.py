"""The labs' grader, tested both ways: each lab's packaged solution passes, and each planted
mistake (the solution with one snippet changed) fails with the diagnosis that names it."""
from __future__ import annotations

import importlib
import math

import pytest
import torch

from flashedu import listing
from flashedu.labs import LABS, Report, grade, require_filled
from labs_mutants import mutant

SOLUTIONS = {  # lab -> (solution module, the function the reader writes)
    "online_softmax": ("flashedu.labs.solutions.online_softmax", "online_softmax"),
    "v1_reference": ("flashedu.labs.solutions.v1_reference", "v1_forward"),
    "v2_forward": ("flashedu.labs.solutions.v2_forward", "v2_forward"),
    "v2_backward": ("flashedu.labs.solutions.v2_backward", "v2_backward_dkdv"),
    "block_sparse": ("flashedu.labs.solutions.block_sparse", "block_sparse_attention"),
    "split_kv": ("flashedu.labs.solutions.split_kv", "merge_splits"),
}


def solution(lab):
    module, name = SOLUTIONS[lab]
    return getattr(importlib.import_module(module), name)


def test_every_lab_has_a_solution():
    assert set(SOLUTIONS) == set(LABS)


@pytest.mark.parametrize("lab", list(SOLUTIONS))
def test_the_solution_passes(lab):
    report = grade(lab, solution(lab))
    assert report.passed, str(report)
    assert len(report.cases) >= 6 and not report.failures
    if lab in ("v2_forward", "v2_backward"):  # the Triton labs say where their speed is measured
        from flashedu import runtime
        assert len(report.notes) == 1
        assert ("× its time" if runtime.current().compiled else "GPU only") in report.notes[0]


@pytest.mark.parametrize("lab", list(SOLUTIONS))
def test_the_solution_is_shown_from_its_file(lab):
    module, name = SOLUTIONS[lab]
    region = listing.region(module, f"{lab}-solution")
    assert f"def {name}(" in region.text


def test_a_bad_lab_name_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="lab must be one of"):
        grade("v3", solution("split_kv"))


def test_fn_must_be_callable():
    with pytest.raises(TypeError, match="fn must be callable"):
        grade("split_kv", 42)


def test_a_bad_seed_is_a_value_error():
    with pytest.raises(ValueError, match="seed"):
        grade("split_kv", solution("split_kv"), seed=-1)


def test_a_seed_replays_the_same_inputs():
    seen = []

    def spy(o, m, l):
        seen.append(o.clone())
        return solution("split_kv")(o, m, l)

    grade("split_kv", spy, seed=7)
    first = list(seen)
    seen.clear()
    grade("split_kv", spy, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(first, seen))
    seen.clear()
    grade("split_kv", spy, seed=8)
    assert not torch.equal(first[0], seen[0])


def test_without_a_seed_each_run_draws_fresh_inputs_and_prints_its_seed():
    a, b = grade("split_kv", solution("split_kv")), grade("split_kv", solution("split_kv"))
    assert a.seed != b.seed
    assert f"seed={a.seed}" in str(a)


def test_blanks_not_filled_read_not_attempted_yet():
    def blank(x, block):
        raise NotImplementedError("fill in the running max")

    report = grade("online_softmax", blank)
    assert report.status == "not attempted" and not report.passed
    assert "not attempted yet" in str(report) and "fill in the running max" in str(report)
    assert "not attempted yet" in report._repr_html_()


def test_a_triton_skeleton_with_blanks_raises_not_implemented(tmp_path):
    src = ("import triton\nimport triton.language as tl\n\n@triton.jit\ndef k(X):\n"
           "    x = ___  # fill in\n    tl.store(X, x)\n")
    (tmp_path / "skeleton_k.py").write_text(src)
    spec = importlib.util.spec_from_file_location("skeleton_k", tmp_path / "skeleton_k.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with pytest.raises(NotImplementedError, match="blanks marked ___ in k"):
        require_filled(mod.k)
    require_filled(importlib.import_module("flashedu.labs.solutions.v2_forward").v2_forward_kernel)


def test_an_exception_in_the_readers_code_is_a_failed_case():
    report = grade("split_kv", lambda o, m, l: o.sum(0) @ m)
    assert not report.passed and "raised RuntimeError" in report.diagnosis


def test_a_wrong_shape_is_named():
    report = grade("split_kv", lambda o, m, l: o.sum(0).T)
    assert "has shape" in report.diagnosis


def test_the_report_puts_the_first_failing_case_first_in_text_and_html():
    report = grade("online_softmax", lambda x, block: torch.softmax(x, -1))  # NaN on masked rows
    assert not report.passed
    lines = str(report).splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("case"))
    assert "FAIL" in lines[header + 1] and report.failures[0].name in lines[header + 1]
    html = report._repr_html_()
    assert "<table" in html and html.index("FAIL") < html.index("pass</td>")
    assert "fully masked" in report.diagnosis


def test_the_v1_report_has_a_traffic_column():
    report = grade("v1_reference", solution("v1_reference"))
    assert "traffic (× formula)" in str(report) and "reads 1.00×, writes 1.00×" in str(report)


def test_report_is_a_report():
    assert isinstance(grade("split_kv", solution("split_kv")), Report)


def test_nothing_below_the_labs_imports_them():
    from test_layout import _graph

    users = {m for m, targets in _graph().items() if not m.startswith("flashedu.labs")
             and any(t.startswith("flashedu.labs") for t in targets)}
    assert users == set()


# (lab, the mistake, edits to the solution's source, what the diagnosis must say)
MISTAKES = [
    ("online_softmax", "missing rescale",
     [("l = l * torch.exp(m - shift) +", "l = l +")], "not rescaled by e^(m_old − m_new)"),
    ("online_softmax", "no final divide",
     [("return torch.exp(x - shift) / torch.where(l > 0, l, torch.ones_like(l))",
       "return torch.exp(x - shift)")], "the final divide by ℓ is missing"),
    ("online_softmax", "masked row gives NaN",
     [("return torch.exp(x - shift) / torch.where(l > 0, l, torch.ones_like(l))",
       "return torch.exp(x - shift) / l")], "fully masked"),
    ("online_softmax", "last short block dropped",
     [("for c0 in range(0, N, block):", "for c0 in range(0, N - N % block, block):")],
     "the last, short block"),
    ("online_softmax", "no max subtracted",
     [("shift = torch.where(m > -math.inf, m, torch.zeros_like(m))\n    # pass 2",
       "shift = torch.zeros_like(m)\n    # pass 2"),
      ("l = l * torch.exp(m - shift) + torch.exp(xb - shift)", "l = l + torch.exp(xb)")],
     "overflows"),
    ("v1_reference", "Q reloaded",
     [("Qi = chip.load(\"Q\", r0, r1, into=\"Q_i\", i=i, j=j)  # [B, H, Br, d]",
       "Qi = chip.load(\"Q\", r0, r1, into=\"Q_i\", i=i, j=j)\n"
       "            Qi = chip.load(\"Q\", r0, r1, into=\"Q_i\", i=i, j=j)")],
     "Q: reads 2.0× the formula"),
    ("v1_reference", "K/V loaded in the inner loop",
     [("        Kj = chip.load(\"K\", c0, c1, into=\"K_j\", j=j)  # [B, H, Bc, d], once per j\n", ""),
      ("            Qi = chip.load(\"Q\"", "            Kj = chip.load(\"K\", c0, c1, into=\"K_j\", j=j)\n"
                                        "            Qi = chip.load(\"Q\"")],
     "K_j is loaded inside the i loop"),
    ("v1_reference", "causal tiles not skipped",
     [("if causal and c0 > r1 - 1:", "if False:")], "tiles above the diagonal are not skipped"),
    ("v1_reference", "no initialisation",
     [("        chip.store(\"O\", zeros.expand(B, H, r1 - r0, d), r0, r1, from_=\"O_i\", i=i)\n", "")],
     "(Algorithm 1, line 2) is missing"),
    ("v1_reference", "causal bound off by one",
     [("torch.arange(c0, c1)[None, :] > rows", "torch.arange(c0, c1)[None, :] >= rows")],
     "causal bound is off by one"),
    ("v1_reference", "missing rescale",
     [("a = torch.where(mi > -math.inf, torch.exp(mi - _shift(m_new)), 0.0)",
       "a = torch.where(mi > -math.inf, 1.0, 0.0)")], "rows whose max changes after the first block"),
    ("v1_reference", "scale applied twice",
     [("S = scale * Qi @", "S = scale * scale * Qi @")], "scaled twice"),
    ("v1_reference", "last short Q tile dropped",
     [("Tr, Tc = -(-N // br), -(-N // bc)", "Tr, Tc = max(1, N // br), -(-N // bc)")],
     "the last, short Q tile"),
    ("v2_forward", "missing rescale",
     [("l_i = l_i * alpha + tl.sum(p, 1)", "l_i = l_i + tl.sum(p, 1)"),
      ("acc = acc * alpha[:, None] +", "acc = acc +")], "not rescaled by e^(m_old − m_new)"),
    ("v2_forward", "divide by ℓ inside the loop",
     [("        m_i = m_new\n", "        acc = acc / l_i[:, None]\n        m_i = m_new\n")],
     "divided by ℓ inside the loop"),
    ("v2_forward", "causal bound off by one",
     [("keep = keep & (offs_n[None, :] <= offs_m[:, None])",
       "keep = keep & (offs_n[None, :] < offs_m[:, None])")], "causal bound is off by one"),
    ("v2_forward", "unmasked load past N",
     [("v = tl.load(V + base + offs_n[:, None] * D + offs_d[None, :],\n"
       "                    mask=col_ok[:, None], other=0.0)",
       "v = tl.load(V + base + offs_n[:, None] * D + offs_d[None, :])")], "reads past the last key"),
    ("v2_forward", "no final divide",
     [("o = acc / l_i[:, None]  # the one divide", "o = acc")], "divide it by ℓ once"),
    ("v2_forward", "scale applied twice",
     [("s = tl.dot(q, tl.trans(k)) * qk_scale", "s = tl.dot(q, tl.trans(k)) * qk_scale * 0.25")],
     "scaled twice"),
    ("v2_forward", "unmasked store",
     [("o.to(O.dtype.element_ty),\n             mask=row_ok[:, None])", "o.to(O.dtype.element_ty))")],
     "stores past the end of o"),
    ("v2_forward", "L left in base 2",
     [("(m_i + tl.math.log2(l_i)) * 0.6931471805599453", "(m_i + tl.math.log2(l_i))")], "L is in base 2"),
    ("v2_backward", "scale applied twice",
     [("(dk * scale).to(DK.dtype.element_ty)", "(dk * scale * scale).to(DK.dtype.element_ty)")],
     "applied twice"),
    ("v2_backward", "causal bound off by one",
     [("offs_m[None, :] >= offs_n[:, None]", "offs_m[None, :] > offs_n[:, None]")],
     "causal bound is off by one"),
    ("v2_backward", "unmasked load past N",
     [("q = tl.load(Q + qo, mask=row_ok[:, None], other=0.0)", "q = tl.load(Q + qo)")],
     "reads past row N"),
    ("v2_backward", "D not subtracted",
     [("dsT = pT * (dpT - delta[None, :])", "dsT = pT * dpT")], "D_i is not subtracted"),
    ("v2_backward", "L read as base 2",
     [("pT = tl.math.exp2((sT - lse[None, :]) * 1.4426950408889634)",
       "pT = tl.math.exp2(sT * 1.4426950408889634 - lse[None, :])")], "base-2 logsumexp"),
    ("v2_backward", "last K/V tile not stored",
     [("tl.store(DV + kv, dv.to(DV.dtype.element_ty), mask=col_ok[:, None])",
       "tl.store(DV + kv, dv.to(DV.dtype.element_ty),\n"
       "             mask=(col_ok & (offs_n < N - N % BLOCK_N))[:, None])")],
     "never stored"),
    ("block_sparse", "every tile visited",
     [("for e in range(int(csr.ptr[i]), int(csr.ptr[i + 1])):", "for e in range(csr.cols):"),
      ("j = int(csr.index[e])", "j = e")], "dense attention"),
    ("block_sparse", "last entry of each row skipped",
     [("int(csr.ptr[i + 1])):", "int(csr.ptr[i + 1]) - 1):")], "last listed tile is left out"),
    ("block_sparse", "empty row gives NaN",
     [("acc / torch.where(l > 0, l, torch.ones_like(l))", "acc / l")], "have an empty list"),
    ("block_sparse", "missing rescale",
     [("l = alpha * l +", "l = l +"), ("acc = alpha * acc +", "acc = acc +")],
     "not rescaled by e^(m_old − m_new)"),
    ("block_sparse", "last short Q tile not written",
     [("for i in range(-(-N // block_r)):", "for i in range(max(1, N // block_r)):")],
     "the last, short Q tile"),
    ("block_sparse", "causal bound off by one",
     [("> torch.arange(r0, r1)[:, None],", "> torch.arange(r0, r1)[:, None] + 1,")],
     "causal bound is off by one"),
    ("split_kv", "no weights e^(m_s − m)",
     [("w = torch.where(m > -math.inf, torch.exp(m - shift), torch.zeros_like(m))",
       "w = torch.where(m > -math.inf, 1.0, 0.0)")], "without the weights"),
    ("split_kv", "no final divide",
     [("return o_all / torch.where(l_all > 0, l_all, torch.ones_like(l_all))[:, None]",
       "return o_all")], "without the divide by ℓ"),
    ("split_kv", "empty split gives NaN",  # o_s / ℓ_s is 0 / 0 for a split over no keys
     [("o_all = (w[..., None] * o).sum(dim=0)",
       "o_all = ((w * l)[..., None] * (o / l[..., None])).sum(dim=0)")], "a split is empty"),
    ("split_kv", "no common max",
     [("w = torch.where(m > -math.inf, torch.exp(m - shift), torch.zeros_like(m))",
       "w = torch.exp(m)")], "overflows"),
    ("split_kv", "row with no key gives NaN",
     [("return o_all / torch.where(l_all > 0, l_all, torch.ones_like(l_all))[:, None]",
       "return o_all / l_all[:, None]")], "which no split saw"),
]


# A planted NaN (exp(−inf − (−inf))) makes the interpreter's NumPy warn; the NaN is the point.
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("lab, mistake, edits, says", MISTAKES, ids=[f"{m[0]}-{m[1]}" for m in MISTAKES])
def test_a_planted_mistake_fails_with_its_diagnosis(lab, mistake, edits, says, tmp_path):
    module, name = SOLUTIONS[lab]
    wrong = getattr(mutant(importlib.import_module(module), edits, tmp_path), name)
    report = grade(lab, wrong, seed=12345)
    assert not report.passed, f"{mistake}: passed\n{report}"
    assert says in report.diagnosis, f"{mistake}: expected {says!r} in the diagnosis\n{report}"

