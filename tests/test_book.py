"""The course as a website (README, "Read the course as a website"), read in a real browser.

The site is built as the README says (``python -m lesson_lib book``, here into a temporary
folder, with ``--strict``: a warning fails the build) and served on loopback by a plain static
server (``http.server``). Playwright drives the system's Chromium (as in tests/test_browser.py:
through its executable path, nothing downloaded) through every page, README and the chapters:

* nothing fails: no request without an answer, no HTTP error, no script error;
* nothing leaves the site: every request goes to the local server (or is ``data:``/``blob:``);
* every equation is typeset: the math the chapter's Markdown holds (``$...$`` and ``$$...$$``,
  counted here from the notebook itself) is the math on the page, and MathJax rendered each,
  without an error;
* every figure is there: as many figures as the notebook stores image outputs, and every image
  on the page loaded (natural width > 0); the saved widgets are drawn where the notebook has them;
* every chapter says how to run it (the note at its top) and links its notebook, which downloads;
* the navigation: "next" from the landing page walks through every chapter in order, and the
  sidebar names each chapter by its own title;
* search: a word only chapter 08 uses finds chapter 08;
* from the file system (``file://``), a chapter with widgets and the one with the most math work too.

Needs jupyter-book (``pip install -r requirements-book.txt``), the ``playwright`` package
(``requirements-browser.txt``) and a Chromium. Without jupyter-book the tests skip, unless
``LESSON_LIB_REQUIRE_BOOK=1``; without the browser they skip unless ``LESSON_LIB_REQUIRE_BROWSER=1``
(``.ci/run`` sets both): then they fail.
"""

from __future__ import annotations

import collections
import functools
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator, NamedTuple

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))  # 00 .. 11, then A1
SEARCHED_CHAPTER = "08_two_view_geometry"
FILE_CHAPTERS = ("01_stereo_disparity_to_depth", "08_two_view_geometry")  # widgets; the most math
REQUIRE_BOOK = os.environ.get("LESSON_LIB_REQUIRE_BOOK") == "1"
REQUIRE_BROWSER = os.environ.get("LESSON_LIB_REQUIRE_BROWSER") == "1"
PAGE_TIMEOUT_S = 120.0  # a page, its equations and widgets; a busy 2-core machine is slow
IMAGE_TYPES = ("image/png", "image/jpeg", "image/svg+xml", "image/gif")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

pytestmark = pytest.mark.slow


def _missing(reason: str, required: bool, variable: str) -> None:
    if required:
        pytest.fail(f"{reason} ({variable}=1: the website test must run)", pytrace=False)
    pytest.skip(reason)


# --------------------------------------------------------------------------- the notebooks

# Math as MyST's dollarmath finds it (book/_config.yml): $$...$$ (display), then $...$ (inline,
# spaces inside allowed), never in code; \$ is a dollar sign.
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
_DISPLAY = re.compile(r"(?<!\\)\$\$(.+?)(?<!\\)\$\$", re.S)
_INLINE = re.compile(r"(?<![\\$])\$((?:\\.|[^$\\])+?)\$(?!\$)", re.S)


def count_math(markdown: str) -> int:
    """The number of ``$...$`` and ``$$...$$`` formulas in a Markdown text, code excluded."""
    text = _CODE_SPAN.sub("", _FENCE.sub("", markdown))
    display = len(_DISPLAY.findall(text))
    return display + len(_INLINE.findall(_DISPLAY.sub(" ", text)))


def test_count_math_counts_what_myst_parses():
    assert count_math("$a$ and $$b$$, `$c$` and\n```\n$d$\n```\n") == 2
    assert count_math(r"costs \$5, $|t| = $ speed, $$\n x \n$$") == 2


class Chapter(NamedTuple):
    name: str  # file name without .ipynb
    title: str  # its first heading
    math: int  # formulas in its Markdown
    figures: int  # image outputs stored in it
    widgets: int  # widget views stored in it (with their saved state)
    markdown: str


def _chapter(path: Path) -> Chapter:
    nb = json.loads(path.read_text(encoding="utf-8"))
    markdown = "\n\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    title = re.search(r"^# (.+)$", markdown, re.M).group(1).strip()
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    state = nb["metadata"].get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    views = [o["data"][WIDGET_VIEW]["model_id"] for o in outputs if WIDGET_VIEW in o.get("data", {})]
    return Chapter(
        name=path.stem,
        title=title,
        math=count_math(markdown),
        figures=sum(any(t in o.get("data", {}) for t in IMAGE_TYPES) for o in outputs),
        widgets=sum(v in state for v in views),
        markdown=markdown,
    )


