"""The course as a website: ``python -m lesson_lib book``.

Builds every chapter into HTML pages with jupyter-book 1 (Sphinx), from the outputs stored in
the notebooks: nothing is executed, and nothing is fetched (the pages' scripts and fonts,
MathJax and the widgets' manager, are served by the site itself from ``book/vendor/``). The
book's configuration is ``book/_config.yml`` and its pages, in order, ``book/_toc.yml``: README
as the landing page, then the chapters of ``notebooks/``. jupyter-book is not part of the
course's install; ``pip install -r requirements-book.txt`` adds it.

    python -m lesson_lib book [--out DIR] [--strict] [--all]

The pages land in ``DIR/_build/html`` (``book/_build/html`` by default, ignored by git); open
``index.html`` there in a browser, or serve the folder (``python -m http.server -d DIR/_build/html``).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BOOK = REPO_ROOT / "book"
INSTALL = "pip install -r requirements-book.txt"

# jupyter-book's command line, run by this Python (the one with the course installed).
_JUPYTER_BOOK = "import sys; from jupyter_book.cli.main import main; sys.exit(main())"


def html_folder(out: Path) -> Path:
    """Where ``build(out=...)`` writes the pages: ``out/_build/html`` (jupyter-book's layout)."""
    return Path(out) / "_build" / "html"


def build_command(out: Path, *, strict: bool = False, everything: bool = False) -> list[str]:
    """The ``jupyter-book build`` command line that builds the course into ``out``."""
    cmd = [sys.executable, "-c", _JUPYTER_BOOK, "build", str(REPO_ROOT),
           "--config", str(BOOK / "_config.yml"), "--toc", str(BOOK / "_toc.yml"),
           "--path-output", str(out)]  # fmt: skip
    if strict:
        cmd += ["-W", "--keep-going"]  # a warning fails the build
    if everything:
        cmd.append("--all")
    return cmd


def build(out: Path = BOOK, *, strict: bool = False, everything: bool = False) -> Path:
    """Build the website into ``out``; returns the folder of its pages (``out/_build/html``).

    Raises ``RuntimeError`` naming ``pip install -r requirements-book.txt`` when jupyter-book is
    not installed, ``FileNotFoundError`` outside a checkout of the course (no ``book/``), and
    ``subprocess.CalledProcessError`` when the build fails.
    """
    if importlib.util.find_spec("jupyter_book") is None:
        raise RuntimeError(f"jupyter-book is not installed; the website needs it: {INSTALL}")
    if not (BOOK / "_config.yml").is_file():
        raise FileNotFoundError(f"{BOOK / '_config.yml'}: the website is built from a clone of the course repository")
    subprocess.run(build_command(Path(out).resolve(), strict=strict, everything=everything), check=True)
    return html_folder(Path(out).resolve())


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m lesson_lib book",
        description="Build the course as a website (HTML pages of every chapter with its stored outputs; nothing is "
        f"executed or downloaded). Needs jupyter-book: {INSTALL}",
    )
    p.add_argument("--out", type=Path, default=BOOK,
                   help=f"build folder; the pages land in OUT/_build/html (default: {BOOK})")
    p.add_argument("--strict", action="store_true", help="fail on any warning of the build")
    p.add_argument("--all", dest="everything", action="store_true",
                   help="rebuild every page (by default, only the pages whose source changed)")
    ns = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        pages = build(ns.out, strict=ns.strict, everything=ns.everything)
    except (RuntimeError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"error: the build failed (exit status {exc.returncode}); its messages are above", file=sys.stderr)
        return 1
    print(f"the course's website: {pages / 'index.html'} (open it in a browser, or serve the folder: "
          f"python -m http.server -d {pages})")
    return 0
