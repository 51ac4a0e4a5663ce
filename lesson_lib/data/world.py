"""The synthetic driving world: procedural streets rendered by ray casting (appendix A1).

No real monocular video with camera poses and depth can be installed offline, so the course
renders its own small KITTI-like world. Everything comes from a seed, and the ground truth is
exact: z-depth of both stereo views, camera poses, intrinsics, moving-object masks and optical
flow.

**Geometry.** A Manhattan grid of streets: two-lane roads with lane markings, raised sidewalks
with kerbs, façades on both sides (boxes of varied width, height and setback, with gaps),
parked cars, poles and trees, a sky at infinity, and cars that drive in the oncoming lane (they
break the static-scene assumption on purpose). Every object is an axis-aligned box.

**Cameras.** The camera stays level (it only turns about the vertical axis, as a car on a flat
street nearly does). Then every image column is one vertical plane through the camera centre:
the renderer intersects each column's 2-D ray with the boxes' footprints once, and each pixel
only checks the few boxes its column hits. That makes a 128x416 stereo pair with depth and flow
a matter of milliseconds on a CPU.

**Coordinates.** World x east, y down, z north (like a camera looking north); the ground is
``y = 0`` and heights are negative y. A camera with yaw ``psi`` looks along
``(sin psi, 0, cos psi)``; its camera-to-world rotation is ``Ry(psi)`` of chapter 02.

**Anti-aliasing.** Textures are mip-mapped and sampled trilinearly at a level chosen from each
pixel's footprint on the surface, so distant textures are filtered and do not shimmer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..camera import intrinsics_matrix
from . import textures as tx

RENDERER_VERSION = "7"  # bump whenever a seed renders differently: the cache key includes it
PARKING = 2.3  # parking strip between the driving lane and the kerb [m]
HALF_ROAD = 3.5 + PARKING  # street centre to kerb [m]
SKY_DEPTH = 0.0  # depth stored for sky pixels (invalid)
FAR = 400.0  # nothing is rendered beyond this distance [m]
CULL = 250.0  # boxes whose centre is farther than this from the camera are not drawn [m]


@dataclass(frozen=True)
class CameraConfig:
    """A KITTI-like stereo rig by default: ``fx = 0.58 W``, ``fy = 1.92 H``, centred principal
    point, baseline 0.54 m, camera 1.65 m above the road."""

    height: int = 128
    width: int = 416
    fx_ratio: float = 0.58
    fy_ratio: float = 1.92
    baseline: float = 0.54
    camera_height: float = 1.65

    @property
    def K(self) -> np.ndarray:
        """``(3, 3)`` float64 intrinsics (principal point at the image centre, pixel centres at
        integers). As everywhere in :mod:`lesson_lib.data`, ``K`` is a NumPy ``(3, 3)`` array:
        ``torch.from_numpy(camera.K)`` for a tensor."""
        return intrinsics_matrix(
            self.fx_ratio * self.width, self.fy_ratio * self.height, (self.width - 1) / 2, (self.height - 1) / 2,
            dtype=torch.float64,
        ).numpy()


@dataclass(frozen=True)
class MotionConfig:
    """How the car drives: speeds in m/s, probabilities per intersection or per speed segment."""

    fps: float = 10.0
    min_speed: float = 3.0
    max_speed: float = 11.0
    turn_probability: float = 0.35
    stop_probability: float = 0.12
    turn_speed: float = 5.0
    acceleration: float = 2.5


@dataclass(frozen=True)
class StreetConfig:
    """The street grid: block pitch (street centre to street centre), sidewalk width, building
    sizes, densities of parked cars, poles, trees and moving cars."""

    block: tuple[float, float] = (70.0, 100.0)
    sidewalk: float = 3.0
    building_width: tuple[float, float] = (7.0, 22.0)
    building_height: tuple[float, float] = (6.0, 24.0)
    building_depth: tuple[float, float] = (8.0, 14.0)
    setback: tuple[float, float] = (0.0, 2.5)
    gap_probability: float = 0.22
    parked_car_probability: float = 0.45
    pole_spacing: float = 18.0
    tree_probability: float = 0.5
    moving_cars_per_100m: float = 2.5


@dataclass
class Boxes:
    """Axis-aligned boxes: ``lo``/``hi`` corners ``(M, 3)`` (y down, so ``lo[:, 1]`` is the
    top), materials of the vertical faces and of the top/bottom faces, a colour tint, an object
    id (boxes of one object share it; 0 is the ground) and a velocity ``(M, 3)`` in m/s."""

    lo: np.ndarray
    hi: np.ndarray
    side: np.ndarray
    top: np.ndarray
    tint: np.ndarray
    obj: np.ndarray
    vel: np.ndarray

    @staticmethod
    def empty() -> Boxes:
        z3 = np.zeros((0, 3))
        zi = np.zeros(0, np.int64)
        return Boxes(z3, z3.copy(), zi, zi.copy(), z3.copy(), zi.copy(), z3.copy())


@dataclass
class World:
    """A generated world: its boxes, street grid and the route the camera drives."""

    seed: int
    streets: StreetConfig
    boxes: Boxes
    pitch: tuple[float, float]
    route: np.ndarray  # (F, 4): x, z, yaw, time, one row per frame
    speeds: np.ndarray  # (F,)


# ---------------------------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------------------------


class _BoxList:
    def __init__(self) -> None:
        self.rows: list[tuple] = []
        self.next_obj = 1

    def add(self, lo, hi, side, top, tint=(1.0, 1.0, 1.0), obj=None, vel=(0.0, 0.0, 0.0)) -> int:
        if obj is None:
            obj = self.next_obj
            self.next_obj += 1
        self.rows.append((tuple(lo), tuple(hi), side, top, tuple(tint), obj, tuple(vel)))
        return obj

    def build(self) -> Boxes:
        if not self.rows:
            return Boxes.empty()
        lo, hi, side, top, tint, obj, vel = zip(*self.rows)
        return Boxes(
            np.array(lo, np.float64), np.array(hi, np.float64), np.array(side, np.int64),
            np.array(top, np.int64), np.array(tint, np.float64), np.array(obj, np.int64), np.array(vel, np.float64),
        )


def _car(boxes: _BoxList, cx: float, cz: float, along_z: bool, tint, vel=(0.0, 0.0, 0.0)) -> None:
    """A car: body and cabin, sharing one object id."""
    length, width = 4.3, 1.8
    hx, hz = (width / 2, length / 2) if along_z else (length / 2, width / 2)
    obj = boxes.add((cx - hx, -1.35, cz - hz), (cx + hx, -0.3, cz + hz), tx.CAR, tx.CAR, tint, vel=vel)
    cx2, cz2 = (hx - 0.1, hz * 0.5) if along_z else (hx * 0.5, hz - 0.1)
    boxes.add((cx - cx2, -1.8, cz - cz2), (cx + cx2, -1.35, cz + cz2), tx.CAR, tx.CAR, tuple(0.6 * np.asarray(tint)), obj=obj, vel=vel)


_CAR_COLOURS = np.array(
    [[0.8, 0.1, 0.1], [0.1, 0.2, 0.7], [0.9, 0.9, 0.9], [0.15, 0.15, 0.15], [0.2, 0.55, 0.3], [0.85, 0.7, 0.2], [0.55, 0.55, 0.6]]
)


def _block_side(boxes: _BoxList, rng: np.random.Generator, cfg: StreetConfig, start: float, end: float,
                edge: float, inward: float, along_z: bool) -> None:
    """Buildings, poles and trees along one side of a block.

    ``edge`` is the coordinate of the kerb line (across the street axis), ``inward`` the sign of
    the direction into the block, ``[start, end]`` the extent along the street.
    """
    def rect(a0, a1, c0, c1, y0, y1, side, top, tint=(1, 1, 1), obj=None):
        c0, c1 = min(c0, c1), max(c0, c1)
        if along_z:
            return boxes.add((c0, y0, a0), (c1, y1, a1), side, top, tint, obj)
        return boxes.add((a0, y0, c0), (a1, y1, c1), side, top, tint, obj)

    # sidewalk slab (kerb height 0.15 m)
    rect(start, end, edge, edge + inward * cfg.sidewalk, -0.15, 0.0, tx.KERB, tx.SIDEWALK)
    # façades
    a = start + rng.uniform(0, 3)
    front = edge + inward * cfg.sidewalk
    while a < end - 4:
        w = min(rng.uniform(*cfg.building_width), end - a)
        if rng.random() > cfg.gap_probability and w > 4:
            setback = rng.uniform(*cfg.setback)
            depth = rng.uniform(*cfg.building_depth)
            h = rng.uniform(*cfg.building_height)
            mat = int(rng.choice(tx.FACADES))
            tint = tuple(np.clip(rng.normal(1.0, 0.08, 3), 0.7, 1.2))
            c0 = front + inward * setback
            rect(a, a + w, c0, c0 + inward * depth, -h, 0.0, mat, tx.KERB, tint)
        a += w + rng.uniform(0.0, 1.5)
    # poles and trees on the sidewalk, near the kerb
    a = start + rng.uniform(2, cfg.pole_spacing)
    while a < end - 2:
        c = edge + inward * 0.6
        if rng.random() < cfg.tree_probability:
            rect(a - 0.15, a + 0.15, c - 0.15, c + 0.15, -2.6, -0.15, tx.POLE, tx.POLE, (0.55, 0.4, 0.3))
            r = rng.uniform(1.0, 1.6)
            obj = boxes.next_obj - 1
            rect(a - r, a + r, c - r * inward * 0.3, c + r * inward * 1.2, -2.6 - 2 * r, -2.6, tx.CANOPY, tx.CANOPY, obj=obj)
        else:
            rect(a - 0.1, a + 0.1, c - 0.1, c + 0.1, -5.5, -0.15, tx.POLE, tx.POLE)
        a += cfg.pole_spacing * rng.uniform(0.7, 1.3)


# ---------------------------------------------------------------------------------------------
# Route
# ---------------------------------------------------------------------------------------------

_HEADINGS = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, -1.0], [-1.0, 0.0]])  # N, E, S, W as (x, z)


def _plan_route(rng: np.random.Generator, speed_rng: np.random.Generator, pitch: tuple[float, float], motion: MotionConfig, n_frames: int):
    """Lane centre polyline through the grid, filleted turns, and a speed profile.

    Returns per-frame ``(x, z, yaw, t)`` and speeds.
    """
    # corners of the lane centre line: drive in the right lane (offset LANE/2 to the right)
    heading = 0  # north
    x_street = 0.0
    dist_needed = motion.max_speed * n_frames / motion.fps + 200.0
    corners = []
    pos = np.array([x_street + tx.LANE / 2, -40.0])
    corners.append(pos.copy())
    travelled = 0.0
    # start 40 m before the first intersection, where the first choice is made
    node = np.array([0.0, -pitch[1]])
    last_turn = False
    while travelled < dist_needed:
        d = _HEADINGS[heading]
        step = pitch[1] if d[1] != 0 else pitch[0]
        node = node + d * step
        r = rng.random()
        new_heading = heading
        if not last_turn and r < motion.turn_probability:
            new_heading = (heading + (1 if rng.random() < 0.5 else -1)) % 4
        last_turn = new_heading != heading
        if new_heading != heading:
            right_old = np.array([d[1], -d[0]])
            d2 = _HEADINGS[new_heading]
            right_new = np.array([d2[1], -d2[0]])
            # intersection of the two lane lines
            corner = node + right_old * tx.LANE / 2 + right_new * tx.LANE / 2
            corners.append(corner)
            travelled += step
            heading = new_heading
        else:
            travelled += step
    d = _HEADINGS[heading]
    right = np.array([d[1], -d[0]])
    corners.append(node + right * tx.LANE / 2 + d * 60.0)
    corners = np.array(corners)

    # filleted polyline sampled densely by arc length
    pts, yaws, on_arc = _fillet(corners, radius=7.0)
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    s_cum = np.concatenate([[0.0], np.cumsum(seg)])

    # speed profile: piecewise targets with bounded acceleration, stops, slow turns
    dt = 1.0 / motion.fps
    speeds, s_frames = [], []
    rng = speed_rng  # speeds draw from their own stream, so the streets do not depend on them
    s, v, target, timer = 0.0, rng.uniform(motion.min_speed, motion.max_speed), 0.0, 0.0
    for _ in range(n_frames):
        if timer <= 0:
            if rng.random() < motion.stop_probability:
                target, timer = 0.0, rng.uniform(1.0, 2.5)
            else:
                target, timer = rng.uniform(motion.min_speed, motion.max_speed), rng.uniform(2.0, 5.0)
        i = min(np.searchsorted(s_cum, s), len(on_arc) - 1)
        # brake in time: look ahead by the braking distance to the turn speed (plus a margin)
        brake = max(v * v - motion.turn_speed**2, 0.0) / (2 * motion.acceleration) + 3.0
        j = min(int(np.searchsorted(s_cum, s + brake)), len(on_arc) - 1)
        cap = motion.turn_speed if on_arc[max(i - 1, 0) : j + 1].any() else motion.max_speed
        goal = min(target, cap)
        v = float(np.clip(goal, v - motion.acceleration * dt, v + motion.acceleration * dt))
        if v < 0.05 and goal == 0.0:
            v = 0.0
        s_frames.append(s)
        speeds.append(v)
        s += v * dt
        timer -= dt
    s_frames = np.array(s_frames)
    x = np.interp(s_frames, s_cum, pts[:, 0])
    z = np.interp(s_frames, s_cum, pts[:, 1])
    yaw = np.interp(s_frames, s_cum, np.unwrap(yaws))
    t = np.arange(n_frames) * dt
    return np.stack([x, z, yaw, t], axis=1), np.array(speeds), corners


def _fillet(corners: np.ndarray, radius: float, step: float = 0.25):
    """Sample a polyline with each corner replaced by a circular arc of ``radius``."""
    pts, yaws, arc = [], [], []

    def heading_of(v):
        return math.atan2(v[0], v[1])  # yaw: 0 = north (+z), pi/2 = east (+x)

    cur = corners[0]
    for i in range(1, len(corners)):
        p, nxt = corners[i], corners[i + 1] if i + 1 < len(corners) else None
        d_in = (p - cur) / np.linalg.norm(p - cur)
        end = p - d_in * radius if nxt is not None else p
        n = max(int(np.linalg.norm(end - cur) / step), 1)
        for k in range(n):
            pts.append(cur + (end - cur) * k / n)
            yaws.append(heading_of(d_in))
            arc.append(False)
        if nxt is None:
            pts.append(end)
            yaws.append(heading_of(d_in))
            arc.append(False)
            break
        d_out = (nxt - p) / np.linalg.norm(nxt - p)
        turn = math.atan2(d_in[0] * d_out[1] - d_in[1] * d_out[0], float(np.dot(d_in, d_out)))  # signed angle
        centre = end + np.array([d_in[1], -d_in[0]]) * radius * (-np.sign(turn))
        a0 = math.atan2(end[1] - centre[1], end[0] - centre[0])
        m = max(int(abs(turn) * radius / step), 2)
        for k in range(m):
            ang = a0 + turn * k / m
            pts.append(centre + radius * np.array([math.cos(ang), math.sin(ang)]))
            yaws.append(heading_of(d_in) - turn * k / m)
            arc.append(True)
        cur = p + d_out * radius
    return np.array(pts), np.array(yaws), np.array(arc)


def build_world(seed: int, n_frames: int, streets: StreetConfig = StreetConfig(), motion: MotionConfig = MotionConfig()) -> World:
    """Generate a world and the route of ``n_frames`` frames from ``seed`` (deterministic).

    Separate random streams for the grid, the route, the speeds, each block and each stretch of
    road make a longer drive through the same seed's world see the same streets: the first
    ``n`` frames of a longer sequence are the frames of a shorter one.
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    rng = np.random.default_rng([seed, 0])
    pitch = (float(rng.uniform(*streets.block)), float(rng.uniform(*streets.block)))
    route, speeds, corners = _plan_route(np.random.default_rng([seed, 1]), np.random.default_rng([seed, 2]), pitch, motion, n_frames)
    boxes = _BoxList()
    R = HALF_ROAD
    # blocks touched by the route (with a margin)
    xs = np.concatenate([corners[:, 0], route[:, 0]])
    zs = np.concatenate([corners[:, 1], route[:, 1]])
    i0, i1 = int(np.floor((xs.min() - 150) / pitch[0])), int(np.ceil((xs.max() + 150) / pitch[0]))
    j0, j1 = int(np.floor((zs.min() - 150) / pitch[1])), int(np.ceil((zs.max() + 150) / pitch[1]))
    for i in range(i0, i1):
        for j in range(j0, j1):
            rng = np.random.default_rng([seed, 3, i + 100_000, j + 100_000])
            x_lo, x_hi = i * pitch[0] + R, (i + 1) * pitch[0] - R
            z_lo, z_hi = j * pitch[1] + R, (j + 1) * pitch[1] - R
            _block_side(boxes, rng, streets, z_lo, z_hi, x_lo, +1, along_z=True)
            _block_side(boxes, rng, streets, z_lo, z_hi, x_hi, -1, along_z=True)
            _block_side(boxes, rng, streets, x_lo + streets.sidewalk, x_hi - streets.sidewalk, z_lo, +1, along_z=False)
            _block_side(boxes, rng, streets, x_lo + streets.sidewalk, x_hi - streets.sidewalk, z_hi, -1, along_z=False)
            # parked cars along the kerbs of the west and south sides (in the road, near the kerb)
            for side_x in (x_lo - 1.15, x_hi + 1.15):
                a = z_lo + rng.uniform(4, 10)
                while a < z_hi - 6:
                    if rng.random() < streets.parked_car_probability:
                        _car(boxes, side_x, a, True, tuple(_CAR_COLOURS[rng.integers(len(_CAR_COLOURS))]))
                    a += rng.uniform(5.5, 9.0)
            for side_z in (z_lo - 1.15, z_hi + 1.15):
                a = x_lo + rng.uniform(4, 10)
                while a < x_hi - 6:
                    if rng.random() < streets.parked_car_probability:
                        _car(boxes, a, side_z, False, tuple(_CAR_COLOURS[rng.integers(len(_CAR_COLOURS))]))
                    a += rng.uniform(5.5, 9.0)
    # moving cars on each straight stretch of the route: oncoming traffic in the other lane, and
    # faster cars ahead in the camera's lane (they pull away, so the camera never reaches them)
    for k in range(len(corners) - 1):
        p, q = corners[k], corners[k + 1]
        length = float(np.linalg.norm(q - p))
        d = (q - p) / max(length, 1e-9)
        left = np.array([-d[1], d[0]])
        along_z = bool(abs(d[1]) > 0.5)
        t_enter = float(route[np.argmin(np.linalg.norm(route[:, :2] - p, axis=1)), 3])
        rng = np.random.default_rng([seed, 4, k])
        for _ in range(rng.poisson(streets.moving_cars_per_100m * (length + 200.0) / 100.0)):
            s_meet = rng.uniform(-50.0, length + 150.0)  # where it would be at t_enter
            speed = rng.uniform(4.0, 12.0)
            start = p + d * s_meet + left * tx.LANE + d * speed * t_enter  # position at time 0
            vel = -d * speed
            colour = tuple(_CAR_COLOURS[rng.integers(len(_CAR_COLOURS))])
            _car(boxes, start[0], start[1], along_z, colour, vel=(vel[0], 0.0, vel[1]))
        if rng.random() < 0.6:
            gap = rng.uniform(15.0, 45.0)
            speed = rng.uniform(motion.max_speed + 1.0, motion.max_speed + 4.0)
            start = p + d * (gap - speed * t_enter)
            vel = d * speed
            colour = tuple(_CAR_COLOURS[rng.integers(len(_CAR_COLOURS))])
            _car(boxes, start[0], start[1], along_z, colour, vel=(vel[0], 0.0, vel[1]))
    built = _drop_collisions(boxes.build(), route)
    return World(seed, streets, built, pitch, route, speeds)


