"""The course as a student meets it: JupyterLab in a real browser (headless Chromium).

A real ``jupyter lab`` server is started on loopback, rooted at a temporary folder that holds
a copy of chapter 01 (outputs and saved widget state stripped, so everything on the page comes
from this run; the committed notebook is never touched) and the learner's copy of the course as
the README's ``python -m lesson_lib start`` writes it (``--no-lab``: every chapter's student
version). Playwright drives the
system's Chromium (Debian's ``chromium`` package) through its executable path; no browser is
downloaded. Through the page, as a person would:

* chapter 01: *Run* > *Run All Cells*, wait until every code cell has run and the kernel is
  idle; no error output (traceback or stderr) appears and the stereo explorer's sliders render;
* the stereo explorer: drag the "disparity d" slider; its readout changes and the figure under
  it is redrawn with different pixels (and it does not change while nobody touches it);
* the student version: *Run All Cells*; every cell runs, nothing raises, and every check cell
  prints "not implemented yet".

On a failure a screenshot of the page is saved (the folder is printed, and named in the
failure message): ``$LESSON_LIB_BROWSER_SCREENSHOTS`` when set (``.ci/run`` sets it and prints
it), otherwise a temporary folder. The server's log is printed with a failure too.

Needs the ``playwright`` package (``pip install -r requirements-browser.txt``) and a Chromium
(``apt-get install chromium``; another one through ``$LESSON_LIB_CHROMIUM``). Without them the
tests are skipped, unless ``LESSON_LIB_REQUIRE_BROWSER=1`` (as in ``.ci/run``): then they fail.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, NamedTuple

import nbformat
import numpy as np
import pytest
from _jupyterlab import start_lab, stop

pytest.importorskip("jupyterlab", reason="JupyterLab is not installed (extra 'course')")

REPO_ROOT = Path(__file__).resolve().parents[1]
CHAPTER = "01_stereo_disparity_to_depth.ipynb"
SLIDER = "disparity d [px]"  # a slider of lesson_lib.course.widgets.stereo_explorer
NOT_DONE = "not implemented yet"  # what a check prints for an unfinished exercise

RUN_ALL_TIMEOUT_S = 600.0  # chapter 01 runs in about 20 s; a busy 2-core machine is far slower
PAGE_TIMEOUT_S = 120.0  # loading JupyterLab, starting a kernel, a redraw
REQUIRED = os.environ.get("LESSON_LIB_REQUIRE_BROWSER") == "1"

# Settings of the isolated JupyterLab: never ask about (or fetch) the news feed, so no toast
# covers the notebook.
USER_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": '{"fetchNews": "false"}',
}

# In the page: the state of the open notebook's code cells and its kernel.
# The kernel counts as idle when both the notebook's execution indicator and the status bar
# ("Python 3 (ipykernel) | Idle") say so; the indicator alone reads idle before the kernel starts.
NOTEBOOK_STATE_JS = r"""() => {
    const panel = Array.from(document.querySelectorAll('.jp-NotebookPanel'))
        .filter(p => p.querySelector('.jp-CodeCell')).pop();
    if (!panel) return null;
    const prompts = Array.from(panel.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt'))
        .map(p => p.textContent.trim());
    const indicator = panel.querySelector('.jp-Notebook-ExecutionIndicator');
    const statusbar = Array.from(document.querySelectorAll('.jp-StatusBar-TextItem'))
        .map(e => e.textContent.trim()).find(t => /\|\s*\w+$/.test(t) && t.includes('('));
    const idle = !!indicator && indicator.dataset.status === 'idle' && /\|\s*Idle$/.test(statusbar || '');
    return {prompts, kernel: idle ? 'idle' : 'busy', statusbar: statusbar || null};
}"""

# Error outputs (a traceback) and stderr streams are both rendered with this MIME type.
ERROR_OUTPUT = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'


class Lab(NamedTuple):
    url: str
    token: str
    root: Path
    log_path: Path


def _missing(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"{reason} (LESSON_LIB_REQUIRE_BROWSER=1: the browser test must run)", pytrace=False)
    pytest.skip(reason)


def _chromium() -> str:
    candidates = [os.environ.get("LESSON_LIB_CHROMIUM", "")]
    candidates += [shutil.which(name) or "" for name in ("chromium", "chromium-browser", "google-chrome")]
    found = next((c for c in candidates if c and os.access(c, os.X_OK)), None)
    if found is None:
        _missing("no Chromium found (apt-get install chromium, or set LESSON_LIB_CHROMIUM)")
    return found


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    folder = os.environ.get("LESSON_LIB_BROWSER_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("browser-screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _without_outputs(src: Path, dest: Path) -> None:
    nb = nbformat.read(src, as_version=4)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(nb, dest)


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[Lab]:
    """JupyterLab on loopback, rooted at a folder with chapter 01 and the learner's copy of the course
    (`start --no-lab`: the student versions)."""
    tmp = tmp_path_factory.mktemp("browser")
    root = tmp / "course"
    root.mkdir()
    _without_outputs(REPO_ROOT / "notebooks" / CHAPTER, root / CHAPTER)
    # the learner's copy as the README's `python -m lesson_lib start` writes it (every chapter)
    subprocess.run(
        [sys.executable, "-m", "lesson_lib", "start", "--dir", str(root / "student"), "--no-lab"],
        check=True, cwd=tmp, capture_output=True, text=True,
    )  # fmt: skip
    for name, text in USER_SETTINGS.items():
        (tmp / "settings" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / "settings" / name).write_text(text, encoding="utf-8")
    for name in ("config", "runtime", "workspaces"):
        (tmp / name).mkdir()
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp / "config"), JUPYTER_RUNTIME_DIR=str(tmp / "runtime"))
    for name in ("JUPYTER_TOKEN", "MPLBACKEND", "NBGRADER_EXECUTION", "LESSON_LIB_STRICT_CHECKS"):
        env.pop(name, None)  # a student's kernel: inline figures, friendly checks

    running = start_lab(root, tmp, env, extra=(f"--LabApp.user_settings_dir={tmp / 'settings'}",
                                               f"--LabApp.workspaces_dir={tmp / 'workspaces'}"))
    try:
        yield Lab(running.url, running.token, root, running.log_path)
    finally:
        stop(running.process)


def _log(lab: Lab) -> str:
    return lab.log_path.read_text(encoding="utf-8", errors="replace")[-6000:]


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -r requirements-browser.txt)")
    executable = _chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def _screenshot_on_failure(page, lab: Lab, screenshots: Path, name: str) -> Iterator[None]:
    """On an exception, save a full-page screenshot, print where, and add it to the message."""
    try:
        yield
    except BaseException as error:
        if isinstance(error, (KeyboardInterrupt, pytest.skip.Exception)):
            raise
        shot = screenshots / f"{name}.png"
        try:
            page.screenshot(path=str(shot), full_page=True, timeout=30_000)
            saved = f"screenshot of the page: {shot}"
        except Exception as shot_error:  # the page itself may be gone
            saved = f"no screenshot ({shot_error!r})"
        print(f"\n[browser test] {saved}\n[browser test] server log:\n{_log(lab)}")
        pytest.fail(f"{error}\n{saved}", pytrace=True)


def _open(browser, lab: Lab, path: str):
    """A fresh page with ``path`` open in JupyterLab and its kernel idle."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(PAGE_TIMEOUT_S * 1000)
    # ?reset: an empty workspace, so only this notebook is open.
    page.goto(f"{lab.url}/lab/tree/{path}?reset&token={lab.token}")
    page.wait_for_selector(".jp-NotebookPanel .jp-CodeCell")
    _wait_for_kernel_idle(page)
    return page


def _state(page) -> dict:
    return page.evaluate(NOTEBOOK_STATE_JS) or {"prompts": [], "kernel": None}


def _wait_for_kernel_idle(page) -> None:
    page.wait_for_function(
        f"() => {{ const s = ({NOTEBOOK_STATE_JS})(); return s && s.kernel === 'idle'; }}",
        timeout=PAGE_TIMEOUT_S * 1000,
    )


def _run_all(page) -> list[str]:
    """Run > Run All Cells; wait until no cell is queued or running and the kernel is idle.

    Returns the code cells' prompts (``[12]:`` for a cell that ran).
    """
    before = _state(page)["prompts"]
    assert before and not any(re.fullmatch(r"\[\d+\]:", p) for p in before), (
        f"the notebook should open with no cell run yet: {_state(page)}"
    )
    page.locator(".jp-NotebookPanel .jp-Notebook").first.click(position={"x": 5, "y": 5})
    page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-item", has=page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$"))).click()
    # Started: some cell is queued/running or has run. Finished: none queued, kernel idle.
    page.wait_for_function(
        f"""() => {{
            const s = ({NOTEBOOK_STATE_JS})();
            return s && s.prompts.some(p => p === '[*]:' || /^\\[\\d+\\]:$/.test(p));
        }}""",
        timeout=PAGE_TIMEOUT_S * 1000,
    )
    page.wait_for_function(
        f"""() => {{
            const s = ({NOTEBOOK_STATE_JS})();
            return s && s.kernel === 'idle' && !s.prompts.includes('[*]:');
        }}""",
        timeout=RUN_ALL_TIMEOUT_S * 1000,
        polling=500,
    )
    return _state(page)["prompts"]


