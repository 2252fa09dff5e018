#!/usr/bin/env python3
"""Fetch the book's browser-side JavaScript from npm into book/_vendor/ (git-ignored).

Why: the built book must work with no network, so MathJax 3, the ipywidgets HTML manager and
require.js (which that manager needs) are served from the site instead of CDNs. _config.yml lists
book/_vendor in html_static_path (Sphinx copies it to _build/html/_static/) and points mathjax_path
and nb_ipywidgets_js at the files below. plotly.js is not fetched here: tools/sphinx_ext copies it
from the installed plotly package, so it always matches the version the figures were made with.

Versions and tarball hashes are pinned. A stamp file makes a second run a no-op (~0.1 s).
Uses only the standard library and `npm pack` (which downloads one tarball and installs nothing).
Usage: python3 tools/vendor_assets.py [--force]
"""
from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / "book" / "_vendor"
STAMP = DEST / ".versions.json"  # dot-file: Sphinx does not copy it to the site

# MathJax's es5/ bundles the page does not load.
MATHJAX_UNUSED = {"tex-chtml.js", "tex-chtml-full.js", "tex-chtml-full-speech.js", "tex-mml-chtml.js",
                  "tex-svg.js", "tex-svg-full.js", "mml-chtml.js", "mml-svg.js", "node-main.js",
                  "latest.js"}  # latest.js would load MathJax from a CDN
FONTS = (".woff2", ".woff", ".ttf")  # .eot (old IE) and .svg fonts are never picked by today's browsers


def keep_mathjax(member: str) -> str | None:
    # The SVG combined component (mathjax_path): SVG output, unlike CHTML, fetches no web fonts,
    # and it is the only output plotly.js typesets LaTeX labels with. The rest of es5/ is what
    # MathJax loads on demand (TeX extensions by autoload; the a11y/speech parts and the CHTML
    # renderer when a reader picks them in its right-click menu).
    if member == "LICENSE":
        return member
    rel = member.removeprefix("es5/")
    return rel if member.startswith("es5/") and rel not in MATHJAX_UNUSED else None


def keep_widgets(member: str) -> str | None:
    # ipywidgets 8.1.x's embed manager (what myst-nb loads from jsDelivr by default) and the
    # fontawesome fonts its CSS refers to by hashed names, relative to
    # window.__jupyter_widgets_assets_path__ (set by tools/sphinx_ext/static/flashedu-widgets.js).
    name = member.removeprefix("dist/")
    if member.startswith("dist/") and (name == "embed-amd.js" or name.endswith(FONTS)):
        return name
    return None


# name, version, sha512 integrity (`npm view NAME@VERSION dist.integrity`), folder, file filter
# (path inside the tarball's package/ -> path under the folder, or None to skip).
PACKAGES = [
    ("mathjax", "3.2.2",
     "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
     "mathjax", keep_mathjax),
    ("@jupyter-widgets/html-manager", "1.0.15",
     "sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA==",
     "jupyter-widgets", keep_widgets),
    # AMD loader that embed-amd.js is written for (it calls define()/requirejs()).
    ("requirejs", "2.3.8",
     "sha512-7/cTSLOdYkNBNJcDMWf+luFvMriVm7eYxp4BcFCsAX0wF421Vyce5SXP17c+Jd5otXKGNehIonFlyQXSowL6Mw==",
     "requirejs", lambda m: m if m == "require.js" else None),
]
# What must exist for the stamp to be trusted.
REQUIRED = ["mathjax/tex-mml-svg.js", "jupyter-widgets/embed-amd.js", "requirejs/require.js"]


def npm_pack(spec: str, workdir: Path) -> Path:
    """Download one package tarball with npm (the registry client; nothing is installed)."""
    out = subprocess.run(["npm", "pack", "--json", "--loglevel=error", spec], cwd=workdir,
                         check=True, capture_output=True, text=True).stdout
    return workdir / json.loads(out)[0]["filename"]


def check_integrity(tarball: Path, integrity: str) -> None:
    algo, _, want = integrity.partition("-")
    got = base64.b64encode(hashlib.new(algo, tarball.read_bytes()).digest()).decode()
    if got != want:
        sys.exit(f"vendor_assets: {tarball.name}: {algo} mismatch (got {got}, pinned {want})")


def main(force: bool) -> int:
    pins = {f"{n}@{v}": i for n, v, i, *_ in PACKAGES}
    # Editing this script (say, its file filters) also invalidates the stamp.
    pins["vendor_assets.py"] = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    if (not force and STAMP.is_file() and json.loads(STAMP.read_text()) == pins
            and all((DEST / r).is_file() for r in REQUIRED)):
        print(f"vendor_assets: up to date in {DEST.relative_to(ROOT)}")
        return 0
    if shutil.which("npm") is None:
        sys.exit("vendor_assets: npm not found; install Node.js (npm) to fetch the book's JS assets")

    # Build into a sibling temp folder, then swap it in: an interrupted run never leaves a
    # half-filled book/_vendor behind that the stamp would vouch for. The dot-prefixed name keeps
    # Sphinx (exclude_patterns "**/.*") away from it while it exists.
    DEST.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=DEST.parent, prefix=".vendor-") as tmp:
        tmp = Path(tmp)
        new = tmp / "out"
        for name, version, integrity, target, keep in PACKAGES:
            tarball = npm_pack(f"{name}@{version}", tmp)
            check_integrity(tarball, integrity)
            with tarfile.open(tarball) as tar:
                for m in tar.getmembers():
                    rel = keep(m.name.removeprefix("package/")) if m.isfile() else None
                    if rel is None:
                        continue
                    path = new / target / rel
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(tar.extractfile(m).read())
            print(f"vendor_assets: {name}@{version} -> {DEST.relative_to(ROOT)}/{target}/")
        (new / STAMP.name).write_text(json.dumps(pins, indent=1) + "\n")
        if DEST.exists():
            shutil.rmtree(DEST)
        new.rename(DEST)
    size = sum(p.stat().st_size for p in DEST.rglob("*") if p.is_file())
    print(f"vendor_assets: {size / 2**20:.1f} MiB in {DEST.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(force="--force" in sys.argv[1:]))