def _drop_collisions(b: Boxes, route: np.ndarray, clearance: float = 1.6) -> Boxes:
    """Remove objects whose footprint comes within ``clearance`` of the camera at any frame
    (moving cars crossing a turning camera's path, a parked car on a corner)."""
    cam = route[:, None, 0:2]  # (F, 1, 2): x, z
    t = route[:, 3][:, None]
    lo = b.lo[None, :, [0, 2]] + b.vel[None, :, [0, 2]] * t[..., None]
    hi = b.hi[None, :, [0, 2]] + b.vel[None, :, [0, 2]] * t[..., None]
    gap = np.maximum(np.maximum(lo - cam, cam - hi), 0.0)
    dist = np.linalg.norm(gap, axis=-1).min(axis=0)  # (M,)
    bad_objects = np.unique(b.obj[(dist < clearance) & (b.obj > 0)])
    # no car right in front of the camera in its own lane (a car crossing the path of a turning
    # camera would fill the whole image)
    yaw = route[:, 2][:, None]
    centre = (lo + hi) / 2 - cam  # (F, M, 2)
    fwd = centre[..., 0] * np.sin(yaw) + centre[..., 1] * np.cos(yaw)
    lat = centre[..., 0] * np.cos(yaw) - centre[..., 1] * np.sin(yaw)
    ahead = ((fwd > 0) & (fwd < 10.0) & (np.abs(lat) < 2.2)).any(axis=0) & (b.side == tx.CAR)
    bad_objects = np.union1d(bad_objects, np.unique(b.obj[ahead & (b.obj > 0)]))
    # moving cars must not drive through one another (their coplanar faces would z-fight, and
    # the flow's depth test could not tell one car from the other): of two cars whose
    # footprints overlap at any frame, the one generated first stays
    mv = np.nonzero((np.abs(b.vel).sum(1) > 0) & ~np.isin(b.obj, bad_objects))[0]
    touch = np.zeros((len(mv), len(mv)), bool)
    for f0 in range(0, len(t), 64):
        lo_m, hi_m = lo[f0:f0 + 64, mv], hi[f0:f0 + 64, mv]  # (f, m, 2)
        ov = np.minimum(hi_m[:, :, None], hi_m[:, None]) - np.maximum(lo_m[:, :, None], lo_m[:, None])
        touch |= (ov > 0).all(-1).any(0)
    ids = b.obj[mv]
    touch &= ids[:, None] != ids[None]
    dropped: set[int] = set()
    for o in np.unique(ids):  # ascending ids: earlier cars first
        others = np.unique(ids[touch[ids == o].any(0)])
        if any(x < o and x not in dropped for x in others.tolist()):
            dropped.add(int(o))
    bad_objects = np.union1d(bad_objects, np.array(sorted(dropped), dtype=b.obj.dtype))
    keep = ~np.isin(b.obj, bad_objects)
    return Boxes(b.lo[keep], b.hi[keep], b.side[keep], b.top[keep], b.tint[keep], b.obj[keep], b.vel[keep])


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------

