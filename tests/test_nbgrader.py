"""A real nbgrader round trip on the course's notebooks (nbgrader 0.9).

The course's notebooks are nbgrader source notebooks as they are: exercise cells carry
``"solution": true`` with ``### BEGIN SOLUTION`` / ``### END SOLUTION``, check cells carry
``"grade": true`` with points and a ``grade_id`` (``tests/test_course_notebooks.py`` checks the
markup). So no conversion is needed; the commands below, which README.md's "For instructors"
shows word for word (``test_readme_shows_the_commands_this_test_runs`` keeps them in step),
lay them out as one assignment per chapter and grade them:

* ``nbgrader generate_assignment '*'`` on every chapter: each release version has no solution
  code, no outputs, and the same cells as the course's own student version
  (``lesson_lib.course.student``, which mimics nbgrader's ``ClearSolutions``);
* three students hand in chapter 01 (made from its release version, as a student would fill
  it in): ``solved`` (every exercise right), ``wrong`` (exercise 1.1 forgets ``doffs``) and
  ``unfinished`` (exercise 1.2 left as released);
* ``nbgrader autograde`` runs each from a fresh kernel (nbgrader sets
  ``NBGRADER_EXECUTION=autograde``, so an unfinished exercise raises instead of printing a
  notice) and scores every check cell; ``generate_feedback`` writes the HTML feedback and
  ``export`` the grades CSV.

Asserted, from nbgrader's gradebook, the autograded notebooks, the feedback and the CSV:
``solved`` gets full marks with no error anywhere; ``wrong`` loses exactly exercise 1.1's
points and its feedback shows the check's message (the hint about ``doffs``); ``unfinished``
scores zero for exercise 1.2 only, every cell of its notebook still ran and the other checks
got their points.

nbgrader fits the course's pins (``pip install -r requirements-nbgrader.txt`` in the course's
environment). Without it these tests are skipped, unless ``LESSON_LIB_REQUIRE_NBGRADER=1`` (as
in ``.ci/run``'s main job, which installs nbgrader after the course's own tests): then they fail.
"""

from __future__ import annotations

import csv
import html
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from lesson_lib.course.student import BEGIN_SOLUTION, END_SOLUTION, SOLUTION_STUB, make_student_notebook

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
CHAPTER = "01_stereo_disparity_to_depth"  # quick to run: three exercises, no training
REQUIRED = os.environ.get("LESSON_LIB_REQUIRE_NBGRADER") == "1"
COMMAND_TIMEOUT_S = 1800  # autograde runs chapter 01 three times: about 25 s on an idle 2-core CPU

# README.md, "For instructors", shows these lines word for word. PREPARE runs in a folder that
# holds the course's notebooks/ (the repository root in the README), GRADE in grading/.
PREPARE = [
    "mkdir -p grading && cd grading",
    "echo 'c.Execute.timeout = 600  # seconds a cell may run (nbgrader: 30)' > nbgrader_config.py",
    'for nb in ../notebooks/*.ipynb; do a=$(basename "$nb" .ipynb); mkdir -p "source/$a"; cp "$nb" "source/$a/"; done',
    "nbgrader generate_assignment '*'",
]
GRADE = [
    f"nbgrader autograde {CHAPTER} --create",
    f"nbgrader generate_feedback {CHAPTER}",
    "nbgrader export",
]

# The three submissions: which exercise (solution grade_id) is not the instructor's answer.
WRONG_EXERCISE = "ex1_1_disparity_to_depth"
WRONG_MESSAGE = "you left out doffs"  # the check's hint for exactly this mistake
UNFINISHED_EXERCISE = "ex1_2_depth_uncertainty"
STUDENTS = ("solved", "wrong", "unfinished")


def _nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def _cells_by_grade_id(nb) -> dict:
    return {_nbgrader(c)["grade_id"]: c for c in nb.cells if "grade_id" in _nbgrader(c)}


def _run(lines: list[str], cwd: Path, env: dict) -> None:
    """Run the lines as one bash script (so ``cd`` carries over); fail with its output."""
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", "\n".join(lines)],
        cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=COMMAND_TIMEOUT_S,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.fail(
            f"exit status {result.returncode} from:\n" + "\n".join(lines)
            + f"\n--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-8000:]}"
        )


