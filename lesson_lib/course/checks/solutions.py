"""Worked solutions on demand: ``checks.solution("9.2")`` prints the instructor notebook's
solution of Exercise 9.2 (the cell the student version leaves blank), read from the course's
``notebooks/`` folder. A learner who is stuck reaches it from the exercise itself; every failed
check says how."""

from __future__ import annotations

import re
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[3] / "notebooks"


def _key(exercise: str | float) -> str:
    text = str(exercise).strip()
    m = re.fullmatch(r"(?:exercise\s*)?([0-9]+|A[0-9]+)[._]([0-9]+)", text, flags=re.IGNORECASE)
    if not m:
        raise ValueError(f"exercise {exercise!r}: expected a number such as '9.2' (chapter 9, exercise 2) or 'A1.1'")
    return f"ex{m.group(1).upper()}_{m.group(2)}_"


def solution_source(exercise: str | float, source: Path = SOURCE) -> str:
    """The worked solution's code cell of ``exercise`` (``"9.2"``, ``"A1.1"``)."""
    import nbformat

    prefix = _key(exercise)
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: the instructor notebooks were expected here (a clone of the course repository)")
    for path in sorted(source.glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if meta.get("solution") and str(meta.get("grade_id", "")).startswith(prefix):
                return cell.source
    raise ValueError(f"no exercise {exercise!r} in {source}")


def solution(exercise: str | float) -> None:
    """Print the worked solution of ``exercise`` (e.g. ``"9.2"``). Try the check's hints first:
    a failed check names the usual mistake your answer matches."""
    text = solution_source(exercise)
    print(f"Worked solution of Exercise {exercise} (from the instructor notebook):\n")
    print(text)
