"""Rigid motion: rotations, 6-DoF pose vectors and 4x4 poses (chapter 02).

Conventions (shared by the whole course):

- A pose is a ``(B, 4, 4)`` matrix ``T = [[R, t], [0, 1]]`` acting on column points as
  ``p' = R p + t``. Every pose says its direction in its name: ``T_t_to_s`` maps 3-D points
  from the target camera's frame into the source camera's frame.
- 6-DoF vectors are ``[tx, ty, tz, r1, r2, r3]`` (translation first, as SfMLearner's pose
  network outputs them). The rotation part is either
  * ``"euler"``: SfMLearner's angles ``[rx, ry, rz]`` in radians, ``R = Rx(rx) @ Ry(ry) @ Rz(rz)``
    (rotate about z first, then y, then x, all about the fixed camera axes), or
  * ``"axis_angle"``: monodepth2's rotation vector ``w = angle * unit_axis`` (Rodrigues).
- Elementary rotations are right-handed: ``Rz(a) = [[cos a, -sin a, 0], [sin a, cos a, 0],
  [0, 0, 1]]`` turns the x-axis towards the y-axis.
- Precision: every function here computes in float32 (float64 for float64 inputs), also
  inside ``torch.autocast``; a pose network's half-precision output is cast to float32 first
  (:func:`lesson_lib._validate.float32_geometry`), so poses and transformed points come out
  float32 or float64.
"""

from __future__ import annotations

import torch

from ._validate import check_same_device, check_tensor, float32_geometry

__all__ = [
    "axis_rotation",
    "euler_to_matrix",
    "matrix_to_euler",
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "cross_matrix",
    "pose_vector_to_matrix",
    "matrix_to_pose_vector",
    "make_pose",
    "invert_pose",
    "compose_poses",
    "transform_points",
]

ROTATIONS = ("euler", "axis_angle")
"""The rotation parametrisations of a 6-vector pose (:func:`pose_vector_to_matrix`)."""


@float32_geometry
def axis_rotation(axis: str, angle: torch.Tensor) -> torch.Tensor:
    """Rotation by ``angle`` (radians, shape ``(B,)``) about the camera axis ``"x"``, ``"y"``
    or ``"z"``; returns ``(B, 3, 3)``."""
    check_tensor(angle, "angle", ("B",))
    c, s = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(angle), torch.zeros_like(angle)
    if axis == "x":
        rows = [[one, zero, zero], [zero, c, -s], [zero, s, c]]
    elif axis == "y":
        rows = [[c, zero, s], [zero, one, zero], [-s, zero, c]]
    elif axis == "z":
        rows = [[c, -s, zero], [s, c, zero], [zero, zero, one]]
    else:
        raise ValueError(f"axis must be 'x', 'y' or 'z', got {axis!r}")
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


@float32_geometry
def euler_to_matrix(angles: torch.Tensor) -> torch.Tensor:
    """SfMLearner's Euler angles ``(B, 3)`` ``[rx, ry, rz]`` (radians) to ``(B, 3, 3)``:
    ``R = Rx(rx) @ Ry(ry) @ Rz(rz)`` (chapter 02)."""
    check_tensor(angles, "angles", ("B", 3))
    return (
        axis_rotation("x", angles[:, 0])
        @ axis_rotation("y", angles[:, 1])
        @ axis_rotation("z", angles[:, 2])
    )