def _answer(instructor_cell) -> str:
    """What a student who solved the exercise writes: the solution, without the markers."""
    lines = instructor_cell.source.split("\n")
    return "\n".join(line for line in lines if BEGIN_SOLUTION not in line and END_SOLUTION not in line)


def _solution_lines(source: str) -> list[str]:
    """The non-blank lines between the solution markers of an instructor's cell."""
    inside, lines = False, []
    for line in source.split("\n"):
        if BEGIN_SOLUTION in line or END_SOLUTION in line:
            inside = BEGIN_SOLUTION in line
        elif inside and line.strip():
            lines.append(line)
    return lines


def _submission(release, instructor, student: str):
    """The release version of chapter 01, filled in the way ``student`` fills it in."""
    answers = {gid: _answer(cell) for gid, cell in _cells_by_grade_id(instructor).items() if _nbgrader(cell).get("solution")}
    if student == "wrong":
        right = answers[WRONG_EXERCISE]
        answers[WRONG_EXERCISE] = right.replace("(disparity + doffs)", "disparity")
        assert answers[WRONG_EXERCISE] != right, "the wrong answer must differ from the solution"
    nb = nbformat.from_dict(release)
    for gid, cell in _cells_by_grade_id(nb).items():
        if _nbgrader(cell).get("solution") and not (student == "unfinished" and gid == UNFINISHED_EXERCISE):
            cell.source = answers[gid]
    return nb


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """The commands run, start to end: grading/ after generate_assignment, autograde, feedback, export."""
    bin_dir = str(Path(sys.executable).parent)  # where pip put this environment's `nbgrader`
    if importlib.util.find_spec("nbgrader") is None or shutil.which("nbgrader", path=bin_dir) is None:
        reason = "nbgrader is not installed here (pip install -r requirements-nbgrader.txt)"
        if REQUIRED:
            pytest.fail(f"{reason} (LESSON_LIB_REQUIRE_NBGRADER=1: this test must run)", pytrace=False)
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("nbgrader")
    (tmp / "notebooks").symlink_to(REPO_ROOT / "notebooks", target_is_directory=True)
    (tmp / "jupyter-config").mkdir()
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    env["JUPYTER_CONFIG_DIR"] = str(tmp / "jupyter-config")  # no ~/.jupyter/nbgrader_config.py
    for name in ("NBGRADER_EXECUTION", "LESSON_LIB_STRICT_CHECKS", "MPLBACKEND"):
        env.pop(name, None)

    _run(PREPARE, tmp, env)
    grading = tmp / "grading"
    release = nbformat.read(grading / "release" / CHAPTER / f"{CHAPTER}.ipynb", as_version=4)
    instructor = nbformat.read(REPO_ROOT / "notebooks" / f"{CHAPTER}.ipynb", as_version=4)
    for student in STUDENTS:
        folder = grading / "submitted" / student / CHAPTER
        folder.mkdir(parents=True)
        nbformat.write(_submission(release, instructor, student), folder / f"{CHAPTER}.ipynb")
    _run(GRADE, grading, env)
    return grading


