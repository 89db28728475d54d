"""Look at the built book in headless Chromium, as a reader would, and save screenshots.

    python chapters/book/check_book.py build/book/_build/html      # make book-test

The site is served on 127.0.0.1 (a page's Mermaid is an ES module, which Chromium refuses to load
from file:// URLs), each checked page is loaded with its scripts run, and the *rendered* DOM must
show: a Chinese <h1>; every formula typeset by MathJax (an <mjx-container> in each math element,
no raw TeX left); every Mermaid diagram drawn as an <svg>; on a notebook page, a plot image that
is a real PNG file of the site. Nothing may be loaded from another host. Screenshots go to
OUT/screenshots/NAME.png.
"""
from __future__ import annotations

import argparse
import functools
import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PAGES = ("chapters/ch04_math.html", "notebooks/ch04_formulas_verified.html")
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CJK = re.compile(r"[\u4e00-\u9fff]")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def chromium() -> str | None:
    """The path of a Chromium binary, or None (Debian: apt-get install chromium)."""
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


def _browser(url: str, *extra: str) -> str:
    cmd = [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--no-first-run", "--virtual-time-budget=20000",
           "--run-all-compositor-stages-before-draw", *extra, url]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"chromium failed on {url}: {result.stderr.strip()[-300:]}")
    return result.stdout


def _elements(dom: str, tag: str, cls: str) -> list[str]:
    """The inner HTML of each <tag class="... cls ..."> (no nesting of the same tag inside)."""
    pattern = rf'<{tag}\b[^>]*class="[^"]*\b{cls}\b[^"]*"[^>]*>(.*?)</{tag}>'
    return re.findall(pattern, dom, flags=re.S)


def page_problems(dom: str, html_root: Path, page: str, origin: str = "") -> list[str]:
    """What a reader would miss on ``page`` (its rendered DOM, served from ``origin``); []
    when it all shows."""
    problems = []
    h1 = re.findall(r"<h1\b[^>]*>(.*?)</h1>", dom, flags=re.S)
    if not any(CJK.search(re.sub(r"<[^>]+>", "", h)) for h in h1):
        problems.append("no Chinese <h1> heading")
    maths = _elements(dom, "span", "math") + _elements(dom, "div", "math")
    untyped = [m for m in maths if "<mjx-container" not in m]
    if not maths and page.startswith("chapters/"):
        problems.append("no math element on a chapter page")
    if untyped:
        problems.append(f"{len(untyped)} of {len(maths)} formulas not typeset by MathJax")
    diagrams = _elements(dom, "pre", "mermaid")
    if page.startswith("chapters/") and not diagrams:
        problems.append("no Mermaid diagram on a chapter page")
    if any("<svg" not in d for d in diagrams):
        problems.append(f"{sum('<svg' not in d for d in diagrams)} Mermaid diagrams not drawn")
    if page.startswith("notebooks/"):
        pngs = [html_root / os.path.normpath(Path(page).parent / src)
                for src in re.findall(r'<img\b[^>]*src="([^"]+\.png)"', dom)]
        if not any(p.is_file() and p.read_bytes()[:8] == PNG_MAGIC for p in pngs):
            problems.append("no plot image (a PNG file of the site) on a notebook page")
    foreign = [u for u in re.findall(r'<(?:script|link|img)\b[^>]*(?:src|href)="((?:https?:)?//'
                                     r'[^"]+)"', dom) if not origin or not u.startswith(origin)]
    if foreign:
        problems.append(f"loads from another host: {foreign[0]}")
    return problems


def check(html_root: Path, shots: Path, pages=PAGES) -> dict[str, list[str]]:
    """Serve ``html_root`` on loopback, render ``pages``; {page: problems}, screenshots saved."""
    if chromium() is None:
        raise RuntimeError("Chromium is not installed: apt-get install chromium (Debian)")
    shots.mkdir(parents=True, exist_ok=True)
    handler = functools.partial(_Quiet, directory=str(html_root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        report = {}
        for page in pages:
            origin = f"http://127.0.0.1:{server.server_address[1]}/"
            url = origin + page
            report[page] = page_problems(_browser(url, "--dump-dom"), html_root, page, origin)
            shot = shots / (Path(page).stem + ".png")
            _browser(url, f"--screenshot={shot}", "--window-size=1280,1600")
            if not shot.is_file():
                report[page].append("no screenshot written")
        return report
    finally:
        server.shutdown()
        server.server_close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("html", type=Path, help="the built site (build/book/_build/html)")
    parser.add_argument("--screenshots", type=Path, default=None,
                        help="where to save them (default: the site's parent/../screenshots)")
    args = parser.parse_args(argv)
    if not (args.html / "index.html").is_file():
        print(f"book-test: {args.html} holds no built book: run `make book` first",
              file=sys.stderr)
        return 1
    shots = args.screenshots or args.html.parents[1] / "screenshots"
    report = check(args.html, shots)
    for page, problems in report.items():
        print(f"{'ok  ' if not problems else 'FAIL'} {page}: {'; '.join(problems) or 'renders'}")
    print(f"screenshots in {shots}")
    return 0 if not any(report.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