SUN = np.array([0.45, -1.0, -0.3]) / np.linalg.norm([0.45, -1.0, -0.3])  # towards the sun (y down)
K_CANDIDATES = 32  # boxes kept per column, nearest first
ANISO = 3  # texture taps along the major axis of an elongated footprint (centre and two sides)


@dataclass
class View:
    """One rendered view. ``image (3, H, W)`` float in [0, 1]; ``depth (H, W)`` z-depth in
    metres (0 = sky); ``obj (H, W)`` object id (-1 sky, 0 ground); ``points (3, H, W)`` world
    coordinates of the visible surface; ``vel (3, H, W)`` its velocity in m/s."""

    image: torch.Tensor
    depth: torch.Tensor
    obj: torch.Tensor
    points: torch.Tensor
    vel: torch.Tensor


class Renderer:
    """Renders views of one world (keeps the boxes and the texture atlas as tensors)."""

    def __init__(self, world: World, device: torch.device | str = "cpu", filtering: bool = True) -> None:
        """``filtering=False`` reads textures at full resolution only (no mip-maps, no
        anisotropic taps): aliased, for showing what the filtering is for."""
        self.world = world
        self.filtering = filtering
        self.device = torch.device(device)
        b = world.boxes
        t = lambda a, dt=torch.float32: torch.as_tensor(a, dtype=dt, device=self.device)  # noqa: E731
        self.lo, self.hi, self.vel = t(b.lo), t(b.hi), t(b.vel)
        self.side, self.top = t(b.side, torch.long), t(b.top, torch.long)
        self.tint, self.obj = t(b.tint), t(b.obj, torch.long)
        self.moving = (self.vel.abs().sum(1) > 0)
        # per-box properties in one table, gathered once per render: tint(3), vel(3), side, top, obj, moving
        self.props = torch.cat(
            [self.tint, self.vel, self.side[:, None].float(), self.top[:, None].float(), self.obj[:, None].float(), self.moving[:, None].float()],
            dim=1,
        )
        self.atlas = _atlas().to(self.device)

    def camera_pose(self, frame: int, right: bool = False, baseline: float = 0.54, camera_height: float = 1.65) -> np.ndarray:
        """Camera-to-world ``(4, 4)`` pose of the left (or right) camera at ``frame``."""
        x, z, yaw, _ = self.world.route[frame]
        c, s = math.cos(yaw), math.sin(yaw)
        T = np.eye(4)
        T[:3, :3] = [[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]]
        T[:3, 3] = [x, -camera_height, z]
        if right:
            T[:3, 3] += T[:3, :3] @ np.array([baseline, 0.0, 0.0])
        return T

    def render(self, T_cam_to_world: np.ndarray, K: np.ndarray, height: int, width: int, time: float) -> View:
        """Render one view from a level camera (rotation about the vertical axis only)."""
        R = np.asarray(T_cam_to_world)[:3, :3]
        if abs(R[1, 1] - 1.0) > 1e-6:
            raise ValueError("the world renderer needs a level camera (rotation about the y axis only)")
        dev, f32 = self.device, torch.float32
        C = torch.as_tensor(T_cam_to_world[:3, 3], dtype=f32, device=dev)
        cos_y, sin_y = float(R[0, 0]), float(R[0, 2])
        fx, fy, cx, cy = float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])
        xs = (torch.arange(width, dtype=f32, device=dev) - cx) / fx
        ys = (torch.arange(height, dtype=f32, device=dev) - cy) / fy
        dx = cos_y * xs + sin_y  # world direction of (x_n, ., 1): x and z components per column
        dz = -sin_y * xs + cos_y

        # boxes at this time, culled to those near the camera
        lo = self.lo + self.vel * time
        hi = self.hi + self.vel * time
        centre = (lo + hi) / 2
        fwd = torch.tensor([sin_y, cos_y], dtype=f32, device=dev)
        rel = centre[:, [0, 2]] - C[[0, 2]]
        near = (rel.norm(dim=1) < CULL) & ((rel @ fwd) > -30.0)
        idx = near.nonzero()[:, 0]
        lo, hi = lo[idx], hi[idx]

        # 1) columns: 2-D slab test of each column's ray against every footprint
        inv_x = 1.0 / torch.where(dx.abs() < 1e-9, torch.full_like(dx, 1e-9), dx)
        inv_z = 1.0 / torch.where(dz.abs() < 1e-9, torch.full_like(dz, 1e-9), dz)
        tx0 = (lo[None, :, 0] - C[0]) * inv_x[:, None]
        tx1 = (hi[None, :, 0] - C[0]) * inv_x[:, None]
        tz0 = (lo[None, :, 2] - C[2]) * inv_z[:, None]
        tz1 = (hi[None, :, 2] - C[2]) * inv_z[:, None]
        tnx, tfx = torch.minimum(tx0, tx1), torch.maximum(tx0, tx1)
        tnz, tfz = torch.minimum(tz0, tz1), torch.maximum(tz0, tz1)
        z_in = torch.maximum(tnx, tnz)
        z_out = torch.minimum(tfx, tfz)
        hit = (z_out > z_in) & (z_in > 0.05)
        key = torch.where(hit, z_in, torch.full_like(z_in, float("inf")))
        k = min(K_CANDIDATES, key.shape[1])
        z_in_k, order = torch.topk(key, k, dim=1, largest=False)  # (W, k)
        z_out_k = z_out.gather(1, order)
        xface_k = (tnx > tnz).gather(1, order)
        box_k = idx[order]  # global box index (W, k)
        valid_k = torch.isfinite(z_in_k)

        # 2) pixels. Along a column, candidate j covers one contiguous run of rows: its front
        #    face where the ray's height at z_in lies between the box's top and bottom, extended
        #    by its top face (seen from above) or its bottom face (seen from below). Enumerate the
        #    (column, candidate, row) triples of those runs only, and keep each pixel's nearest.
        inf = float("inf")
        wj, jj = valid_k.nonzero(as_tuple=True)  # valid (column, candidate) pairs
        zi, zo = z_in_k[wj, jj], z_out_k[wj, jj]
        bj = box_k[wj, jj]
        A = self.lo[bj, 1] + self.vel[bj, 1] * time - C[1]  # box top relative to the camera (y down)
        Bv = self.hi[bj, 1] + self.vel[bj, 1] * time - C[1]  # box bottom relative to the camera
        above, below = A > 0, Bv < 0  # camera above the top / below the bottom
        ys_lo = torch.where(above, A / zo, A / zi)
        ys_hi = torch.where(below, Bv / zo, Bv / zi)
        r_lo = torch.ceil(ys_lo * fy + cy).clamp(0, height).long()
        r_hi = torch.floor(ys_hi * fy + cy).clamp(-1, height - 1).long()
        count = (r_hi - r_lo + 1).clamp(min=0)
        pair = torch.repeat_interleave(torch.arange(len(count), device=dev), count)
        start = torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
        row = r_lo[pair] + (torch.arange(len(pair), device=dev) - start)
        y = ys[row]
        zi_p, A_p, B_p = zi[pair], A[pair], Bv[pair]
        in_front = (y * zi_p >= A_p) & (y * zi_p <= B_p)
        safe = torch.where(y.abs() < 1e-9, torch.full_like(y, 1e-9), y)
        zt = torch.where(in_front, zi_p, torch.where(A_p > 0, A_p / safe, B_p / safe))
        fcode = torch.where(in_front, xface_k[wj, jj][pair].long(), torch.where(A_p > 0, 2, 3))
        pix = row * width + wj[pair]
        z_flat = torch.full((height * width,), inf, device=dev).scatter_reduce(0, pix, zt, "amin")
        win = zt <= z_flat[pix]
        face = torch.zeros(height * width, dtype=torch.long, device=dev).scatter(0, pix[win], fcode[win]).reshape(height, width)
        box = torch.zeros(height * width, dtype=torch.long, device=dev).scatter(0, pix[win], bj[pair][win]).reshape(height, width)
        z_box = z_flat.reshape(height, width)
        inf = torch.tensor(inf, device=dev)
        z_ground = torch.where(ys > 0, -C[1] / torch.where(ys > 0, ys, torch.ones_like(ys)), inf)[:, None].expand(-1, width)
        on_ground = z_ground < z_box
        z = torch.minimum(z_box, z_ground)
        sky = ~(z < FAR)

        # 3) surface: point, normal, material, texture coordinates, mip level
        zc = torch.where(sky, torch.ones_like(z), z)
        P = torch.stack([C[0] + zc * dx[None], C[1] + zc * ys[:, None], C[2] + zc * dz[None]])  # (3, H, W)
        n = torch.zeros_like(P)
        is_x = (face == 1) & ~on_ground
        is_z = (face == 0) & ~on_ground
        n[0] = torch.where(is_x, -torch.sign(dx)[None].expand(height, -1), n[0])
        n[2] = torch.where(is_z, -torch.sign(dz)[None].expand(height, -1), n[2])
        n[1] = torch.where(on_ground | (face == 2), -1.0, torch.where(face == 3, 1.0, 0.0)) * (~is_x & ~is_z)
        pr = self.props.index_select(0, box.reshape(-1)).reshape(height, width, -1)
        box_tint, box_vel = pr[..., 0:3], pr[..., 3:6]
        box_side, box_top, box_obj, box_moving = pr[..., 6].long(), pr[..., 7].long(), pr[..., 8].long(), pr[..., 9] > 0
        mat = torch.where(face >= 2, box_top, box_side)
        a = torch.where(is_x, P[2], P[0])
        bcoord = torch.where(is_x | is_z, P[1], P[2])
        gmat, ga, gb, gswap = _ground_material(P[0], P[2], self.world.pitch)
        mat = torch.where(on_ground, gmat, mat)
        a = torch.where(on_ground, ga, a)
        bcoord = torch.where(on_ground, gb, bcoord)
        # moving cars: texture coordinates move with the car
        moving_px = box_moving & ~on_ground & ~sky
        a = a - torch.where(moving_px, torch.where(is_x, box_vel[..., 2], box_vel[..., 0]) * time, torch.zeros_like(a))
        bcoord = bcoord - torch.where(moving_px & ~(is_x | is_z), box_vel[..., 2] * time, torch.zeros_like(a))
        # anisotropic filtering: a pixel's footprint on a surface seen at a grazing angle is long
        # along the ray's projection onto the surface (major axis, (z/f)/cos) and short across it
        # (minor axis, z/f). Average ANISO taps spread along the major axis, each read from the
        # mip level that matches the footprint's share of one tap.
        Dx, Dy, Dz = dx[None].expand(height, -1), ys[:, None].expand(-1, width), dz[None].expand(height, -1)
        ray_len = torch.sqrt(Dx**2 + Dy**2 + Dz**2)
        cos_inc = ((n[0] * Dx + n[1] * Dy + n[2] * Dz).abs() / ray_len).clamp(min=0.02)
        da = torch.where(is_x, Dz, Dx)
        db = torch.where(is_x | is_z, Dy, Dz)
        da, db = torch.where(on_ground & gswap, Dz, da), torch.where(on_ground & gswap, Dx, db)
        norm = torch.sqrt(da**2 + db**2).clamp(min=1e-9)
        minor = zc / ((fx + fy) / 2)  # metres per pixel across the ray
        major = minor / cos_inc
        texels_per_m = tx.TEX / self.atlas.tile_m.min(dim=-1).values[mat]
        level = torch.log2((torch.maximum(minor, major / ANISO) * texels_per_m).clamp(min=1.0))
        if not self.filtering:
            level = torch.zeros_like(level)
        # a trilinear centre tap for every surface pixel; two bilinear side taps at +-major/4
        # where the footprint is elongated
        surf = (~sky).flatten().nonzero()[:, 0]
        elong = (~sky & (major > 1.5 * minor) & self.filtering).flatten().nonzero()[:, 0]
        ua, ub = (da / norm).flatten(), (db / norm).flatten()
        af, bf, lf, mf, majf = a.flatten(), bcoord.flatten(), level.flatten(), mat.flatten(), major.flatten()
        centre = tx.sample_atlas(self.atlas, mf[surf], af[surf], bf[surf], lf[surf])  # trilinear
        total = torch.zeros(3, height * width, device=dev).index_copy_(1, surf, centre)
        count = torch.zeros(height * width, device=dev).index_fill_(0, surf, 1.0)
        if len(elong):
            off = torch.tensor([-0.25, 0.25], device=dev, dtype=f32)[:, None] * majf[elong][None]  # (2, E)
            side = tx.sample_atlas(
                self.atlas, mf[elong].repeat(2), (af[elong][None] + off * ua[elong][None]).flatten(),
                (bf[elong][None] + off * ub[elong][None]).flatten(), lf[elong].repeat(2), trilinear=False,
            )
            total.index_add_(1, elong.repeat(2), side)
            count.index_add_(0, elong, torch.full_like(elong, 2, dtype=f32))
        colour = (total / count.clamp(min=1.0)).reshape(3, height, width)
        tint = torch.where(on_ground[None], torch.ones(3, 1, 1, device=dev), box_tint.permute(2, 0, 1))
        sun = torch.as_tensor(SUN, dtype=f32, device=dev)
        shade = 0.6 + 0.4 * (n * sun[:, None, None]).sum(0).clamp(min=0)
        image = (colour * tint * shade).clamp(0, 1)
        sky_col = _sky(ys, width)
        image = torch.where(sky[None], sky_col, image)
        depth = torch.where(sky, torch.zeros_like(z), z)
        obj = torch.where(on_ground, torch.zeros_like(box), box_obj)
        obj = torch.where(sky, torch.full_like(obj, -1), obj)
        vel = torch.where((on_ground | sky)[None], torch.zeros_like(P), box_vel.permute(2, 0, 1))
        return View(image, depth, obj, P, vel)


