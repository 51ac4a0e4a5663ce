"""The course's own notebooks as an instructor and a student meet them.

- Every exercise carries nbgrader's markup and metadata, followed by a graded check cell.
- The student versions contain none of the solution code.
- Run headless from a fresh kernel, a student version reaches its last cell, and every check
  reports "not implemented yet"; under nbgrader's autograder every check fails instead.
(The instructor versions themselves run under nbval, with their stored outputs compared.)
"""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from lesson_lib.course.student import make_student_versions

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def _solution_lines(cell) -> list[str]:
    lines, inside = [], False
    for line in cell.source.splitlines():
        if "BEGIN SOLUTION" in line:
            inside = True
        elif "END SOLUTION" in line:
            inside = False
        elif inside and any(ch.isalnum() for ch in line):  # lines of only brackets say nothing
            lines.append(line.strip())
    return lines


def _nbgrader(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    make_student_versions(NOTEBOOKS[0].parent, out)
    return out


def test_the_course_has_its_chapters():
    names = [p.name for p in NOTEBOOKS]
    for expected in (
        "00_start_here.ipynb",
        "01_stereo_disparity_to_depth.ipynb",
        "02_pinhole_camera_and_motion.ipynb",
        "03_inverse_warping.ipynb",
        "04_photometric_losses.ipynb",
    ):
        assert expected in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_exercises_have_nbgrader_markup_and_a_check(path):
    nb = nbformat.read(path, as_version=4)
    ids = [_nbgrader(c)["grade_id"] for c in nb.cells if "grade_id" in _nbgrader(c)]
    assert len(ids) == len(set(ids)), f"duplicate grade_ids in {path.name}"
    exercises = [i for i, c in enumerate(nb.cells) if _nbgrader(c).get("solution")]
    assert exercises, f"{path.name} has no exercise"
    for i in exercises:
        assert _solution_lines(nb.cells[i]), f"{path.name} cell {i}: empty solution"
        nxt = nb.cells[i + 1]
        meta = _nbgrader(nxt)
        assert meta.get("grade") and meta.get("points", 0) > 0 and meta.get("locked"), f"{path.name} cell {i + 1}"
        assert "checks.check_" in nxt.source, f"{path.name} cell {i + 1} does not call a check"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_student_version_has_no_solution_code(path, student_dir):
    teacher = nbformat.read(path, as_version=4)
    student = nbformat.read(student_dir / path.name, as_version=4)
    student_lines = {line.strip() for c in student.cells for line in c.source.splitlines()}
    for cell in teacher.cells:
        if _nbgrader(cell).get("solution"):
            leaked = [line for line in _solution_lines(cell) if line in student_lines]
            assert not leaked, f"{path.name}: solution lines in the student version: {leaked}"
    stubs = sum(c.source.count("raise NotImplementedError()") for c in student.cells if c.cell_type == "code")
    assert stubs == sum(1 for c in teacher.cells if _nbgrader(c).get("solution"))
    assert all(not c.get("outputs") for c in student.cells if c.cell_type == "code")


def _run(path: Path, allow_errors: bool) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", allow_errors=allow_errors,
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()
    return nb


def _check_cells(nb):
    return [c for c in nb.cells if _nbgrader(c).get("grade")]


def _text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_student_version_runs_to_the_end_and_reports_unfinished_exercises(path, student_dir, monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    monkeypatch.delenv("LESSON_LIB_STRICT_CHECKS", raising=False)
    nb = _run(student_dir / path.name, allow_errors=False)  # raises if any cell fails
    checks = _check_cells(nb)
    assert checks
    for cell in checks:
        assert "not implemented yet" in _text(cell), cell.source
    last_code = [c for c in nb.cells if c.cell_type == "code"][-1]
    assert last_code.execution_count is not None


@pytest.mark.slow
def test_unfinished_exercises_fail_under_the_autograder(student_dir, monkeypatch):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    nb = _run(student_dir / "00_start_here.ipynb", allow_errors=True)
    for cell in _check_cells(nb):
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert errors and errors[0].ename == "ExerciseNotDone", cell.source