@functools.cache
def chapters() -> dict[str, Chapter]:
    return {p.stem: _chapter(p) for p in CHAPTERS}


def test_the_table_of_contents_lists_every_chapter_in_order():
    toc = yaml.safe_load((REPO_ROOT / "book" / "_toc.yml").read_text(encoding="utf-8"))
    assert toc["root"] == "README"
    assert [c["file"] for c in toc["chapters"]] == [f"notebooks/{p.stem}" for p in CHAPTERS]


def test_without_jupyter_book_the_command_says_what_to_install(monkeypatch, capsys):
    from lesson_lib.course import book

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "jupyter_book" else real(name, *a))
    assert book.main(["--out", "unused"]) == 2
    assert "pip install -r requirements-book.txt" in capsys.readouterr().err


def _search_term() -> str:
    """A word of chapter 08's prose no other chapter has a word like (none shares its first five
    letters: the search matches stems), the most frequent such word."""
    def words(c: Chapter) -> collections.Counter:
        prose = _CODE_SPAN.sub("", _FENCE.sub("", c.markdown)).lower()
        return collections.Counter(re.findall(r"\b[a-z]{5,}\b", prose))

    counts = {name: words(c) for name, c in chapters().items()}
    taken = {w[:5] for name, found in counts.items() if name != SEARCHED_CHAPTER for w in found}
    own = [(-n, word) for word, n in counts[SEARCHED_CHAPTER].items() if len(word) >= 7 and word[:5] not in taken]
    assert own, f"chapter {SEARCHED_CHAPTER} has no word of its own"
    return min(own)[1]


# --------------------------------------------------------------------------- the site


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The website built as the README says, into a temporary folder; the folder of its pages."""
    if importlib.util.find_spec("jupyter_book") is None:
        _missing("jupyter-book is not installed (pip install -r requirements-book.txt)", REQUIRE_BOOK,
                 "LESSON_LIB_REQUIRE_BOOK")
    out = tmp_path_factory.mktemp("book")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "lesson_lib", "book", "--out", str(out), "--strict", "--all"],
                          cwd=REPO_ROOT, capture_output=True, text=True)  # fmt: skip
    took = time.perf_counter() - start
    assert done.returncode == 0, f"the build failed:\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}"
    html = out / "_build" / "html"
    size = sum(f.stat().st_size for f in html.rglob("*") if f.is_file()) / 1e6
    print(f"\n[book] built in {took:.1f} s: {html} ({size:.0f} MB)")
    return html


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@pytest.fixture(scope="module")
def server(site: Path) -> Iterator[str]:
    """A plain static server of the site on loopback; its base URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(site)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _chromium() -> str:
    candidates = [os.environ.get("LESSON_LIB_CHROMIUM", "")]
    candidates += [shutil.which(name) or "" for name in ("chromium", "chromium-browser", "google-chrome")]
    found = next((c for c in candidates if c and os.access(c, os.X_OK)), None)
    if found is None:
        _missing("no Chromium found (apt-get install chromium, or set LESSON_LIB_CHROMIUM)", REQUIRE_BROWSER,
                 "LESSON_LIB_REQUIRE_BROWSER")
    return found


@pytest.fixture(scope="module")
def browser(site):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -r requirements-browser.txt)", REQUIRE_BROWSER,
                 "LESSON_LIB_REQUIRE_BROWSER")
    executable = _chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable)
        try:
            yield browser
        finally:
            browser.close()


# --------------------------------------------------------------------------- a page, as read

# In the page, once loaded: its equations and images. Only the article counts (the sidebars
# repeat headings, and with them their math).
PAGE_STATE_JS = r"""() => {
    const article = document.querySelector('article.bd-article');
    const math = article ? Array.from(article.querySelectorAll('.math')) : [];
    const images = Array.from(document.images);
    return {
        math: math.length,
        typeset: math.filter(m => m.querySelector('mjx-container')).length,
        raw: math.filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.trim().slice(0, 80)),
        mathErrors: article ? article.querySelectorAll('mjx-merror').length : 0,
        figures: article ? article.querySelectorAll('.cell_output img').length : 0,
        images: images.length,
        broken: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src.slice(0, 120)),
        widgets: document.querySelectorAll('.cell_output .jupyter-widgets.widget-subarea, .cell_output .widget-subarea').length,
        note: !!document.querySelector('.course-kernel-note'),
        download: (document.querySelector('a.course-download') || {}).href || null,
    };
}"""

