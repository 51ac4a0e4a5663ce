"""The command line, ``python -m lesson_lib ...``, run as a real subprocess."""

import re

import nbformat
import pytest

from _commands import run_command


def cli(*args, timeout=120):
    return run_command(*args, timeout=timeout)


def test_no_arguments_prints_usage_and_exits_2():
    r = cli()
    assert r.returncode == 2
    assert "student" in r.stdout and "run-notebooks" in r.stdout
    assert "python -m lesson_lib" in r.stdout


def test_help_exits_0():
    for flag in ("--help", "-h"):
        r = cli(flag)
        assert r.returncode == 0, flag
        assert "student" in r.stdout and "run-notebooks" in r.stdout


def test_unknown_command_exits_2():
    r = cli("frobnicate")
    assert r.returncode == 2
    assert "unknown command" in r.stderr and "frobnicate" in r.stderr
    assert "run-notebooks" in r.stderr  # the usage follows the error


def test_run_notebooks_missing_file(tmp_path):
    missing = tmp_path / "missing.ipynb"
    r = cli("run-notebooks", str(missing))
    assert r.returncode == 2
    assert "no notebook at" in r.stderr and "missing.ipynb" in r.stderr


def test_run_notebooks_needs_an_argument():
    r = cli("run-notebooks")
    assert r.returncode == 2  # argparse: the notebooks argument is required
    assert "notebooks" in r.stderr


@pytest.mark.slow  # starts a kernel: a few seconds
def test_run_notebooks_executes_and_stores_outputs(tmp_path):
    path = tmp_path / "X.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print(6*7)")]
    nbformat.write(nb, path)
    # Compare outputs, not the file's text: the file also holds a random cell id, which may
    # contain "42" (it once was da425814).
    assert nbformat.read(path, as_version=4).cells[0].outputs == []

    r = cli("run-notebooks", str(path), timeout=300)
    assert r.returncode == 0, r.stderr
    assert re.search(re.escape(str(path)) + r": \d+\.\d s", r.stdout), r.stdout

    done = nbformat.read(path, as_version=4)
    cell = done.cells[0]
    assert cell.execution_count == 1
    assert [(o.output_type, o.get("name"), o.get("text")) for o in cell.outputs] == [("stream", "stdout", "42\n")]