def _errors_on_page(page) -> list[str]:
    # textContent, not innerText: an output scrolled out of view may not be laid out.
    texts = [t.strip()[:800] for t in page.locator(ERROR_OUTPUT).evaluate_all("els => els.map(e => e.textContent)")]
    widget_errors = page.get_by_text("Error displaying widget").count()
    return texts + [f"{widget_errors} widget(s) failed to display"] * bool(widget_errors)


def _assert_every_cell_ran(prompts: list[str]) -> None:
    not_run = [i for i, p in enumerate(prompts) if not re.fullmatch(r"\[\d+\]:", p)]
    assert prompts and not not_run, (
        f"code cells not run (index among code cells: prompt): "
        f"{[(i, prompts[i]) for i in not_run]}"
    )


# --------------------------------------------------------------------------- chapter 01


@pytest.fixture(scope="module")
def chapter(browser, lab, screenshots):
    """Chapter 01 open in the browser after Run All Cells (the page and the prompts)."""
    page = _open(browser, lab, CHAPTER)
    with _screenshot_on_failure(page, lab, screenshots, "chapter-01-run-all"):
        prompts = _run_all(page)
    yield page, prompts
    page.close()


def test_chapter_runs_all_cells_without_error_output(chapter, lab, screenshots):
    page, prompts = chapter
    with _screenshot_on_failure(page, lab, screenshots, "chapter-01-errors"):
        errors = _errors_on_page(page)
        assert not errors, "error output on the page after Run All:\n" + "\n---\n".join(errors)
        _assert_every_cell_ran(prompts)
        labels = page.locator(".widget-slider .widget-label").all_inner_texts()
        assert SLIDER in labels, f"the stereo explorer's sliders did not render: {labels}"


