"""The engine every chapter's checks share: run a student's function on cases, compare the
result with the reference and say in words what differs (see :mod:`lesson_lib.course.checks`)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = [
    "CheckFailed",
    "ExerciseNotDone",
    "grading_mode",
    "Case",
    "Mistake",
    "run_check",
    "seeded_generator",
]


class CheckFailed(AssertionError):
    """A student's answer is wrong; the message says how."""


class ExerciseNotDone(AssertionError):
    """Raised instead of a friendly notice when grading and the exercise is not done."""


def grading_mode() -> bool:
    """True under nbgrader's autograde / validate runs or with LESSON_LIB_STRICT_CHECKS=1."""
    return os.environ.get("NBGRADER_EXECUTION", "").lower() in {"autograde", "validate"} or (
        os.environ.get("LESSON_LIB_STRICT_CHECKS") == "1"
    )


@dataclass
class Case:
    """One input for a student's function and a human-readable description of it."""

    label: str
    args: tuple
    kwargs: dict = field(default_factory=dict)


Mistake = tuple[Callable[..., Any], str]


def _as_tensor(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    return torch.as_tensor(np.asarray(x))


def _flat(x: Any) -> list[Any]:
    return list(x) if isinstance(x, (tuple, list)) else [x]


def _index(flat_i: int, shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(flat_i, tuple(shape))) if shape else ()


def _describe_mismatch(got: Any, want: Any, rtol: float, atol: float) -> str | None:
    """Return None if ``got`` matches ``want``, else a sentence saying how it differs."""
    gots, wants = _flat(got), _flat(want)
    if len(gots) != len(wants):
        return f"expected {len(wants)} returned value(s), got {len(gots)}"
    for k, (g, w) in enumerate(zip(gots, wants)):
        what = f"returned value {k}: " if len(wants) > 1 else ""
        if g is None:
            return f"{what}got None (did you forget to `return` the result?)"
        try:
            g = _as_tensor(g)
        except (TypeError, ValueError, RuntimeError):
            return f"{what}expected an array/tensor, got {type(g).__name__}"
        w = _as_tensor(w)
        if tuple(g.shape) != tuple(w.shape):
            hint = ""
            if sorted(g.shape) == sorted(w.shape):
                hint = " (the same sizes in another order: transposed or permuted?)"
            return f"{what}expected shape {tuple(w.shape)}, got {tuple(g.shape)}{hint}"
        if w.dtype == torch.bool:
            if g.dtype != torch.bool:
                return f"{what}expected a boolean mask, got dtype {g.dtype}"
            diff = (g != w).flatten()
            if bool(diff.any()):
                i = int(diff.nonzero()[0])
                return (
                    f"{what}{int(diff.sum())} of {diff.numel()} mask entries differ; first at "
                    f"index {_index(i, w.shape)}: expected {bool(w.flatten()[i])}, "
                    f"got {bool(g.flatten()[i])}"
                )
            continue
        g, w = g.double(), w.double()
        same_inf = torch.isinf(w) & (g == w)  # an expected infinity ("no hit") matched exactly
        nonfinite = ~torch.isfinite(g) & ~same_inf
        if bool(nonfinite.any()):
            i = int(nonfinite.flatten().nonzero()[0])
            return (
                f"{what}{int(nonfinite.sum())} entries are inf or NaN, first at index "
                f"{_index(i, g.shape)} (expected {float(w.flatten()[i]):.6g})"
            )
        bad = ~torch.isclose(g, w, rtol=rtol, atol=atol) & ~same_inf
        if bool(bad.any()):
            i = int(bad.flatten().nonzero()[0])
            return (
                f"{what}{int(bad.sum())} of {bad.numel()} entries are off; first at index "
                f"{_index(i, w.shape)}: expected {float(w.flatten()[i]):.6g}, "
                f"got {float(g.flatten()[i]):.6g}"
            )
    return None


def _constant_ratio_hint(got: Any, want: Any) -> str | None:
    try:
        g, w = _as_tensor(_flat(got)[0]).double(), _as_tensor(_flat(want)[0]).double()
    except (TypeError, ValueError, RuntimeError):
        return None
    if g.shape != w.shape or not bool((w.abs() > 1e-9).all()) or g.numel() < 2:
        return None
    ratio = g / w
    if bool(torch.isfinite(ratio).all()) and float(ratio.std()) < 1e-6 * float(ratio.abs().mean()):
        return f"your values are all {float(ratio.mean()):.6g} times the expected ones"
    return None


def _solution_pointer(exercise: str) -> str:
    """The last line of a failed check: where a stuck learner finds the worked solution."""
    m = re.search(r"Exercise ([0-9]+|A[0-9]+)\.([0-9]+)", exercise)
    if not m:
        return ""
    return f"\n  Stuck? checks.solution(\"{m.group(1)}.{m.group(2)}\") prints a worked solution."


def run_check(
    exercise: str,
    student_fn: Callable[..., Any],
    reference_fn: Callable[..., Any],
    cases: Sequence[Case],
    mistakes: Sequence[Mistake] = (),
    rtol: float = 1e-4,
    atol: float = 1e-6,
) -> bool:
    """Run ``student_fn`` on every case, compare with ``reference_fn`` and give feedback.

    ``mistakes`` are known wrong implementations with a hint each: when the student's output
    matches one of them on a failing case, that hint is added to the message.
    Returns True when all cases pass; False (with a notice) when the exercise is not done
    yet; raises :class:`CheckFailed` otherwise.
    """
    if not callable(student_fn):
        raise CheckFailed(f"{exercise}: expected a function, got {type(student_fn).__name__}")
    for n, case in enumerate(cases, start=1):
        try:
            got = student_fn(*case.args, **case.kwargs)
        except NotImplementedError:
            if grading_mode():
                raise ExerciseNotDone(f"{exercise}: not implemented yet") from None
            print(
                f"[not implemented yet] {exercise}: fill in the exercise cell above (replace "
                f"`raise NotImplementedError()`), run it, then run this check again."
            )
            return False
        except Exception as exc:
            raise CheckFailed(
                f"{exercise}: your function raised {type(exc).__name__}: {exc}\n"
                f"  on case {n} of {len(cases)}: {case.label}"
            ) from exc
        want = reference_fn(*case.args, **case.kwargs)
        problem = _describe_mismatch(got, want, rtol, atol)
        if problem is None:
            continue
        hints = []
        for wrong_fn, hint in mistakes:
            try:
                with np.errstate(all="ignore"):
                    wrong = wrong_fn(*case.args, **case.kwargs)
            except Exception:
                continue
            if _describe_mismatch(got, wrong, rtol, atol) is None:
                hints.append(hint)
        if not hints:
            ratio = _constant_ratio_hint(got, want)
            if ratio:
                hints.append(ratio + " (a unit or a factor is off)")
        msg = f"{exercise}: wrong on case {n} of {len(cases)} ({case.label}):\n  {problem}"
        if hints:
            msg += "\n  Hint: " + "\n  Hint: ".join(hints)
        raise CheckFailed(msg + _solution_pointer(exercise))
    print(f"[passed] {exercise}: all {len(cases)} cases match the reference.")
    return True


def seeded_generator(seed: int) -> torch.Generator:
    """A fresh CPU random generator seeded with ``seed``, so every check's cases are fixed."""
    return torch.Generator().manual_seed(seed)
