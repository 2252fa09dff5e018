"""Chapter 7's measured sections: the numbers it glues into its prose, recomputed here from the
recorded GPU files (flashedu/recorded/data/decode/, flashedu/recorded/data/ring/) without the summary helpers, the
claims its sentences make about them, and the figures drawn from the real files. CPU only: the
chapter's two measured cells are run with ``glue`` replaced by a recorder."""
from __future__ import annotations

import json
import re
from pathlib import Path

import plotly.graph_objects as go
import pytest

from flashedu import recorded

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "book" / "src" / "ch07_beyond_one_block.py"
DECODE = sorted((recorded.DATA / "decode").glob("*.json"))
RING = sorted((recorded.DATA / "ring").glob("*.json"))


def _cells(text: str) -> list[tuple[str, str]]:
    """(kind, source) of each percent-format cell, markdown comment markers removed."""
    out = []
    for block in re.split(r"^# %%", text, flags=re.M)[1:]:
        head, _, body = block.partition("\n")
        if "[markdown]" in head:
            out.append(("markdown", "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#")
                                              for line in body.splitlines())))
        else:
            out.append(("code", body))
    return out


CELLS = _cells(SRC.read_text())


def _measured_cells() -> list[int]:
    """Indices of the two code cells that read the recorded files."""
    idx = [i for i, (kind, src) in enumerate(CELLS) if kind == "code"
           and ('recorded.latest("decode")' in src or 'recorded.latest("ring")' in src)]
    assert len(idx) == 2, "expected one measured cell for decoding and one for the ring"
    return idx


@pytest.fixture(scope="module")
def glued(request):
    """Run the chapter's two measured cells, in order, with ``glue`` recording and figures not shown."""
    values = {}
    mp = pytest.MonkeyPatch()
    mp.setattr(go.Figure, "show", lambda self, *a, **k: None)
    ns = {"glue": lambda name, value, **kw: values.__setitem__(name, value)}
    try:
        for i in _measured_cells():
            exec(compile(CELLS[i][1], f"{SRC.name}[cell {i}]", "exec"), ns)
    finally:
        mp.undo()
    return values


@pytest.fixture(scope="module")
def decode():
    assert DECODE, "no recorded decode file in flashedu/recorded/data/decode/"
    return json.loads(DECODE[0].read_text())


@pytest.fixture(scope="module")
def ring():
    assert RING, "no recorded ring file in flashedu/recorded/data/ring/"
    return json.loads(RING[0].read_text())


def _row(decode, impl, B, N_k):
    (r,) = [r for r in decode["rows"] if r["impl"] == impl and r["B"] == B and r["N_k"] == N_k]
    assert "ms" in r, f"{impl} B={B} N_k={N_k} was not timed: {r}"
    return r


# --- decoding -----------------------------------------------------------------------------------

def test_decode_file_is_the_one_the_chapter_reads(decode):
    assert recorded.load("decode")[0] == decode
    p = decode["provenance"]
    assert p["gpu"] and p["date"] and p["runtime"] == "compiled"


