"""Training logs: ``log.csv`` / ``val.csv`` that survive resumption, and TensorBoard if installed."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["CsvLog", "read_log", "read_rows", "tensorboard_writer", "RESERVED_LOG_KEYS"]

RESERVED_LOG_KEYS = ("step", "epoch", "lr", "loss", "time")
"""Columns the trainer writes itself; a method's log values may not use these names."""


class CsvLog:
    """A CSV file with the columns ``first``, then the keys seen so far, then ``last``; a key
    that appears later rewrites the file with the wider header."""

    def __init__(self, path: Path, first: Sequence[str], last: Sequence[str] = ("time",)) -> None:
        self.path, self.first, self.last = path, list(first), list(last)
        self.columns = self.first + self.last
        if path.is_file():
            with open(path, newline="") as f:
                header = next(csv.reader(f), None)
            if header:
                self.columns = header

    def write(self, row: Mapping[str, Any]) -> None:
        new = [k for k in row if k not in self.columns]
        if new:
            rows = read_rows(self.path)
            self.columns = self.columns[: len(self.columns) - len(self.last)] + new + self.last
            self._rewrite(rows)
        exists = self.path.is_file() and self.path.stat().st_size > 0
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, self.columns)
            if not exists:
                writer.writeheader()
            writer.writerow(dict(row))

    def truncate_after(self, step: int) -> None:
        """Drop the rows after ``step`` (written after the checkpoint a run resumes from)."""
        if self.path.is_file():
            self._rewrite([r for r in read_rows(self.path) if int(float(r["step"])) <= step])

    def _rewrite(self, rows: list[dict[str, str]]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, self.columns, restval="")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.path)


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_log(path: str | os.PathLike) -> dict[str, list[float]]:
    """The columns of a ``log.csv`` or ``val.csv`` as lists of floats (NaN for empty cells),
    ready to plot: ``log = read_log("runs/x/log.csv"); plt.plot(log["step"], log["loss"])``."""
    rows = read_rows(Path(path))
    if not rows:
        return {}
    return {k: [float(r[k]) if r.get(k) not in (None, "") else math.nan for r in rows] for k in rows[0]}


def tensorboard_writer(out_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # TensorBoard is optional
        return None
    return SummaryWriter(log_dir=str(out_dir))
