"""Build the companion book: the chapters and the *executed* notebooks as a static HTML site.

    python chapters/book/build_book.py                 # fast mode, into build/book/html
    python chapters/book/build_book.py --full          # full-size runs (hours)
    python chapters/book/build_book.py --pages ch04_math ch04_formulas_verified --out DIR

Steps: (1) vendor MathJax and Mermaid from the npm registry (pinned versions, sha256-checked,
cached in build/book/vendor-cache; set BOOK_VENDOR to a folder holding the two .tgz files to
build without network); (2) stage chapters/*.md, this folder's _config.yml, _toc.yml and index.md
into OUT/src; (3) execute every notebook with the runner the tests use
(:func:`minillm.apps.notebooks.run_notebook`) into OUT/src/notebooks, reusing an earlier
execution when the notebook and the mode are unchanged; (4) run Jupyter Book 1 (Sphinx + MyST-NB)
on OUT/src. The notebooks in the repository stay without outputs: outputs live in the book.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

# (npm package, version, sha256 of the registry's tarball, files to take from it, where they go)
VENDOR = (
    ("mathjax", "3.2.2", "1b9c0a1c44df864e915690558e72adb9cc5203360daefd385084ced3b6c64c09",
     "package/es5/", "mathjax/"),
    ("mermaid", "11.12.1", "3bd65ddefe97fb2e01d976a01d4078f8d773bfc56c6a75a9abf08b564ce0f8b2",
     "package/dist/", "mermaid/"),
)
MERMAID_FILES = ("mermaid.esm.min.mjs", "chunks/mermaid.esm.min/")
BOOK_FILES = ("_config.yml", "_toc.yml", "index.md")
STAMP_KEY = "minillm_book"


class BookError(Exception):
    """A build that cannot go on (the message says what to do)."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_tarball(name: str, version: str, sha256: str, cache: Path) -> Path:
    """The npm tarball ``name-version.tgz`` from BOOK_VENDOR, the cache, or ``npm pack``."""
    filename = f"{name}-{version}.tgz"
    local = Path(os.environ["BOOK_VENDOR"]) / filename if os.environ.get("BOOK_VENDOR") else None
    path = local if local is not None else cache / filename
    if local is None and not path.is_file():
        if shutil.which("npm") is None:
            raise BookError(f"npm is needed once to fetch {name}@{version} (MathJax/Mermaid are "
                            "served from the book itself, never from a CDN): install Node.js, "
                            "or set BOOK_VENDOR to a folder holding " + filename)
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "pack", f"{name}@{version}", "--pack-destination", str(cache),
                        "--silent"], check=True, stdout=subprocess.DEVNULL)
    if not path.is_file():
        raise BookError(f"{path} not found: fetch it with `npm pack {name}@{version}`")
    if _sha256(path) != sha256:
        raise BookError(f"{path} has sha256 {_sha256(path)}, expected {sha256}: delete it and "
                        "build again")
    return path


def vendor(static: Path, cache: Path) -> None:
    """Unpack MathJax (es5/) and Mermaid's ES module build into ``static``/vendor.

    ``static`` is a static path of its own (``_vendor``, copied to the site's ``_static``):
    Jupyter Book links every script it finds in ``_static`` into every page, and MathJax's
    folder holds dozens of alternative builds.
    """
    for name, version, sha256, prefix, target in VENDOR:
        dest = static / "vendor" / target
        if (dest / ".version").is_file() and \
                (dest / ".version").read_text(encoding="utf-8") == version:
            continue
        shutil.rmtree(dest, ignore_errors=True)
        with tarfile.open(fetch_tarball(name, version, sha256, cache)) as tar:
            for member in tar.getmembers():
                rel = member.name[len(prefix):] if member.name.startswith(prefix) else None
                if not member.isfile() or rel is None or rel.endswith(".map"):
                    continue
                if name == "mermaid" and not rel.startswith(MERMAID_FILES):
                    continue
                out = dest / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(tar.extractfile(member).read())
        (dest / ".version").write_text(version, encoding="utf-8")


def toc_pages() -> list[str]:
    """Every page of _toc.yml ('chapters/ch04_math', 'notebooks/ch04_formulas_verified', ...)."""
    pages = []
    for line in (HERE / "_toc.yml").read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if text.startswith(("- file:", "root:")):
            pages.append(text.split(":", 1)[1].strip())
    return pages


def write_toc(src: Path, pages: list[str] | None) -> None:
    """The whole _toc.yml, or (``pages``) a one-part book of just those pages after the index."""
    if pages is None:
        shutil.copy2(HERE / "_toc.yml", src / "_toc.yml")
        return
    lines = ["format: jb-book", "root: index", "chapters:"]
    lines += [f"  - file: {page}" for page in pages]
    (src / "_toc.yml").write_text("\n".join(lines) + "\n", encoding="utf-8")


