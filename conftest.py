"""Test-session set-up shared by the unit tests and the notebook runs (nbval)."""

import matplotlib

matplotlib.use("Agg")  # the test process itself never opens windows

# Build matplotlib's font cache once, here, so a fresh install does not print
# "Matplotlib is building the font cache" into the first notebook's stored outputs.
import matplotlib.font_manager  # noqa: E402,F401


def pytest_configure(config):
    """Notebook outputs: printed numbers compared within a tolerance (lesson_lib.course.outputs)."""
    if config.pluginmanager.hasplugin("nbval"):
        from lesson_lib.course.outputs import use_with_nbval

        use_with_nbval()
