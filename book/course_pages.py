"""Sphinx extension of the course's website (book/_config.yml): a note at the top of every
chapter page, the output test's ``# NBVAL_...`` lines left out of the code shown, and what the
widgets' manager needs on the pages with widgets.

A page shows a chapter with the outputs stored in its notebook; nothing runs. The note says so,
says how to open the chapter in JupyterLab to run it (sliders, training), and links the
chapter's notebook (the copy Sphinx keeps under ``_sources/``, outputs included). The notebooks
themselves are not changed.
"""

from __future__ import annotations

import json
import posixpath
from pathlib import Path

from docutils import nodes
from sphinx.application import Sphinx

CHAPTERS = "notebooks/"
MARKER = "# NBVAL_"  # the output test's markers in code cells (_hide_test_markers)

# Before require.js, on pages with widgets:
# 1. where the widgets' manager (book/vendor/widgets/) lies: each module of its bundle finds the
#    fonts beside its own address, which require.js derives from the module's name; without
#    this, they are asked for under the page's folder;
# 2. the manager typesets a widget's label with MathJax 2's call,
#    MathJax.Hub.Queue(["Typeset", MathJax.Hub, element]); the pages have MathJax 3 (loaded
#    deferred, so there by DOMContentLoaded), whose typesetPromise does the same.
WIDGETS_JS = """\
(function () {
    var folder = new URL("_static/widgets", new URL(document.documentElement.dataset.content_root,
                                                    document.baseURI)).href;
    var paths = {"@jupyter-widgets/html-manager/dist": folder};
    ["base", "controls", "html-manager"].forEach(function (name) {
        paths["@jupyter-widgets/" + name] = folder + "/" + name;  // modules inside embed-amd.js
    });
    window.require = {paths: paths};
})();
document.addEventListener("DOMContentLoaded", function () {
    if (window.MathJax && MathJax.typesetPromise && !MathJax.Hub) {
        MathJax.Hub = {Queue: function () {
            Array.prototype.forEach.call(arguments, function (job) {
                if (Array.isArray(job) && job[0] === "Typeset") {
                    MathJax.startup.promise.then(function () { return MathJax.typesetPromise([job[2]]); });
                }
            });
        }};
    }
});
"""


def _has_widgets(path: Path) -> bool:
    """Whether the notebook stores the state of interactive widgets (sliders)."""
    try:
        return bool(json.loads(path.read_text(encoding="utf-8")).get("metadata", {}).get("widgets"))
    except (OSError, ValueError):
        return False


def _paragraph(*parts: nodes.Node | str) -> nodes.paragraph:
    para = nodes.paragraph()
    for part in parts:
        para += nodes.Text(part) if isinstance(part, str) else part
    return para


def _note(docname: str, source: Path) -> nodes.admonition:
    name = posixpath.basename(docname) + ".ipynb"
    notebook = posixpath.relpath(f"_sources/{docname}.ipynb", posixpath.dirname(docname))
    what = ("the figures and the sliders are as they were when the chapter was last run; "
            "a slider moves, but nothing is recomputed" if _has_widgets(source)
            else "the figures and numbers are those of the chapter's last run")
    note = nodes.admonition(classes=["note", "course-kernel-note"])
    note += nodes.title(text="Reading, not running")
    note += _paragraph(f"This page shows the chapter with its stored outputs: {what}. "
                       "To run the code, move a slider or train a model, open the chapter in "
                       "JupyterLab from a copy of the course (README, \"Set up\"): ",
                       nodes.literal(text="python -m lesson_lib start"),
                       " opens your own copy of every chapter, ",
                       nodes.literal(text=f"jupyter lab notebooks/{name}"),
                       " this chapter with its solutions.")
    note += _paragraph(nodes.reference("", f"Download this notebook ({name})", refuri=notebook,
                                       classes=["course-download"]),
                       ", with its stored outputs.")
    return note


def _add_note(app: Sphinx, doctree: nodes.document) -> None:
    docname = app.env.docname
    if not docname.startswith(CHAPTERS):
        return
    section = next(iter(doctree.findall(nodes.section)), None)
    if section is None:
        return
    title = next((i for i, child in enumerate(section.children) if isinstance(child, nodes.title)), -1)
    section.insert(title + 1, _note(docname, Path(app.env.doc2path(docname))))


def _hide_test_markers(app: Sphinx, doctree: nodes.document) -> None:
    """Drop the lines ``# NBVAL_...`` from the chapters' code as shown: they tell the notebooks'
    output test (nbval) which outputs it may not compare, and say nothing to a reader. The
    notebooks, and the copies the pages link for download, keep them."""
    if not app.env.docname.startswith(CHAPTERS):
        return
    for block in list(doctree.findall(nodes.literal_block)):
        lines = block.astext().split("\n")
        kept = [line for line in lines if not line.lstrip().startswith(MARKER)]
        if len(kept) == len(lines):
            continue
        shown = "\n".join(kept).strip("\n")
        block.clear()
        block += nodes.Text(shown)
        block.rawsource = shown


def _widgets_path(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    if pagename.startswith(CHAPTERS) and _has_widgets(Path(app.env.doc2path(pagename))):
        app.add_js_file(None, body=WIDGETS_JS, priority=400)  # myst-nb's widget scripts: 500


def setup(app: Sphinx) -> dict:
    app.connect("doctree-read", _add_note)
    app.connect("doctree-read", _hide_test_markers)
    app.connect("html-page-context", _widgets_path)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