def stage(src: Path, pages: list[str]) -> None:
    """Copy the book's files and the chapters (Markdown) that ``pages`` names into ``src``."""
    (src / "chapters").mkdir(parents=True, exist_ok=True)
    (src / "notebooks").mkdir(parents=True, exist_ok=True)
    for name in ("_config.yml", "index.md"):
        shutil.copy2(HERE / name, src / name)
    for page in pages:
        if page.startswith("chapters/"):
            shutil.copy2(ROOT / f"{page}.md", src / f"{page}.md")


def execute(page: str, src: Path, work: Path, *, full: bool) -> bool:
    """Execute ``notebooks/NAME`` into ``src``; False when an earlier execution is reused."""
    import nbformat
    from nbclient.exceptions import CellExecutionError
    from minillm.apps.notebooks import run_notebook
    source, dest = ROOT / f"{page}.ipynb", src / f"{page}.ipynb"
    stamp = {"source_sha256": _sha256(source), "fast": not full}
    if dest.is_file():
        old = json.loads(dest.read_text(encoding="utf-8")).get("metadata", {})
        if old.get(STAMP_KEY) == stamp:
            return False
    nb = nbformat.read(source, as_version=4)
    try:
        run_notebook(nb, work / Path(page).name, fast=not full,
                     timeout=7200 if full else 300)
    except CellExecutionError as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise BookError(f"{page}.ipynb failed in {'full' if full else 'fast'} mode ({first}); "
                        "run it in Jupyter to see the cell") from None
    nb.metadata[STAMP_KEY] = stamp
    nbformat.write(nb, dest)
    return True


def jupyter_book(src: Path, out: Path) -> Path:
    """Run Jupyter Book 1 on ``src``; returns the folder of the HTML site."""
    exe = Path(sys.executable).parent / "jupyter-book"
    if not exe.is_file():
        raise BookError("Jupyter Book is not installed in this environment: run `make book` "
                        "(it installs the book extra, pip install -e .[book])")
    result = subprocess.run([str(exe), "build", str(src), "--path-output", str(out),
                             "--builder", "html"], capture_output=True, text=True)
    log = out / "jupyter-book.log"
    log.write_text(result.stdout + result.stderr, encoding="utf-8")
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
        raise BookError("jupyter-book failed (full log in " + str(log) + "): " + " | ".join(tail))
    return out / "_build" / "html"


def build(out: Path, *, full: bool = False, pages: list[str] | None = None) -> Path:
    """Vendor, stage, execute and build; returns the HTML folder (OUT/_build/html)."""
    from tqdm.auto import tqdm
    chosen = toc_pages() if pages is None else pages
    unknown = [p for p in chosen if p != "index" and not (ROOT / f"{p}.md").is_file()
               and not (ROOT / f"{p}.ipynb").is_file()]
    if unknown:
        raise BookError(f"no page {', '.join(unknown)}: name pages as chapters/ch04_math or "
                        "notebooks/ch04_formulas_verified")
    src = out / "src"
    vendor(src / "_vendor", ROOT / "build" / "book" / "vendor-cache")
    stage(src, chosen)
    write_toc(src, None if pages is None else [p for p in chosen if p != "index"])
    notebooks = [p for p in chosen if p.startswith("notebooks/")]
    with tempfile.TemporaryDirectory(prefix="minillm-book-") as work:
        for page in tqdm(notebooks, desc="executing notebooks", unit="notebook"):
            execute(page, src, Path(work), full=full)
    return jupyter_book(src, out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "book",
                        help="output folder (default build/book); the site is OUT/_build/html")
    parser.add_argument("--full", action="store_true",
                        help="run the notebooks at full size (hours) instead of fast mode")
    parser.add_argument("--fresh", action="store_true",
                        help="execute every notebook again (by default a notebook whose source "
                             "and mode are unchanged keeps its earlier outputs, even if the "
                             "library changed)")
    parser.add_argument("--pages", nargs="+", default=None, metavar="PAGE",
                        help="build only these pages (chapters/ch04_math, notebooks/...)")
    args = parser.parse_args(argv)
    if args.fresh:
        shutil.rmtree(args.out.resolve() / "src" / "notebooks", ignore_errors=True)
    try:
        html = build(args.out.resolve(), full=args.full, pages=args.pages)
    except BookError as e:
        print(f"make book: {e}", file=sys.stderr)
        return 1
    print(f"book built: {html / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