def _explorer(page):
    """The stereo explorer widget: the box that holds the slider and the figure."""
    return page.locator(".jp-OutputArea-output .widget-interact").filter(has_text=SLIDER)


def _figure_png(explorer) -> str:
    return explorer.locator(".widget-output img").first.get_attribute("src") or ""


def _settled_figure(explorer, quiet_s: float = 2.0) -> str:
    """The figure's image once it has stopped changing for ``quiet_s`` (after Run All the
    output may still be redrawn once on a busy machine); fails after PAGE_TIMEOUT_S."""
    deadline = time.monotonic() + PAGE_TIMEOUT_S
    src, since = _figure_png(explorer), time.monotonic()
    while time.monotonic() - since < quiet_s:
        if time.monotonic() > deadline:
            pytest.fail(f"the explorer's figure kept changing for {PAGE_TIMEOUT_S:.0f} s without any input")
        time.sleep(0.25)
        now = _figure_png(explorer)
        if now != src:
            src, since = now, time.monotonic()
    return src


def _decode(src: str) -> np.ndarray:
    from PIL import Image

    assert src.startswith("data:image/png;base64,"), src[:80]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB"))


def test_moving_a_slider_redraws_the_explorer_figure(chapter, lab, screenshots):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page, _ = chapter
    with _screenshot_on_failure(page, lab, screenshots, "chapter-01-slider"):
        explorer = _explorer(page)
        assert explorer.count() == 1, f"expected one stereo explorer, found {explorer.count()}"
        explorer.scroll_into_view_if_needed()
        explorer.locator(".widget-output img").first.wait_for()
        slider = explorer.locator(".widget-slider").filter(has_text=SLIDER)
        readout = slider.locator(".widget-readout")
        figure_before = _settled_figure(explorer)
        value_before = readout.inner_text()

        # Left alone, the figure stays as it is: a change below is the slider's doing.
        with pytest.raises(PlaywrightTimeout):
            page.wait_for_function(
                "([el, src]) => { const img = el.querySelector('.widget-output img');"
                " return !img || img.src !== src; }",
                arg=[explorer.element_handle(), figure_before], timeout=3000,
            )

        # Drag the handle a quarter of the track to the right, as a person would.
        handle = slider.locator(".noUi-handle")
        box = handle.bounding_box()
        track = slider.locator(".noUi-target").bounding_box()
        assert box and track, "the slider's handle or track is not visible"
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x + track["width"] / 4, y, steps=8)
        page.mouse.up()

        try:
            page.wait_for_function(
                "([el, src]) => { const img = el.querySelector('.widget-output img');"
                " return img && img.complete && img.src !== src; }",
                arg=[explorer.element_handle(), figure_before],
                timeout=PAGE_TIMEOUT_S * 1000,
            )
        except PlaywrightTimeout:
            pytest.fail(
                f"the explorer's figure did not change within {PAGE_TIMEOUT_S:.0f} s of dragging "
                f"{SLIDER!r} (readout {value_before} -> {readout.inner_text()})"
            )
        value_after, figure_after = readout.inner_text(), _figure_png(explorer)
        assert float(value_after) > float(value_before), (
            f"the readout of {SLIDER!r} did not go up: {value_before} -> {value_after}"
        )
        before, after = _decode(figure_before), _decode(figure_after)
        changed = 1.0 if before.shape != after.shape else float((before != after).any(axis=2).mean())
        assert changed > 0.002, f"the redrawn figure is (almost) the same: {changed:.2%} of its pixels differ"
        assert not _errors_on_page(page), _errors_on_page(page)


# --------------------------------------------------------------------------- student version


def test_student_version_runs_and_every_check_says_not_implemented(browser, lab, screenshots):
    student = nbformat.read(lab.root / "student" / CHAPTER, as_version=4)
    checks = [c for c in student.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert checks, "the student version has no check cells"
    page = _open(browser, lab, f"student/{CHAPTER}")
    try:
        with _screenshot_on_failure(page, lab, screenshots, "student-01-run-all"):
            prompts = _run_all(page)
            errors = _errors_on_page(page)
            assert not errors, "error output in the student version:\n" + "\n---\n".join(errors)
            _assert_every_cell_ran(prompts)
            notices = page.locator(".jp-OutputArea-output").filter(has_text=NOT_DONE)
            assert notices.count() == len(checks), (
                f"{len(checks)} check cells, but {notices.count()} outputs say {NOT_DONE!r}: "
                f"{notices.all_inner_texts()}"
            )
    finally:
        page.close()
