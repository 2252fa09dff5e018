"""Code on the page (flashedu/listing.py): regions cut at markers from the files that run, every
region a chapter asks for exists, and none is wider than the page."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from flashedu import listing
from flashedu.listing import region, show

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^\s*# \[(?P<name>[a-z0-9-]+)-(?P<end>start|end)\]\s*$")
WIDTH = 90  # characters a listing line may take before it wraps on the page


def _markers() -> dict[str, list[tuple[Path, int, str]]]:
    """{region name: [(file, line, "start" | "end"), ...]} over flashedu/."""
    out: dict = {}
    for path in sorted((ROOT / "flashedu").rglob("*.py")):
        for i, line in enumerate(path.read_text().splitlines(), start=1):
            m = MARKER.match(line)
            if m:
                out.setdefault(m["name"], []).append((path, i, m["end"]))
    return out


def test_markers_come_in_pairs_once_per_name():
    found = _markers()
    assert found, "no marked regions in flashedu/"
    for name, places in found.items():
        kinds = [k for _, _, k in places]
        assert kinds == ["start", "end"], f"region {name!r}: {places}"
        assert places[0][0] == places[1][0], f"region {name!r} starts and ends in different files"


def test_every_region_a_chapter_shows_exists():
    asked = set()
    for src in (ROOT / "book" / "src").glob("*.py"):
        asked |= set(re.findall(r'region\(\s*[\w.]+\s*,\s*"([a-z0-9-]+)"', src.read_text()))
    assert asked, "no chapter shows a marked region"
    missing = asked - set(_markers())
    assert not missing, f"chapters show regions with no markers in flashedu/: {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(_markers()))
def test_regions_fit_the_page(name):
    path, line, _ = _markers()[name][0]
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    r = region(module, name)
    assert r.first == line + 1 and r.path == str(path.relative_to(ROOT))
    wide = [(r.first + i, len(t)) for i, t in enumerate(r.text.splitlines()) if len(t) > WIDTH]
    assert not wide, f"{r.path}: lines wider than {WIDTH} characters in region {name!r}: {wide}"


def test_region_of_a_function_and_of_a_missing_marker():
    from flashedu.ops.online import kernel

    whole = region(kernel.online_attention_triton)
    assert whole.text.startswith("def online_attention_triton(") and whole.title == "online_attention_triton"
    with pytest.raises(ValueError, match=r"no-such-region-start"):
        region(kernel, "no-such-region")
    with pytest.raises(TypeError, match="module"):
        region(3, "x")


def test_listing_renders_tabs_in_html_and_code_in_text():
    from flashedu.ops.online import kernel, reference

    ref = region(reference, "online-reference", title="reference")
    ker = region(kernel, "online-kernel", title="kernel")
    shown = show(ref, ker)
    html = shown._repr_html_()
    assert html.count('type="radio"') == 2 and "reference" in html and "kernel" in html
    assert "flashedu/ops/online/kernel.py, from line" in html
    text = str(shown)
    assert "tl.load" in text and "merge(state" in text and "-start]" not in text  # no markers
    with pytest.raises(TypeError, match="Regions"):
        show("not a region")
    with pytest.raises(ValueError):
        show()
    assert listing.PACKAGE_ROOT.name == "flashedu"


@pytest.mark.parametrize("module, name", [("flashedu.ops.standard.reference", "standard-reference"),
                                          ("flashedu.ops.v1.reference", "v1-reference"),
                                          ("flashedu.ops.v2.reference", "v2-reference"),
                                          ("flashedu.ops.v2.reference_bwd", "v2-backward-reference"),
                                          ("flashedu.ops.block_sparse.reference", "block-sparse-reference")])
def test_reading_view_keeps_the_transfers_and_the_math_only(module, name):
    from flashedu.listing import BOOKKEEPING, reference

    full, view = region(module, name).text, reference(module, name).text
    assert all(b not in view for b in BOOKKEEPING) and "if numeric" not in view
    assert "chip.load(" in view and "chip.store(" in view  # the HBM transfers stay on the page
    assert "if numeric" in full and any(b in full for b in BOOKKEEPING)  # there was something to hide
    # Every line shown is a line of the file, dedented by at most the unwrapped blocks' indent.
    full_lines = {line.strip() for line in full.splitlines()}
    assert all(line.strip() in full_lines for line in view.splitlines())
