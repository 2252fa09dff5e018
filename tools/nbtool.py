"""Write a chapter notebook from a plain-text source: cells separated by lines `# %% [markdown]`
or `# %%` (code), optionally with tags: `# %% tags=["hide-input"]`.

Authoring chapters as text keeps diffs readable; the committed .ipynb has no outputs.
``{REPOSITORY_URL}`` in a source becomes _config.yml's ``repository.url`` (the Colab install cell
and the launch buttons read the one URL).
Usage: python tools/nbtool.py build book/src/ch01.py book/ch01_standard_attention.ipynb
       python tools/nbtool.py strip book/*.ipynb
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat

HEADER = re.compile(r"^# %%(?P<md> \[markdown\])?(?: tags=(?P<tags>\[.*\]))?\s*$")


CONFIG = Path(__file__).resolve().parents[1] / "_config.yml"


def repository_url() -> str:
    """``repository.url`` of _config.yml (read by hand: the file is flat enough for a regex)."""
    m = re.search(r"^repository:\s*\n\s+url:\s*(\S+)", CONFIG.read_text(), re.M)
    if not m:
        raise SystemExit(f"nbtool: no repository.url in {CONFIG}")
    return m.group(1)


def build(src: Path, dst: Path) -> None:
    cells, kind, tags, lines = [], None, [], []

    def flush():
        if kind is None:
            return
        text = "\n".join(lines).strip("\n")
        if kind == "markdown":
            # Markdown lines are written as Python comments: strip the leading "# ".
            text = "\n".join(re.sub(r"^# ?", "", l) for l in text.splitlines())
            cell = nbformat.v4.new_markdown_cell(text)
        else:
            cell = nbformat.v4.new_code_cell(text)
        if tags:
            cell.metadata["tags"] = tags
        cells.append(cell)

    for line in src.read_text().replace("{REPOSITORY_URL}", repository_url()).splitlines():
        m = HEADER.match(line)
        if m:
            flush()
            kind = "markdown" if m["md"] else "code"
            tags = json.loads(m["tags"]) if m["tags"] else []
            lines = []
        else:
            lines.append(line)
    flush()
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, c in enumerate(nb.cells):
        c["id"] = f"c{i:02d}"
    nbformat.write(nb, dst)


def strip(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    nbformat.write(nb, path)


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    if cmd == "build":
        build(Path(args[0]), Path(args[1]))
    elif cmd == "strip":
        for a in args:
            strip(Path(a))
    else:
        sys.exit(__doc__)
