"""What a normal (non-editable) install needs: the cache folder chosen without looking at where
the package is installed, and every run-time file of ``lesson_lib`` declared as package data.

(``.ci/run`` installs the project into a second, fresh environment and runs ``predict`` and
``evaluate`` from outside the checkout; these tests are the fast part of that promise.)
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest

from lesson_lib import weights
from lesson_lib.data import synthetic
from lesson_lib.data.synthetic import default_cache_dir

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lesson_lib"


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fake home folder, and none of the variables that choose the cache folder."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("USERPROFILE", str(home))
    for name in ("LESSON_LIB_CACHE", "XDG_CACHE_HOME", "LOCALAPPDATA"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.mark.parametrize("platform", ["linux", "darwin", "win32", "freebsd14"])
def test_lesson_lib_cache_wins_everywhere(platform, home, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    monkeypatch.setenv("LESSON_LIB_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"


def test_lesson_lib_cache_expands_the_home_folder(home, monkeypatch):
    monkeypatch.setenv("LESSON_LIB_CACHE", "~/worlds")
    assert default_cache_dir() == home / "worlds"


def test_empty_lesson_lib_cache_counts_as_unset(home, monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("LESSON_LIB_CACHE", "")
    assert default_cache_dir() == home / ".cache" / "lesson_lib"


@pytest.mark.parametrize("platform", ["linux", "freebsd14"])
def test_unix_uses_xdg_cache_home_or_dot_cache(platform, home, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "platform", platform)
    assert default_cache_dir() == home / ".cache" / "lesson_lib"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "lesson_lib"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # not absolute: ignored (XDG spec)
    assert default_cache_dir() == home / ".cache" / "lesson_lib"


def test_macos_uses_library_caches(home, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # not a macOS convention
    assert default_cache_dir() == home / "Library" / "Caches" / "lesson_lib"


def test_windows_uses_localappdata(home, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    assert default_cache_dir() == tmp_path / "local" / "lesson_lib" / "Cache"
    monkeypatch.delenv("LOCALAPPDATA")
    assert default_cache_dir() == home / "AppData" / "Local" / "lesson_lib" / "Cache"


def test_cache_folder_does_not_depend_on_the_install_location(home, tmp_path, monkeypatch):
    """The old rule looked for ``data/`` next to the installed package: a checkout's data/cache,
    but in a normal install a ``data`` folder of site-packages (or none)."""
    monkeypatch.setattr(sys, "platform", "linux")
    fake_install = tmp_path / "site-packages" / "lesson_lib" / "data"
    fake_install.mkdir(parents=True)
    (tmp_path / "site-packages" / "data").mkdir()
    monkeypatch.setattr(synthetic, "__file__", str(fake_install / "synthetic.py"))
    assert default_cache_dir() == home / ".cache" / "lesson_lib"


def test_load_sequence_writes_to_the_default_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("LESSON_LIB_CACHE", str(tmp_path / "cache"))
    camera, motion = synthetic.split_configs("test")[1:]
    from dataclasses import replace

    seq = synthetic.load_sequence(20000, 1, replace(camera, height=16, width=32), motion, progress=False)
    assert seq.left.shape[0] == 1
    assert [p.name.startswith("world-") for p in (tmp_path / "cache").iterdir()] == [True]


# --- package data -----------------------------------------------------------------------------


def _package_data() -> dict[str, list[str]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return config["tool"]["setuptools"]["package-data"]


def test_setuptools_is_new_enough_for_the_licence_fields():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    # 'license = "MIT"' (an SPDX expression) and 'license-files' need setuptools 77 (PEP 639)
    assert "setuptools>=77" in config["build-system"]["requires"]
    assert isinstance(config["project"]["license"], str)


def test_every_non_python_file_of_the_package_is_package_data():
    """A file that only the checkout has would be missing after ``pip install .``."""
    from fnmatch import fnmatch

    patterns = _package_data()
    missing = []
    for path in sorted(PACKAGE.rglob("*")):
        if not path.is_file() or path.suffix in {".py", ".pyc"} or "__pycache__" in path.parts:
            continue
        rel = path.relative_to(PACKAGE)
        package = ".".join(("lesson_lib", *rel.parent.parts))
        if not any(fnmatch(rel.name, pattern) for pattern in patterns.get(package, [])):
            missing.append(str(rel))
    assert not missing, f"not declared in [tool.setuptools.package-data]: {missing}"


def test_shipped_weights_are_found_through_the_package():
    assert weights.DEFAULT in weights.available()
    assert {"monodepth_lr.pt", "monodepth_no_lr.pt", "monodepth_naive.pt"} <= set(weights.available())
    assert weights.path().is_file() and weights.path().parent == PACKAGE / "weights"
    with pytest.raises(FileNotFoundError, match="available: .*monodepth_lr.pt"):
        weights.path("nope.pt")
