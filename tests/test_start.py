"""``python -m lesson_lib start``: the learner's working folder gets the student versions the
first time, never loses a learner's notebook later, offers course updates beside it, resets a
chapter only after a confirmation; and ``checks.solution`` reaches the worked solution."""

import json
import shutil

import nbformat
import pytest

from lesson_lib.course import checks, start
from lesson_lib.course.student import make_student_notebook

SOURCE = start.SOURCE
SMALL = ("00_start_here.ipynb", "09_trianflow.ipynb")


@pytest.fixture
def source(tmp_path):
    """A course folder with two chapters (fast), which a test may 'update'."""
    src = tmp_path / "notebooks"
    src.mkdir()
    for name in SMALL:
        shutil.copy(SOURCE / name, src / name)
    return src


def _edit(path, text="# my own work\nx = 42"):
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(text))
    nbformat.write(nb, path)
    return path.read_bytes()


def test_a_fresh_folder_gets_every_chapters_student_version(tmp_path):
    folder = tmp_path / "my_course"
    report = start.sync(folder)
    names = sorted(p.name for p in SOURCE.glob("*.ipynb"))
    assert sorted(report["written"]) == names and not report["offered"]
    for name in names:
        mine = nbformat.read(folder / name, as_version=4)
        want = make_student_notebook(nbformat.read(SOURCE / name, as_version=4))
        assert [c.source for c in mine.cells] == [c.source for c in want.cells], name
        text = (folder / name).read_text()
        assert "BEGIN SOLUTION" not in text and "outputs\": [\n     {" not in text
    ex = [c for c in nbformat.read(folder / "09_trianflow.ipynb", as_version=4).cells
          if c.metadata.get("nbgrader", {}).get("solution")]
    assert ex and all("raise NotImplementedError()" in c.source for c in ex)
    assert set(json.loads((folder / start.MANIFEST).read_text())) == set(names)


def test_a_second_start_keeps_an_edited_notebook_byte_for_byte(tmp_path, source):
    folder = tmp_path / "my_course"
    start.sync(folder, source)
    mine = _edit(folder / "09_trianflow.ipynb")
    report = start.sync(folder, source)
    assert (folder / "09_trianflow.ipynb").read_bytes() == mine
    assert not report["written"] and not report["offered"] and sorted(report["kept"]) == sorted(SMALL)
    (folder / "00_start_here.ipynb").unlink()  # a deleted chapter comes back blank
    assert start.sync(folder, source)["written"] == ["00_start_here.ipynb"]


def test_an_updated_course_is_offered_beside_the_learners_notebook_never_over_it(tmp_path, source):
    folder = tmp_path / "my_course"
    start.sync(folder, source)
    mine = _edit(folder / "09_trianflow.ipynb")
    untouched = (folder / "00_start_here.ipynb").read_bytes()
    for name in SMALL:  # the course changes both chapters
        nb = nbformat.read(source / name, as_version=4)
        nb.cells.append(nbformat.v4.new_markdown_cell("A new paragraph of the course."))
        nbformat.write(nb, source / name)
    report = start.sync(folder, source)
    assert (folder / "09_trianflow.ipynb").read_bytes() == mine
    assert (folder / "00_start_here.ipynb").read_bytes() == untouched
    assert len(report["offered"]) == 2
    for name in report["offered"]:
        new = nbformat.read(folder / name, as_version=4)
        assert new.cells[-1].source == "A new paragraph of the course."
    again = start.sync(folder, source)
    assert not again["offered"] and len(list(folder.glob("*.updated-*.ipynb"))) == 2


def test_reset_asks_first_and_keeps_a_backup(tmp_path, source):
    folder = tmp_path / "my_course"
    start.sync(folder, source)
    mine = _edit(folder / "09_trianflow.ipynb")
    with pytest.raises(SystemExit):
        start.reset(folder, "09", source, confirm=lambda q: False)
    assert (folder / "09_trianflow.ipynb").read_bytes() == mine
    questions = []
    backup = start.reset(folder, "09", source, confirm=lambda q: questions.append(q) or True)
    assert questions and "09_trianflow.ipynb" in questions[0]
    assert backup.read_bytes() == mine
    blank = make_student_notebook(nbformat.read(source / "09_trianflow.ipynb", as_version=4))
    assert [c.source for c in nbformat.read(folder / "09_trianflow.ipynb", as_version=4).cells] == [c.source for c in blank.cells]
    with pytest.raises(ValueError, match="matched 0"):
        start.reset(folder, "42", source, confirm=lambda q: True)


def test_bad_folders_get_clear_errors(tmp_path, source):
    with pytest.raises(ValueError, match="instructor notebooks"):
        start.sync(source, source)
    with pytest.raises(FileNotFoundError, match="notebooks were expected"):
        start.sync(tmp_path / "w", tmp_path / "missing")
    folder = tmp_path / "my_course"
    folder.mkdir()
    (folder / start.MANIFEST).write_text("{not json")
    with pytest.raises(ValueError, match=r"\.course_versions\.json.*JSON"):
        start.sync(folder, source)


def test_command_line_prepares_the_folder_and_names_jupyterlabs_root(tmp_path, capsys):
    folder = tmp_path / "course"
    assert start.main(["--dir", str(folder), "--no-lab"]) == 0
    assert "wrote 13 chapter(s)" in capsys.readouterr().out
    assert start.main(["--dir", str(folder), "--no-lab"]) == 0
    assert "13 chapter(s) kept" in capsys.readouterr().out
    cmd = start.lab_command(folder, ["--no-browser"])
    assert cmd[1:4] == ["-m", "jupyter", "lab"] and f"--ServerApp.root_dir={folder.resolve()}" in cmd
    assert cmd[-1] == "--no-browser"


def test_a_stuck_learner_reaches_the_worked_solution(capsys):
    checks.solution("9.2")
    out = capsys.readouterr().out
    assert "def move_depth" in out and "BEGIN SOLUTION" in out
    assert "def ray_angle" in checks.solutions.solution_source(9.1)
    assert "def ray_box" in checks.solutions.solution_source("A1.1")
    with pytest.raises(ValueError, match="no exercise"):
        checks.solutions.solution_source("9.9")
    with pytest.raises(ValueError, match="expected a number"):
        checks.solutions.solution_source("move_depth")
    with pytest.raises(checks.CheckFailed, match=r'checks\.solution\("9\.2"\)'):
        checks.check_move_depth(lambda d, R, t, K: (d[None].expand(2, -1, -1), d))
