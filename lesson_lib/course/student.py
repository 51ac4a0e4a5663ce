"""Turn instructor notebooks into student versions.

An *instructor notebook* contains the full solution of every exercise, so it
can be run from top to bottom and its checks pass. A *student version* is the
same notebook with the solutions taken out: each solution region is replaced
by a stub that raises ``NotImplementedError``, every output is cleared, and
nothing else changes. Students fill in the stubs and run the check cell that
follows each exercise.

The markup is nbgrader's, so the same notebooks work with nbgrader:

* An exercise is a code cell whose nbgrader metadata says
  ``"solution": true``. The solution sits between a ``### BEGIN SOLUTION``
  line and a ``### END SOLUTION`` line (the lines may be indented, for
  example inside a function body). A cell may contain several regions.
* Each region, marker lines included, is replaced by two lines at the
  indentation of the BEGIN line::

      # YOUR CODE HERE
      raise NotImplementedError()

  This is exactly what nbgrader's ``ClearSolutions`` preprocessor does. Like
  nbgrader, a line counts as a marker when it *contains* ``BEGIN SOLUTION`` or
  ``END SOLUTION``.
* A check cell (``"grade": true``) may contain a ``### BEGIN HIDDEN TESTS`` /
  ``### END HIDDEN TESTS`` region; it is removed, markers included, as
  nbgrader's ``ClearHiddenTests`` does.

``nbgrader generate_assignment`` does the same replacements and, in addition,
records checksums of the cells and locks the check cells against editing.
This module does not need nbgrader installed and does neither of those
things; the nbgrader metadata of every cell is kept unchanged, so an
instructor who uses nbgrader can still run ``nbgrader generate_assignment``
on the instructor notebooks.

This module is stricter than nbgrader: things nbgrader accepts silently but
that are almost always authoring mistakes raise a ``ValueError`` here (an END
marker without a BEGIN, a solution cell without markers, duplicate
``grade_id`` values, markers in a markdown cell). Every error message names
the notebook (when known), the cell index and the cell's ``grade_id``.

Checking a student version (:func:`run_student_notebook`, used by the course's tests): the
student version is run headless from a fresh kernel, as far as its last check cell, skipping the
code cells tagged ``heavy`` (:data:`HEAVY_TAG`: long computations, such as a live training run,
that no check needs) and the cells that use what they compute. Every check then reports "not
implemented yet"; optionally each check is run once more under nbgrader's autograder, where it
must raise ``ExerciseNotDone``. :func:`student_code_uses` checks, from the sources alone, that no
cell other than a check uses an exercise's code (so the cells the run skips cannot break either).

Command line (dispatched from ``python -m lesson_lib``)::

    python -m lesson_lib student SRC [--out DIR]
"""

from __future__ import annotations

import argparse
import ast
import copy
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nbformat

from .notebooks import CELL_TIMEOUT

__all__ = [
    "BEGIN_SOLUTION",
    "END_SOLUTION",
    "BEGIN_HIDDEN_TESTS",
    "END_HIDDEN_TESTS",
    "SOLUTION_STUB",
    "HEAVY_TAG",
    "cell_names",
    "check_cells",
    "make_student_notebook",
    "make_student_versions",
    "prepare_student_run",
    "run_student_notebook",
    "student_code_uses",
    "main",
]

#: Delimiters, as nbgrader matches them: a line containing the text is a marker.
BEGIN_SOLUTION = "BEGIN SOLUTION"
END_SOLUTION = "END SOLUTION"
BEGIN_HIDDEN_TESTS = "BEGIN HIDDEN TESTS"
END_HIDDEN_TESTS = "END HIDDEN TESTS"

#: The lines that replace each solution region (nbgrader's default Python stub).
SOLUTION_STUB: tuple[str, ...] = ("# YOUR CODE HERE", "raise NotImplementedError()")