@float32_geometry
def matrix_to_euler(R: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`euler_to_matrix` for ``|ry| < pi/2``: returns ``(B, 3)``.

    From ``R = Rx Ry Rz``: ``R[0, 2] = sin ry``, ``tan rx = -R[1, 2] / R[2, 2]``,
    ``tan rz = -R[0, 1] / R[0, 0]``. At ``ry = +-pi/2`` (gimbal lock) only ``rx + rz`` or
    ``rx - rz`` is determined; this function then returns one valid solution.
    """
    check_tensor(R, "R", ("B", 3, 3))
    ry = torch.asin(R[:, 0, 2].clamp(-1.0, 1.0))
    rx = torch.atan2(-R[:, 1, 2], R[:, 2, 2])
    rz = torch.atan2(-R[:, 0, 1], R[:, 0, 0])
    return torch.stack([rx, ry, rz], dim=-1)


def cross_matrix(t: torch.Tensor) -> torch.Tensor:
    """The skew-symmetric matrix ``[t]_x`` ``(..., 3, 3)`` of ``t`` ``(..., 3)``:
    ``[t]_x v = t x v`` (Rodrigues' formula here; the essential matrix ``[t]_x R`` in chapter 08)."""
    check_tensor(t, "t")
    if t.ndim < 1 or t.shape[-1] != 3:
        raise ValueError(f"t: expected shape (..., 3), got {tuple(t.shape)}")
    z = torch.zeros_like(t[..., 0])
    x, y, w = t.unbind(-1)
    return torch.stack([z, -w, y, w, z, -x, -y, x, z], dim=-1).reshape(*t.shape[:-1], 3, 3)


@float32_geometry
def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula: rotation vector ``(B, 3)`` to ``(B, 3, 3)`` (chapter 02).

    With ``theta = |w|`` and ``W = [w]_x`` (the cross-product matrix),
    ``R = I + sin(theta)/theta * W + (1 - cos(theta))/theta**2 * W @ W``.
    Near ``theta = 0`` the two coefficients use their Taylor series, so the result and its
    gradient stay finite at the identity.
    """
    check_tensor(axis_angle, "axis_angle", ("B", 3))
    theta2 = (axis_angle * axis_angle).sum(-1)
    small = theta2 < 1e-8
    safe2 = torch.where(small, torch.ones_like(theta2), theta2)
    safe = safe2.sqrt()
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(safe) / safe)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(safe)) / safe2)
    W = cross_matrix(axis_angle)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device).expand_as(W)
    return eye + a[:, None, None] * W + b[:, None, None] * (W @ W)


@float32_geometry
def matrix_to_axis_angle(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrix ``(B, 3, 3)`` to a rotation vector ``(B, 3)`` with angle in ``[0, pi]``.

    The skew part of ``R`` gives ``2 sin(theta) k``; its trace gives ``1 + 2 cos(theta)``.
    Near ``theta = pi`` the skew part vanishes, so the axis is read from the symmetric part
    ``(R + I) / 2 = k k^T`` instead.
    """
    check_tensor(R, "R", ("B", 3, 3))
    v = torch.stack(
        [R[:, 2, 1] - R[:, 1, 2], R[:, 0, 2] - R[:, 2, 0], R[:, 1, 0] - R[:, 0, 1]], -1
    )
    sin2 = v.norm(dim=-1)  # 2 sin(theta)
    cos2 = R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0  # 2 cos(theta)
    theta = torch.atan2(sin2, cos2)
    # Regular case: w = theta / (2 sin theta) * v; the factor tends to 1/2 at theta = 0.
    safe_sin = torch.where(sin2 < 1e-6, torch.ones_like(sin2), sin2)
    factor = torch.where(sin2 < 1e-6, 0.5 + theta**2 / 12.0, theta / safe_sin)
    w = factor[:, None] * v
    # Near pi: k k^T = (R + I) / 2; take the column with the largest diagonal entry.
    near_pi = (sin2 < 1e-3) & (cos2 < 0)
    if bool(near_pi.any()):
        eye = torch.eye(3, dtype=R.dtype, device=R.device)
        S = (R[near_pi] + eye) / 2
        idx = S.diagonal(dim1=-2, dim2=-1).argmax(-1)
        col = S[torch.arange(S.shape[0]), :, idx]
        k = col / col.norm(dim=-1, keepdim=True)
        sign = torch.sign((k * v[near_pi]).sum(-1))
        k = k * torch.where(sign == 0, torch.ones_like(sign), sign)[:, None]
        w = w.clone()
        w[near_pi] = k * theta[near_pi][:, None]
    return w


def _rotation(r: torch.Tensor, rotation: str) -> torch.Tensor:
    if rotation == "euler":
        return euler_to_matrix(r)
    if rotation == "axis_angle":
        return axis_angle_to_matrix(r)
    raise ValueError(f"rotation must be one of {ROTATIONS}, got {rotation!r}")


@float32_geometry
def make_pose(R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Assemble ``(B, 4, 4)`` poses ``[[R, t], [0, 1]]`` from ``R (B, 3, 3)`` and ``t (B, 3)``."""
    dims = check_tensor(R, "R", ("B", 3, 3))
    check_tensor(t, "t", ("B", 3), dims=dims)
    check_same_device(R=R, t=t)
    T = torch.zeros(R.shape[0], 4, 4, dtype=R.dtype, device=R.device)
    T[:, :3, :3] = R
    T[:, :3, 3] = t.to(R.dtype)
    T[:, 3, 3].fill_(1.0)  # not "= 1.0": that builds a CPU tensor from the number and copies it over
    return T


@float32_geometry
def pose_vector_to_matrix(vec: torch.Tensor, rotation: str = "euler") -> torch.Tensor:
    """6-DoF vectors ``(B, 6)`` ``[tx, ty, tz, r1, r2, r3]`` to poses ``(B, 4, 4)``.

    ``rotation="euler"``: SfMLearner's ``[rx, ry, rz]``; ``"axis_angle"``: monodepth2's
    rotation vector. The pose maps ``p -> R p + t`` (rotate, then translate); its direction is
    whatever the vector's producer meant (for a pose network: target to source).
    """
    check_tensor(vec, "vec", ("B", 6))
    return make_pose(_rotation(vec[:, 3:], rotation), vec[:, :3])


@float32_geometry
def matrix_to_pose_vector(T: torch.Tensor, rotation: str = "euler") -> torch.Tensor:
    """Inverse of :func:`pose_vector_to_matrix`: ``(B, 4, 4)`` to ``(B, 6)``."""
    check_tensor(T, "T", ("B", 4, 4))
    R, t = T[:, :3, :3], T[:, :3, 3]
    if rotation == "euler":
        r = matrix_to_euler(R)
    elif rotation == "axis_angle":
        r = matrix_to_axis_angle(R)
    else:
        raise ValueError(f"rotation must be one of {ROTATIONS}, got {rotation!r}")
    return torch.cat([t, r], dim=-1)


@float32_geometry
def invert_pose(T: torch.Tensor) -> torch.Tensor:
    """Inverse of a rigid pose: ``[[R, t], [0, 1]]^-1 = [[R^T, -R^T t], [0, 1]]`` (chapter 02).

    ``invert_pose(T_t_to_s)`` is ``T_s_to_t``. Uses the structure of a rigid motion (no general
    matrix inverse), so ``R`` must be a rotation.
    """
    check_tensor(T, "T", ("B", 4, 4))
    Rt = T[:, :3, :3].transpose(1, 2)
    return make_pose(Rt, -(Rt @ T[:, :3, 3:4])[:, :, 0])


@float32_geometry
def compose_poses(T_a_to_b: torch.Tensor, T_b_to_c: torch.Tensor) -> torch.Tensor:
    """Chain two poses: first ``a -> b``, then ``b -> c``; returns ``T_a_to_c = T_b_to_c @
    T_a_to_b`` (the later motion stands on the left; chapter 02)."""
    dims = check_tensor(T_a_to_b, "T_a_to_b", ("B", 4, 4))
    check_tensor(T_b_to_c, "T_b_to_c", ("B", 4, 4), dims=dims)
    check_same_device(T_a_to_b=T_a_to_b, T_b_to_c=T_b_to_c)
    return T_b_to_c @ T_a_to_b


@float32_geometry
def transform_points(T: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply poses ``(B, 4, 4)`` to column points ``(B, 3, N)``: ``R p + t``."""
    dims = check_tensor(T, "T", ("B", 4, 4))
    check_tensor(points, "points", ("B", 3, "N"), dims=dims)
    check_same_device(T=T, points=points)
    return T[:, :3, :3] @ points + T[:, :3, 3:4]

