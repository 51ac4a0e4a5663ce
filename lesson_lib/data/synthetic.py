"""Rendered sequences of the synthetic world, their on-disk cache, and torch datasets
(appendix A1; used by chapters 06, 07, 09 and 10).

A *sequence* is one drive through one world: per frame the left and right images, the z-depth
of both views, the left camera's pose, the object id of every left pixel (to derive the
moving-object mask and the optical flow), and the intrinsics. Flow is derived from depth, pose
and object motion when asked for, so the cache stores only what cannot be recomputed.

Splits are disjoint by seed: ``train`` uses seeds 0, 1, ...; ``val`` 10000, ...; ``test``
20000, ...; ``test_shifted`` 30000, ... with another camera (focal length, height above the
road) and another driving style (faster, more turns), for the generalisation test of chapter 09.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..camera import backproject, pixel_grid, project_points
from ..pose import compose_poses, invert_pose, transform_points
from .world import RENDERER_VERSION, CameraConfig, MotionConfig, Renderer, StreetConfig, build_world

SPLIT_OFFSETS = {"train": 0, "val": 10_000, "test": 20_000, "test_shifted": 30_000}
SHIFTED_CAMERA = CameraConfig(fx_ratio=0.5, fy_ratio=1.65, camera_height=1.35, baseline=0.54)
SHIFTED_MOTION = MotionConfig(min_speed=6.0, max_speed=15.0, turn_probability=0.6, stop_probability=0.05, turn_speed=6.5)


@dataclass
class WorldSequence:
    """One rendered drive of the synthetic world (``F`` frames, images ``H x W``).

    Attributes:
        left, right: ``(F, 3, H, W)`` uint8 images.
        depth_left, depth_right: ``(F, H, W)`` float32 z-depth in metres, 0 = sky (no depth).
        obj: ``(F, H, W)`` int32 object id of each left pixel (-1 sky, 0 ground).
        obj_velocity: ``(n_objects, 3)`` float32 world velocity of each object id (m/s).
        poses: ``(F, 4, 4)`` float64 left camera-to-world poses.
        K: ``(3, 3)`` float64 intrinsics (both cameras); baseline in metres.
        times: ``(F,)`` seconds; moved: ``(F,)`` bool, the camera moved more than 1 cm since
            the previous frame (frame 0: towards frame 1).
        meta: the parameters it was rendered with.
    """

    left: np.ndarray
    right: np.ndarray
    depth_left: np.ndarray
    depth_right: np.ndarray
    obj: np.ndarray
    obj_velocity: np.ndarray
    poses: np.ndarray
    K: np.ndarray
    baseline: float
    times: np.ndarray
    moved: np.ndarray
    meta: dict

    def __len__(self) -> int:
        return self.left.shape[0]

    def moving_mask(self, frame: int) -> np.ndarray:
        """``(H, W)`` bool: left pixels on moving objects at ``frame``."""
        ids = self.obj[frame]
        speed = np.linalg.norm(self.obj_velocity, axis=1) > 0
        return np.where(ids > 0, speed[np.clip(ids, 0, None)], False)

    def T_t_to_s(self, target: int, source: int) -> np.ndarray:
        """``(4, 4)`` pose mapping points from the target camera's frame into the source's."""
        poses = torch.from_numpy(np.asarray(self.poses, dtype=np.float64)[[source, target]])
        return compose_poses(poses[1:], invert_pose(poses[:1]))[0].numpy()  # inv(T_s) @ T_t

    def flow(self, frame: int, occlusion_tolerance: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
        """Forward optical flow ``(2, H, W)`` from ``frame`` to ``frame + 1`` and its validity
        ``(H, W)``: each visible point moves with its object for one frame interval, is
        projected into the next camera, and is valid when it lands inside the image in front of
        the camera and is not hidden there (its depth agrees with the next frame's depth within
        ``occlusion_tolerance`` relative, plus 5 cm)."""
        if not 0 <= frame < len(self) - 1:
            raise ValueError(f"flow needs a next frame: frame must be in [0, {len(self) - 2}], got {frame}")
        return self.flow_to(frame, frame + 1, occlusion_tolerance)

    def flow_to(self, frame: int, other: int, occlusion_tolerance: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
        """Optical flow ``(2, H, W)`` from ``frame`` to any ``other`` frame and its validity
        ``(H, W)``, as :meth:`flow` (objects keep their velocity over ``times[other] -
        times[frame]``, backwards too). ``valid`` is False where a pixel has no depth (sky),
        leaves the other view or is hidden there: with the moving-object mask, the pixels no
        rigid warp can explain (chapter 07 scores the explainability mask against them)."""
        n = len(self)
        if not (0 <= frame < n and 0 <= other < n) or frame == other:
            raise ValueError(f"frame and other must be two different frames in [0, {n - 1}], got {frame} and {other}")
        return flow_from_depth(
            self.depth_left[frame], self.obj_velocity[np.clip(self.obj[frame], 0, None)] * (self.obj[frame] > 0)[..., None],
            self.poses[frame], self.poses[other], self.K, float(self.times[other] - self.times[frame]),
            self.depth_left[other], occlusion_tolerance,
        )


def flow_from_depth(depth_t, velocity_t, T_cw_t, T_cw_t1, K, dt, depth_t1, occlusion_tolerance=0.03):
    """Optical flow from depth, the two camera poses and per-pixel world velocities.

    Args:
        depth_t: ``(H, W)`` z-depth at t (0 = none); velocity_t: ``(H, W, 3)`` m/s;
        T_cw_t, T_cw_t1: camera-to-world poses; K: ``(3, 3)``; dt: seconds;
        depth_t1: ``(H, W)`` depth at t+1, for the occlusion test.

    Returns:
        ``flow (2, H, W)`` float32 (0 where invalid) and ``valid (H, W)`` bool.
    """
    # chapter 02's pieces, in float64: back-project, move with the object, change frames, project
    H, W = depth_t.shape
    f64 = torch.float64
    D = torch.from_numpy(np.asarray(depth_t, np.float64))[None, None]
    Kt = torch.from_numpy(np.asarray(K, np.float64))[None]
    P_cam = backproject(D, Kt).reshape(1, 3, H * W)
    P_world = transform_points(torch.from_numpy(np.asarray(T_cw_t, np.float64))[None], P_cam)
    P_world = P_world + torch.from_numpy(np.asarray(velocity_t, np.float64)).reshape(-1, 3).T[None] * dt
    T_wc1 = invert_pose(torch.from_numpy(np.asarray(T_cw_t1, np.float64))[None])
    P1 = transform_points(T_wc1, P_world)
    uv_t, in_front = project_points(P1, Kt, eps=0.1)
    uv, z = uv_t[0].numpy(), P1[0, 2].numpy()
    inside = (uv[0] >= 0) & (uv[0] <= W - 1) & (uv[1] >= 0) & (uv[1] <= H - 1) & in_front[0, 0].numpy()
    ui = np.clip(np.rint(uv[0]), 0, W - 1).astype(np.int64)
    vi = np.clip(np.rint(uv[1]), 0, H - 1).astype(np.int64)
    d_next = depth_t1[vi, ui].astype(np.float64)
    visible = (d_next > 0) & (np.abs(d_next - z) < occlusion_tolerance * z + 0.05)
    valid = (inside & visible & (depth_t.ravel() > 0)).reshape(H, W)
    flow = (uv - pixel_grid(H, W, f64)[:2].reshape(2, -1).numpy()).reshape(2, H, W)
    return np.where(valid[None], flow, 0.0).astype(np.float32), valid


def _to_uint8(img: torch.Tensor) -> np.ndarray:
    return (img.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()


def render_sequence(
    seed: int,
    n_frames: int,
    camera: CameraConfig = CameraConfig(),
    motion: MotionConfig = MotionConfig(),
    streets: StreetConfig = StreetConfig(),
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> WorldSequence:
    """Build the world of ``seed`` and render ``n_frames`` frames of its drive (deterministic)."""
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    world = build_world(seed, n_frames, streets, motion)
    renderer = Renderer(world, device)
    K = camera.K
    H, W = camera.height, camera.width
    F = n_frames
    out = {
        "left": np.zeros((F, 3, H, W), np.uint8), "right": np.zeros((F, 3, H, W), np.uint8),
        "depth_left": np.zeros((F, H, W), np.float32), "depth_right": np.zeros((F, H, W), np.float32),
        "obj": np.zeros((F, H, W), np.int32), "poses": np.zeros((F, 4, 4), np.float64),
    }
    frames = range(F)
    if progress:
        from tqdm.auto import tqdm

        frames = tqdm(frames, desc=f"rendering world {seed}", leave=False)
    with torch.no_grad():
        for f in frames:
            t = float(world.route[f, 3])
            T_l = renderer.camera_pose(f, camera_height=camera.camera_height)
            T_r = renderer.camera_pose(f, right=True, baseline=camera.baseline, camera_height=camera.camera_height)
            vl = renderer.render(T_l, K, H, W, t)
            vr = renderer.render(T_r, K, H, W, t)
            out["left"][f], out["right"][f] = _to_uint8(vl.image), _to_uint8(vr.image)
            out["depth_left"][f], out["depth_right"][f] = vl.depth.cpu().numpy(), vr.depth.cpu().numpy()
            out["obj"][f] = vl.obj.cpu().numpy()
            out["poses"][f] = T_l
    n_obj = int(world.boxes.obj.max(initial=0)) + 1
    obj_velocity = np.zeros((n_obj, 3), np.float32)
    obj_velocity[world.boxes.obj] = world.boxes.vel
    centres = out["poses"][:, :3, 3]
    step = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    moved = np.concatenate([[step[0] > 0.01 if F > 1 else False], step > 0.01])
    meta = {"seed": seed, "n_frames": n_frames, "camera": asdict(camera), "motion": asdict(motion),
            "streets": asdict(streets), "renderer": RENDERER_VERSION}
    return WorldSequence(obj_velocity=obj_velocity, K=K, baseline=camera.baseline, times=world.route[:, 3].copy(),
                    moved=moved, meta=meta, **out)


# ---------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------

_ARRAYS = ("left", "right", "depth_left", "depth_right", "obj", "obj_velocity", "poses", "K", "times", "moved")


def default_cache_dir() -> Path:
    """The folder where :func:`load_sequence` caches rendered sequences.

    ``$LESSON_LIB_CACHE`` if it is set; else the user's cache folder of the platform:

    - Linux and other Unix systems: ``$XDG_CACHE_HOME/lesson_lib``, or ``~/.cache/lesson_lib``
      when ``XDG_CACHE_HOME`` is unset or not an absolute path (the XDG rule);
    - macOS: ``~/Library/Caches/lesson_lib``;
    - Windows: ``%LOCALAPPDATA%\\lesson_lib\\Cache``.

    The folder never depends on where the package is installed, so a source checkout, an editable
    install and a normal ``pip install`` share it. It is created when the first sequence is
    written. Everything in it can be rendered again: deleting it is always safe.
    """
    env = os.environ.get("LESSON_LIB_CACHE")
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA")
        return (Path(local) if local else Path.home() / "AppData" / "Local") / "lesson_lib" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "lesson_lib"
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "lesson_lib"
    return Path.home() / ".cache" / "lesson_lib"


def cache_key(meta: dict) -> str:
    """A hash of everything the rendering depends on (parameters and renderer version)."""
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:20]


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in _ARRAYS:
        a = np.ascontiguousarray(arrays[k])
        h.update(k.encode())
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_sequence(seq: WorldSequence, path: Path) -> None:
    """Write atomically (a temporary file renamed into place) with a checksum of the arrays."""
    arrays = {k: getattr(seq, k) for k in _ARRAYS}
    meta = dict(seq.meta, baseline=seq.baseline, digest=_digest(arrays))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, meta=np.array(json.dumps(meta)), **arrays)
    os.replace(tmp, path)


def load_sequence_file(path: Path, expected_meta: dict | None = None) -> WorldSequence:
    """Read a cached sequence and verify it.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: unreadable, incomplete, rendered with other parameters or another renderer
            version, or its arrays do not match their checksum (the message says which).
    """
    if not path.is_file():
        raise FileNotFoundError(f"no cached sequence at {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("meta", *_ARRAYS) if k not in z.files]
            if not missing:
                meta = json.loads(str(z["meta"]))
                arrays = {k: z[k] for k in _ARRAYS}
    except Exception as exc:  # damaged bytes fail in zipfile, zlib, numpy's header parser or json
        raise ValueError(f"{path}: not a readable cached sequence ({exc})") from exc
    if missing:
        raise ValueError(f"{path}: cached sequence lacks {missing}")
    if expected_meta is not None:
        expected_meta = json.loads(json.dumps(expected_meta))  # as stored: tuples become lists
        stale = {k: (meta.get(k), v) for k, v in expected_meta.items() if meta.get(k) != v}
        if stale:
            raise ValueError(f"{path}: rendered with other parameters: {sorted(stale)}")
    if _digest(arrays) != meta.get("digest"):
        raise ValueError(f"{path}: arrays do not match their checksum (corrupt file)")
    baseline = float(meta.pop("baseline"))
    meta.pop("digest")
    return WorldSequence(baseline=baseline, meta=meta, **arrays)


def load_sequence(
    seed: int,
    n_frames: int,
    camera: CameraConfig = CameraConfig(),
    motion: MotionConfig = MotionConfig(),
    streets: StreetConfig = StreetConfig(),
    cache_dir: Path | str | None = None,
    use_cache: bool = True,
    progress: bool = True,
) -> WorldSequence:
    """The sequence for these parameters: from the cache if a valid entry exists, else rendered
    (and cached). A corrupt or stale entry is reported with a warning and rendered again."""
    meta = {"seed": seed, "n_frames": n_frames, "camera": asdict(camera), "motion": asdict(motion),
            "streets": asdict(streets), "renderer": RENDERER_VERSION}
    path = Path(cache_dir or default_cache_dir()) / f"world-{cache_key(meta)}.npz"
    if use_cache and path.exists():
        try:
            return load_sequence_file(path, meta)
        except ValueError as exc:
            warnings.warn(f"re-rendering: {exc}", RuntimeWarning, stacklevel=2)
    seq = render_sequence(seed, n_frames, camera, motion, streets, progress=progress)
    if use_cache:
        save_sequence(seq, path)
    return seq


def split_configs(split: str) -> tuple[int, CameraConfig, MotionConfig]:
    """Seed offset, camera and motion of a split."""
    if split not in SPLIT_OFFSETS:
        raise ValueError(f"split must be one of {sorted(SPLIT_OFFSETS)}, got {split!r}")
    if split == "test_shifted":
        return SPLIT_OFFSETS[split], SHIFTED_CAMERA, SHIFTED_MOTION
    return SPLIT_OFFSETS[split], CameraConfig(), MotionConfig()


def load_split(split: str, n_sequences: int, frames_per_sequence: int, height: int | None = None,
               width: int | None = None, **kwargs) -> list[WorldSequence]:
    """``n_sequences`` sequences of a split (seeds ``offset + 0 .. n - 1``), optionally at
    another resolution (intrinsics scale with it: ``fx = fx_ratio * W``...)."""
    offset, camera, motion = split_configs(split)
    if height is not None or width is not None:
        camera = replace(camera, height=height or camera.height, width=width or camera.width)
    return [load_sequence(offset + i, frames_per_sequence, camera, motion, **kwargs) for i in range(n_sequences)]


# ---------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------


def _img(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).float() / 255.0


class ColorJitter:
    """Brightness, contrast, saturation and hue-free gamma jitter with an explicit generator,
    applied identically to every image of one sample (so views stay photometrically
    consistent)."""

    def __init__(self, brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2, gamma: float = 0.2):
        self.b, self.c, self.s, self.g = brightness, contrast, saturation, gamma

    def params(self, gen: torch.Generator) -> torch.Tensor:
        u = torch.rand(4, generator=gen) * 2 - 1
        return torch.stack([1 + self.b * u[0], 1 + self.c * u[1], 1 + self.s * u[2], 1 + self.g * u[3]])

    @staticmethod
    def apply(img: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        out = img * p[0]
        mean = out.mean()
        out = (out - mean) * p[1] + mean
        grey = out.mean(0, keepdim=True)
        out = (out - grey) * p[2] + grey
        return out.clamp(0, 1) ** p[3]


class StereoDataset(Dataset):
    """Stereo pairs of the synthetic world (chapter 06).

    Items: ``{"left", "right": (3, H, W) float in [0, 1]; "K": (3, 3); "baseline": () metres;
    "depth": (1, H, W) left z-depth in metres, 0 = sky; "moving": (1, H, W) bool;
    "flipped": () bool}``.

    Augmentation (``augment=True``, for training): with probability 0.5 the pair is mirrored
    and swapped: the new left image is the mirrored right one and vice versa, so the rig is
    again "left camera on the left" and ``x - d`` still holds; its depth is the mirrored right
    depth, and ``cx`` becomes ``W - 1 - cx``. Colour jitter is applied to both images alike.
    Random choices come from ``seed`` and the item index, so epochs are reproducible.
    """

    def __init__(self, sequences: list[WorldSequence], augment: bool = False, seed: int = 0, colour: ColorJitter | None = None):
        if not sequences:
            raise ValueError("StereoDataset needs at least one sequence")
        self.sequences = sequences
        self.index = [(i, f) for i, s in enumerate(sequences) for f in range(len(s))]
        self.augment, self.seed = augment, seed
        self.colour = colour or ColorJitter()
        self.epoch = 0

    @classmethod
    def from_split(cls, split: str, n_sequences: int, frames_per_sequence: int, augment: bool | None = None, **kwargs) -> StereoDataset:
        height, width = kwargs.pop("height", None), kwargs.pop("width", None)
        seqs = load_split(split, n_sequences, frames_per_sequence, height=height, width=width, **kwargs)
        return cls(seqs, augment=(split == "train") if augment is None else augment)

    def __len__(self) -> int:
        return len(self.index)

    def set_epoch(self, epoch: int) -> None:
        """Draw the augmentation of epoch ``epoch`` (the trainer calls it before each epoch)."""
        self.epoch = int(epoch)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s, f = self.index[i]
        seq = self.sequences[s]
        left, right = _img(seq.left[f]), _img(seq.right[f])
        depth = torch.from_numpy(seq.depth_left[f])[None]
        moving = torch.from_numpy(seq.moving_mask(f))[None]
        K = torch.from_numpy(seq.K).float()
        flipped = False
        if self.augment:
            gen = torch.Generator().manual_seed(hash((self.seed, self.epoch, i)) & 0x7FFFFFFF)
            if torch.rand((), generator=gen) < 0.5:
                flipped = True
                left, right = right.flip(-1), left.flip(-1)
                depth = torch.from_numpy(seq.depth_right[f])[None].flip(-1)
                moving = torch.zeros_like(moving)  # not tracked for the right view
                K = K.clone()
                K[0, 2] = left.shape[-1] - 1 - K[0, 2]
            p = self.colour.params(gen)
            left, right = ColorJitter.apply(left, p), ColorJitter.apply(right, p)
        return {"left": left, "right": right, "K": K, "baseline": torch.tensor(seq.baseline, dtype=torch.float32),
                "depth": depth, "moving": moving, "flipped": torch.tensor(flipped)}


class VideoDataset(Dataset):
    """Monocular snippets of the synthetic world (chapters 07, 09), target in the middle.

    Items: ``{"target": (3, H, W); "sources": (S, 3, H, W) in frame order without the target;
    "K": (3, 3); "T_t_to_s": (S, 4, 4) ground-truth poses mapping target-frame points into each
    source frame; "depth": (1, H, W) target z-depth (0 = sky); "moving": (1, H, W) bool;
    "flow": (2, H, W) flow from the target to the frame ``flow_offset`` later (1: the next frame)
    and "flow_valid": (1, H, W); "has_pose": True
    (as in :class:`~lesson_lib.data.KittiVideo`)}``.

    Snippets in which the camera does not move between consecutive frames are left out (as
    SfMLearner's data preparation does): with no motion there is no parallax to learn from.
    With ``flow=False`` the items carry zero flow and no valid pixel (training needs no flow).
    With ``visibility=True`` they also carry ``"unexplainable": (S, 1, H, W)`` bool, the target
    pixels that no rigid warp from each source can rebuild (on a moving object, hidden in the
    source or outside its view; :meth:`WorldSequence.flow_to`), and ``"scored": (1, H, W)``, the
    pixels with a depth (not sky) where that truth is defined (chapter 07 scores the
    explainability mask against it).
    """

    def __init__(self, sequences: list[WorldSequence], snippet_length: int = 3, augment: bool = False, seed: int = 0,
                 skip_static: bool = True, colour: ColorJitter | None = None, flow: bool = True,
                 visibility: bool = False, flow_offset: int = 1):
        if snippet_length not in (3, 5):
            raise ValueError(f"snippet_length must be 3 or 5, got {snippet_length}")
        if not 1 <= flow_offset <= snippet_length // 2:
            raise ValueError(f"flow_offset must be between 1 and {snippet_length // 2} for {snippet_length}-frame "
                             f"snippets, got {flow_offset}")
        if not sequences:
            raise ValueError("VideoDataset needs at least one sequence")
        self.sequences, self.length = sequences, snippet_length
        half = snippet_length // 2
        self.index = []
        for i, seq in enumerate(sequences):
            for c in range(half, len(seq) - half):
                frames = list(range(c - half, c + half + 1))
                if skip_static and not all(seq.moved[f] for f in frames[1:]):
                    continue
                self.index.append((i, c))
        self.augment, self.seed, self.with_flow, self.with_visibility = augment, seed, flow, visibility
        self.flow_offset = flow_offset
        self.colour = colour or ColorJitter()
        self.epoch = 0

    @classmethod
    def from_split(cls, split: str, n_sequences: int, frames_per_sequence: int, snippet_length: int = 3,
                   augment: bool | None = None, **kwargs) -> VideoDataset:
        height, width = kwargs.pop("height", None), kwargs.pop("width", None)
        seqs = load_split(split, n_sequences, frames_per_sequence, height=height, width=width, **kwargs)
        return cls(seqs, snippet_length, augment=(split == "train") if augment is None else augment)

    def __len__(self) -> int:
        return len(self.index)

    def set_epoch(self, epoch: int) -> None:
        """Draw the augmentation of epoch ``epoch`` (the trainer calls it before each epoch)."""
        self.epoch = int(epoch)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s, c = self.index[i]
        seq = self.sequences[s]
        half = self.length // 2
        src = [f for f in range(c - half, c + half + 1) if f != c]
        target = _img(seq.left[c])
        sources = torch.stack([_img(seq.left[f]) for f in src])
        if self.augment:
            gen = torch.Generator().manual_seed(hash((self.seed, self.epoch, i)) & 0x7FFFFFFF)
            p = self.colour.params(gen)
            target = ColorJitter.apply(target, p)
            sources = torch.stack([ColorJitter.apply(x, p) for x in sources])
        if self.with_flow and c + self.flow_offset < len(seq):
            flow, valid = seq.flow_to(c, c + self.flow_offset)
        else:  # no next frame, or not asked for (training needs no flow: computing it costs time)
            flow, valid = np.zeros((2, *seq.depth_left.shape[1:]), np.float32), np.zeros(seq.depth_left.shape[1:], bool)
        item = {
            "target": target,
            "sources": sources,
            "K": torch.from_numpy(seq.K).float(),
            "T_t_to_s": torch.from_numpy(np.stack([seq.T_t_to_s(c, f) for f in src])).float(),
            "depth": torch.from_numpy(seq.depth_left[c])[None],
            "moving": torch.from_numpy(seq.moving_mask(c))[None],
            "flow": torch.from_numpy(flow),
            "flow_valid": torch.from_numpy(valid)[None],
            "has_pose": torch.tensor(True),
        }
        if self.with_visibility:
            # per source: the target pixels no rigid warp from that source can explain
            hidden = np.stack([~seq.flow_to(c, f)[1] for f in src])[:, None]
            item["unexplainable"] = torch.from_numpy(hidden | seq.moving_mask(c)[None, None])
            item["scored"] = torch.from_numpy(seq.depth_left[c] > 0)[None]
        return item