def test_decode_glued_numbers_match_the_file(glued, decode):
    hbm_GBps = 4.8e3 if decode["provenance"]["gpu"].endswith("H200") else None
    assert hbm_GBps, "update this test for a GPU other than the H200"
    timed = [r for r in decode["rows"] if "ms" in r]
    B1, Bmax = min(r["B"] for r in timed), max(r["B"] for r in timed)
    n, n0 = max(r["N_k"] for r in timed), min(r["N_k"] for r in timed)
    split, one, sdpa = (_row(decode, i, B1, n) for i in ("split_kv_triton", "split_kv_triton_1split", "sdpa_gqa"))
    bsplit, bsdpa = _row(decode, "split_kv_triton", Bmax, n), _row(decode, "sdpa_gqa", Bmax, n)
    want = {
        "dec_gpu": decode["provenance"]["gpu"],
        "dec_date": decode["provenance"]["date"][:10],
        "dec_meas_Nk_k": n // 1024,
        "dec_meas_splits": split["num_splits"],
        "dec_meas_split_TBps": split["cache_bytes"] / split["ms"] / 1e9,
        "dec_meas_one_GBps": one["cache_bytes"] / one["ms"] / 1e6,
        "dec_meas_v2_GBps": _row(decode, "v2_triton", B1, n)["cache_GBps"],
        "dec_meas_speedup": one["ms"] / split["ms"],
        "dec_hbm_TBps": hbm_GBps / 1e3,
        "dec_meas_split_hbm": 100 * split["cache_GBps"] / hbm_GBps,
        "dec_meas_sdpa_TBps": sdpa["cache_bytes"] / sdpa["ms"] / 1e9,
        "dec_meas_sdpa_hbm": 100 * sdpa["cache_GBps"] / hbm_GBps,
        "dec_meas_sdpa_over_split": split["ms"] / sdpa["ms"],
        "dec_meas_B_small": B1,
        "dec_meas_B_big": Bmax,
        "dec_meas_big_splits": bsplit["num_splits"],
        "dec_meas_big_split_hbm": 100 * bsplit["cache_GBps"] / hbm_GBps,
        "dec_meas_big_sdpa_hbm": 100 * bsdpa["cache_GBps"] / hbm_GBps,
        "dec_meas_small_k": n0 // 1024,
        "dec_meas_small_split_us": 1e3 * _row(decode, "split_kv_triton", B1, n0)["ms"],
        "dec_meas_small_one_us": 1e3 * _row(decode, "split_kv_triton_1split", B1, n0)["ms"],
        "dec_meas_err": max(r["max_err"] for r in decode["rows"] if "max_err" in r),
    }
    for name, value in want.items():
        assert name in glued, f"the chapter no longer glues {name}"
        got = glued[name]
        if isinstance(value, str):
            assert got == value, name
        else:
            assert got == pytest.approx(value, rel=1e-3), name  # cache_GBps is rounded to 0.1 in the file


def test_decode_claims_in_the_prose_hold(glued):
    g = glued
    assert g["dec_meas_speedup"] > 5, "the prose says the splits buy a large factor"
    assert g["dec_meas_sdpa_over_split"] > 1, "the prose says SDPA was faster than split-KV"
    assert g["dec_meas_big_sdpa_hbm"] > g["dec_meas_big_split_hbm"]
    assert g["dec_meas_big_splits"] == 1, "the prose says the heuristic chose 1 split at the largest batch"
    assert g["dec_meas_small_split_us"] > g["dec_meas_small_one_us"], "the prose says splitting did not pay at 4k"
    assert g["dec_meas_small_split_us"] < 100, "the prose says a call lasts under a tenth of a millisecond"
    assert g["dec_meas_v2_GBps"] < 2 * g["dec_meas_one_GBps"]
    assert g["dec_meas_one_GBps"] / (1e3 * g["dec_hbm_TBps"]) < 0.1, "the prose: one split reads a few percent of HBM"
    assert g["dec_meas_split_hbm"] > 50, "the prose: the splits reach most of the bandwidth"
    for name in ("dec_meas_split_hbm", "dec_meas_sdpa_hbm", "dec_meas_big_split_hbm", "dec_meas_big_sdpa_hbm"):
        assert 0 < g[name] < 100, f"{name}: above the datasheet bandwidth means the byte count is wrong"


def test_decode_figure_draws_the_real_file(decode):
    from flashedu.viz.decode import measured_decode_figure

    fig = measured_decode_figure(decode)
    timed = [r for r in decode["rows"] if "ms" in r]
    series = {(r["impl"], r["B"]) for r in timed}
    assert len(fig.data) == len(series)
    Bs = sorted({r["B"] for r in timed})
    assert [a.text for a in fig.layout.annotations][:len(Bs)] == [f"batch {B}" for B in Bs]
    title = fig.layout.title.text
    assert decode["provenance"]["gpu"] in title and decode["provenance"]["date"][:10] in title
    assert fig.layout.xaxis.type == "log" and "N_k" in fig.layout.xaxis.title.text
    assert "GB/s" in fig.layout.yaxis.title.text
    assert any(s.y0 == pytest.approx(4800.0) for s in fig.layout.shapes), "the HBM line is missing"
    top = max(r["cache_GBps"] for r in timed)
    assert fig.layout.yaxis.range[1] >= top
    first = sorted((r["N_k"], r["cache_GBps"]) for r in timed if r["impl"] == "split_kv_triton" and r["B"] == Bs[0])
    assert list(fig.data[0].y) == [y for _, y in first]


