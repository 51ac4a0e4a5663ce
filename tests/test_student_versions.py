"""Tests for lesson_lib.course.student: turning instructor notebooks into student versions, and
the fast headless run of a student version (stop after the last check, skip heavy cells)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from lesson_lib.course.student import (
    HEAVY_TAG,
    SOLUTION_STUB,
    cell_names,
    main,
    make_student_notebook,
    make_student_versions,
    prepare_student_run,
    run_student_notebook,
    student_code_uses,
)

SOLUTION_LINES = [
    "    total = 0.0",
    "    for value in values:",
    "        total += value * weight",
    "    return total / len(values)",
]

EXERCISE_SOURCE = "\n".join(
    [
        "import math",
        "",
        "def weighted_mean(values, weight):",
        '    """Return the weighted mean of values."""',
        "    ### BEGIN SOLUTION",
        *SOLUTION_LINES,
        "    ### END SOLUTION",
    ]
)

CHECK_SOURCE = "lesson_lib.course.checks.check_weighted_mean(weighted_mean)"


def solution_meta(grade_id: str) -> dict:
    return {
        "nbgrader": {
            "solution": True,
            "grade": False,
            "locked": False,
            "task": False,
            "grade_id": grade_id,
            "schema_version": 3,
        }
    }


def check_meta(grade_id: str, points: int = 1) -> dict:
    return {
        "nbgrader": {
            "solution": False,
            "grade": True,
            "locked": True,
            "task": False,
            "points": points,
            "grade_id": grade_id,
            "schema_version": 3,
        }
    }


def exercise_notebook() -> nbformat.NotebookNode:
    """An instructor notebook: intro, one exercise, its check, with outputs and widgets."""
    exercise = new_code_cell(EXERCISE_SOURCE, metadata=solution_meta("ex-mean"))
    exercise.execution_count = 3
    exercise.outputs = [new_output("stream", name="stdout", text="computed\n")]
    check = new_code_cell(CHECK_SOURCE, metadata=check_meta("check-mean", 2))
    check.execution_count = 4
    check.outputs = [
        new_output("execute_result", data={"text/plain": "'ok'"}, execution_count=4)
    ]
    plain = new_code_cell("x = 1\nprint(x)", metadata={"scrolled": True})
    plain.execution_count = 5
    plain.outputs = [new_output("stream", name="stdout", text="1\n")]
    nb = new_notebook(
        cells=[new_markdown_cell("# Weighted mean"), exercise, check, plain],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "widgets": {"application/vnd.jupyter.widget-state+json": {"state": {"abc": {}}}},
        },
    )
    return nb


def write_nb(path: Path, nb: nbformat.NotebookNode) -> Path:
    nbformat.write(nb, path)
    return path


# --- solution regions -----------------------------------------------------------


def test_solution_lines_are_gone_and_stub_is_indented() -> None:
    student = make_student_notebook(exercise_notebook())
    src = student.cells[1].source
    lines = src.split("\n")

    assert not set(SOLUTION_LINES) & set(lines)
    assert not any("SOLUTION" in line for line in lines)
    assert lines == [
        "import math",
        "",
        "def weighted_mean(values, weight):",
        '    """Return the weighted mean of values."""',
        "    # YOUR CODE HERE",
        "    raise NotImplementedError()",
    ]
    assert [line.strip() for line in lines[-2:]] == list(SOLUTION_STUB)
    compile(src, "<student cell>", "exec")


def test_student_function_raises_not_implemented() -> None:
    student = make_student_notebook(exercise_notebook())
    namespace: dict = {}
    exec(student.cells[1].source, namespace)
    with pytest.raises(NotImplementedError):
        namespace["weighted_mean"]([1.0, 2.0], 0.5)


def test_instructor_solution_in_fixture_works() -> None:
    """Sanity check of the fixture: the instructor's function does work."""
    namespace: dict = {}
    exec(EXERCISE_SOURCE, namespace)
    assert namespace["weighted_mean"]([1.0, 3.0], 0.5) == pytest.approx(1.0)


def test_multiple_regions_and_code_after_region_are_kept() -> None:
    source = "\n".join(
        [
            "def f(x):",
            "    ### BEGIN SOLUTION",
            "    y = x * 2",
            "    ### END SOLUTION",
            "    z = y + 1",
            "    return z",
            "",
            "### BEGIN SOLUTION",
            "CONSTANT = 42",
            "### END SOLUTION",
            "print('done')",
        ]
    )
    nb = new_notebook(cells=[new_code_cell(source, metadata=solution_meta("ex-two"))])
    student = make_student_notebook(nb)
    assert student.cells[0].source.split("\n") == [
        "def f(x):",
        "    # YOUR CODE HERE",
        "    raise NotImplementedError()",
        "    z = y + 1",
        "    return z",
        "",
        "# YOUR CODE HERE",
        "raise NotImplementedError()",
        "print('done')",
    ]


