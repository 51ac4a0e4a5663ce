"""The flow network's parts (chapter 09): correlation volume, flow warp and upsampling against known
answers, and the network's shapes, gradients and input checks."""

import pytest
import torch

from lesson_lib.models import count_parameters
from lesson_lib.models.flow import FlowNet, correlation_volume, upsample_flow
from lesson_lib.warping import flow_warp


def test_correlation_volume_finds_a_known_shift_and_matches_a_loop():
    g = torch.Generator().manual_seed(0)
    f1 = torch.randn(2, 8, 10, 12, generator=g, dtype=torch.float64)
    f2 = torch.roll(f1, shifts=(-1, 2), dims=(2, 3))  # f1[v, u] reappears at f2[v - 1, u + 2]
    d = 3
    cv = correlation_volume(f1, f2, d)
    assert cv.shape == (2, 49, 10, 12)
    assert int(cv[0, :, 5, 5].argmax()) == (-1 + d) * (2 * d + 1) + (2 + d)  # dv = -1, du = +2
    # against a plain loop, borders (zero padding) included
    for (b, k, v, u) in [(0, 0, 0, 0), (1, 24, 4, 7), (0, 48, 9, 11), (1, 10, 2, 0)]:
        dv, du = divmod(k, 2 * d + 1)
        dv, du = dv - d, du - d
        inside = 0 <= v + dv < 10 and 0 <= u + du < 12
        want = (f1[b, :, v, u] * f2[b, :, v + dv, u + du]).mean() if inside else torch.tensor(0.0, dtype=torch.float64)
        torch.testing.assert_close(cv[b, k, v, u], want)
    with pytest.raises(ValueError, match="f2"):
        correlation_volume(f1, f2[:, :4])
    with pytest.raises(ValueError, match="max_displacement"):
        correlation_volume(f1, f2, -1)


def test_flow_warp_identity_and_integer_shift():
    img = torch.rand(1, 3, 6, 9, dtype=torch.float64)
    same, valid = flow_warp(img, torch.zeros(1, 2, 6, 9, dtype=torch.float64))
    torch.testing.assert_close(same, img)
    assert bool(valid.all())
    flow = torch.zeros(1, 2, 6, 9, dtype=torch.float64)
    flow[:, 0] = 2.0  # every pixel moves 2 columns to the right in the second image
    warped, valid = flow_warp(img, flow)
    torch.testing.assert_close(warped[..., :7], img[..., 2:])
    assert not bool(valid[..., 7:].any()) and bool(valid[..., :7].all())


def test_upsample_flow_scales_the_vectors():
    flow = torch.zeros(1, 2, 4, 8)
    flow[:, 0], flow[:, 1] = 1.5, -0.5
    up = upsample_flow(flow, (16, 16))
    assert up.shape == (1, 2, 16, 16)
    torch.testing.assert_close(up[:, 0], torch.full((1, 16, 16), 3.0))  # width x2
    torch.testing.assert_close(up[:, 1], torch.full((1, 16, 16), -2.0))  # height x4


def test_flownet_shapes_gradients_and_input_checks():
    torch.manual_seed(0)
    net = FlowNet(width=8)
    assert count_parameters(net) < count_parameters(FlowNet(width=16))
    x1, x2 = torch.rand(2, 3, 64, 96), torch.rand(2, 3, 64, 96)
    flows = net(x1, x2)
    assert {k: tuple(v.shape) for k, v in flows.items()} == {l: (2, 2, 64 >> l, 96 >> l) for l in (2, 3, 4, 5)}
    full = net.flow(x1, x2)
    assert full.shape == (2, 2, 64, 96) and bool(torch.isfinite(full).all())
    sum(f.square().mean() for f in flows.values()).backward()
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in net.parameters())
    with pytest.raises(ValueError, match="multiples of 32"):
        net(torch.rand(1, 3, 60, 96), torch.rand(1, 3, 60, 96))
    with pytest.raises(ValueError, match="same shape"):
        net(x1, x2[:1])
    with pytest.raises(ValueError, match="finest"):
        FlowNet(finest=6)
