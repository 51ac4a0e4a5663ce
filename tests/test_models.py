"""Chapters 06, 07, 09: the encoder, depth decoder, Monodepth network and pose network --
shapes, parameter counts, known outputs of known heads (disparity = p * max_disp_fraction, pose
vectors and their 4x4 matrices in the course's T_t_to_s convention), gradients, determinism and
bad input."""

import math

import pytest
import torch
from kornia.geometry.conversions import axis_angle_to_rotation_matrix

from lesson_lib import pose
from lesson_lib.models import (
    DepthDecoder,
    MonodepthNet,
    PoseNet,
    ResNetEncoder,
    count_parameters,
    default_decoder_channels,
)

B, H, W = 2, 64, 96


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _image(*shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("width", [64, 16])
def test_encoder_feature_shapes_and_channels(width):
    enc = ResNetEncoder(width=width)
    assert enc.channels == [width * k for k in (1, 1, 2, 4, 8)]
    feats = enc(_image(B, 3, H, W))
    assert len(feats) == 5
    for i, (f, c) in enumerate(zip(feats, enc.channels)):
        assert f.shape == (B, c, H // 2 ** (i + 1), W // 2 ** (i + 1))
    assert bool((feats[0] >= 0).all())  # the stem's feature is taken after its ReLU


def test_encoder_parameter_count_is_resnet18_without_fc():
    """torchvision's resnet18 has 11,689,512 parameters; its fc layer 512 * 1000 + 1000."""

    def conv(i, o, k):
        return i * o * k * k

    def bn(c):
        return 2 * c  # gamma and beta; running statistics are buffers

    def block(i, o, stride):
        n = conv(i, o, 3) + bn(o) + conv(o, o, 3) + bn(o)
        return n + (conv(i, o, 1) + bn(o) if stride != 1 or i != o else 0)

    expected = conv(3, 64, 7) + bn(64)
    for i, o, s in [(64, 64, 1), (64, 128, 2), (128, 256, 2), (256, 512, 2)]:
        expected += block(i, o, s) + block(o, o, 1)
    assert expected == 11_689_512 - (512 * 1000 + 1000) == 11_176_512
    assert count_parameters(ResNetEncoder(width=64)) == expected
    small = count_parameters(ResNetEncoder(width=16))
    assert small < expected / 15  # convolutions scale with width**2


def test_encoder_stacked_frames_and_resnet34():
    enc = ResNetEncoder(in_channels=9, width=16)
    assert enc.conv1.in_channels == 9
    assert enc(_image(1, 9, 32, 64))[-1].shape == (1, 128, 1, 2)
    assert count_parameters(ResNetEncoder(depth=34, width=16)) > count_parameters(
        ResNetEncoder(depth=18, width=16)
    )
    with pytest.raises(ValueError, match="depth"):
        ResNetEncoder(depth=50)


def test_count_parameters_trainable_only():
    net = MonodepthNet(width=16)
    for p in net.encoder.parameters():
        p.requires_grad_(False)
    assert count_parameters(net, trainable_only=True) == count_parameters(net.decoder)
    assert count_parameters(net) == count_parameters(net.encoder) + count_parameters(net.decoder)


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _set_heads(heads, bias: float) -> None:
    """Zero the 3x3 output convolutions' weights and set their bias: every output is sigmoid(bias)."""
    with torch.no_grad():
        for head in heads.values():
            head[1].weight.zero_()
            head[1].bias.fill_(bias)


def test_decoder_scales_shapes_and_known_output():
    enc = ResNetEncoder(width=16)
    dec = DepthDecoder(enc.channels, scales=(0, 1, 2, 3), out_channels=1)
    assert dec.decoder_channels == [4, 8, 16, 32, 64]
    assert tuple(dec.decoder_channels) == default_decoder_channels(enc.channels)
    assert default_decoder_channels([64, 64, 128, 256, 512]) == (16, 32, 64, 128, 256)
    _set_heads(dec.heads, _logit(0.8))  # zero head weights, bias logit(0.8): sigmoid gives 0.8 exactly
    out = dec(enc(_image(B, 3, H, W)))
    assert list(out) == [0, 1, 2, 3]
    for s, v in out.items():
        assert v.shape == (B, 1, H // 2**s, W // 2**s)
        torch.testing.assert_close(v, torch.full_like(v, 0.8), atol=1e-7, rtol=0)


def test_decoder_rejects_mismatched_features():
    enc = ResNetEncoder(width=16)
    dec = DepthDecoder(enc.channels)
    feats = enc(_image(1, 3, 64, 64))
    with pytest.raises(ValueError, match="5 encoder feature maps"):
        dec(feats[:4])
    bad = list(feats)
    bad[2] = bad[2][..., :-1]
    with pytest.raises(ValueError, match=r"features\[2\].*\(1, 32, 8, 7\)"):
        dec(bad)


def test_monodepth_scales_shapes():
    net = MonodepthNet(width=16)
    out = net(_image(B, 3, H, W))
    assert list(out) == [0, 1, 2, 3]
    for s, d in out.items():
        assert d.shape == (B, 2, H // 2**s, W // 2**s)
    net.eval()
    with torch.no_grad():
        big = net(_image(1, 3, 128, 416))
    assert [tuple(v.shape) for v in big.values()] == [(1, 2, 128 >> s, 416 >> s) for s in range(4)]


@pytest.mark.parametrize(
    "width, max_disp, p, shape",
    [(16, 0.3, 0.5, (B, 3, H, W)), (16, 0.3, 0.05, (B, 3, H, W)), (8, 0.1, 0.25, (B, 3, H, W)), (64, 0.1, 0.5, (1, 3, 64, 64))],
)
def test_monodepth_known_head_gives_p_times_max_disp_fraction_at_every_scale(width, max_disp, p, shape):
    """Zero head weights and bias logit(p): sigmoid gives p, so every pixel of both channels at
    every scale is exactly p * max_disp_fraction (0.3 * sigmoid of Monodepth), whatever the input
    and although each finer level is fed the coarser output."""
    net = MonodepthNet(width=width, max_disp_fraction=max_disp)
    _set_heads(net.decoder.heads, _logit(p))
    x = _image(*shape)
    out = net(x)
    assert list(out) == [0, 1, 2, 3]
    for s, d in out.items():
        assert d.shape == (x.shape[0], 2, x.shape[2] >> s, x.shape[3] >> s)
        torch.testing.assert_close(d, torch.full_like(d, p * max_disp), atol=1e-7, rtol=1e-6)


def test_gradients_reach_the_first_convolution():
    net = MonodepthNet(width=16)
    out = net(_image(B, 3, H, W))
    sum(v.sum() for v in out.values()).backward()
    g = net.encoder.conv1.weight.grad
    assert g is not None and bool(torch.isfinite(g).all()) and float(g.abs().sum()) > 0
    posenet = PoseNet(width=16)
    posenet(_image(B, 9, H, W)).sum().backward()
    assert float(posenet.encoder.conv1.weight.grad.abs().sum()) > 0


def test_eval_mode_is_deterministic_and_batch_independent():
    net = MonodepthNet(width=16)
    x = _image(B, 3, H, W)
    net(x)  # one training step's forward updates the running statistics
    net.eval()
    with torch.no_grad():
        a, b = net(x), net(x)
        single = net(x[1:])
    for s in a:
        assert torch.equal(a[s], b[s])
        torch.testing.assert_close(single[s], a[s][1:], atol=1e-6, rtol=1e-5)


def test_same_seed_gives_identical_initial_weights():
    torch.manual_seed(123)
    a = MonodepthNet(width=16).state_dict()
    torch.manual_seed(123)
    b = MonodepthNet(width=16).state_dict()
    torch.manual_seed(124)
    c = MonodepthNet(width=16).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["encoder.conv1.weight"], c["encoder.conv1.weight"])


@pytest.mark.parametrize("rotation", ["axis_angle", "euler"])
@pytest.mark.parametrize("n_frames", [2, 3])
def test_posenet_shape_and_small_init(rotation, n_frames):
    net = PoseNet(n_frames=n_frames, width=16, rotation=rotation)
    target = _image(B, 3, H, W)
    sources = [_image(B, 3, H, W).roll(k + 1, dims=-1) for k in range(n_frames - 1)]
    frames = PoseNet.stack(target, sources)
    assert frames.shape == (B, 3 * n_frames, H, W)
    torch.testing.assert_close(frames[:, :3], target, rtol=0, atol=0)  # target first, then the sources
    torch.testing.assert_close(frames[:, 3:6], sources[0], rtol=0, atol=0)
    v = net(frames)
    assert v.shape == (B, n_frames - 1, 6)
    assert float(v.detach().abs().max()) < 0.1  # x 0.01: close to the identity at initialisation
    assert net.to_matrices(v).shape == (B, n_frames - 1, 4, 4)


# -- the pose network's output with a known head, and its direction ---------------------------------

THETA = 0.3  # radians
C, S = math.cos(THETA), math.sin(THETA)


def _posenet_with_output(vectors, rotation):
    """A PoseNet whose 1x1 head has zero weights and bias 100 * v, so that it outputs ``v`` (one
    6-vector per source) for any input: the network multiplies by 0.01 (SfMLearner's scale)."""
    vectors = torch.tensor(vectors, dtype=torch.float32)
    net = PoseNet(n_frames=vectors.shape[0] + 1, width=8, rotation=rotation)
    assert net.scale == 0.01 and net.pose_conv.kernel_size == (1, 1)
    with torch.no_grad():
        net.pose_conv.weight.zero_()
        net.pose_conv.bias.copy_(100.0 * vectors.reshape(-1))
    return net.eval().requires_grad_(False)  # eval: batch statistics of one image at 1x1 are undefined


def _translation(tx, ty, tz):
    return torch.tensor([[1.0, 0, 0, tx], [0, 1, 0, ty], [0, 0, 1, tz], [0, 0, 0, 1]])


RY = torch.tensor([[C, 0, S, 0], [0, 1, 0, 0], [-S, 0, C, 0], [0, 0, 0, 1]])  # +theta about y
# T_t_to_s of a source camera 0.5 m behind the target (t_z = +0.5) and 0.5 m ahead of it (-0.5)
BACKWARD, FORWARD = [0, 0, 0.5, 0, 0, 0], [0, 0, -0.5, 0, 0, 0]
YAW = [0, 0, 0, 0, THETA, 0]


@pytest.mark.parametrize("rotation", ["euler", "axis_angle"])
def test_posenet_known_head_gives_known_vectors_and_matrices(rotation):
    # source 1: pure translation tz = +0.5; source 2: pure rotation about y by theta (the same
    # matrix in both parametrisations); source 3: forward motion, tz = -0.5
    net = _posenet_with_output([BACKWARD, YAW, FORWARD], rotation)
    v = net(_image(B, 12, H, W))
    want = torch.tensor([BACKWARD, YAW, FORWARD]).expand(B, 3, 6)
    torch.testing.assert_close(v, want, atol=1e-6, rtol=0)  # translation first, x 0.01
    T = net.to_matrices(v)
    assert T.shape == (B, 3, 4, 4)
    for b in range(B):
        torch.testing.assert_close(T[b, 0], _translation(0, 0, 0.5), atol=1e-6, rtol=0)
        torch.testing.assert_close(T[b, 1], RY, atol=1e-6, rtol=0)
        torch.testing.assert_close(T[b, 2], _translation(0, 0, -0.5), atol=1e-6, rtol=0)


def test_posenet_euler_order_is_rx_ry_rz_and_axis_angle_is_rodrigues():
    """A rotation about x and z together tells the Euler order apart: SfMLearner's
    R = Rx(a) Rz(b), not Rz(b) Rx(a); the same numbers read as a rotation vector give the
    Rodrigues rotation (kornia's independent implementation)."""
    a, b = 0.4, -0.25
    ca, sa, cb, sb = math.cos(a), math.sin(a), math.cos(b), math.sin(b)
    rx_rz = torch.tensor([[cb, -sb, 0], [ca * sb, ca * cb, -sa], [sa * sb, sa * cb, ca]])
    rz_rx = torch.tensor([[cb, -sb * ca, sb * sa], [sb, cb * ca, -cb * sa], [0, sa, ca]])
    vec = [0.1, -0.2, 0.3, a, 0, b]
    T = _posenet_with_output([vec], "euler").to_matrices(torch.tensor([[vec]]))[0, 0]
    torch.testing.assert_close(T[:3, :3], rx_rz, atol=1e-6, rtol=0)
    assert float((T[:3, :3] - rz_rx).abs().max()) > 0.05  # the other order is far off
    torch.testing.assert_close(T[:3, 3], torch.tensor([0.1, -0.2, 0.3]), atol=1e-6, rtol=0)  # R p + t
    net = _posenet_with_output([vec], "axis_angle")
    T = net.to_matrices(net(_image(1, 6, 32, 32)))[0, 0]
    want = axis_angle_to_rotation_matrix(torch.tensor([[a, 0.0, b]]))[0]
    torch.testing.assert_close(T[:3, :3], want, atol=1e-6, rtol=0)
    torch.testing.assert_close(T[:3, 3], torch.tensor([0.1, -0.2, 0.3]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("rotation", ["euler", "axis_angle"])
def test_posenet_pose_maps_target_points_into_the_source_frame(rotation):
    """COURSE.md: T_t_to_s maps 3-D points from the target camera's frame into the source's, and
    the target pixel p_t is read in the source at p_s ~ K T_t_to_s D_t(p_t) K^-1 p_t.

    A point 10 m in front of the target camera, 1 m to the right (pixel u = 42 with f = 100,
    cx = 32). Forward camera motion from target to source (the source camera 0.5 m ahead, so
    t = (0, 0, -0.5)): the point is *nearer* in the source frame, z = 9.5, and its pixel moves
    away from the principal point, u_s = 32 + 100 * 1 / 9.5. The opposite motion (t = +0.5):
    z = 10.5 and u_s = 32 + 100 / 10.5. A rotation by +theta about y moves a point on the optical
    axis to x = 10 sin(theta) > 0: u_s = 32 + 100 tan(theta)."""
    net = _posenet_with_output([FORWARD, BACKWARD, YAW], rotation)
    T = net.to_matrices(net(_image(1, 12, 32, 64)))[0]  # (3, 4, 4)
    point = torch.tensor([[[1.0], [0.0], [10.0]]])
    z = [float(pose.transform_points(T[k : k + 1], point)[0, 2, 0]) for k in range(2)]
    assert z[0] == pytest.approx(9.5, abs=1e-5) and z[1] == pytest.approx(10.5, abs=1e-5)
    # the camera centre of the source, in the target frame: 0.5 m ahead for forward motion
    centre = pose.transform_points(pose.invert_pose(T[:1]), torch.zeros(1, 3, 1))
    torch.testing.assert_close(centre[0, :, 0], torch.tensor([0.0, 0.0, 0.5]), atol=1e-6, rtol=0)

    from lesson_lib.warping import rigid_sample_points

    K = torch.tensor([[[100.0, 0, 32], [0, 100.0, 16], [0, 0, 1]]])
    depth = torch.full((1, 1, 32, 64), 10.0)
    want_u = [32 + 100 / 9.5, 32 + 100 / 10.5, 32 + 100 * math.tan(THETA)]
    for k, (u_t, u_s) in enumerate(zip([42, 42, 32], want_u)):
        uv, in_front = rigid_sample_points(depth, T[k : k + 1], K)
        assert float(uv[0, 0, 16, u_t]) == pytest.approx(u_s, abs=1e-4), k
        assert float(uv[0, 1, 16, u_t]) == pytest.approx(16.0, abs=1e-4), k
        assert bool(in_front[0, 0, 16, u_t])
    # the principal point's ray is along the motion: it stays put under a pure translation in z
    uv, _ = rigid_sample_points(depth, T[:1], K)
    assert float(uv[0, 0, 16, 32]) == pytest.approx(32.0, abs=1e-4)


def test_posenet_width64_small_at_init():
    v = PoseNet(n_frames=3, width=64)(_image(1, 9, 64, 64))
    assert v.shape == (1, 2, 6) and float(v.detach().abs().max()) < 0.1


_NETS = {
    "mono": lambda: MonodepthNet(width=16),
    "encoder": lambda: ResNetEncoder(width=16),
    "pose": lambda: PoseNet(n_frames=3, width=16),
}
_U8, _I64 = torch.uint8, torch.int64


@pytest.mark.parametrize(
    "net, shape, dtype, pattern",
    [
        ("mono", (1, 1, 64, 64), None, r"\(B, 3, H, W\).*\(1, 1, 64, 64\)"),
        ("mono", (1, 3, 60, 64), None, r"multiples of 32.*\(1, 3, 60, 64\)"),
        ("mono", (1, 3, 64, 100), None, r"multiples of 32.*\(1, 3, 64, 100\)"),
        ("mono", (1, 3, 64, 64), _U8, r"floating.*uint8.*\(1, 3, 64, 64\)"),
        ("mono", (1, 3, 64, 64), _I64, r"floating.*int64.*\(1, 3, 64, 64\)"),
        ("mono", (3, 64, 64), None, r"4 dimensions.*\(3, 64, 64\)"),
        ("encoder", (2, 3, 64, 48), None, r"multiples of 32.*\(2, 3, 64, 48\)"),
        ("pose", (1, 6, 64, 64), None, r"\(B, 9, H, W\).*\(1, 6, 64, 64\)"),
        ("pose", (1, 9, 64, 40), None, r"multiples of 32.*\(1, 9, 64, 40\)"),
    ],
)
def test_bad_input_raises_with_the_shape(net, shape, dtype, pattern):
    x = torch.ones(*shape, dtype=dtype) if dtype is not None else torch.rand(*shape)
    with pytest.raises(ValueError, match=pattern):
        _NETS[net]()(x)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="rotation"):
        PoseNet(rotation="quaternion")
    with pytest.raises(ValueError, match="n_frames"):
        PoseNet(n_frames=1)
    with pytest.raises(ValueError, match="scales"):
        DepthDecoder([16, 16, 32, 64, 128], scales=(0, 5))
    with pytest.raises(ValueError, match="max_disp_fraction"):
        MonodepthNet(max_disp_fraction=0.0)


@pytest.mark.parametrize("net_cls", [MonodepthNet, PoseNet])
def test_channels_last_gives_the_same_output(net_cls):
    net = net_cls(width=16).eval()
    c = 3 if net_cls is MonodepthNet else 9
    x = _image(B, c, H, W)
    with torch.no_grad():
        ref = net(x)
        net_cl = net.to(memory_format=torch.channels_last)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        assert x_cl.is_contiguous(memory_format=torch.channels_last)
        out = net_cl(x_cl)
    if isinstance(ref, dict):
        assert list(out) == list(ref)
        for s in ref:
            torch.testing.assert_close(out[s], ref[s], atol=1e-5, rtol=0)
    else:
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("feed", [False, True])
def test_decoder_feeds_coarser_outputs_into_finer_levels_only_when_asked(feed):
    torch.manual_seed(0)
    enc = ResNetEncoder(width=8)
    dec = DepthDecoder(enc.channels, scales=(0, 1, 2, 3), out_channels=2, feed_outputs=feed).eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        feats = enc(x)
        before = dec(feats)
        dec.heads["1"][1].bias.add_(3.0)  # change only the scale-1 output
        after = dec(feats)
    assert not torch.allclose(before[1], after[1])
    assert torch.allclose(before[2], after[2])  # coarser outputs never see finer ones
    assert torch.allclose(before[0], after[0]) is (not feed)  # scale 0 sees scale 1 only when fed


def test_monodepth_net_uses_the_v1_decoder():
    assert MonodepthNet(width=8).decoder.feed_outputs is True


@pytest.mark.parametrize("max_disp, initial", [(0.3, 0.01), (0.2, 0.05), (0.1, 0.09)])
def test_initial_disparity_is_the_bias_logit(max_disp, initial):
    """The docstring: the output convolutions' bias is b = logit(initial / max_disp_fraction); with
    zero head weights the network then predicts exactly ``initial`` at every scale."""
    net = MonodepthNet(width=8, max_disp_fraction=max_disp, initial_disparity=initial)
    b = _logit(initial / max_disp)
    for s, head in net.decoder.heads.items():
        torch.testing.assert_close(head[1].bias, torch.full((2,), b), atol=1e-6, rtol=0, msg=f"scale {s}")
    with torch.no_grad():
        for head in net.decoder.heads.values():
            head[1].weight.zero_()
        out = net(_image(1, 3, 64, 96))
    for d in out.values():
        torch.testing.assert_close(d, torch.full_like(d, initial), atol=1e-7, rtol=1e-6)


def test_initial_disparity_none_keeps_pytorchs_bias_near_0_15():
    """None: PyTorch's default bias, uniform in +-1/sqrt(fan_in), so with zero head weights the
    output is 0.3 * sigmoid(b) within 0.3 * (sigmoid(1/sqrt(fan_in)) - 1/2) of 0.15."""
    torch.manual_seed(0)
    net = MonodepthNet(width=8, initial_disparity=None)
    with torch.no_grad():
        biases = {s: head[1].bias.clone() for s, head in net.decoder.heads.items()}
        for head in net.decoder.heads.values():
            head[1].weight.zero_()
        out = net(_image(1, 3, 64, 96))
    for s, d in out.items():
        conv = net.decoder.heads[str(s)][1]
        bound = 1 / math.sqrt(conv.in_channels * 9)
        assert bool((biases[str(s)].abs() <= bound).all())
        torch.testing.assert_close(d[:, 0], torch.full_like(d[:, 0], 0.3 * torch.sigmoid(biases[str(s)][0]).item()))
        assert float((d - 0.15).abs().max()) <= 0.3 * (1 / (1 + math.exp(-bound)) - 0.5) + 1e-7
    assert not torch.allclose(biases["0"], torch.full((2,), _logit(0.01 / 0.3)))


def test_initial_disparity_sets_the_untrained_output():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        small = MonodepthNet(width=8, initial_disparity=0.01)(x)
        default_bias = MonodepthNet(width=8, initial_disparity=None)(x)
    for s in range(4):
        assert abs(float(small[s].mean()) - 0.01) < 0.005, s
        assert abs(float(default_bias[s].mean()) - 0.15) < 0.05, s
    with pytest.raises(ValueError, match="initial_disparity"):
        MonodepthNet(width=8, initial_disparity=0.3)


# --------------------------------------------------------------------------- SfMLearner's PoseExpNet


def _expected_posexp_parameters(n_sources, k=1):
    """Counted by hand from the architecture: conv k x k, cin -> cout has k*k*cin*cout + cout;
    ``k`` divides every channel count (the ``width`` option: 16 // width)."""
    enc = [(3 * (1 + n_sources), 16 // k, 7), (16 // k, 32 // k, 5), (32 // k, 64 // k, 3), (64 // k, 128 // k, 3),
           (128 // k, 256 // k, 3), (256 // k, 256 // k, 3), (256 // k, 256 // k, 3)]
    total = sum(kk * kk * ci * co + co for ci, co, kk in enc)
    total += 256 // k * 6 * n_sources + 6 * n_sources  # 1x1 pose prediction
    dec = [(256 // k, 256 // k), (256 // k, 128 // k), (128 // k, 64 // k), (64 // k, 32 // k), (32 // k, 16 // k)]
    total += sum(9 * ci * co + co for ci, co in dec)  # 3x3 transposed convolutions
    total += sum(9 * c // k * 2 * n_sources + 2 * n_sources for c in (128, 64, 32, 16))  # mask heads
    return total


def test_posexpnet_narrower_widths():
    from lesson_lib.models import PoseExpNet

    for width, k in ((8, 2), (4, 4)):
        net = PoseExpNet(n_sources=2, width=width)
        assert count_parameters(net) == _expected_posexp_parameters(2, k)
        poses, logits = net(torch.rand(1, 9, 64, 96))
        assert poses.shape == (1, 2, 6) and logits[0].shape == (1, 2, 2, 64, 96)
    assert count_parameters(PoseExpNet(2, width=8)) < 0.26 * count_parameters(PoseExpNet(2))
    for bad in (0, 3, 32):
        with pytest.raises(ValueError, match="width"):
            PoseExpNet(2, width=bad)


def test_posexpnet_shapes_and_parameter_count():
    from lesson_lib.models import PoseExpNet

    net = PoseExpNet(n_sources=2)
    poses, logits = net(torch.rand(2, 9, 64, 96))
    assert poses.shape == (2, 2, 6)
    assert {s: tuple(v.shape) for s, v in logits.items()} == {s: (2, 2, 2, 64 >> s, 96 >> s) for s in range(4)}
    assert count_parameters(net) == _expected_posexp_parameters(2)
    plain = PoseExpNet(n_sources=4, explainability=False)
    poses, logits = plain(torch.rand(1, 15, 64, 64))
    assert poses.shape == (1, 4, 6) and logits is None
    with pytest.raises(ValueError, match="frames"):
        net(torch.rand(2, 6, 64, 96))  # two frames for a net that expects three


def test_posexpnet_known_head_gives_known_poses_and_masks():
    """Zero weights in the prediction layers, known biases: the outputs are the biases (x 0.01
    for the poses), whatever the frames; the mask is sigmoid(b1 - b0)."""
    from lesson_lib.models import PoseExpNet, explainability

    net = PoseExpNet(n_sources=2)
    want = torch.tensor([[0.0, 0.0, 0.5, 0.0, 0.2, 0.0], [0.1, 0.0, -0.5, 0.0, 0.0, 0.0]])
    with torch.no_grad():
        net.pose_pred.weight.zero_()
        net.pose_pred.bias.copy_(100 * want.reshape(-1))
        for head in net.mask_heads.values():
            head.weight.zero_()
            head.bias.copy_(torch.tensor([0.0, 1.5, 2.0, -1.0]))  # source 0: (0, 1.5); source 1: (2, -1)
    poses, logits = net(torch.rand(3, 9, 64, 64))
    torch.testing.assert_close(poses, want.expand(3, 2, 6), atol=1e-6, rtol=0)
    T = net.to_matrices(poses)[0]
    # source 0: 0.5 m along +z and 0.2 rad about y, R = Ry(0.2) (Euler, rx = rz = 0)
    c, s = math.cos(0.2), math.sin(0.2)
    torch.testing.assert_close(T[0, :3, :3], torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(T[0, :3, 3], torch.tensor([0.0, 0.0, 0.5]), atol=1e-6, rtol=0)
    torch.testing.assert_close(T[1, :3, 3], torch.tensor([0.1, 0.0, -0.5]), atol=1e-6, rtol=0)
    for s_, lg in logits.items():
        mask = explainability(lg)
        assert mask.shape == (3, 2, 1, 64 >> s_, 64 >> s_)
        assert torch.allclose(mask[:, 0], torch.sigmoid(torch.tensor(1.5)).expand_as(mask[:, 0]))
        assert torch.allclose(mask[:, 1], torch.sigmoid(torch.tensor(-3.0)).expand_as(mask[:, 1]))


def test_explainability_is_a_sigmoid_of_the_logit_difference():
    from lesson_lib.models import explainability

    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(2, 3, 2, 5, 7, generator=g)
    torch.testing.assert_close(explainability(logits)[:, :, 0], torch.sigmoid(logits[:, :, 1] - logits[:, :, 0]))
    torch.testing.assert_close(explainability(logits + 7.0), explainability(logits))  # only the difference counts
    with pytest.raises(ValueError, match="logits"):
        explainability(torch.randn(2, 3, 1, 5, 7))


def test_network_input_size_rounds_to_multiples_of_32():
    from lesson_lib.models import network_input_size

    assert network_input_size(128, 416) == (128, 416)
    assert network_input_size(500, 741) == (512, 736)  # nearest multiples
    assert network_input_size(10, 40) == (32, 32)  # never below one block
