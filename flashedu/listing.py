"""Code on the page: regions of flashedu's own source files, cut out at markers and shown
highlighted, so what a chapter shows is the code that runs and cannot drift from it.

A region is marked in the source by two comment lines::

    # [<name>-start]
    ...the lines a chapter shows...
    # [<name>-end]

:func:`region` cuts one out (``region(module, "online-kernel")``; with no name, a whole function
or module); :func:`reference` is the same for a reference written against the memory model's
chip, without the calls that only feed the model. :func:`show` lays several side by side as
tabs, e.g. the paper-literal reference beside the kernel. In Jupyter, Colab and the built book
it renders as highlighted HTML whose line numbers are the file's own; as plain text (a terminal,
a test) it is the code with a title line. Lines wrap instead of scrolling sideways.
"""
from __future__ import annotations

import html
import importlib
import inspect
import itertools
import textwrap
from dataclasses import dataclass
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent
_ids = itertools.count()


def _start(name: str) -> str:
    return f"# [{name}-start]"


def _end(name: str) -> str:
    return f"# [{name}-end]"


@dataclass(frozen=True)
class Region:
    """Some lines of a source file (``path`` relative to the repository), dedented, marker lines
    left out; ``numbers`` are their line numbers in the file (with gaps where lines are hidden)."""

    title: str
    path: str
    numbers: tuple[int, ...]
    text: str

    @property
    def first(self) -> int:
        return self.numbers[0]

    def __str__(self) -> str:
        return f"# {self.title}  ({self.path}, from line {self.first})\n{self.text}"


def _reading_view(lines: list[str], first: int, hide: tuple[str, ...], unwrap: tuple[str, ...]):
    """Drop the lines that start (after indentation) with one of ``hide``, with their
    continuation lines; drop each line that starts with one of ``unwrap`` and dedent its block."""
    out, numbers, cut, skip_below = [], [], [], None  # cut: indents of unwrapped blocks we are in
    for n, line in enumerate(lines, start=first):
        body = line.strip()
        indent = len(line) - len(line.lstrip())
        if skip_below is not None:
            if body and indent <= skip_below:
                skip_below = None
            else:
                continue
        while cut and body and indent <= cut[-1]:
            cut.pop()
        if body.startswith(hide):
            # A hidden statement may continue on deeper-indented lines; hide those too.
            skip_below = indent
            continue
        if body.startswith(unwrap) and body.endswith(":"):
            cut.append(indent)
            continue
        out.append(line[4 * len(cut):] if body else line)
        numbers.append(n)
    return out, numbers


def _module(obj):
    if isinstance(obj, str):
        return importlib.import_module(obj)
    if callable(getattr(obj, "fn", None)) and inspect.isfunction(obj.fn):
        return obj.fn  # a Triton or Gluon kernel: its Python function
    return obj


def region(obj, name: str | None = None, *, title: str | None = None, hide: tuple[str, ...] = (),
           unwrap: tuple[str, ...] = ()) -> Region:
    """The lines between ``# [name-start]`` and ``# [name-end]`` in the source of ``obj`` (a
    module, a module's dotted name, a function or a Triton/Gluon kernel); without ``name``, the
    whole of ``obj``.

    A reading view for code that also does bookkeeping: statements starting with one of
    ``hide`` (``"chip.compute("``) are left out, and so is each ``if``-line starting with one of
    ``unwrap`` (``"if numeric"``), its block shown one level less indented."""
    obj = _module(obj)
    try:
        path = Path(inspect.getsourcefile(obj)).resolve()
    except TypeError:
        raise TypeError(f"obj must be a module, a module name or a function, got {type(obj).__name__}") from None
    rel = str(path.relative_to(PACKAGE_ROOT.parent)) if path.is_relative_to(PACKAGE_ROOT.parent) else path.name
    if name is None:
        lines, first = inspect.getsourcelines(obj)
        if inspect.ismodule(obj):
            first = 1
    else:
        all_lines = path.read_text().splitlines(keepends=True)
        starts = [i for i, line in enumerate(all_lines) if line.strip() == _start(name)]
        ends = [i for i, line in enumerate(all_lines) if line.strip() == _end(name)]
        if len(starts) != 1 or len(ends) != 1 or ends[0] <= starts[0]:
            raise ValueError(f"{rel} must hold one '{_start(name)}' line and one '{_end(name)}' line "
                             f"after it; found {len(starts)} and {len(ends)}")
        lines, first = all_lines[starts[0] + 1:ends[0]], starts[0] + 2
    lines = [line.rstrip("\n") for line in lines]
    lines, numbers = _reading_view(lines, first, tuple(hide), tuple(unwrap))
    while lines and not lines[-1].strip():
        lines, numbers = lines[:-1], numbers[:-1]
    if not lines:
        raise ValueError(f"region {name or rel!r} of {rel} is empty")
    default = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", rel)
    return Region(title or name or default, rel, tuple(numbers), textwrap.dedent("\n".join(lines)))