# --- the ring -----------------------------------------------------------------------------------

def _slowest(ring, N, layout, causal):
    rs = [r for r in ring["rows"]
          if r["test"] == "ring" and r["N"] == N and r["layout"] == layout and r["causal"] == causal]
    assert len(rs) == ring["provenance"]["world"], "one row per rank"
    return max(r["seconds"] for r in rs)


def _single(ring, N, causal):
    (r,) = [r for r in ring["rows"] if r["test"] == "single_gpu" and r["N"] == N and r["causal"] == causal]
    return r["seconds"]


def test_ring_file_is_the_one_the_chapter_reads(ring):
    assert recorded.load("ring")[0] == ring
    p = ring["provenance"]
    assert p["world"] >= 2 and p["nccl_env"]["NCCL_NVLS_ENABLE"] == "0"


def test_ring_glued_numbers_match_the_file(glued, ring):
    rows, world = ring["rows"], ring["provenance"]["world"]
    Ns = sorted({r["N"] for r in rows if r["test"] == "ring"})
    N, small = Ns[-1], Ns[0]
    contiguous = sorted((r for r in rows if r["test"] == "ring" and r["N"] == N and r["layout"] == "contiguous"
                         and r["causal"]), key=lambda r: r["rank"])
    busy = [sum(r["compute_s"]) for r in contiguous]

    def eff(layout):
        rs = [r["compute_s"] for r in rows
              if r["test"] == "ring" and r["N"] == N and r["layout"] == layout and r["causal"]]
        slowest_steps = sum(max(c[t] for c in rs) for t in range(len(rs[0])))
        return 100 * sum(map(sum, rs)) / (world * slowest_steps)

    ring_rows = [r for r in rows if r["test"] == "ring"]
    sends = [r for r in rows if r["test"] == "send_kv" and r["N"] == N]
    want = {
        "ring_gpu": ring["provenance"]["gpu"],
        "ring_world": world,
        "ring_date": ring["provenance"]["date"][:10],
        "ring_meas_err": max(r["max_err"] for r in rows if r["test"] == "check"),
        "ring_check_N": max(r["N"] for r in rows if r["test"] == "check"),
        "ring_meas_Nk": N // 1024,
        "ring_meas_per_gpu_k": N // world // 1024,
        "ring_speed_full": _single(ring, N, False) / _slowest(ring, N, "contiguous", False),
        "ring_speed_contiguous": _single(ring, N, True) / _slowest(ring, N, "contiguous", True),
        "ring_speed_zigzag": _single(ring, N, True) / _slowest(ring, N, "zigzag", True),
        "ring_speed_striped": _single(ring, N, True) / _slowest(ring, N, "striped", True),
        "ring_busy_least_ms": 1e3 * min(busy),
        "ring_busy_most_ms": 1e3 * max(busy),
        "ring_eff_meas_contiguous": eff("contiguous"),
        "ring_eff_meas_zigzag": eff("zigzag"),
        "ring_eff_meas_striped": eff("striped"),
        "ring_small_k": small // 1024,
        "ring_small_best_causal": max(_single(ring, small, True) / _slowest(ring, small, lay, True)
                                      for lay in ("contiguous", "zigzag", "striped")),
        "ring_wait_max_ms": 1e3 * max(max(r["wait_s"]) for r in ring_rows),
        "ring_wait_share": 100 * max(sum(r["wait_s"]) / r["seconds"] for r in ring_rows),
        "ring_send_ms": 1e3 * max(r["seconds"] for r in sends),
        "ring_send_GBps": min(r["bytes"] / r["seconds"] / 1e9 for r in sends),
        "ring_step_ms": 1e3 * min(r["compute_s"][0] for r in ring_rows if r["N"] == N),
    }
    for name, value in want.items():
        assert name in glued, f"the chapter no longer glues {name}"
        if isinstance(value, str):
            assert glued[name] == value, name
        else:
            assert glued[name] == pytest.approx(value, rel=1e-6), name
    # 2 ranks, contiguous, causal: step 0 both ranks do half a block, step 1 one rank a whole one.
    if world == 2:
        assert glued["ring_eff_model_contiguous"] == pytest.approx(100 * 2 / 3, abs=0.01)


