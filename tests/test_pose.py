"""Chapter 02: rotations and poses; known rotations and kornia as an independent check."""

import math

import kornia
import pytest
import torch
from kornia.geometry.conversions import (
    axis_angle_to_rotation_matrix,
    quaternion_from_euler,
    quaternion_to_rotation_matrix,
)

from lesson_lib import pose

X, Y, Z = torch.eye(3, dtype=torch.float64)


@pytest.mark.parametrize(
    "axis, maps",
    [("x", [(Y, Z), (Z, -Y)]), ("y", [(Z, X), (X, -Z)]), ("z", [(X, Y), (Y, -X)])],
)
def test_quarter_turn_about_each_axis(axis, maps):
    """A right-handed +90 degree turn about x takes y to z, about y takes z to x, about z x to y."""
    R = pose.axis_rotation(axis, torch.tensor([math.pi / 2], dtype=torch.float64))[0]
    for src, dst in maps:
        torch.testing.assert_close(R @ src, dst, atol=1e-12, rtol=0)
    vec = {"x": X, "y": Y, "z": Z}[axis] * (math.pi / 2)
    R_aa = pose.axis_angle_to_matrix(vec[None])[0]
    torch.testing.assert_close(R_aa, R, atol=1e-12, rtol=0)
    angles = vec[None]
    torch.testing.assert_close(pose.euler_to_matrix(angles)[0], R, atol=1e-12, rtol=0)


def test_euler_order_is_x_then_y_then_z_matrices():
    a = torch.tensor([[0.3, -0.7, 1.1]], dtype=torch.float64)
    expected = (
        axis_angle_to_rotation_matrix(a[:, 0:1] * X)
        @ axis_angle_to_rotation_matrix(a[:, 1:2] * Y)
        @ axis_angle_to_rotation_matrix(a[:, 2:3] * Z)
    )
    torch.testing.assert_close(pose.euler_to_matrix(a), expected)


def test_euler_agrees_with_kornia_zyx_convention():
    """kornia's quaternion_from_euler(roll, pitch, yaw) is Rz Ry Rx; ours is Rx Ry Rz, which is
    the transpose of kornia's matrix for the negated angles."""
    g = torch.Generator().manual_seed(0)
    a = (torch.rand(8, 3, generator=g, dtype=torch.float64) * 2 - 1) * 1.5
    q = torch.stack(quaternion_from_euler(-a[:, 0], -a[:, 1], -a[:, 2]), dim=-1)
    torch.testing.assert_close(pose.euler_to_matrix(a), quaternion_to_rotation_matrix(q).transpose(1, 2))


def test_axis_angle_agrees_with_kornia():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(16, 3, generator=g, dtype=torch.float64)
    w[0] = 0.0
    w[1] = 1e-7
    torch.testing.assert_close(pose.axis_angle_to_matrix(w), axis_angle_to_rotation_matrix(w))


def test_axis_angle_gradient_is_finite_at_identity_and_checks():
    w = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    pose.axis_angle_to_matrix(w).sum().backward()
    assert torch.isfinite(w.grad).all()
    w2 = torch.tensor([[0.2, -0.4, 0.9]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(pose.axis_angle_to_matrix, (w2,))


def test_matrix_to_axis_angle_round_trip_including_zero_and_pi():
    g = torch.Generator().manual_seed(2)
    axes = torch.nn.functional.normalize(torch.randn(6, 3, generator=g, dtype=torch.float64), dim=-1)
    angles = torch.tensor([0.0, 1e-5, 0.5, 2.0, math.pi - 1e-6, math.pi - 0.01], dtype=torch.float64)
    w = axes * angles[:, None]
    R = pose.axis_angle_to_matrix(w)
    back = pose.matrix_to_axis_angle(R)
    torch.testing.assert_close(pose.axis_angle_to_matrix(back), R, atol=1e-6, rtol=0)
    torch.testing.assert_close(back[:4], w[:4], atol=1e-7, rtol=0)


def test_matrix_to_euler_round_trip():
    g = torch.Generator().manual_seed(3)
    a = (torch.rand(10, 3, generator=g, dtype=torch.float64) * 2 - 1) * torch.tensor([3.0, 1.5, 3.0], dtype=torch.float64)
    torch.testing.assert_close(pose.matrix_to_euler(pose.euler_to_matrix(a)), a)


@pytest.mark.parametrize("rotation", ["euler", "axis_angle"])
def test_pose_vector_round_trip_and_layout(rotation):
    vec = torch.tensor([[0.1, -0.2, 1.5, 0.05, -0.3, 0.2]], dtype=torch.float64)
    T = pose.pose_vector_to_matrix(vec, rotation)
    torch.testing.assert_close(T[:, :3, 3], vec[:, :3])
    assert T[0, 3].tolist() == [0.0, 0.0, 0.0, 1.0]
    torch.testing.assert_close(pose.matrix_to_pose_vector(T, rotation), vec)


def test_pose_times_inverse_is_identity_and_matches_kornia():
    g = torch.Generator().manual_seed(4)
    T = pose.pose_vector_to_matrix(torch.randn(5, 6, generator=g, dtype=torch.float64))
    eye = torch.eye(4, dtype=torch.float64).expand(5, 4, 4)
    torch.testing.assert_close(pose.compose_poses(T, pose.invert_pose(T)), eye)
    torch.testing.assert_close(pose.compose_poses(pose.invert_pose(T), T), eye)
    torch.testing.assert_close(pose.invert_pose(T), kornia.geometry.linalg.inverse_transformation(T))


def test_compose_order_and_transform_points():
    """Moving by +1 in x and then rotating 90 degrees about z sends the origin to (0, 1, 0);
    the other order sends it to (1, 0, 0)."""
    shift = pose.pose_vector_to_matrix(torch.tensor([[1.0, 0, 0, 0, 0, 0]], dtype=torch.float64))
    turn = pose.pose_vector_to_matrix(torch.tensor([[0, 0, 0, 0, 0, math.pi / 2]], dtype=torch.float64))
    origin = torch.zeros(1, 3, 1, dtype=torch.float64)
    p = pose.transform_points(pose.compose_poses(shift, turn), origin)
    torch.testing.assert_close(p[0, :, 0], Y, atol=1e-12, rtol=0)
    q = pose.transform_points(pose.compose_poses(turn, shift), origin)
    torch.testing.assert_close(q[0, :, 0], X, atol=1e-12, rtol=0)
    g = torch.Generator().manual_seed(5)
    T = pose.pose_vector_to_matrix(torch.randn(2, 6, generator=g, dtype=torch.float64))
    P = torch.randn(2, 3, 7, generator=g, dtype=torch.float64)
    ref = kornia.geometry.linalg.transform_points(T, P.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(pose.transform_points(T, P), ref)


def test_bad_input():
    with pytest.raises(ValueError, match=r"vec: expected shape \(B, 6\)"):
        pose.pose_vector_to_matrix(torch.zeros(2, 7))
    with pytest.raises(ValueError, match="rotation must be one of"):
        pose.pose_vector_to_matrix(torch.zeros(2, 6), rotation="quaternion")
    with pytest.raises(ValueError, match="axis must be"):
        pose.axis_rotation("w", torch.zeros(1))
    with pytest.raises(ValueError, match=r"T_b_to_c: expected shape \(B, 4, 4\)"):
        pose.compose_poses(torch.eye(4)[None], torch.eye(4).expand(2, 4, 4))
    with pytest.raises(ValueError, match="floating-point"):
        pose.invert_pose(torch.eye(4, dtype=torch.int64)[None])
