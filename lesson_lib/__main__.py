"""Command line: ``python -m lesson_lib COMMAND ...``.

Commands:
  student SRC [--out DIR]     write student versions of notebooks (solutions removed)
  run-notebooks NOTEBOOK...   execute notebooks top to bottom in place, storing outputs
  train METHOD [options]      train a model (methods: monodepth); --help lists the options
  evaluate WEIGHTS [options]  depth metrics of a trained model on the synthetic test split
  predict IMAGE... [options]  coloured disparity PNG and raw .npy for each image
  export-weights CKPT OUT     a small weights file from a training checkpoint
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(__doc__)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "student":
        from .student import main as student_main

        return student_main(rest)
    if command == "run-notebooks":
        from .notebooks import main as run_main

        return run_main(rest)
    if command in ("train", "evaluate", "predict", "export-weights"):
        from . import cli

        fn = {"train": cli.main_train, "evaluate": cli.main_evaluate, "predict": cli.main_predict,
              "export-weights": cli.main_export}[command]
        return fn(rest)
    print(f"error: unknown command {command!r}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