def test_stub_matches_nbgrader_default() -> None:
    assert SOLUTION_STUB == ("# YOUR CODE HERE", "raise NotImplementedError()")


# --- outputs, metadata, immutability ------------------------------------------------


def test_outputs_and_execution_counts_cleared() -> None:
    student = make_student_notebook(exercise_notebook())
    code_cells = [c for c in student.cells if c.cell_type == "code"]
    assert len(code_cells) == 3
    for cell in code_cells:
        assert cell.outputs == []
        assert cell.execution_count is None
    # output-display metadata goes with the outputs
    assert "scrolled" not in student.cells[3].metadata
    # non-exercise code is untouched
    assert student.cells[3].source == "x = 1\nprint(x)"
    assert student.cells[2].source == CHECK_SOURCE


def test_widget_state_removed_other_metadata_kept() -> None:
    student = make_student_notebook(exercise_notebook())
    assert "widgets" not in student.metadata
    assert student.metadata.kernelspec.name == "python3"


def test_nbgrader_metadata_unchanged() -> None:
    nb = exercise_notebook()
    student = make_student_notebook(nb)
    for before, after in zip(nb.cells, student.cells):
        assert after.metadata.get("nbgrader") == before.metadata.get("nbgrader")
    assert student.cells[1].metadata.nbgrader.grade_id == "ex-mean"
    assert student.cells[2].metadata.nbgrader.points == 2


def test_input_notebook_not_mutated() -> None:
    nb = exercise_notebook()
    snapshot = copy.deepcopy(nb)
    student = make_student_notebook(nb)
    assert nb == snapshot
    assert student is not nb
    assert nb.cells[1].source == EXERCISE_SOURCE
    assert nb.cells[1].outputs and nb.cells[1].execution_count == 3
    assert "widgets" in nb.metadata


def test_student_notebook_is_valid_nbformat() -> None:
    student = make_student_notebook(exercise_notebook())
    nbformat.validate(student)


# --- hidden tests ------------------------------------------------------------------


def test_hidden_test_region_removed() -> None:
    source = "\n".join(
        [
            "lesson_lib.course.checks.check_f(f)",
            "### BEGIN HIDDEN TESTS",
            "assert f(3) == 7",
            "assert f(-1) == -1",
            "### END HIDDEN TESTS",
            "print('checked')",
        ]
    )
    nb = new_notebook(cells=[new_code_cell(source, metadata=check_meta("check-f"))])
    student = make_student_notebook(nb)
    assert student.cells[0].source.split("\n") == [
        "lesson_lib.course.checks.check_f(f)",
        "print('checked')",
    ]


def test_unterminated_hidden_tests_raise() -> None:
    source = "check(f)\n### BEGIN HIDDEN TESTS\nassert f(3) == 7"
    nb = new_notebook(cells=[new_code_cell(source, metadata=check_meta("check-h"))])
    with pytest.raises(ValueError, match=r"cell 0 .*'check-h'.*END HIDDEN TESTS"):
        make_student_notebook(nb)


# --- authoring errors -------------------------------------------------------------------


def _nb_with(cell, index: int = 2) -> nbformat.NotebookNode:
    """A notebook where ``cell`` is at position ``index`` after harmless cells."""
    before = [new_markdown_cell("intro"), new_code_cell("import math")][:index]
    return new_notebook(cells=[*before, cell])


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def f():\n    ### BEGIN SOLUTION\n    return 1\n", "without a matching"),
        ("def f():\n    return 1\n    ### END SOLUTION\n", "without a matching"),
        (
            "### BEGIN SOLUTION\na = 1\n### BEGIN SOLUTION\nb = 2\n### END SOLUTION\n",
            "nested",
        ),
    ],
    ids=["begin-without-end", "end-without-begin", "nested-begin"],
)
def test_unbalanced_markers_raise(source: str, message: str) -> None:
    nb = _nb_with(new_code_cell(source, metadata=solution_meta("ex-bad")))
    with pytest.raises(ValueError, match=message) as info:
        make_student_notebook(nb, path="lesson.ipynb")
    text = str(info.value)
    assert "lesson.ipynb" in text
    assert "cell 2" in text
    assert "'ex-bad'" in text


