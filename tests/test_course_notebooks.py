"""The course's own notebooks as an instructor and a student meet them.

- Every exercise carries nbgrader's markup and metadata, followed by a graded check cell.
- The student versions contain none of the solution code, and no cell but a check uses an
  exercise's code (read from the sources, every cell).
- Run headless from a fresh kernel, a student version reaches its last check, and every check
  reports "not implemented yet"; under nbgrader's autograder every check fails instead. The run
  stops after the last check and skips the cells tagged ``heavy`` (and those that use their
  results): the instructor versions run in full under nbval already, so the student run only
  has to show what differs, and its cost stays small as training chapters are added.
(The instructor versions themselves run under nbval, with their stored outputs compared.)
"""

from pathlib import Path

import nbformat
import pytest

from lesson_lib.course.student import check_cells, make_student_versions, run_student_notebook, student_code_uses

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
        "05_stereo_by_optimization.ipynb",
        "06_monodepth.ipynb",
        "07_sfmlearner.ipynb",
        "08_two_view_geometry.ipynb",
        "09_trianflow.ipynb",
        "10_evaluation.ipynb",
        "11_beyond_the_papers.ipynb",
        "A1_the_synthetic_world.ipynb",
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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_cell_but_a_check_uses_the_students_code(path, student_dir):
    """Cells the fast run below skips or never reaches cannot call an unfinished exercise."""
    student = nbformat.read(student_dir / path.name, as_version=4)
    assert student_code_uses(student, path.name) == []


def _text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def _errors(cell) -> list:
    return [o for o in cell.outputs if o.output_type == "error"]


@pytest.fixture
def no_grading_env(monkeypatch):
    """The kernel inherits this process's environment: no grading mode unless a test sets it."""
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    monkeypatch.delenv("LESSON_LIB_STRICT_CHECKS", raising=False)
    return monkeypatch


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_student_version_reaches_its_last_check_and_fails_under_the_autograder(path, student_dir, no_grading_env):
    # raises if any cell that runs fails; the re-runs under the autograder are expected to fail
    nb = run_student_notebook(student_dir / path.name, autograde_recheck=True)
    rechecks = {c.metadata.lesson_lib.recheck_of: c for c in nb.cells if "recheck_of" in c.metadata.get("lesson_lib", {})}
    checks = check_cells(nb)  # the appended re-runs carry no nbgrader metadata
    assert checks and sorted(rechecks) == checks
    for i in checks:
        cell = nb.cells[i]
        assert cell.execution_count is not None, f"{path.name} cell {i}: the check did not run"
        assert not _errors(cell) and "not implemented yet" in _text(cell), f"{path.name} cell {i}: {cell.source}"
        errors = _errors(rechecks[i])
        assert [e.ename for e in errors] == ["ExerciseNotDone"], f"{path.name} cell {i} under autograde: {errors}"
    ran = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.execution_count is not None]
    skipped = [i for i, c in enumerate(nb.cells) if "skipped" in c.metadata.get("lesson_lib", {})]
    assert sorted(ran + skipped) == [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]


@pytest.mark.slow
def test_unfinished_exercises_fail_under_the_autograder_from_a_fresh_kernel(student_dir, no_grading_env):
    """As nbgrader runs it: the environment variable is set before the kernel starts."""
    no_grading_env.setenv("NBGRADER_EXECUTION", "autograde")
    nb = run_student_notebook(student_dir / "00_start_here.ipynb", allow_errors=True)
    checks = check_cells(nb)
    assert checks
    for i in checks:
        assert [e.ename for e in _errors(nb.cells[i])] == ["ExerciseNotDone"], nb.cells[i].source


def test_nbval_and_the_student_runs_allow_each_cell_the_same_time():
    import tomllib

    from lesson_lib.course.notebooks import CELL_TIMEOUT

    config = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text(encoding="utf-8"))
    assert f"--nbval-cell-timeout={CELL_TIMEOUT}" in config["tool"]["pytest"]["ini_options"]["addopts"].split()