# Sets window.__settled once MathJax (on pages with math) has typeset the page and every image
# has loaded or failed; waited for with a timeout (a page whose MathJax never comes fails).
SETTLE_JS = r"""() => {
    window.__settled = false;
    (async () => {
        if (document.querySelector('script[src*="mathjax"]')) {
            while (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) {
                await new Promise(r => setTimeout(r, 50));
            }
            await MathJax.startup.promise;
        }
        await Promise.all(Array.from(document.images).map(i => i.complete ? null :
            new Promise(r => { i.addEventListener('load', r); i.addEventListener('error', r); })));
        window.__settled = true;
    })();
}"""


class Visit(NamedTuple):
    url: str
    requests: list[str]  # every request the page made, answered or not
    failures: list[str]  # requests without an answer, HTTP errors, script errors
    state: dict


def _local(url: str, origin: str) -> bool:
    return url.startswith(origin) or url.startswith(("data:", "blob:"))


def _visit(browser, url: str, origin: str, *, widgets: int = 0) -> Visit:
    """Open ``url`` and wait until it is read: equations typeset, images and widgets drawn.

    A request to anywhere but ``origin`` is recorded and refused at once (nothing leaves this
    machine, and a page that wants a CDN fails here instead of waiting for it)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(PAGE_TIMEOUT_S * 1000)
    requests: list[str] = []
    failures: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("requestfailed", lambda r: failures.append(f"request failed: {r.url} ({r.failure})"))
    page.on("response", lambda r: r.status >= 400 and failures.append(f"HTTP {r.status}: {r.url}"))
    page.on("pageerror", lambda e: failures.append(f"script error: {e}"))
    page.route("**/*", lambda route: route.continue_() if _local(route.request.url, origin) else route.abort())
    try:
        page.goto(url, wait_until="load")
        if any(not _local(u, origin) for u in requests):  # fails at once (_assert_served_by_itself)
            return Visit(url, requests, failures, {})
        if widgets:  # the widgets' manager draws each saved view into the page
            page.wait_for_function(f"() => document.querySelectorAll('.cell_output .widget-subarea').length >= {widgets}")
        page.evaluate(SETTLE_JS)
        page.wait_for_function("() => window.__settled === true")
        # the late requests (fonts, widget assets); from the file system there is no network to idle
        if url.startswith("file:"):
            page.wait_for_timeout(1000)
        else:
            page.wait_for_load_state("networkidle")
        page.evaluate(SETTLE_JS)  # and what they brought
        page.wait_for_function("() => window.__settled === true")
        return Visit(url, requests, failures, page.evaluate(PAGE_STATE_JS))
    except Exception as error:
        elsewhere = [u for u in requests if not _local(u, origin)]
        raise AssertionError(f"{url}: not read ({error}); requests to other hosts: {elsewhere}; "
                             f"failures: {failures}") from error
    finally:
        page.close()


def _assert_served_by_itself(visit: Visit, origin: str) -> None:
    elsewhere = [u for u in visit.requests if not _local(u, origin)]
    assert not elsewhere, f"{visit.url}: requests that leave the site: {elsewhere}"
    assert not visit.failures, f"{visit.url}: " + "; ".join(visit.failures)


def _assert_chapter_reads(visit: Visit, chapter: Chapter) -> None:
    s = visit.state
    assert s["math"] == chapter.math, (
        f"{chapter.name}: {s['math']} equations on the page, {chapter.math} in the notebook's Markdown")
    assert s["typeset"] == s["math"] and not s["mathErrors"], (
        f"{chapter.name}: {s['typeset']} of {s['math']} equations typeset, {s['mathErrors']} MathJax errors; "
        f"not typeset: {s['raw'][:5]}")
    assert s["figures"] >= chapter.figures, (
        f"{chapter.name}: {s['figures']} figures on the page, {chapter.figures} stored in the notebook")
    assert not s["broken"], f"{chapter.name}: images that did not load: {s['broken']}"
    assert s["widgets"] >= chapter.widgets, (
        f"{chapter.name}: {s['widgets']} widgets drawn, {chapter.widgets} saved in the notebook")
    assert s["note"] and s["download"], f"{chapter.name}: no note on how to run the chapter, or no download link"


# --------------------------------------------------------------------------- the tests


def test_the_pages_show_no_output_test_markers_and_the_downloads_keep_them(site):
    """``# NBVAL_...`` lines (nbval's markers) are left out of the code the pages show; the
    notebooks offered for download are the notebooks, markers included."""
    marked = [p for p in CHAPTERS if "# NBVAL_" in p.read_text(encoding="utf-8")]
    assert marked, "no chapter has an nbval marker: this test checks nothing"
    for path in marked:
        page = (site / "notebooks" / f"{path.stem}.html").read_text(encoding="utf-8")
        assert "NBVAL_" not in page, f"{path.name}: the page shows an nbval marker"
        assert (site / "_sources" / "notebooks" / path.name).read_bytes() == path.read_bytes()
    # the code around a marker is still shown: chapter 01's explorer cell
    assert "stereo_explorer" in (site / "notebooks" / "01_stereo_disparity_to_depth.html").read_text(encoding="utf-8")


def test_the_landing_page_is_the_readme(browser, server):
    page = browser.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_S * 1000)
    try:
        page.goto(f"{server}/index.html")
        page.wait_for_url(f"{server}/README.html")
        assert page.locator("article.bd-article h1").first.text_content().strip().startswith(
            re.search(r"^# (.+)$", (REPO_ROOT / "README.md").read_text(encoding="utf-8"), re.M).group(1))
    finally:
        page.close()
    visit = _visit(browser, f"{server}/README.html", server)
    _assert_served_by_itself(visit, server)
    assert not visit.state["broken"]


@pytest.mark.parametrize("name", [p.stem for p in CHAPTERS])
def test_every_chapter_reads_with_nothing_from_elsewhere(browser, server, name):
    chapter = chapters()[name]
    visit = _visit(browser, f"{server}/notebooks/{name}.html", server, widgets=chapter.widgets)
    _assert_served_by_itself(visit, server)
    _assert_chapter_reads(visit, chapter)
    print(f"[book] {name}: {visit.state['typeset']} equations, {visit.state['figures']} figures, "
          f"{visit.state['widgets']} widgets, {len(visit.requests)} requests, all local")
    # the download link serves the chapter's notebook, outputs included
    import urllib.request

    with urllib.request.urlopen(visit.state["download"]) as answer:
        assert answer.read() == (REPO_ROOT / "notebooks" / f"{name}.ipynb").read_bytes()


def test_next_walks_through_every_chapter_in_order(browser, server):
    page = browser.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_S * 1000)
    # the links are in the pages' HTML: the HTML alone is fetched (the other tests read the rest)
    page.route("**/*", lambda route: route.continue_() if route.request.resource_type == "document" else route.abort())
    try:
        page.goto(f"{server}/index.html", wait_until="load")
        page.wait_for_url(f"{server}/README.html")  # index.html forwards to the landing page
        walked = [page.url]
        while (following := page.locator("a.right-next")).count():
            following.first.click()
            page.wait_for_load_state("load")
            walked.append(page.url)
            assert len(walked) <= len(CHAPTERS) + 1, f"'next' goes on past the last chapter: {walked}"
        expected = [f"{server}/README.html"] + [f"{server}/notebooks/{p.stem}.html" for p in CHAPTERS]
        assert [u.split("#")[0] for u in walked] == expected
        # the sidebar: every chapter, in order, by its own title
        links = page.locator("nav.bd-docs-nav a.reference.internal").evaluate_all(
            "els => els.map(a => [a.textContent.trim(), a.href])")
    finally:
        page.close()
    # the page open in the sidebar links to itself with "#"; ’: the pages' smart quotes
    listed = [(text.replace("\u2019", "'"), href.split("#")[0]) for text, href in links if "/notebooks/" in href]
    want = [(re.sub(r"[`*]", "", c.title), f"{server}/notebooks/{c.name}.html") for c in chapters().values()]
    assert listed == want


def test_search_finds_chapter_08(browser, server):
    term = _search_term()
    page = browser.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_S * 1000)
    try:
        page.goto(f"{server}/search.html?q={term}", wait_until="load")
        page.wait_for_selector("#search-results ul.search li")
        found = page.locator("#search-results ul.search li a").evaluate_all("els => els.map(a => a.href)")
    finally:
        page.close()
    pages = sorted({u.split("#")[0].split("?")[0] for u in found})
    # the chapter, and at most the README (whose table describes every chapter)
    assert f"{server}/notebooks/{SEARCHED_CHAPTER}.html" in pages, f"searching {term!r} found {pages}"
    assert set(pages) <= {f"{server}/notebooks/{SEARCHED_CHAPTER}.html", f"{server}/README.html"}, (
        f"searching {term!r}, a word only chapter {SEARCHED_CHAPTER} uses, found {pages}")
    print(f"[book] search {term!r}: {pages}")


@pytest.mark.parametrize("name", FILE_CHAPTERS)
def test_a_chapter_reads_from_the_file_system(browser, site, name):
    chapter = chapters()[name]
    url = (site / "notebooks" / f"{name}.html").as_uri()
    visit = _visit(browser, url, "file://", widgets=chapter.widgets)
    _assert_served_by_itself(visit, "file://")
    _assert_chapter_reads(visit, chapter)
