"""How far the notebooks' printed numbers move when the arithmetic changes: run each notebook
from a fresh kernel under a given setting (threads, PyTorch's SIMD kernel level, MKL's
instruction set) and compare every checked cell's outputs with the stored ones, number by
number, side by side with the tolerance nbval applies (lesson_lib.course.outputs).

    python benchmarks/notebook_drift.py                      # every notebook, this setting
    python benchmarks/notebook_drift.py --threads 1 notebooks/05_stereo_by_optimization.ipynb
    python benchmarks/notebook_drift.py --set ATEN_CPU_CAPABILITY=default --set MKL_ENABLE_INSTRUCTIONS=SSE4_2

A setting other than the one the outputs were stored with imitates another CPU: floating-point
sums in another order, other vector kernels. For each number that differs it prints the stored
and the fresh text, the difference in units of the last printed digit, the relative difference
beyond one such unit, and whether the tolerance admits it; the summary gives the largest of
those, which is what the tolerance must cover (and what a fragile cell shows). Notebooks are
not written: the stored outputs stay as they are. ``--json FILE`` keeps the whole report.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lesson_lib.course import outputs  # noqa: E402
from lesson_lib.course.notebooks import CELL_TIMEOUT  # noqa: E402


def checked(cell: nbformat.NotebookNode) -> bool:
    """Whether nbval compares this code cell's outputs (no ignore/skip marker or tag)."""
    from nbval.plugin import find_comment_markers, find_metadata_tags

    options = dict(find_metadata_tags(cell.metadata))
    options.update(dict(find_comment_markers(cell.source)))
    return options.get("check", True) and not options.get("skip", False)


def sanitizer() -> callable:
    from nbval.plugin import get_sanitize_patterns

    patterns = get_sanitize_patterns((ROOT / "tests" / "nbval_sanitize.cfg").read_text())
    import re

    def clean(s: str) -> str:
        for regex, replace in patterns:
            s = re.sub(regex, replace, s)
        return s

    return clean


def run(path: Path) -> tuple[nbformat.NotebookNode, float]:
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    return nb, time.perf_counter() - start


def differences(stored: list, fresh: list, clean, relative: float) -> tuple[list[dict], list[str]]:
    """Every number pair that differs at all, and what compare_text rejects (the tolerance)."""
    numbers, rejected = [], []
    a_texts, b_texts = outputs.output_texts(stored), outputs.output_texts(fresh)
    if a_texts.keys() != b_texts.keys():
        return numbers, [f"output kinds differ: {sorted(a_texts)} stored, {sorted(b_texts)} now"]
    for key in a_texts:
        for a, b in zip(a_texts[key], b_texts[key]):
            a, b = clean(a), clean(b)
            rejected += [f"{key}: {p}" for p in outputs.compare_text(a, b, relative=relative)]
            exact = outputs.compare_text(a, b, relative=0.0, absolute=0.0)
            if any("numbers stored" in p or "text differs" in p or "lines stored" in p for p in exact):
                continue
            for line_a, line_b in zip(a.split("\n"), b.split("\n")):
                for x, y in zip(outputs.split_numbers(line_a)[1], outputs.split_numbers(line_b)[1]):
                    if x.value != y.value:
                        unit = max(x.unit, y.unit) if not (x.integer and y.integer) else 1.0
                        size = max(abs(x.value), abs(y.value))
                        excess = max(0.0, abs(x.value - y.value) - unit) / size if size else 0.0
                        numbers.append({"stored": x.text, "fresh": y.text, "units": abs(x.value - y.value) / unit,
                                        "relative_beyond_one_unit": excess, "absolute": abs(x.value - y.value),
                                        "admitted": outputs.numbers_agree(x, y, relative), "line": line_b.strip()[:100]})
    return numbers, rejected


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebook in notebooks/")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS and MKL_NUM_THREADS for the kernels")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for the kernels (repeatable)")
    parser.add_argument("--json", type=Path, help="write the whole report here")
    args = parser.parse_args(argv)
    notebooks = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    setting = {}
    if args.threads:
        setting.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--set expects NAME=VALUE, got {item!r}")
        setting[name] = value
    os.environ.update(setting)  # the kernels inherit this process's environment
    print(f"setting: {setting or 'as this machine is'}; tolerance: relative {outputs.RELATIVE:g} "
          f"+ one unit of the last digit, absolute {outputs.ABSOLUTE:g}", flush=True)
    clean = sanitizer()
    report = {"setting": setting, "notebooks": {}}
    for path in notebooks:
        stored = nbformat.read(path, as_version=4)
        fresh, took = run(path)
        cells = {}
        code_stored = [c for c in stored.cells if c.cell_type == "code"]
        code_fresh = [c for c in fresh.cells if c.cell_type == "code"]
        for n, (s, f) in enumerate(zip(code_stored, code_fresh)):
            if not checked(s):
                continue
            relative = outputs.cell_tolerance(s.source)
            numbers, rejected = differences(s.outputs, f.outputs, clean, relative)
            if numbers or rejected:
                cells[n] = {"numbers": numbers, "rejected": rejected, "relative": relative}
        report["notebooks"][path.name] = {"seconds": took, "cells": cells}
        print(f"\n{path.name}: {took:.0f} s, {len(cells)} checked cells with a difference", flush=True)
        for n, c in cells.items():
            status = "FAILS" if c["rejected"] else "passes"
            print(f"  cell {n} ({status} under the tolerance{'' if c['relative'] == outputs.RELATIVE else ' of its marker, %g' % c['relative']})")
            for d in c["numbers"]:
                print(f"    {d['stored']:>12} -> {d['fresh']:<12} {d['units']:8.1f} units, "
                      f"{d['relative_beyond_one_unit']:7.2%} beyond one unit  {'ok' if d['admitted'] else 'REJECTED'}")
            for p in c["rejected"]:
                if "stored," not in p or "differ by" not in p:
                    print(f"    {p}")
    every = [d for nb in report["notebooks"].values() for c in nb["cells"].values() for d in c["numbers"]]
    failing = [(name, n) for name, nb in report["notebooks"].items() for n, c in nb["cells"].items() if c["rejected"]]
    print(f"\nsummary: {len(every)} numbers differ from the stored outputs in "
          f"{sum(len(nb['cells']) for nb in report['notebooks'].values())} cells")
    above_noise = [d for d in every if d["absolute"] >= outputs.ABSOLUTE]
    if above_noise:
        worst = max(above_noise, key=lambda d: d["relative_beyond_one_unit"])
        print(f"  largest relative difference beyond one unit of the last digit: {worst['relative_beyond_one_unit']:.2%} "
              f"({worst['stored']} -> {worst['fresh']}: {worst['line']!r})")
        print(f"  largest difference in units of the last digit: {max(d['units'] for d in above_noise):.1f} "
              f"(differences under the absolute floor {outputs.ABSOLUTE:g} left out: {len(every) - len(above_noise)})")
    print(f"  cells that fail under the tolerance: {len(failing)} {failing}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