@pytest.fixture(scope="module")
def grades(course) -> dict[str, dict[str, tuple[float, float]]]:
    """{student: {check grade_id: (score, max_score)}} from nbgrader's gradebook."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        return {
            student: {
                grade.name: (grade.score, grade.max_score)
                for grade in gradebook.find_submission_notebook(CHAPTER, CHAPTER, student).grades
            }
            for student in STUDENTS
        }


def _checks() -> dict[str, float]:
    """{check grade_id: points} of chapter 01, and which check belongs to which exercise."""
    nb = nbformat.read(REPO_ROOT / "notebooks" / f"{CHAPTER}.ipynb", as_version=4)
    return {gid: float(_nbgrader(c)["points"]) for gid, c in _cells_by_grade_id(nb).items() if _nbgrader(c).get("grade")}


def _check_of(exercise: str) -> str:
    check = f"{exercise}_check"
    assert check in _checks(), f"no check cell {check!r} in chapter {CHAPTER}: {sorted(_checks())}"
    return check


def _autograded(course: Path, student: str):
    return nbformat.read(course / "autograded" / student / CHAPTER / f"{CHAPTER}.ipynb", as_version=4)


def _errors(nb) -> dict[str, list[str]]:
    """{grade_id or cell index: [exception names]} of the error outputs in a notebook."""
    found = {}
    for index, cell in enumerate(nb.cells):
        names = [o.get("ename", "") for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if names:
            found[_nbgrader(cell).get("grade_id", f"cell {index}")] = names
    return found


def _feedback_text(course: Path, student: str) -> str:
    page = (course / "feedback" / student / CHAPTER / f"{CHAPTER}.html").read_text(encoding="utf-8")
    return html.unescape(re.sub(r"<[^>]+>", "", page))


# --------------------------------------------------------------------------- tests


def test_readme_shows_the_commands_this_test_runs():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    missing = [line for line in PREPARE + GRADE if line not in readme]
    assert not missing, f"README.md does not show these commands word for word: {missing}"


def test_release_versions_have_no_solution_code(course):
    assert NOTEBOOKS, "no notebooks in notebooks/"
    for path in NOTEBOOKS:
        instructor = nbformat.read(path, as_version=4)
        release = nbformat.read(course / "release" / path.stem / path.name, as_version=4)
        student = make_student_notebook(instructor)
        assert len(release.cells) == len(instructor.cells), path.name
        for index, (cell, ours) in enumerate(zip(release.cells, student.cells)):
            where = f"{path.name} cell {index} ({_nbgrader(cell).get('grade_id', 'no grade_id')})"
            assert BEGIN_SOLUTION not in cell.source and END_SOLUTION not in cell.source, where
            assert cell.source == ours.source, f"{where}: nbgrader's release differs from the course's student version"
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{where}: outputs kept"
            if _nbgrader(cell).get("solution"):
                lines = cell.source.split("\n")
                assert [line.strip() for line in lines[-2:]] == list(SOLUTION_STUB), where
                released = [line for line in _solution_lines(instructor.cells[index].source) if line in lines]
                assert not released, f"{where}: solution lines released: {released}"
            if _nbgrader(cell).get("grade"):
                assert _nbgrader(cell).get("locked") and _nbgrader(cell).get("checksum"), f"{where}: check not locked"


def test_every_exercise_solved_gets_full_marks(course, grades):
    checks = _checks()
    assert grades["solved"] == {gid: (points, points) for gid, points in checks.items()}
    assert _errors(_autograded(course, "solved")) == {}
    assert "CheckFailed" not in _feedback_text(course, "solved")


def test_a_wrong_answer_loses_that_exercise_and_the_feedback_says_why(course, grades):
    checks, wrong = _checks(), _check_of(WRONG_EXERCISE)
    expected = {gid: (0.0 if gid == wrong else points, points) for gid, points in checks.items()}
    assert grades["wrong"] == expected
    assert _errors(_autograded(course, "wrong")) == {wrong: ["CheckFailed"]}
    feedback = _feedback_text(course, "wrong")
    assert "CheckFailed" in feedback and WRONG_MESSAGE in feedback, (
        f"the feedback does not show the check's message {WRONG_MESSAGE!r}"
    )


def test_an_unfinished_exercise_scores_zero_and_the_rest_is_graded(course, grades):
    checks, unfinished = _checks(), _check_of(UNFINISHED_EXERCISE)
    expected = {gid: (0.0 if gid == unfinished else points, points) for gid, points in checks.items()}
    assert grades["unfinished"] == expected
    nb = _autograded(course, "unfinished")
    assert _errors(nb) == {unfinished: ["ExerciseNotDone"]}
    not_run = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.execution_count is None]
    assert not not_run, f"cells not run after the unfinished exercise: {not_run}"
    assert "not implemented yet" in _feedback_text(course, "unfinished")


def test_export_writes_each_students_total(course):
    with open(course / "grades.csv", newline="", encoding="utf-8") as f:
        rows = {row["student_id"]: row for row in csv.DictReader(f) if row["assignment"] == CHAPTER}
    total = sum(_checks().values())
    points = _checks()
    lost = {"solved": 0.0, "wrong": points[_check_of(WRONG_EXERCISE)], "unfinished": points[_check_of(UNFINISHED_EXERCISE)]}
    assert sorted(rows) == sorted(STUDENTS)
    for student in STUDENTS:
        assert float(rows[student]["max_score"]) == total
        assert float(rows[student]["score"]) == total - lost[student], (student, rows[student])
