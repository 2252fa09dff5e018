"""Sphinx extension: the build status page (book/status.md), filled at build time.

Two directives, each replaced by a table once every page has been read (so every notebook has run):
- ``{flashedu-status} chapters``: each executed notebook, its run time in this build (myst-nb's
  execution data, ``exec_data`` in its per-document metadata), whether it succeeded, and what it
  ran on: the first stdout line of the notebook, which ``flashedu.chapter.setup`` prints
  ("No CUDA GPU: Triton kernels run under the interpreter on the CPU ..." or
  "<GPU> (sm_XX): Triton kernels compiled ...").
- ``{flashedu-status} recorded``: the provenance of every recorded GPU result,
  ``flashedu/recorded/data/*/*.json`` (its ``provenance`` block, or ``info`` in benchmark files).
Loaded through `sphinx.local_extensions` in _config.yml.
"""
from __future__ import annotations

import json
import posixpath
from datetime import datetime, timezone
from pathlib import Path

from docutils import nodes
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util.docutils import SphinxDirective

from myst_nb.sphinx_ import NbMetadataCollector

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "flashedu" / "recorded" / "data"
RAN = "flashedu_ran"  # per-document key in myst-nb's metadata: the notebook's first stdout line
PAGE = "flashedu_status_page"  # marks the documents that hold a status table
RECORDED = [("gpu", "GPU"), ("capability", "arch"), ("driver", "driver"), ("cuda", "CUDA"),
            ("torch", "torch"), ("triton", "triton"), ("date", "date (UTC)"), ("commit", "commit")]


class StatusNode(nodes.General, nodes.Element):
    """Placeholder, replaced by a table in StatusTables."""


class StatusDirective(SphinxDirective):
    required_arguments = 1  # "chapters" or "recorded"

    def run(self):
        which = self.arguments[0]
        if which not in ("chapters", "recorded"):
            raise self.error(f"flashedu-status takes 'chapters' or 'recorded', not {which!r}")
        NbMetadataCollector.set_doc_data(self.env, self.env.docname, PAGE, True)
        if which == "recorded":  # re-read this page when a recording changes
            for path in sorted(DATA.glob("*/*.json")):
                self.env.note_dependency(str(path))
        return [StatusNode(which=which)]


def record_first_stdout(app: Sphinx, doctree: nodes.document) -> None:
    """After a notebook is read (and executed): keep the first line it printed to stdout."""
    env = app.env
    if not NbMetadataCollector.get_doc_data(env).get(env.docname, {}).get("exec_data"):
        return
    for node in doctree.findall(nodes.literal_block):
        classes = node.get("classes", [])
        if "output" in classes and "stream" in classes and node.astext().strip():
            line = node.astext().strip().splitlines()[0]
            NbMetadataCollector.set_doc_data(env, env.docname, RAN, line)
            return


def pages_to_update(app: Sphinx, env) -> list[str]:
    """Pages with a status table are rewritten whenever a notebook ran in this build."""
    if not NbMetadataCollector.new_exec_data(env):
        return []
    return [doc for doc, data in NbMetadataCollector.get_doc_data(env).items() if data.get(PAGE)]


def _table(header: list[str], rows: list[list[nodes.Node | str]]) -> nodes.table:
    table = nodes.table(classes=["colwidths-auto", "flashedu-status"])
    group = nodes.tgroup(cols=len(header))
    table += group
    group += [nodes.colspec(colwidth=1) for _ in header]
    group += nodes.thead("", nodes.row("", *[nodes.entry("", nodes.paragraph(text=h)) for h in header]))
    body = nodes.tbody()
    for cells in rows:
        body += nodes.row("", *[nodes.entry("", c if isinstance(c, nodes.Node)
                                            else nodes.paragraph(text=c)) for c in cells])
    group += body
    return table


def _doc_link(env, fromdoc: str, docname: str) -> nodes.paragraph:
    title = env.titles[docname].astext() if docname in env.titles else docname
    ref = pending_xref(refdoc=fromdoc, reftype="doc", refdomain="std", refexplicit=True, refwarn=True,
                       reftarget=posixpath.relpath(docname, posixpath.dirname(fromdoc)),
                       classes=["xref", "doc"])
    ref += nodes.inline(text=title)
    return nodes.paragraph("", "", ref)


def chapters_table(env, fromdoc: str) -> list[nodes.Node]:
    metadata = NbMetadataCollector.get_doc_data(env)
    rows, total = [], 0.0
    for doc in sorted(metadata):  # chapter files are numbered
        data = metadata[doc].get("exec_data")
        if not data:
            continue
        runtime = data.get("runtime")
        total += runtime or 0.0
        ran = metadata[doc].get(RAN, "(printed nothing)")
        rows.append([_doc_link(env, fromdoc, doc), ran,
                     "–" if runtime is None else f"{runtime:.1f}",
                     "yes" if data.get("succeeded") else "FAILED"])
    built = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    intro = nodes.paragraph(text=f"This build: {built}; {len(rows)} notebooks executed in "
                                 f"{total:.0f} s in all.")
    return [intro, _table(["Chapter", "What ran", "Time (s)", "Succeeded"], rows)]


def recorded_table() -> list[nodes.Node]:
    rows = []
    for path in sorted(DATA.glob("*/*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            rows.append([str(path.relative_to(DATA)), f"unreadable: {exc}", ""])
            continue
        prov = record.get("provenance") or record.get("info") or {}
        cells = {key: str(prov.get(key, "–")) for key, _ in RECORDED}
        cells["date"] = cells["date"].replace("T", " ")[:16]  # ISO 8601 to the minute, UTC
        # Three columns, so the table fits the page: what, on which machine, with what software.
        machine = f"{cells['gpu']} ({cells['capability']}), driver {cells['driver']}, CUDA {cells['cuda']}"
        software = (f"torch {cells['torch']}, triton {cells['triton']}; "
                    f"commit {cells['commit'][:10]}, {cells['date']} UTC")
        # A zero-width space after the kind's folder: a long file name may wrap there.
        where = f"{path.parent.name}/\u200b{path.name}"
        rows.append([nodes.paragraph("", "", nodes.literal(text=where)), machine, software])
    if not rows:
        return [nodes.paragraph(text="No recorded GPU results in flashedu/recorded/data.")]
    return [_table(["Record", "Measured on", "Software, commit, date"], rows)]


class StatusTables(SphinxPostTransform):
    default_priority = 8  # before the references (priority 10) resolve the chapter links

    def run(self, **kwargs) -> None:
        for node in list(self.document.findall(StatusNode)):
            made = (chapters_table(self.env, self.env.docname) if node["which"] == "chapters"
                    else recorded_table())
            node.replace_self(made)


def setup(app: Sphinx) -> dict:
    app.add_node(StatusNode)
    app.add_directive("flashedu-status", StatusDirective)
    app.connect("doctree-read", record_first_stdout)
    app.connect("env-updated", pages_to_update)
    app.add_post_transform(StatusTables)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