def test_markers_in_non_solution_cell_raise() -> None:
    source = "### BEGIN SOLUTION\na = 1\n### END SOLUTION"
    cell = new_code_cell(source, metadata=check_meta("check-wrong"))
    with pytest.raises(ValueError, match=r"cell 2 \(grade_id 'check-wrong'\).*solution: true"):
        make_student_notebook(_nb_with(cell))


def test_markers_in_cell_without_any_metadata_raise() -> None:
    cell = new_code_cell("### BEGIN SOLUTION\na = 1\n### END SOLUTION")
    with pytest.raises(ValueError, match=r"cell 1 \(grade_id none\).*solution: true"):
        make_student_notebook(_nb_with(cell, index=1))


def test_solution_cell_without_markers_raises() -> None:
    cell = new_code_cell("def f():\n    return 1", metadata=solution_meta("ex-nomark"))
    with pytest.raises(ValueError, match=r"cell 2 \(grade_id 'ex-nomark'\).*without"):
        make_student_notebook(_nb_with(cell))


def test_duplicate_grade_ids_raise() -> None:
    nb = new_notebook(
        cells=[
            new_code_cell("### BEGIN SOLUTION\na = 1\n### END SOLUTION", metadata=solution_meta("dup")),
            new_markdown_cell("between"),
            new_code_cell("check(a)", metadata=check_meta("dup")),
        ]
    )
    with pytest.raises(ValueError, match=r"cell 2 \(grade_id 'dup'\).*duplicate.*cell 0"):
        make_student_notebook(nb)


def test_markers_in_markdown_cell_raise() -> None:
    cell = new_markdown_cell(
        "Answer:\n### BEGIN SOLUTION\nThe depth is 3 m.\n### END SOLUTION",
        metadata=solution_meta("md-answer"),
    )
    with pytest.raises(ValueError, match=r"cell 2 \(grade_id 'md-answer'\).*markdown"):
        make_student_notebook(_nb_with(cell))


def test_error_without_path_has_no_path_prefix() -> None:
    cell = new_code_cell("### BEGIN SOLUTION\na = 1", metadata=solution_meta("ex-np"))
    with pytest.raises(ValueError) as info:
        make_student_notebook(_nb_with(cell))
    assert str(info.value).startswith("cell 2 (grade_id 'ex-np')")


# --- files and folders ---------------------------------------------------------------


def test_folder_mode_writes_same_names(tmp_path: Path) -> None:
    src = tmp_path / "instructor"
    src.mkdir()
    write_nb(src / "02_warp.ipynb", exercise_notebook())
    write_nb(src / "01_intro.ipynb", new_notebook(cells=[new_markdown_cell("hello")]))
    (src / "notes.txt").write_text("not a notebook")
    checkpoints = src / ".ipynb_checkpoints"
    checkpoints.mkdir()
    write_nb(checkpoints / "01_intro-checkpoint.ipynb", exercise_notebook())

    out = tmp_path / "student"
    written = make_student_versions(src, out)

    assert written == [out / "01_intro.ipynb", out / "02_warp.ipynb"]
    assert sorted(p.name for p in out.iterdir()) == ["01_intro.ipynb", "02_warp.ipynb"]
    student = nbformat.read(out / "02_warp.ipynb", as_version=4)
    assert "raise NotImplementedError()" in student.cells[1].source
    assert "total += value * weight" not in student.cells[1].source
    assert all(c.outputs == [] for c in student.cells if c.cell_type == "code")
    # instructor notebook untouched on disk
    original = nbformat.read(src / "02_warp.ipynb", as_version=4)
    assert original.cells[1].source == EXERCISE_SOURCE


def test_single_file_mode(tmp_path: Path) -> None:
    nb_path = write_nb(tmp_path / "lesson.ipynb", exercise_notebook())
    out = tmp_path / "out" / "nested"
    written = make_student_versions(nb_path, out)
    assert written == [out / "lesson.ipynb"]
    assert json.loads(written[0].read_text())["cells"][1]["outputs"] == []


def test_refuses_output_equal_to_source_folder(tmp_path: Path) -> None:
    nb_path = write_nb(tmp_path / "lesson.ipynb", exercise_notebook())
    before = nb_path.read_text()
    with pytest.raises(ValueError, match="overwrite"):
        make_student_versions(tmp_path, tmp_path / ".")
    with pytest.raises(ValueError, match="overwrite"):
        make_student_versions(nb_path, tmp_path / "sub" / "..")
    assert nb_path.read_text() == before


