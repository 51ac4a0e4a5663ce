"""Execute notebooks top to bottom from a fresh kernel and store their outputs (for
maintainers refreshing the committed outputs): ``python -m lesson_lib run-notebooks NB...``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat

#: Seconds one cell may take in a headless run before it counts as hung. The course's longest
#: cell (chapter 06's live training) takes about a minute on an idle 2-core CPU; the margin is
#: for busy CI machines. pytest's nbval runs use the same limit (``--nbval-cell-timeout`` in
#: pyproject.toml).
CELL_TIMEOUT = 600


def execute_notebook(path: Path, timeout: int = CELL_TIMEOUT) -> float:
    """Run ``path`` in place with a fresh kernel of the current Python; return seconds taken."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:  # no per-cell timestamps: they would change on every run
        cell.metadata.pop("execution", None)
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", record_timing=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    nbformat.write(nb, path)
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lesson_lib run-notebooks")
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--timeout", type=int, default=CELL_TIMEOUT, help=f"seconds per cell (default: {CELL_TIMEOUT})")
    args = parser.parse_args(argv)
    for nb in args.notebooks:
        if not nb.is_file():
            print(f"error: no notebook at {nb}", file=sys.stderr)
            return 2
    for nb in args.notebooks:
        print(f"{nb}: {execute_notebook(nb, args.timeout):.1f} s", flush=True)
    return 0