def _sky(ys: torch.Tensor, width: int) -> torch.Tensor:
    t = (-ys).clamp(0, 1)[:, None]  # 0 at the horizon, up to 1 high up
    top = torch.tensor([0.45, 0.62, 0.88], device=ys.device)[:, None, None]
    horizon = torch.tensor([0.82, 0.87, 0.93], device=ys.device)[:, None, None]
    return (horizon * (1 - t) + top * t).expand(3, -1, width)


def _ground_material(x: torch.Tensor, z: torch.Tensor, pitch: tuple[float, float]):
    """Road (with markings) along streets, plain asphalt in parking strips and intersections,
    grass lots inside blocks. Returns material ids, texture coordinates (a, b) in metres, and
    where (a, b) are (z, x) rather than (x, z) (east-west roads)."""
    ox = x - torch.round(x / pitch[0]) * pitch[0]  # offset from the nearest north-south street centre
    oz = z - torch.round(z / pitch[1]) * pitch[1]
    on_ns, on_ew = ox.abs() < HALF_ROAD, oz.abs() < HALF_ROAD
    lane_ns, lane_ew = ox.abs() < tx.LANE, oz.abs() < tx.LANE
    mat = torch.full_like(x, tx.LOT, dtype=torch.long)
    a, b = x.clone(), z.clone()
    road_ns = on_ns & ~on_ew & lane_ns
    road_ew = on_ew & ~on_ns & lane_ew
    mat = torch.where(on_ns | on_ew, torch.full_like(mat, tx.ASPHALT), mat)
    mat = torch.where(road_ns | road_ew, torch.full_like(mat, tx.ROAD), mat)
    a = torch.where(road_ns, ox + tx.LANE, torch.where(road_ew, oz + tx.LANE, a))
    b = torch.where(road_ns, z, torch.where(road_ew, x, b))
    return mat, a, b, road_ew


_ATLAS: tx.TextureAtlas | None = None


def _atlas() -> tx.TextureAtlas:
    global _ATLAS
    if _ATLAS is None:
        _ATLAS = tx.build_atlas()
    return _ATLAS
