"""The built book works in a real browser with no network: every page in _toc.yml, in headless
Chromium, served from 127.0.0.1 and opened from file://.

Why a browser: the things that break silently are client-side. A figure whose plotly.js is not
found, a MathJax or widget manager fetched from a CDN (blank offline), an animation whose Play
button does nothing: the HTML looks fine to grep. Every request is recorded and anything not
local is aborted (so nothing can hang on a CDN) and reported. Screenshots of each page land in
_build/screenshots/. Needs the book built first (bash tools/build_book.sh) and Debian's chromium
(Playwright's own browser download does not work on these machines).
"""
from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = os.environ.get("FLASHEDU_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 30_000

pytestmark = pytest.mark.browser


def toc_pages() -> list[str]:
    """Docnames of the root and of every `file:` entry in _toc.yml, at any depth, in order."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                pages.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({k: v for k, v in toc.items() if k != "root"})
    return list(dict.fromkeys(str(Path(p).with_suffix("")) for p in pages))


PAGES = toc_pages()


# --- fixtures: the built site, a local server, one browser ------------------------------------

@pytest.fixture(scope="module")
def built() -> Path:
    if not (HTML / "index.html").is_file():
        pytest.fail(f"{HTML} has no built book: run `bash tools/build_book.sh` first", pytrace=False)
    SHOTS.mkdir(parents=True, exist_ok=True)
    return HTML


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output readable
        pass


@pytest.fixture(scope="module")
def site(built):
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(built)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set FLASHEDU_CHROMIUM)",
                    pytrace=False)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


class Recorder:
    """Every request and every console error of one page; aborts what is not local."""

    def __init__(self, context, page, local_scheme: str):
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.local_scheme = local_scheme
        context.route("**/*", lambda route: route.continue_() if self.is_local(route.request.url)
                      else route.abort("blockedbyclient"))
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("console", lambda m: m.type == "error" and self.errors.append(
            f"console: {m.text} [{m.location.get('url', '')}]"))
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))

    def is_local(self, url: str) -> bool:
        u = urlsplit(url)
        if u.scheme in ("data", "blob", "about"):
            return True
        return u.scheme == "file" if self.local_scheme == "file" else u.hostname == "127.0.0.1"

    @property
    def external(self) -> list[str]:
        return [u for u in self.requests if not self.is_local(u)]


# --- checks, shared by the http:// and file:// tests -------------------------------------------

MATH_STATE = r"""() => {
  const maths = [...document.querySelectorAll('.math')];  // Sphinx's wrappers of $..$ and $$..$$
  // Visible text outside code (which may hold TeX on purpose), one text node per line. Hidden
  // nodes are skipped: plotly keeps a label's TeX source in a hidden <text> next to its render.
  const walker = document.createTreeWalker(document.querySelector('main') || document.body,
                                           NodeFilter.SHOW_TEXT);
  const lines = [];
  for (let node; (node = walker.nextNode());) {
    const el = node.parentElement;
    if (!el || el.closest('pre, code, script, style') || !el.getClientRects().length
        || getComputedStyle(el).visibility === 'hidden') continue;
    lines.push(node.data);
  }
  const raw = lines.filter(t => ['$$', '\\(', '\\[', '\\begin{'].some(d => t.includes(d))
                                || /\$[^$]*\\[a-zA-Z]+[^$]*\$/.test(t));  // $..\cmd..$
  return {n: maths.length, mjx: document.querySelectorAll('mjx-container').length,
          untypeset: maths.filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.slice(0, 80)),
          raw: raw.map(t => t.trim().slice(0, 80))};
}"""

# A figure's visible frame: slider positions, title and the plotted data.
FRAME_STATE = """gd => JSON.stringify({
  sliders: (gd._fullLayout.sliders || []).map(s => s.active),
  title: gd._fullLayout.title && gd._fullLayout.title.text,
  data: gd.data.map(t => [t.x, t.y, t.z])})"""


def check_math(page) -> None:
    state = page.evaluate(MATH_STATE)
    if state["n"]:
        # MathJax is loaded (deferred) only on pages with math; startup.promise settles after the
        # first typesetting pass.
        page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise",
                               timeout=TIMEOUT_MS)
        page.evaluate("() => MathJax.startup.promise")
    # Typesetting of late content (widgets, plotly's LaTeX labels redrawn after MathJax starts)
    # is asynchronous: give it a few seconds to settle before judging.
    with contextlib.suppress(PlaywrightTimeoutError):
        page.wait_for_function(f"() => {{ const s = ({MATH_STATE})(); "
                               "return !s.raw.length && !s.untypeset.length; }", timeout=5_000)
    state = page.evaluate(MATH_STATE)
    if state["n"]:
        assert state["mjx"] >= state["n"], f"MathJax typeset {state['mjx']} of {state['n']} formulas"
        assert not state["untypeset"], f"formulas left as TeX: {state['untypeset']}"
    assert not state["raw"], f"raw TeX in the page's visible text: {state['raw']}"


def check_figures(page) -> list[int]:
    """Wait until every plotly figure is drawn; return the indices of those with a Play button."""
    n = page.locator(".plotly-graph-div").count()
    if n:
        page.wait_for_function(
            """() => [...document.querySelectorAll('.plotly-graph-div')].every(gd =>
                 gd.classList.contains('js-plotly-plot') && gd.querySelector('svg.main-svg')
                 && gd._fullData && gd._fullData.length && gd.getBoundingClientRect().height > 100)""",
            timeout=TIMEOUT_MS)
    figs = page.locator(".plotly-graph-div")
    return [i for i in range(n)
            if figs.nth(i).locator("g.updatemenu-button", has_text="Play").count()]


def check_widgets(page) -> None:
    """Every ipywidgets view saved in the page was drawn by the (vendored) embed manager."""
    if page.locator("script[type='application/vnd.jupyter.widget-view+json']").count():
        page.wait_for_function(
            """() => [...document.querySelectorAll(
                       "script[type='application/vnd.jupyter.widget-view+json']")]
                     .every(s => s.parentElement.querySelector('.widget-subarea .jupyter-widgets'))""",
            timeout=TIMEOUT_MS)


def check_play(page, index: int, shot: Path) -> None:
    fig = page.locator(".plotly-graph-div").nth(index)
    before = fig.evaluate(FRAME_STATE)
    fig.locator("g.updatemenu-button", has_text="Play").click()
    # Frames advance every few hundred ms: wait until the drawn frame is no longer the first one,
    # then a little more so the screenshot shows the animation under way.
    page.wait_for_function(f"([gd, before]) => ({FRAME_STATE})(gd) !== before",
                           arg=[fig.element_handle(), before], timeout=TIMEOUT_MS)
    page.wait_for_timeout(1500)
    before, after = json.loads(before), json.loads(fig.evaluate(FRAME_STATE))
    assert after["data"] != before["data"], "Play did not change the plotted data"
    if before["sliders"]:
        assert after["sliders"] != before["sliders"], "Play changed the data but the slider stayed"
    fig.screenshot(path=shot)


# A code block scrolls when its content is wider than its box; a table, when it is wider than the
# box that holds it (the theme wraps tables in a scrolling div).
WIDE = """() => [
  ...[...document.querySelectorAll(
       'article .cell_input pre, article .cell_output pre, article .fe-listing pre')]
     .filter(el => el.scrollWidth > el.clientWidth + 2).map(el => 'code: ' + el.textContent),
  ...[...document.querySelectorAll('article table')]
     .filter(t => t.getBoundingClientRect().width > t.parentElement.clientWidth + 2)
     .map(t => 'table: ' + t.innerText)]
  .map(s => s.split('\\n').reduce((a, l) => l.length > a.length ? l : a, '').slice(0, 90))"""


def check_nothing_scrolls_sideways(page) -> None:
    """At 1280 px, no code cell, printed output, listing or table needs a horizontal scroll bar."""
    wide = page.evaluate(WIDE)
    assert not wide, "wider than the page (scrolls sideways):\n" + "\n".join(wide)


def check_colab_button(page, doc: str) -> None:
    """Chapters made from notebooks get a Colab button that opens this very notebook."""
    if not (ROOT / f"{doc}.ipynb").is_file():
        return
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    repo = urlsplit(config["repository"]["url"]).path.strip("/")
    # The book's root is the repository root, so the notebook's path in the repo is its docname.
    want = (f"{config['launch_buttons']['colab_url'].rstrip('/')}/github/{repo}/blob/"
            f"{config['repository'].get('branch', 'main')}/{doc}.ipynb")
    hrefs = page.eval_on_selector_all("a[href*='colab.research.google.com']",
                                      "as => as.map(a => a.href)")
    assert hrefs == [want], f"Colab links {hrefs}, expected [{want!r}]"


def check_page(browser, url: str, doc: str, local_scheme: str, tag: str) -> None:
    assert (HTML / f"{doc}.html").is_file(), (
        f"_toc.yml lists {doc} but {doc}.html is not in {HTML}: run `bash tools/build_book.sh`")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    rec = Recorder(context, page, local_scheme)
    stem = doc.replace("/", "__") + tag
    try:
        page.goto(url, wait_until="load", timeout=TIMEOUT_MS)
        check_widgets(page)  # before the math: widgets may hold some
        check_math(page)
        animated = check_figures(page)
        check_colab_button(page, doc)
        if local_scheme == "http":  # the layout is the same from file://: check it once
            check_nothing_scrolls_sideways(page)
        for i in animated:
            check_play(page, i, SHOTS / f"{stem}.figure{i}.after-play.png")
        if local_scheme == "http":  # let late requests show up (over file:// it never settles)
            page.wait_for_load_state("networkidle", timeout=TIMEOUT_MS)
    except PlaywrightTimeoutError as e:  # say what the page logged: it usually tells why
        raise AssertionError(f"{e.message.splitlines()[0]} on {url}; requests left the machine: "
                             f"{rec.external}; console errors: {rec.errors}") from e
    finally:
        # From the top: the theme's sticky header is drawn where the view last was (Play scrolled).
        with contextlib.suppress(Exception):  # never hide the failure above behind this one
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=SHOTS / f"{stem}.png", full_page=True)
        context.close()
    assert not rec.external, f"requests left the machine: {rec.external}"
    assert not rec.errors, "console errors:\n" + "\n".join(rec.errors)


@pytest.mark.parametrize("doc", PAGES)
def test_page_offline_over_http(site, browser, doc):
    """Served from 127.0.0.1: figures drawn, Play animates, math typeset, nothing fetched elsewhere."""
    check_page(browser, f"{site}/{doc}.html", doc, "http", "")


@pytest.mark.parametrize("doc", PAGES)
def test_page_from_file_url(built, browser, doc):
    """Opened straight from disk (file://), as a reader who downloads the site would."""
    check_page(browser, (built / f"{doc}.html").as_uri(), doc, "file", ".file")
