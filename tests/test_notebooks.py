"""Chapter notebooks: committed without outputs, generated from their text source, listed in the
table of contents, and opening with the one set-up cell a Colab reader needs."""
from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())


def toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for e in entries:
            if "file" in e:
                files.append(e["file"])
            walk(e.get("sections", []))
            for part in e.get("chapters", []):
                walk([part])

    walk(toc.get("chapters", []))
    for part in toc.get("parts", []):
        walk(part.get("chapters", []))
    return files


def test_there_are_chapters():
    assert NOTEBOOKS, "no chapter notebooks in book/"


def test_toc_lists_every_notebook_and_every_entry_exists():
    listed = toc_files()
    for f in listed:
        assert any((ROOT / (f + ext)).exists() for ext in ("", ".md", ".ipynb")), f"{f} in _toc.yml is missing"
    for nb in NOTEBOOKS:
        assert str(nb.relative_to(ROOT).with_suffix("")) in listed, f"{nb.name} is not in _toc.yml"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None, \
                f"{path.name} has stored outputs: run `python tools/nbtool.py strip {path.relative_to(ROOT)}`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_matches_its_text_source(path, tmp_path):
    import sys
    sys.path.insert(0, str(ROOT / "tools"))
    import nbtool

    src = ROOT / "book" / "src" / (path.stem + ".py")
    assert src.exists(), f"{path.name} has no text source {src.relative_to(ROOT)}"
    built = tmp_path / path.name
    nbtool.build(src, built)
    strip = lambda nb: [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in nb.cells]  # noqa: E731
    assert strip(nbformat.read(built, 4)) == strip(nbformat.read(path, 4)), \
        f"regenerate: python tools/nbtool.py build {src.relative_to(ROOT)} {path.relative_to(ROOT)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_code_cell_sets_up_colab(path):
    """Colab opens a notebook alone: its first code cell must install flashedu from this
    repository when missing, and must not reinstall torch."""
    nb = nbformat.read(path, 4)
    first = next(c for c in nb.cells if c.cell_type == "code").source
    repo = CONFIG["repository"]["url"]
    assert f"git+{repo}" in first, f"{path.name}: first code cell must install flashedu from {repo}"
    assert 'find_spec("flashedu") is None' in first
    assert not re.search(r"pip install[^\n]*\btorch\b", first)
    assert "setup(" in first


@pytest.mark.parametrize("src", sorted((ROOT / "book" / "src").glob("*.py")), ids=lambda p: p.stem)
def test_chapters_cite_papers_not_seed_documents(src):
    """The seed write-ups are where the book started, not what it cites: a claim gets the paper's
    citation ({cite:p}`...`), and no prose, label or legend says "seed 00x"."""
    hits = [f"line {i}: {line.strip()}" for i, line in enumerate(src.read_text().splitlines(), start=1)
            if re.search(r"\bseed[ _-]?00\d", line, re.I)]
    assert not hits, f"{src.name} names a seed document instead of citing a paper:\n" + "\n".join(hits)


@pytest.mark.parametrize("src", sorted((ROOT / "book" / "src").glob("*.py")), ids=lambda p: p.stem)
def test_code_cell_lines_fit_the_page(src):
    """The rendered book shows about 84 characters of a code line at 1280 px; a wider line scrolls
    sideways. Only a line holding {REPOSITORY_URL} (the Colab install, whose URL is substituted at
    build time) may be longer."""
    in_code, long = False, []
    for i, line in enumerate(src.read_text().splitlines(), start=1):
        if re.match(r"# %%", line):
            in_code = "[markdown]" not in line
        elif in_code and len(line) > 84 and "{REPOSITORY_URL}" not in line:
            long.append(f"{src.relative_to(ROOT)}:{i}: {len(line)}")
    assert not long, "code lines longer than 84 characters:\n" + "\n".join(long)
