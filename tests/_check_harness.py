"""The plumbing every chapter's exercise-check tests share.

Each chapter's test file writes its answers out the way a student might (independently of the
library and of the hints inside the checks) and lists its exercises in a table,
``EXERCISES = {name: Exercise(check, right, wrong)}``. ``tests/test_checks.py`` runs one test
over every table: each check accepts each right answer (and says ``[passed]``) and rejects each
wrong answer with a ``CheckFailed`` whose message says where it went wrong. The tests of the
feedback's wording stay in the chapter files.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Exercise:
    """One exercise's check and the answers it is tested with.

    Attributes:
        check: the check of :mod:`lesson_lib.course.checks` (``checks.check_...``).
        right: the right answers (each must pass).
        wrong: the plausible wrong answers (each must be rejected); at least three.
        needs: names of pytest fixtures whose values the check takes after the answer.
        rejection: a regular expression the rejection's message must match.
    """

    check: Callable[..., bool]
    right: Sequence[Callable]
    wrong: Sequence[Callable]
    needs: tuple[str, ...] = ()
    rejection: str = "wrong on case|raised"


def exercises(
    checks_by_name: Mapping[str, Callable[..., bool]],
    right: Mapping[str, Callable | Sequence[Callable]],
    wrong: Mapping[str, Sequence[Callable]],
    **options,
) -> dict[str, Exercise]:
    """A chapter's table from its checks, right answers and wrong answers, each keyed by the
    exercise's name (a right entry may hold several answers). ``options`` (``needs``,
    ``rejection``) hold for every exercise of the table; ``{name: {...}}`` under the key
    ``per_exercise`` overrides them for one."""
    per_exercise = options.pop("per_exercise", {})
    if set(checks_by_name) != set(right) or not set(wrong) <= set(right):
        raise ValueError(f"the tables disagree: checks {sorted(checks_by_name)}, right {sorted(right)}, wrong {sorted(wrong)}")
    table = {}
    for name, check in checks_by_name.items():
        good = right[name]
        good = tuple(good) if isinstance(good, (list, tuple)) else (good,)
        table[name] = Exercise(check, good, tuple(wrong.get(name, ())), **{**options, **per_exercise.get(name, {})})
    return table