# Statements a reference makes only so the memory model can count its transfers and work (which
# program runs, what sits in SRAM, what was computed or skipped); its reading view leaves them out.
BOOKKEEPING = ("chip.program(", "chip.buffer(", "chip.compute(", "chip.skip(", "chip.free(",
               "for name, r, c in", "if has_m:")


def reference(obj, name: str, *, title: str = "reference (PyTorch, simulated chip)",
              hide: tuple[str, ...] = ()) -> Region:
    """The reading view of a reference written against the simulated chip: ``region`` without
    the :data:`BOOKKEEPING` statements (and ``hide``), with its ``if numeric:`` blocks shown as
    plain code (a shape-only run skips them; the algorithm does not)."""
    return region(obj, name, title=title, hide=BOOKKEEPING + tuple(hide), unwrap=("if numeric",))


def _highlight(r: Region) -> str:
    """The region as HTML lines, each led by its line number in the file."""
    try:
        from pygments import highlight
        from pygments.formatters import HtmlFormatter
        from pygments.lexers import PythonLexer
        body = highlight(r.text, PythonLexer(), HtmlFormatter(nowrap=True))
    except ImportError:  # plain, still readable
        body = html.escape(r.text)
    width = len(str(r.numbers[-1]))
    lines = body.rstrip("\n").split("\n")
    # A multi-line token (a docstring) keeps its spans across lines; pygments closes them itself.
    numbered = [f'<span class="linenos">{n:>{width}}</span>  {line}' for n, line in zip(r.numbers, lines)]
    return '<div class="fe-code"><pre><code>' + "\n".join(numbered) + "</code></pre></div>"


def _style() -> str:
    try:
        from pygments.formatters import HtmlFormatter
        colours = HtmlFormatter(style="default").get_style_defs(".fe-listing .fe-code")
    except ImportError:
        colours = ""
    # Tabs from radio buttons and CSS alone: they work in the static book (no kernel, no JS).
    return """<style>
.fe-listing { margin: 0.5em 0 1em 0; }
.fe-listing > input { display: none; }
.fe-listing > label { display: inline-block; padding: 0.25em 0.9em; margin-right: 0.2em; cursor: pointer;
  border: 1px solid #ccc; border-bottom: none; border-radius: 4px 4px 0 0; background: #f3f3f3;
  font: 0.85em sans-serif; color: #333; }
.fe-listing > .fe-panel { display: none; border: 1px solid #ccc; padding: 0.3em 0.6em; }
.fe-listing .fe-where { font: 0.8em sans-serif; color: #666; margin: 0.1em 0 0.3em 0; }
.fe-listing pre, .fe-listing pre code { white-space: pre-wrap; overflow-wrap: anywhere; margin: 0;
  font-size: 12px !important; line-height: 1.4; background: none; border: none; padding: 0; }
.fe-listing .linenos { color: #999; user-select: none; }
""" + colours + "\n</style>"


@dataclass(frozen=True)
class Listing:
    """Regions shown as tabs (the first one open); plain text is every region, one after another."""

    regions: tuple[Region, ...]

    def __str__(self) -> str:
        return "\n\n".join(map(str, self.regions))

    def __repr__(self) -> str:
        return str(self)

    def _repr_pretty_(self, p, cycle):
        p.text(str(self))

    def _repr_html_(self) -> str:
        group = f"fe-listing-{next(_ids)}"
        parts, css = [], [_style(), "<style>"]
        for k, r in enumerate(self.regions):
            tab = f"{group}-{k}"
            parts.append(f'<input type="radio" name="{group}" id="{tab}"{" checked" if k == 0 else ""}>'
                         f'<label for="{tab}">{html.escape(r.title)}</label>')
            css.append(f"#{tab}:checked ~ .{tab} {{ display: block; }}")
            css.append(f"#{tab}:checked + label {{ background: #fff; font-weight: 600; }}")
        for k, r in enumerate(self.regions):
            where = f"{r.path}, from line {r.first}"
            parts.append(f'<div class="fe-panel {group}-{k}"><div class="fe-where">{html.escape(where)}</div>'
                         f"{_highlight(r)}</div>")
        css.append("</style>")
        return "".join(css) + f'<div class="fe-listing">{"".join(parts)}</div>'


def show(*regions: Region) -> Listing:
    """Regions as tabs: ``show(region(ref, "v1-ref", title="reference"), region(kernel, ...))``."""
    if not regions:
        raise ValueError("show needs at least one region")
    for r in regions:
        if not isinstance(r, Region):
            raise TypeError(f"show takes Regions (from flashedu.listing.region), got {type(r).__name__}")
    return Listing(tuple(regions))