#: Cell tag of a code cell that :func:`run_student_notebook` skips: a long computation (a live
#: training run, an evaluation of the whole test split) whose results no check cell needs. The
#: later cells that read what it computes are skipped with it (:func:`prepare_student_run`).
HEAVY_TAG = "heavy"

# The tag nbclient is told to skip; given only to the cells a student run leaves out.
_SKIP_TAG = "lesson-lib-student-run-skip"

# Cell metadata that only describes how the outputs were shown or when the cell
# last ran; removed together with the outputs (nbconvert's ClearOutput removes
# the first two, JupyterLab writes the third when recording timing).
_OUTPUT_METADATA = ("collapsed", "scrolled", "execution")

# Notebook metadata removed from student versions: saved widget state, and the
# nbgrader toolbar setting (nbgrader removes the latter too).
_NOTEBOOK_METADATA = ("widgets", "celltoolbar")


def _source(cell: Any) -> str:
    """Return a cell's source as one string (it may be stored as a list of lines)."""
    source = cell.get("source", "")
    if isinstance(source, list):
        return "".join(source)
    return source


def _nbgrader(cell: Any) -> dict:
    """Return the nbgrader metadata of a cell, or an empty dict."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return meta if isinstance(meta, dict) else {}


def _where(path: str | None, index: int, cell: Any) -> str:
    """Describe a cell for an error message: notebook, cell index and grade_id."""
    grade_id = _nbgrader(cell).get("grade_id")
    gid = repr(grade_id) if grade_id is not None else "none"
    notebook = f"{path}: " if path else ""
    return f"{notebook}cell {index} (grade_id {gid})"


def _replace_regions(
    source: str,
    begin: str,
    end: str,
    stub: Sequence[str],
    describe: str,
    where: str,
) -> tuple[str, int]:
    """Replace every ``begin`` ... ``end`` region of ``source`` by ``stub``.

    The stub lines are indented like the BEGIN line; an empty stub removes the
    region. Returns the new source and the number of regions replaced. Raises
    ``ValueError`` (prefixed with ``where``) for a nested BEGIN, an END
    without a BEGIN, or a BEGIN without an END.
    """
    new_lines: list[str] = []
    in_region = False
    count = 0
    for number, line in enumerate(source.split("\n"), start=1):
        if begin in line:
            if in_region:
                raise ValueError(
                    f"{where}: nested '### {begin}' on line {number} "
                    f"(the previous {describe} region has no '### {end}')"
                )
            in_region = True
            count += 1
            indent = re.match(r"\s*", line).group(0)
            new_lines.extend(indent + stub_line for stub_line in stub)
        elif end in line:
            if not in_region:
                raise ValueError(
                    f"{where}: '### {end}' on line {number} without a matching '### {begin}'"
                )
            in_region = False
        elif not in_region:
            new_lines.append(line)
    if in_region:
        raise ValueError(f"{where}: '### {begin}' without a matching '### {end}'")
    return "\n".join(new_lines), count


def _has_marker(source: str, markers: Sequence[str]) -> bool:
    return any(marker in source for marker in markers)


def _convert(nb: nbformat.NotebookNode, path: str | None) -> tuple[nbformat.NotebookNode, int]:
    """Build the student version of ``nb``; return it and the number of exercises stubbed."""
    student = copy.deepcopy(nb)
    for key in _NOTEBOOK_METADATA:
        student.metadata.pop(key, None)

    seen_ids: dict[str, int] = {}
    exercises = 0
    for index, cell in enumerate(student.cells):
        where = _where(path, index, cell)
        meta = _nbgrader(cell)
        source = _source(cell)

        grade_id = meta.get("grade_id")
        if grade_id is not None:
            if grade_id in seen_ids:
                raise ValueError(
                    f"{where}: duplicate grade_id {grade_id!r}, "
                    f"already used by cell {seen_ids[grade_id]}"
                )
            seen_ids[grade_id] = index

        has_solution_markers = _has_marker(source, (BEGIN_SOLUTION, END_SOLUTION))
        has_hidden_markers = _has_marker(source, (BEGIN_HIDDEN_TESTS, END_HIDDEN_TESTS))

        if cell.cell_type != "code":
            if has_solution_markers or has_hidden_markers:
                raise ValueError(
                    f"{where}: solution or hidden-test markers in a {cell.cell_type} cell; "
                    "only code cells can hold exercises"
                )
            if meta.get("solution"):
                raise ValueError(
                    f"{where}: {cell.cell_type} cell marked as a solution cell; "
                    "only code cells can hold exercises"
                )
            continue

        if has_solution_markers:
            if not meta.get("solution"):
                raise ValueError(
                    f"{where}: solution markers in a cell without nbgrader "
                    "'solution: true' metadata"
                )
            source, _ = _replace_regions(
                source, BEGIN_SOLUTION, END_SOLUTION, SOLUTION_STUB, "solution", where
            )
            exercises += 1
        elif meta.get("solution"):
            raise ValueError(
                f"{where}: solution cell without a '### {BEGIN_SOLUTION}' / "
                f"'### {END_SOLUTION}' region (nbgrader would replace the whole cell "
                "with the stub; mark the region to be replaced explicitly)"
            )

        if has_hidden_markers:
            if not meta.get("grade"):
                raise ValueError(
                    f"{where}: hidden-test markers in a cell without nbgrader "
                    "'grade: true' metadata"
                )
            source, _ = _replace_regions(
                source, BEGIN_HIDDEN_TESTS, END_HIDDEN_TESTS, (), "hidden tests", where
            )

        cell.source = source
        cell.outputs = []
        cell.execution_count = None
        for key in _OUTPUT_METADATA:
            cell.metadata.pop(key, None)
    return student, exercises


def make_student_notebook(
    nb: nbformat.NotebookNode, path: str | None = None
) -> nbformat.NotebookNode:
    """Return the student version of an instructor notebook.

    The input notebook is not modified; a new notebook is returned in which

    * every ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` region (marker
      lines included) is replaced by ``# YOUR CODE HERE`` and
      ``raise NotImplementedError()``, indented like the BEGIN line -- the
      same replacement as nbgrader's ``ClearSolutions``;
    * every ``### BEGIN HIDDEN TESTS`` ... ``### END HIDDEN TESTS`` region of a
      check cell is removed, as nbgrader's ``ClearHiddenTests`` does;
    * every code cell has its outputs cleared and its execution count unset;
    * saved widget state (``metadata.widgets``) is removed;
    * nbgrader cell metadata is kept unchanged.

    ``path`` is only used in error messages. Raises ``ValueError`` naming the
    notebook, cell index and grade_id for a BEGIN without END, an END without
    BEGIN, a nested BEGIN, markers in a cell not marked ``solution: true``
    (or, for hidden tests, ``grade: true``), a solution cell without markers,
    duplicate grade_ids, or markers in a markdown cell.
    """
    student, _ = _convert(nb, path)
    return student


def _source_notebooks(src: Path) -> tuple[list[Path], Path]:
    """Return the notebooks named by ``src`` (a file or a folder) and their folder."""
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such file or directory")
    if src.is_dir():
        notebooks = sorted(
            p for p in src.glob("*.ipynb")
            if p.is_file() and ".ipynb_checkpoints" not in p.parts
        )
        if not notebooks:
            raise ValueError(f"{src}: no .ipynb notebooks in this folder")
        return notebooks, src.resolve()
    if src.suffix != ".ipynb":
        raise ValueError(f"{src}: not a notebook (expected a .ipynb file)")
    return [src], src.resolve().parent


def _write_student_versions(src: Path, out: Path) -> list[tuple[Path, int]]:
    """Convert and write; return (written path, exercises stubbed) pairs."""
    src = Path(src)
    out = Path(out)
    notebooks, src_dir = _source_notebooks(src)
    if out.resolve() == src_dir:
        raise ValueError(
            f"{out}: the output folder is the folder of the instructor notebooks; "
            "refusing to overwrite the solutions"
        )
    # Convert everything before writing anything, so that an authoring error in
    # one notebook leaves no half-written set of student versions behind.
    converted = []
    for notebook in notebooks:
        nb = nbformat.read(notebook, as_version=4)
        converted.append((notebook.name, *_convert(nb, str(notebook))))
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, student, exercises in converted:
        target = out / name
        nbformat.write(student, target)
        written.append((target, exercises))
    return written


def make_student_versions(src: Path, out: Path) -> list[Path]:
    """Write the student version of each instructor notebook in ``src`` to ``out``.

    ``src`` is one ``.ipynb`` file or a folder; for a folder, its ``*.ipynb``
    files are converted (not those of subfolders, so ``.ipynb_checkpoints`` is
    skipped), in sorted order. The student versions keep their file names and
    are written into ``out``, which is created if needed. Nothing else is
    copied. Returns the written paths.

    Raises ``FileNotFoundError`` if ``src`` does not exist, and ``ValueError``
    if ``out`` is the folder that holds the instructor notebooks (so the
    solutions can never be overwritten), if a folder holds no notebook, or for
    any authoring error reported by :func:`make_student_notebook`. All
    notebooks are converted before any is written.
    """
    return [path for path, _ in _write_student_versions(Path(src), Path(out))]


def check_cells(nb: nbformat.NotebookNode) -> list[int]:
    """Indices of the graded check cells (code cells with nbgrader ``"grade": true``)."""
    return [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code" and _nbgrader(cell).get("grade")]


def _scope_names(nodes: Sequence[ast.AST], params: Sequence[str] = ()) -> tuple[set[str], set[str]]:
    """(names bound, names read) in one scope; a nested scope adds only its free names to read."""
    bound, read = set(params), set()

    def inner(body: Sequence[ast.AST], params: Sequence[str] = ()) -> None:
        inner_bound, inner_read = _scope_names(body, params)
        read.update(inner_read - inner_bound)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update(alias.asname or alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            a = node.args
            for expr in (*getattr(node, "decorator_list", ()), *a.defaults, *(d for d in a.kw_defaults if d)):
                visit(expr)
            params = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg) if x]
            inner(node.body if isinstance(node.body, list) else [node.body], params)
            if not isinstance(node, ast.Lambda):
                bound.add(node.name)
        elif isinstance(node, ast.ClassDef):
            for expr in (*node.decorator_list, *node.bases, *(k.value for k in node.keywords)):
                visit(expr)
            inner(node.body)
            bound.add(node.name)
        elif isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            inner(list(ast.iter_child_nodes(node)))
        else:
            if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
                read.add(node.target.id)  # x += 1 reads x too
            for child in ast.iter_child_nodes(node):
                visit(child)

    for node in nodes:
        visit(node)
    return bound, read


def cell_names(source: str) -> tuple[set[str], set[str]] | None:
    """The names a code cell binds at the notebook's top level, and the global names it reads.

    Bound: assignments, ``for`` and ``with`` targets, ``def``, ``class`` and ``import`` at the
    top level (also inside top-level ``if``/``for``/``try`` blocks). Read: every name loaded at
    the top level, and every name a function, lambda, class or comprehension of the cell reads
    without binding it itself (its parameters and local variables do not count). Returns
    ``None`` when the source is not plain Python (an IPython magic).
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    return _scope_names(tree.body)


def _changed_names(source: str) -> set[str]:
    """Names whose object a cell changes in place: ``x[k] = ...``, ``x.attr = ...``, ``x[k] += ...``."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    changed = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Subscript, ast.Attribute)) and isinstance(node.ctx, ast.Store):
            base = node.value
            while isinstance(base, (ast.Subscript, ast.Attribute)):
                base = base.value
            if isinstance(base, ast.Name):
                changed.add(base.id)
    return changed


def prepare_student_run(
    nb: nbformat.NotebookNode,
    *,
    stop_after_last_check: bool = True,
    skip_tags: Sequence[str] = (HEAVY_TAG,),
    path: str | None = None,
) -> nbformat.NotebookNode:
    """Return a copy of a (student) notebook trimmed for a fast headless run.

    * With ``stop_after_last_check``, the cells after the last check cell are dropped (in a
      notebook without check cells nothing is dropped).
    * Code cells tagged with any of ``skip_tags`` are skipped, and so is every later code cell
      that reads a name a skipped cell binds (found by :func:`cell_names`; a name bound again by
      a cell that runs is available again). So an author tags only the long cell, for example a
      training run, and the plot of its losses is skipped with it. (A name the cell binds itself,
      such as a loop variable, does not count as read; a name whose object a skipped cell changes
      by assignment, as in ``results["lr"] = ...``, counts as bound by it. A change by a method
      call, as in ``model.load_state_dict(...)``, is not seen: tag the cells that need it too.)

    A skipped cell stays in place; it gets ``metadata.lesson_lib.skipped`` (why) and is not
    executed by :func:`run_student_notebook` (its ``execution_count`` stays ``None``). The input
    is not modified.

    Raises ``ValueError`` (naming the notebook, cell index and grade_id) if an exercise or a check
    cell would be skipped, tagged or because it reads what a skipped cell computes: skipping it
    would hide exactly what the run is there to show.
    """
    run = copy.deepcopy(nb)
    checks = check_cells(run)
    if stop_after_last_check and checks:
        del run.cells[checks[-1] + 1:]
    skip = set(skip_tags)
    unavailable: dict[str, int] = {}  # name -> the skipped cell that binds it
    for index, cell in enumerate(run.cells):
        if cell.cell_type != "code":
            continue
        tags = cell.get("metadata", {}).get("tags", [])
        names = cell_names(_source(cell))
        bound, read = names if names is not None else (set(), set())
        tagged = sorted(skip.intersection(tags))
        needs = sorted((read - bound).intersection(unavailable))  # a loop variable is its own
        if not tagged and not needs:
            for name in bound:
                unavailable.pop(name, None)
            continue
        if tagged:
            reason = f"tagged {tagged[0]!r}"
        else:
            reason = "reads " + ", ".join(f"{name!r} (cell {unavailable[name]})" for name in needs)
        meta = _nbgrader(cell)
        if meta.get("solution") or meta.get("grade"):
            kind = "an exercise" if meta.get("solution") else "a check"
            raise ValueError(
                f"{_where(path, index, cell)}: {kind} cell would be skipped in the student run "
                f"({reason}); exercise and check cells must always run"
            )
        # what it binds, and what it would have changed in place (results["x"] = ...), is missing
        unavailable.update(dict.fromkeys(bound | _changed_names(_source(cell)), index))
        cell.metadata["tags"] = [*tags, _SKIP_TAG]
        cell.metadata.setdefault("lesson_lib", {})["skipped"] = reason
    return run


def student_code_uses(nb: nbformat.NotebookNode, path: str | None = None) -> list[str]:
    """Cells that would call a student's unfinished code: one message per offending cell.

    A name bound by an exercise cell (nbgrader ``"solution": true``) may be read only by check
    cells; any other code cell that reads it would raise ``NotImplementedError`` in the student
    version (the course's rule: later cells use the library's reference implementation). This
    reads the sources only, so it covers the cells a fast student run skips or never reaches.
    """
    problems = []
    student: dict[str, int] = {}  # name -> the exercise cell that binds it
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        names = cell_names(_source(cell))
        if names is None:
            continue
        bound, read = names
        meta = _nbgrader(cell)
        if meta.get("solution"):
            student.update(dict.fromkeys(bound, index))
            continue
        used = sorted(read.intersection(student))
        if used and not meta.get("grade"):
            problems.append(
                f"{_where(path, index, cell)} reads "
                + ", ".join(f"{name!r} (the exercise of cell {student[name]})" for name in used)
            )
        for name in bound:  # bound again here: no longer the student's
            student.pop(name, None)
    return problems


def run_student_notebook(
    notebook: Path | str | nbformat.NotebookNode,
    *,
    cwd: Path | str | None = None,
    stop_after_last_check: bool = True,
    skip_tags: Sequence[str] = (HEAVY_TAG,),
    autograde_recheck: bool = False,
    timeout: int = CELL_TIMEOUT,
    allow_errors: bool = False,
) -> nbformat.NotebookNode:
    """Run a student version headless from a fresh kernel; return the executed notebook.

    ``notebook`` is a path or a notebook (then ``cwd``, default the current folder, is where
    its kernel runs; for a path, the notebook's folder). The run is trimmed by
    :func:`prepare_student_run` (``stop_after_last_check``, ``skip_tags``). The kernel is the
    ``python3`` kernel of the current environment and inherits this process's environment
    variables (so ``NBGRADER_EXECUTION`` set here applies to every check).

    With ``autograde_recheck``, cells are appended after the last check: one sets
    ``NBGRADER_EXECUTION=autograde`` in the kernel, then each check cell runs once more
    (tagged ``raises-exception``, so its error is recorded and the run goes on; its metadata
    ``lesson_lib.recheck_of`` is the index of the check cell it repeats). In a student version
    each of them should fail with ``ExerciseNotDone``, as they would under nbgrader.

    Raises ``nbclient.exceptions.CellExecutionError`` when a cell fails (unless
    ``allow_errors``) and ``nbclient.exceptions.CellTimeoutError`` when a cell runs longer than
    ``timeout`` seconds.
    """
    from nbclient import NotebookClient
    from nbformat.v4 import new_code_cell

    if isinstance(notebook, nbformat.NotebookNode):
        nb, name, folder = notebook, None, Path(cwd or ".")
    else:
        path = Path(notebook)
        nb, name, folder = nbformat.read(path, as_version=4), str(path), Path(cwd or path.parent)
    run = prepare_student_run(nb, stop_after_last_check=stop_after_last_check, skip_tags=skip_tags, path=name)
    if autograde_recheck:
        checks = check_cells(run)
        run.cells.append(new_code_cell('import os\nos.environ["NBGRADER_EXECUTION"] = "autograde"'))
        for index in checks:
            run.cells.append(new_code_cell(
                _source(run.cells[index]),
                metadata={"tags": ["raises-exception"], "lesson_lib": {"recheck_of": index}},
            ))
    NotebookClient(
        run, timeout=timeout, kernel_name="python3", allow_errors=allow_errors,
        skip_cells_with_tag=_SKIP_TAG, record_timing=False,
        resources={"metadata": {"path": str(folder)}},
    ).execute()
    return run


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m lesson_lib student SRC [--out DIR]``.

    Prints one line per written notebook with the number of exercises stubbed
    and returns 0. On an error (missing source, authoring mistake, output
    folder equal to the source folder) prints ``error: <message>`` to stderr
    and returns 2.
    """
    parser = argparse.ArgumentParser(
        prog="python -m lesson_lib student",
        description=(
            "Write student versions of instructor notebooks: solution regions "
            "replaced by stubs, outputs cleared (nbgrader markup, nbgrader not needed)."
        ),
    )
    parser.add_argument("src", type=Path, help="an instructor notebook or a folder of them")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("student"),
        help="folder for the student versions (default: ./student)",
    )
    args = parser.parse_args(argv)
    try:
        written = _write_student_versions(args.src, args.out)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path, exercises in written:
        plural = "" if exercises == 1 else "s"
        print(f"{path}: {exercises} exercise{plural} stubbed")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
