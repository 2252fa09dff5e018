"""Sphinx extension: the built book loads nothing from the network, and plotly.js only once.

plotly's `notebook` renderer (set by flashedu.chapter.setup) puts into each notebook's outputs
- the whole plotly.min.js (~4.8 MB) in an inline <script>, once per notebook, and
- before every figure, <script src="https://cdnjs.../mathjax/.../tex-svg.min.js">, which fails
  offline and would load a second MathJax next to the book's own.
At page-writing time this swaps the first for <script src=".../_static/plotly/plotly-X.min.js">
(same spot, not deferred, so the figure scripts after it still find window.Plotly) plus
flashedu-plotly.js (redraws figures with LaTeX labels once MathJax is up), drops the
second, and copies plotly.min.js from the installed plotly package (the one that made the
figures) into the site. Then it warns, which fails a `-W` build, about anything a page would
still load from another host, so a new CDN dependency cannot slip in unnoticed. It also drops
duplicate <head> scripts (jupyter-book 1 adds sphinx-thebe's twice; the copy throws a JS error).
Loaded through `sphinx.local_extensions` in _config.yml.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"  # flashedu-widgets.js, flashedu-plotly.js (see there)

# The inline bundle starts with plotly.min.js's own banner: "/**\n* plotly.js v4.1.1".
# An inline script ends at the first "</script>", so a lazy match is exactly what a browser runs.
PLOTLY_INLINE = re.compile(r"<script[^>]*>\s*/\*\*\s*\*\s*plotly\.js v(?P<version>[\w.+-]+).*?</script>",
                           re.S)
CDN_MATHJAX = re.compile(r"<script\b[^>]*\bsrc=\"(?:https?:)?//[^\"]*mathjax[^\"]*\"[^>]*>\s*</script>",
                         re.I)
# What would still make the browser fetch from another host: src of embedded things, href of <link>.
REMOTE = re.compile(r"<(?:script|img|iframe|source|video|audio|embed)\b[^>]*?\bsrc=\"((?:https?:)?//[^\"]+)\""
                    r"|<link\b[^>]*?\bhref=\"((?:https?:)?//[^\"]+)\"", re.I)


def _installed_plotlyjs() -> tuple[Path, str]:
    import plotly
    from plotly.offline import get_plotlyjs_version

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js", get_plotlyjs_version()


def _is_remote(url: str) -> bool:
    return url.startswith(("http://", "https://", "//"))


def rewrite_page(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    if app.builder.format != "html":
        return
    # jupyter-book 1 has sphinx-thebe add its inline `const THEBE_JS_URL = ...` script twice, and
    # the second copy throws "Identifier 'THEBE_JS_URL' has already been declared" on every page.
    # (The copies differ only in filename None vs "", so compare what gets rendered.)
    scripts, seen, kept = context.get("script_files", []), set(), []
    for js in scripts:
        key = repr((getattr(js, "filename", js) or "", sorted(getattr(js, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            kept.append(js)
    scripts[:] = kept

    body = context.get("body", "")  # search.html and genindex.html have none
    if "plotly.js v" in body:
        _, version = _installed_plotlyjs()
        shared = context["pathto"](f"_static/plotly/plotly-{version}.min.js", 1)
        redraw = context["pathto"]("_static/flashedu-plotly.js", 1)

        def swap(m: re.Match) -> str:
            if m["version"] != version:  # re-executing the notebooks fixes it; the page still works
                logger.warning(f"{pagename}: outputs inline plotly.js v{m['version']} but the installed "
                               f"plotly ships v{version}; left inline", type="flashedu", subtype="plotly")
                return m[0]
            return f'<script src="{shared}"></script><script src="{redraw}"></script>'

        body = PLOTLY_INLINE.sub(swap, body)
    if body:
        context["body"] = body = CDN_MATHJAX.sub("", body)

    # Assets Sphinx puts in <head> (mathjax_path, nb_ipywidgets_js, theme files) and the body.
    urls = [str(getattr(f, "filename", f) or "") for f in [*scripts, *context.get("css_files", [])]]
    urls += [a or b for a, b in REMOTE.findall(body)]
    for url in filter(_is_remote, urls):
        logger.warning(f"{pagename}: would load {url} from the network; the book must work offline "
                       "(serve it from the site: JS via tools/vendor_assets.py, images from the repo)",
                       type="flashedu", subtype="offline")


def copy_plotlyjs(app: Sphinx, exc: Exception | None) -> None:
    if exc is None and app.builder.format == "html":
        src, version = _installed_plotlyjs()
        dest = Path(app.outdir) / "_static" / "plotly" / f"plotly-{version}.min.js"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)


def add_static(app: Sphinx, config) -> None:
    config.html_static_path.append(str(STATIC))


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", add_static)
    app.add_css_file("flashedu.css")  # tools/sphinx_ext/static: code sized to fit the column
    # Late priority: run after sphinx.ext.mathjax and myst-nb have added this page's scripts.
    app.connect("html-page-context", rewrite_page, priority=900)
    app.connect("build-finished", copy_plotlyjs)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
