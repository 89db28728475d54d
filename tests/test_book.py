"""The companion book (chapters/book/): its table of contents, the browser check, and a real build.

* The table of contents names every chapter and every notebook (a new notebook cannot be left
  out of the book).
* The browser check (``check_book.page_problems``) is proven able to fail: a rendered page that
  shows everything passes, and each thing a reader would miss (an untypeset formula, an undrawn
  Mermaid diagram, no Chinese heading, no plot, a script from another host) is named.
* End to end (CPU pass only, skipped visibly without Jupyter Book, Chromium or the vendored
  MathJax/Mermaid, which ``make book`` fetches once; tests never use the network): a two-page
  book (chapter 4 and its notebook, executed in fast mode) is built and opened in headless
  Chromium, which must show typeset math, drawn diagrams, a plot and Chinese headings, and
  save a screenshot.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "chapters" / "book"
DEVICE = os.environ.get("MINILLM_TEST_DEVICE", "cpu")


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_book_{name}", BOOK / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


build_book = _load("build_book")
check_book = _load("check_book")


def test_the_table_of_contents_names_every_chapter_and_notebook():
    pages = set(build_book.toc_pages())
    wanted = {f"chapters/{p.stem}" for p in (ROOT / "chapters").glob("*.md")
              if p.stem not in ("README",)}
    wanted |= {f"notebooks/{p.stem}" for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert wanted - pages == set(), f"_toc.yml leaves out {sorted(wanted - pages)}"
    assert "index" in pages
    assert all((ROOT / f"{p}.md").is_file() or (ROOT / f"{p}.ipynb").is_file() or p == "index"
               for p in pages), "_toc.yml names a page that does not exist"


GOOD_CHAPTER = """<html><body><h1>4. 数学模型</h1>
<p><span class="math notranslate nohighlight"><mjx-container>x</mjx-container></span></p>
<div class="math notranslate nohighlight"><mjx-container>y</mjx-container></div>
<pre class="mermaid" data-processed="true"><svg></svg></pre>
<script src="http://127.0.0.1:1/_static/vendor/mathjax/x.js"></script></body></html>"""

SABOTAGE = {
    "untypeset formula": (GOOD_CHAPTER.replace("<mjx-container>x</mjx-container>", r"\(x\)"),
                          "1 of 2 formulas not typeset"),
    "no math at all": (GOOD_CHAPTER.replace('class="math', 'class="text'),
                       "no math element"),
    "undrawn diagram": (GOOD_CHAPTER.replace("<svg></svg>", "flowchart LR"),
                        "Mermaid diagrams not drawn"),
    "no diagram": (GOOD_CHAPTER.replace('class="mermaid"', 'class="code"'), "no Mermaid diagram"),
    "English heading": (GOOD_CHAPTER.replace("4. 数学模型", "4. Math"), "no Chinese <h1>"),
    "a CDN script": (GOOD_CHAPTER.replace("http://127.0.0.1:1/", "https://cdn.example/"),
                     "loads from another host"),
}


def test_the_browser_check_passes_a_page_that_shows_everything(tmp_path):
    assert check_book.page_problems(GOOD_CHAPTER, tmp_path, "chapters/ch04_math.html",
                                    "http://127.0.0.1:1/") == []


@pytest.mark.parametrize("case", list(SABOTAGE))
def test_the_browser_check_names_what_a_reader_would_miss(case, tmp_path):
    dom, words = SABOTAGE[case]
    problems = check_book.page_problems(dom, tmp_path, "chapters/ch04_math.html",
                                        "http://127.0.0.1:1/")
    assert any(words in p for p in problems), problems


def test_a_notebook_page_needs_a_real_png(tmp_path):
    dom = "<h1>第 4 章</h1><img src=\"../_images/plot.png\">"
    page = "notebooks/ch04.html"
    assert "no plot image" in " ".join(check_book.page_problems(dom, tmp_path, page))
    (tmp_path / "_images").mkdir()
    (tmp_path / "_images" / "plot.png").write_bytes(b"not a png")
    assert "no plot image" in " ".join(check_book.page_problems(dom, tmp_path, page))
    (tmp_path / "_images" / "plot.png").write_bytes(check_book.PNG_MAGIC + b"rest")
    assert check_book.page_problems(dom, tmp_path, page) == []


def _vendored() -> bool:
    cache = ROOT / "build" / "book" / "vendor-cache"
    return all((cache / f"{name}-{version}.tgz").is_file()
               for name, version, *_ in build_book.VENDOR) or bool(os.environ.get("BOOK_VENDOR"))


@pytest.mark.skipif(DEVICE != "cpu", reason="the book is built once, on the CPU pass")
def test_a_two_page_book_renders_in_chromium(tmp_path):
    if importlib.util.find_spec("jupyter_book") is None:
        pytest.skip("Jupyter Book is not installed: `make book` installs the book extra")
    if check_book.chromium() is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium fonts-noto-cjk)")
    if not _vendored():
        pytest.skip("MathJax/Mermaid are not vendored yet (tests use no network): run "
                    "`make book` once, or set BOOK_VENDOR")
    html = build_book.build(tmp_path / "book", pages=["chapters/ch04_math",
                                                      "notebooks/ch04_formulas_verified"])
    report = check_book.check(html, tmp_path / "shots")
    assert report and not any(report.values()), report
    for page in report:
        shot = tmp_path / "shots" / (Path(page).stem + ".png")
        assert shot.read_bytes()[:8] == check_book.PNG_MAGIC
