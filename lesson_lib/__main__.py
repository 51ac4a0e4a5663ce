"""``python -m lesson_lib COMMAND ...``: see :mod:`lesson_lib.course.cli`."""

import sys

from .course.cli import main

if __name__ == "__main__":
    sys.exit(main())