def test_missing_source_raises_file_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "nope.ipynb"
    with pytest.raises(FileNotFoundError, match="nope.ipynb"):
        make_student_versions(missing, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_authoring_error_in_one_notebook_writes_nothing(tmp_path: Path) -> None:
    src = tmp_path / "instructor"
    src.mkdir()
    write_nb(src / "a_good.ipynb", exercise_notebook())
    bad = new_notebook(cells=[new_code_cell("### BEGIN SOLUTION\nx = 1", metadata=solution_meta("b"))])
    write_nb(src / "b_bad.ipynb", bad)
    out = tmp_path / "student"
    with pytest.raises(ValueError, match=r"b_bad\.ipynb: cell 0 \(grade_id 'b'\)"):
        make_student_versions(src, out)
    assert not out.exists()


# --- command line ---------------------------------------------------------------------------


def test_main_prints_one_line_per_notebook(tmp_path: Path, capsys) -> None:
    src = tmp_path / "instructor"
    src.mkdir()
    write_nb(src / "01_intro.ipynb", new_notebook(cells=[new_markdown_cell("hello")]))
    write_nb(src / "02_warp.ipynb", exercise_notebook())
    out = tmp_path / "student"

    assert main([str(src), "--out", str(out)]) == 0

    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    assert "01_intro.ipynb" in lines[0] and "0 exercises" in lines[0]
    assert "02_warp.ipynb" in lines[1] and "1 exercise stubbed" in lines[1]
    assert (out / "02_warp.ipynb").is_file()


def test_main_default_out_is_student_in_cwd(tmp_path: Path, monkeypatch, capsys) -> None:
    nb_path = write_nb(tmp_path / "lesson.ipynb", exercise_notebook())
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main([str(nb_path)]) == 0
    assert (work / "student" / "lesson.ipynb").is_file()
    assert "lesson.ipynb" in capsys.readouterr().out


def test_main_returns_2_on_missing_source(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "missing_folder"
    assert main([str(missing), "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ")
    assert "missing_folder" in captured.err
    assert captured.out == ""


def test_main_returns_2_on_authoring_error(tmp_path: Path, capsys) -> None:
    bad = new_notebook(
        cells=[new_code_cell("x = 1\n### END SOLUTION", metadata=solution_meta("ex-end"))]
    )
    nb_path = write_nb(tmp_path / "bad.ipynb", bad)
    assert main([str(nb_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "cell 0" in err and "'ex-end'" in err


# --- the fast student run ------------------------------------------------------------------


def _run_nb(*cells) -> nbformat.NotebookNode:
    return new_notebook(cells=list(cells))


def heavy(source: str):
    return new_code_cell(source, metadata={"tags": [HEAVY_TAG]})


def exercise(grade_id: str, name: str):
    return new_code_cell(
        f"def {name}(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION",
        metadata=solution_meta(grade_id),
    )


def check(grade_id: str, source: str):
    return new_code_cell(source, metadata=check_meta(grade_id))


def _skipped(nb) -> dict[int, str]:
    return {i: c.metadata["lesson_lib"]["skipped"] for i, c in enumerate(nb.cells) if "lesson_lib" in c.metadata}


def test_cell_names_binds_top_level_and_reads_everywhere() -> None:
    source = "\n".join([
        "import numpy as np, os.path",
        "from math import pi as PI",
        "a, (b, *c) = f(x)",
        "for i in range(n):",
        "    total += i",
        "with open(p) as fh:",
        "    pass",
        "def g(y):",
        "    inner = y + glob",
        "    return inner",
        "class K: pass",
        "squares = [k * k for k in ks]",
    ])
    bound, read = cell_names(source)
    assert bound == {"np", "os", "PI", "a", "b", "c", "i", "total", "fh", "g", "K", "squares"}
    assert {"f", "x", "range", "n", "total", "open", "p", "glob", "ks"} <= read
    assert not {"inner", "k"} & bound  # function and comprehension scopes are their own
    assert cell_names("%matplotlib inline") is None


def test_run_stops_after_the_last_check() -> None:
    nb = _run_nb(
        new_code_cell("import math"), exercise("ex", "double"), check("ck", "check(double)"),
        new_markdown_cell("after"), new_code_cell("slow_plot()"),
    )
    run = prepare_student_run(nb)
    assert len(run.cells) == 3 and run.cells[-1].source == "check(double)"
    assert len(prepare_student_run(nb, stop_after_last_check=False).cells) == 5
    assert len(nb.cells) == 5  # the input is not modified
    no_checks = _run_nb(new_code_cell("x = 1"), new_code_cell("print(x)"))
    assert len(prepare_student_run(no_checks).cells) == 2


def test_heavy_cells_and_the_cells_that_need_them_are_skipped() -> None:
    nb = _run_nb(
        new_code_cell("import torch\ndata = load()"),            # 0 runs
        heavy("model = train(data)\nlog = model.log"),           # 1 tagged
        new_code_cell("plot(log)"),                              # 2 reads log
        new_code_cell("score = evaluate(model)"),                # 3 reads model
        new_code_cell("print(score)"),                           # 4 reads score (from 3)
        new_code_cell("for model in ('a', 'b'):\n    print(model)"),  # 5 binds its own model
        new_code_cell("model = torch.nn.Linear(1, 1)"),          # 6 binds model afresh
        new_code_cell("print(model)"),                           # 7 runs again
        new_code_cell("results = {}"),                           # 8 runs
        heavy("results['lr'] = evaluate(model)"),                # 9 tagged; changes results
        new_code_cell("print(results['lr'])"),                   # 10 reads results
        exercise("ex", "double"),
        check("ck", "check(double)"),
    )
    run = prepare_student_run(nb)
    assert _skipped(run) == {
        1: "tagged 'heavy'",
        2: "reads 'log' (cell 1)",
        3: "reads 'model' (cell 1)",
        4: "reads 'score' (cell 3)",
        9: "tagged 'heavy'",
        10: "reads 'results' (cell 9)",
    }
    assert _skipped(prepare_student_run(nb, skip_tags=())) == {}
    assert "tags" not in nb.cells[2].metadata  # the input is not modified


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        ([heavy("x = 1"), exercise("ex-x", "double"), check("ck-x", "check(double)")], None),
        ([new_code_cell("import math"), new_code_cell("def double(x):\n    ### BEGIN SOLUTION\n    return 2\n"
                                                       "    ### END SOLUTION", metadata={**solution_meta("ex-h"), "tags": ["heavy"]}),
          check("ck-h", "check(double)")], r"cell 1 \(grade_id 'ex-h'\): an exercise cell .*tagged 'heavy'"),
        ([heavy("ref = train()"), exercise("ex-r", "double"), check("ck-r", "check(double, ref)")],
         r"cell 2 \(grade_id 'ck-r'\): a check cell .*reads 'ref' \(cell 0\)"),
    ],
    ids=["fine", "tagged-exercise", "check-needs-heavy-result"],
)
def test_exercises_and_checks_are_never_skipped(cells, message) -> None:
    nb = _run_nb(*cells)
    if message is None:
        assert _skipped(prepare_student_run(nb)) == {0: "tagged 'heavy'"}
        return
    with pytest.raises(ValueError, match=message):
        prepare_student_run(nb, path="lesson.ipynb")


def test_student_code_uses_finds_cells_that_call_an_exercise() -> None:
    nb = _run_nb(
        exercise("ex-d", "double"),
        check("ck-d", "check(double)"),
        new_code_cell("y = double(3)"),                       # 2: would raise for a student
        new_code_cell("from lesson_lib.stereo import double"),  # 3: the library's from here on
        new_code_cell("z = double(4)"),
    )
    problems = student_code_uses(make_student_notebook(nb), "lesson.ipynb")
    assert problems == ["lesson.ipynb: cell 2 (grade_id none) reads 'double' (the exercise of cell 0)"]
    assert student_code_uses(_run_nb(*nb.cells[:2], nb.cells[4 - 1])) == []


@pytest.mark.slow  # starts a kernel: a second or two
def test_run_student_notebook_skips_stops_and_rechecks_under_the_autograder(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    check_source = "\n".join([
        "import os",
        "try:",
        "    double(1)",
        "except NotImplementedError:",
        "    if os.environ.get('NBGRADER_EXECUTION') == 'autograde':",
        "        raise AssertionError('not done') from None",
        "    print('not implemented yet')",
    ])
    nb = make_student_notebook(_run_nb(
        new_code_cell("open('ran.txt', 'w').write('x')"),
        heavy("raise SystemExit('a heavy cell ran')"),
        exercise("ex", "double"),
        check("ck", check_source),
        new_code_cell("raise RuntimeError('a cell after the last check ran')"),
    ))
    path = write_nb(tmp_path / "lesson.ipynb", nb)
    done = run_student_notebook(path, autograde_recheck=True)
    assert (tmp_path / "ran.txt").is_file()  # the kernel runs in the notebook's folder
    assert [c.execution_count is not None for c in done.cells[:4]] == [True, False, True, True]
    assert "not implemented yet" in "".join(o.get("text", "") for o in done.cells[3].outputs)
    recheck = done.cells[-1]
    assert recheck.metadata["lesson_lib"]["recheck_of"] == 3
    assert [(o.ename, o.evalue) for o in recheck.outputs if o.output_type == "error"] == [("AssertionError", "not done")]
    assert len(done.cells) == 6  # four cells, the environment cell, one re-run