def test_ring_claims_in_the_prose_hold(glued):
    g = glued
    assert g["ring_meas_err"] <= 2 ** -9, "the prose says: one step of fp16's last bit for an output below 4"
    assert g["ring_speed_full"] > 0.9 * g["ring_world"], "the prose says non-causal is close to the ideal"
    for fix in ("zigzag", "striped"):
        assert g[f"ring_speed_{fix}"] > 1.2 * g["ring_speed_contiguous"], f"the prose says {fix} fixes the imbalance"
        assert g[f"ring_eff_meas_{fix}"] > 95
    assert g["ring_busy_most_ms"] > 2 * g["ring_busy_least_ms"]
    assert abs(g["ring_eff_meas_contiguous"] - g["ring_eff_model_contiguous"]) < 3, "the prose says measured = model"
    assert g["ring_speed_contiguous"] > 1
    assert g["ring_small_best_causal"] < 1, "the prose says every causal ring lost to one GPU at the smallest size"
    assert g["ring_wait_share"] < 5 and g["ring_wait_max_ms"] < 1, "the prose says the transfers hid"
    assert g["ring_send_ms"] < 0.1 * g["ring_step_ms"]


def test_ring_figure_draws_the_real_file(ring):
    from flashedu.viz.ring import measured_ring_figure

    fig = measured_ring_figure(ring)
    p = ring["provenance"]
    assert f"{p['world']} GPUs" in fig.layout.title.text and p["gpu"] in fig.layout.title.text
    assert p["date"][:10] in fig.layout.title.text
    assert fig.layout.yaxis.type == "log" and "ms" in fig.layout.yaxis.title.text
    assert "sequence length" in fig.layout.xaxis.title.text
    Ns = sorted({r["N"] for r in ring["rows"] if r["test"] == "ring"})
    assert list(fig.data[0].x) == [f"{N // 1024}k" for N in Ns]
    assert list(fig.data[0].y) == pytest.approx([1e3 * _slowest(ring, N, "contiguous", True) for N in Ns])
    names = [t.name for t in fig.data[:6]]
    assert names[4:] == ["one GPU, causal", "one GPU, non-causal"]
    assert list(fig.data[4].y) == pytest.approx([1e3 * _single(ring, N, True) for N in Ns])
    # Right panel: compute per rank at the largest N, the wait stacked on it.
    comp, wait = fig.data[6], fig.data[7]
    assert comp.xaxis == "x2" and list(wait.base) == list(comp.y)
    assert max(wait.y) < 1 and min(comp.y) > 10


# --- the prose --------------------------------------------------------------------------------

def test_every_glued_name_in_the_prose_is_glued_by_the_chapter():
    text = SRC.read_text()
    used = set(re.findall(r"\{glue:text\}`([A-Za-z0-9_]+)", text))
    defined = set(re.findall(r"""glue\(\s*["']([A-Za-z0-9_]+)["']""", text))
    assert used and used <= defined, f"used but never glued: {sorted(used - defined)}"


def test_measured_prose_types_no_number_by_hand():
    """The markdown right after each measured cell quotes measurements only through glue."""
    for i in _measured_cells():
        kind, prose = CELLS[i + 1]
        assert kind == "markdown" and "{glue:text}" in prose
        bare = re.sub(r"\{glue:text\}`[^`]*`", "", prose)
        bare = re.sub(r"`[^`]*`", "", bare)                 # code spans (enable_gqa)
        bare = re.sub(r"\b[A-Za-z]+\d+\b", "", bare)         # fp16, fp32, v2
        numbers = re.findall(r"\d+(?:\.\d+)?", bare)
        assert set(numbers) <= {"2", "4"}, f"cell {i + 1} types numbers by hand: {numbers}"
