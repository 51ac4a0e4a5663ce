"""Chapters 06, 07, 09: the encoder, depth decoder, Monodepth network and pose network --
shapes, parameter counts, output ranges, gradients, determinism and bad input."""

import pytest
import torch

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


def test_decoder_scales_shapes_and_range():
    enc = ResNetEncoder(width=16)
    dec = DepthDecoder(enc.channels, scales=(0, 1, 2, 3), out_channels=1)
    assert dec.decoder_channels == [4, 8, 16, 32, 64]
    assert tuple(dec.decoder_channels) == default_decoder_channels(enc.channels)
    out = dec(enc(_image(B, 3, H, W)))
    assert list(out) == [0, 1, 2, 3]
    for s, v in out.items():
        assert v.shape == (B, 1, H // 2**s, W // 2**s)
        assert bool(((v > 0) & (v < 1)).all())
    assert default_decoder_channels([64, 64, 128, 256, 512]) == (16, 32, 64, 128, 256)


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


def test_monodepth_scales_shapes_and_disparity_range():
    net = MonodepthNet(width=16)
    out = net(_image(B, 3, H, W))
    assert list(out) == [0, 1, 2, 3]
    for s, d in out.items():
        assert d.shape == (B, 2, H // 2**s, W // 2**s)
        assert bool(((d > 0) & (d < 0.3)).all())
    net.eval()
    with torch.no_grad():
        big = net(_image(1, 3, 128, 416))
    assert big[0].shape == (1, 2, 128, 416) and big[3].shape == (1, 2, 16, 52)
    assert bool(((big[0] > 0) & (big[0] < 0.3)).all())


def test_monodepth_width64_shapes_and_max_disp_fraction():
    net = MonodepthNet(width=64, max_disp_fraction=0.1)
    out = net(_image(1, 3, 64, 64))
    assert [tuple(v.shape) for v in out.values()] == [(1, 2, 64 >> s, 64 >> s) for s in range(4)]
    assert all(bool(((d > 0) & (d < 0.1)).all()) for d in out.values())


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
def test_posenet_shape_small_init_and_valid_poses(rotation, n_frames):
    net = PoseNet(n_frames=n_frames, width=16, rotation=rotation)
    target = _image(B, 3, H, W)
    sources = [_image(B, 3, H, W).roll(k + 1, dims=-1) for k in range(n_frames - 1)]
    frames = PoseNet.stack(target, sources)
    assert frames.shape == (B, 3 * n_frames, H, W)
    v = net(frames)
    assert v.shape == (B, n_frames - 1, 6)
    assert float(v.detach().abs().max()) < 0.1
    T = net.to_matrices(v)
    assert T.shape == (B, n_frames - 1, 4, 4)
    torch.testing.assert_close(
        T.reshape(-1, 4, 4), pose.pose_vector_to_matrix(v.reshape(-1, 6), rotation=rotation)
    )
    R = T[..., :3, :3]
    eye = torch.eye(3).expand_as(R)
    torch.testing.assert_close(R.transpose(-1, -2) @ R, eye, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(B, n_frames - 1), atol=1e-5, rtol=0)
    torch.testing.assert_close(T[..., :3, 3], v[..., :3])  # translation first
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(B, n_frames - 1, 4)
    torch.testing.assert_close(T[..., 3, :], bottom)


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
