"""The synthetic world's splits as a method trains and is evaluated on them.

:class:`SyntheticData` holds the options of the training data (how many worlds and frames, the
image size), :func:`load_worlds` renders a split's worlds (or reads them from the cache) with
progress on stderr, and :func:`synthetic_datasets` turns them into the datasets of a kind of
method: stereo pairs (:class:`~lesson_lib.data.StereoDataset`) or video snippets
(:class:`~lesson_lib.data.VideoDataset`). A method names its kind (``Method.data_kind``) and its
options (``Method.data_options``); :meth:`lesson_lib.training.Method.build_datasets` calls
:func:`synthetic_datasets` with them.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from .config import option

__all__ = ["DATA_KINDS", "SyntheticData", "load_worlds", "synthetic_datasets", "datasets_from_worlds"]

DATA_KINDS = ("stereo", "video")
"""The kinds of training data: ``stereo`` (rectified pairs, Monodepth) and ``video`` (snippets of
consecutive frames, the monocular methods)."""


@dataclass
class SyntheticData:
    """Which worlds of the synthetic world (appendix A1) to train and validate on: their stereo
    pairs for stereo methods, their video snippets for video methods."""

    train_sequences: int = option(200, "training worlds (seeds 0..N-1 of the train split)")
    train_frames: int = option(10, "frames rendered per training world")
    val_sequences: int = option(8, "validation worlds (seeds 10000..)")
    val_frames: int = option(5, "frames per validation world")
    image_height: int = option(128, "rendered image height")
    image_width: int = option(416, "rendered image width")

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value < (0 if name.startswith("val_") else 1):
                raise ValueError(f"--{name.replace('_', '-')} must be >= {0 if name.startswith('val_') else 1}, got {value}")

    @property
    def size(self) -> dict[str, int]:
        return {"height": self.image_height, "width": self.image_width}


def load_worlds(split: str, sequences: int, frames: int, size: dict[str, int] | None = None, what: str = "") -> list:
    """The first ``sequences`` worlds of ``split`` (``train``, ``val``, ``test``, ...), ``frames``
    frames each, rendered or read from the cache, with overall progress on stderr (rendering 200
    worlds takes minutes the first time; the cache makes later runs fast). ``size``: the camera's
    ``height``/``width`` (default: the split's)."""
    from tqdm.auto import tqdm

    from ..data.synthetic import load_sequence, split_configs

    what = what or f"{split} split"
    offset, camera, motion = split_configs(split)
    if size:
        camera = replace(camera, **size)
    print(f"{what}: {sequences} worlds x {frames} frames of the {split} split (rendered once, then cached)",
          file=sys.stderr, flush=True)
    if sys.stderr.isatty():
        return [load_sequence(offset + i, frames, camera, motion, progress=False)
                for i in tqdm(range(sequences), desc=what, unit="world", file=sys.stderr)]
    seqs, t0, every = [], time.perf_counter(), max(1, sequences // 10)
    for i in range(sequences):  # a log file or a pipe: a line every tenth of the way
        seqs.append(load_sequence(offset + i, frames, camera, motion, progress=False))
        if (i + 1) % every == 0 or i + 1 == sequences:
            print(f"{what}: {i + 1}/{sequences} worlds ready ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    return seqs


def synthetic_datasets(kind: str, data: SyntheticData, seed: int, **options: Any) -> tuple[Any, Any]:
    """``(train, val)`` datasets of ``kind`` (:data:`DATA_KINDS`) from the worlds ``data``
    describes, rendered or read from the cache (:func:`datasets_from_worlds` with ``options``);
    ``val`` is None without validation worlds."""
    if kind not in DATA_KINDS:
        raise ValueError(f"data kind must be one of {DATA_KINDS}, got {kind!r}")
    train_worlds = load_worlds("train", data.train_sequences, data.train_frames, data.size, "training data")
    val_worlds = None
    if data.val_sequences and data.val_frames:
        val_worlds = load_worlds("val", data.val_sequences, data.val_frames, data.size, "validation data")
    return datasets_from_worlds(kind, train_worlds, val_worlds, seed, **options)


def datasets_from_worlds(kind: str, train_worlds: list, val_worlds: list | None, seed: int, *, snippet_length: int = 3,
                         val_flow: bool = False, train_flow: bool = False, flow_offset: int = 1) -> tuple[Any, Any]:
    """``(train, val)`` datasets of ``kind`` (:data:`DATA_KINDS`) from rendered worlds; ``val`` is
    None when ``val_worlds`` is empty or None. Training items are augmented (seeded by ``seed``),
    validation items are not. Video options: ``snippet_length`` frames per snippet,
    ``val_flow``/``train_flow`` the world's exact flow in the validation/training items (the
    latter is an experiment that uses ground truth), ``flow_offset`` the frame the flow goes to."""
    from ..data.synthetic import StereoDataset, VideoDataset

    if kind not in DATA_KINDS:
        raise ValueError(f"data kind must be one of {DATA_KINDS}, got {kind!r}")
    if kind == "stereo":
        train = StereoDataset(train_worlds, augment=True, seed=seed)
        val = StereoDataset(val_worlds, augment=False) if val_worlds else None
        return train, val
    train = VideoDataset(train_worlds, snippet_length, augment=True, seed=seed, flow=train_flow, flow_offset=flow_offset)
    val = None
    if val_worlds:
        val = VideoDataset(val_worlds, snippet_length, augment=False, flow=val_flow, flow_offset=flow_offset)
    return train, val
