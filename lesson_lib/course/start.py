"""The learner's way into the course: ``python -m lesson_lib start``.

The first time, it writes the *student versions* of the chapters (every exercise blank, outputs
cleared: :mod:`lesson_lib.course.student`) into a personal working folder, ``my_course/`` at the
top of the repository by default (git-ignored), and opens JupyterLab there. Later runs never
touch a learner's notebook:

- a chapter the folder does not have yet is written;
- a chapter whose student version has not changed since it was written is left as it is,
  whatever the learner did to it;
- a chapter the course has updated since is offered *beside* the learner's, as
  ``NAME.updated-<8 hex digits>.ipynb`` (the digits name the new version), never over it;
- ``--reset CHAPTER`` replaces one chapter with a blank student version after a confirmation
  (``--yes`` skips it), and keeps the learner's notebook as ``NAME.backup-<time>.ipynb``.

What was written is recorded in ``.course_versions.json`` in the folder (a hash per chapter).
The instructor notebooks in ``notebooks/`` stay the reference, with every solution filled in;
from a student notebook, ``checks.solution("9.2")`` prints the worked solution of an exercise.

    python -m lesson_lib start [--dir DIR] [--reset CHAPTER [--yes]] [--no-lab] [-- JUPYTER_ARGS...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import nbformat

from .student import make_student_notebook

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCE = REPO_ROOT / "notebooks"
DEFAULT_DIR = REPO_ROOT / "my_course"
MANIFEST = ".course_versions.json"


def _student_text(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return nbformat.writes(make_student_notebook(nb, str(path))) + "\n"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _chapters(source: Path) -> list[Path]:
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: the course's notebooks were expected here (a clone of the course repository)")
    found = sorted(p for p in source.glob("*.ipynb") if p.is_file())
    if not found:
        raise FileNotFoundError(f"{source}: no chapter notebooks (*.ipynb) in this folder")
    return found


def _read_manifest(folder: Path) -> dict[str, str]:
    path = folder / MANIFEST
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not the course's record of written chapters (JSON expected): {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ValueError(f"{path}: expected a JSON object of chapter names and hashes")
    return data


def _write_manifest(folder: Path, manifest: dict[str, str]) -> None:
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(dict(sorted(manifest.items())), indent=1) + "\n", encoding="utf-8")
    tmp.replace(folder / MANIFEST)


def sync(folder: Path, source: Path = SOURCE) -> dict[str, list[str]]:
    """Bring ``folder`` up to date with the course's student versions without overwriting any
    notebook there. Returns ``{"written": [...], "kept": [...], "offered": [...]}`` (file names;
    ``offered`` are the updated versions written beside a learner's notebook)."""
    folder = Path(folder)
    if folder.resolve() == Path(source).resolve():
        raise ValueError(f"{folder}: this is the folder of the instructor notebooks; choose another working folder")
    chapters = [(p.name, _student_text(p)) for p in _chapters(Path(source))]  # all converted before any write
    folder.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(folder)
    report: dict[str, list[str]] = {"written": [], "kept": [], "offered": []}
    for name, text in chapters:
        target, digest = folder / name, _digest(text)
        if not target.exists():
            target.write_text(text, encoding="utf-8")
            report["written"].append(name)
        elif manifest.get(name) == digest:
            report["kept"].append(name)
        else:  # the course changed since this chapter was written (or the record is missing)
            if _digest(target.read_text(encoding="utf-8", errors="replace")) == digest:
                report["kept"].append(name)  # already this version
            else:
                beside = folder / f"{Path(name).stem}.updated-{digest[:8]}.ipynb"
                if not beside.exists():
                    beside.write_text(text, encoding="utf-8")
                report["offered"].append(beside.name)
                report["kept"].append(name)
        manifest[name] = digest
    _write_manifest(folder, manifest)
    return report


def reset(folder: Path, chapter: str, source: Path = SOURCE,
          confirm: Callable[[str], bool] | None = None) -> Path | None:
    """Replace one chapter of ``folder`` by a blank student version, keeping the learner's
    notebook as a backup beside it. ``chapter`` is a file name or a prefix (``"09"``).
    ``confirm(question)`` must return True (default: ask on the terminal). Returns the backup's
    path (None when there was nothing to back up), or raises ``SystemExit`` when declined."""
    folder = Path(folder)
    matches = [p for p in _chapters(Path(source)) if p.name == chapter or p.name.startswith(chapter)]
    if len(matches) != 1:
        names = ", ".join(p.name for p in _chapters(Path(source)))
        raise ValueError(f"--reset {chapter!r}: expected one chapter, matched {len(matches)}; the chapters: {names}")
    src = matches[0]
    target = folder / src.name
    ask = confirm or (lambda q: input(q + " [y/N] ").strip().lower() in {"y", "yes"})
    backup = None
    if target.exists():
        stamp = time.strftime("%Y%m%d-%H%M%S")
        backup = folder / f"{target.stem}.backup-{stamp}.ipynb"
        if not ask(f"Replace {target} with a blank student version? Your notebook is kept as {backup.name}."):
            raise SystemExit("nothing changed")
        target.replace(backup)
    text = _student_text(src)
    folder.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    manifest = _read_manifest(folder)
    manifest[src.name] = _digest(text)
    _write_manifest(folder, manifest)
    return backup


def lab_command(folder: Path, extra: Sequence[str] = ()) -> list[str]:
    """The JupyterLab command ``start`` runs: the working folder as its root."""
    return [sys.executable, "-m", "jupyter", "lab", f"--ServerApp.root_dir={Path(folder).resolve()}", *extra]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(
        prog="python -m lesson_lib start",
        description="Open the course as a learner: the student versions of the chapters (exercises blank) in a "
        "working folder of your own, written the first time and never overwritten, then JupyterLab there. "
        "Arguments after -- go to jupyter lab.",
    )
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"the working folder (default: {DEFAULT_DIR})")
    p.add_argument("--reset", metavar="CHAPTER", help="replace one chapter (e.g. 09) with a blank student version; "
                   "your notebook is kept as a backup beside it")
    p.add_argument("--yes", action="store_true", help="with --reset: do not ask for confirmation")
    p.add_argument("--no-lab", action="store_true", help="prepare the folder only, do not open JupyterLab")
    ns = p.parse_args(argv)
    try:
        if ns.reset:
            backup = reset(ns.dir, ns.reset, confirm=(lambda q: True) if ns.yes else None)
            print(f"{ns.dir}: {ns.reset} reset" + (f"; your previous notebook is {backup.name}" if backup else ""))
        report = sync(ns.dir)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if report["written"]:
        print(f"{ns.dir}: wrote {len(report['written'])} chapter(s) with blank exercises: " + ", ".join(report["written"]))
    if report["offered"]:
        print("the course has been updated; your notebooks are unchanged, the new versions are beside them: "
              + ", ".join(report["offered"]))
    print(f"your working folder: {ns.dir} ({len(report['kept'])} chapter(s) kept as you left them). "
          "Stuck on an exercise? Its check names the usual mistakes; checks.solution('9.2') shows a worked solution.")
    if ns.no_lab:
        return 0
    return subprocess.call(lab_command(ns.dir, extra))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
