"""The trained models shipped with the course, installed with the package (no download).

Each ``.pt`` file is a weights file (:func:`lesson_lib.training.export_weights`): the model in
float16 and the method's options; ``README.md`` beside them says how each was trained and how
well it does. :func:`lesson_lib.methods.load_model` loads any of them::

    from lesson_lib import methods, weights
    model, method, meta = methods.load_model(weights.path("monodepth_lr.pt"))

The files are found through :mod:`importlib.resources`, so they work the same from a source
checkout, an editable install and a normal ``pip install``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["DEFAULT", "available", "path"]

DEFAULT = "monodepth_lr.pt"
"""The model ``predict`` uses when no weights are given: Monodepth with left-right consistency."""


def available() -> list[str]:
    """The names of the shipped weights files, sorted."""
    return sorted(p.name for p in resources.files(__name__).iterdir() if p.name.endswith(".pt"))


def path(name: str = DEFAULT) -> Path:
    """The path of the shipped weights file ``name`` (e.g. ``"monodepth_lr.pt"``).

    Raises:
        FileNotFoundError: no such file among the shipped weights (the message lists them).
    """
    entry = resources.files(__name__).joinpath(name)
    if not entry.is_file():
        raise FileNotFoundError(f"no shipped weights file {name!r}; available: {', '.join(available()) or 'none'}")
    return Path(str(entry))
