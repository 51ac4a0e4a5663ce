"""Monodepth (lesson_lib.methods.monodepth): the loss against scenes with a known disparity, the
left-right term, post-processing ramps, depth conversion, training a few steps, weights files
and their errors."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from lesson_lib.methods import load_model
from lesson_lib.models import MonodepthNet
from lesson_lib.methods.monodepth import (
    Monodepth,
    MonodepthConfig,
    left_right_consistency,
    monodepth_loss,
    post_process,
    post_process_weights,
    network_disparity,
)
from lesson_lib.stereo import depth_to_disparity_fraction, disparity_fraction_to_depth
from lesson_lib.training import (
    CheckpointError,
    CheckpointNotFoundError,
    TrainConfig,
    Trainer,
    export_weights,
    save_checkpoint,
)
from lesson_lib.warping import stereo_warp

H, W = 64, 96


def _texture(seed=0, b=2, h=H, w=W):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, h // 4, w // 4, generator=g)
    return F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)


def _pair(d_px=3.0, seed=0):
    """A fronto-parallel scene with constant disparity d_px: left(x) = right(x - d)."""
    right = _texture(seed)
    left, _ = stereo_warp(right, torch.full((right.shape[0], 1, H, W), d_px), "right", padding_mode="border")
    return left, right


def _disps(d_left_px, d_right_px, b=2):
    """Constant network outputs at every scale, as fractions of the width."""
    out = {}
    for s in range(4):
        h, w = H // 2**s, W // 2**s
        out[s] = torch.cat([torch.full((b, 1, h, w), d_left_px / W), torch.full((b, 1, h, w), d_right_px / W)], 1)
    return out


@pytest.mark.parametrize("variant", ["lr", "no_lr"])
def test_true_disparity_minimises_the_appearance_loss(variant):
    left, right = _pair(3.0)
    cfg = MonodepthConfig(variant=variant)
    true = monodepth_loss(_disps(3.0, 3.0), left, right, cfg)[1]["appearance"]
    for wrong in (0.0, 1.5, 4.5, 6.0):
        other = monodepth_loss(_disps(wrong, wrong), left, right, cfg)[1]["appearance"]
        assert other > true * 1.5, (wrong, float(other), float(true))


def test_sign_convention_of_the_loss():
    # right disparity must read the left image at x + d: swapping the images' roles must hurt
    left, right = _pair(3.0)
    good = monodepth_loss(_disps(3.0, 3.0), left, right)[1]["appearance"]
    swapped = monodepth_loss(_disps(3.0, 3.0), right, left)[1]["appearance"]
    assert swapped > 2 * good


def test_naive_variant_rebuilds_the_right_image_only():
    left, right = _pair(3.0)
    cfg = MonodepthConfig(variant="naive")
    # only channel 0 matters
    a = monodepth_loss(_disps(3.0, 0.0), left, right, cfg)[0]
    b = monodepth_loss(_disps(3.0, 7.0), left, right, cfg)[0]
    assert float(a) == pytest.approx(float(b))
    assert monodepth_loss(_disps(0.0, 0.0), left, right, cfg)[0] > 1.5 * a


def test_left_right_term_zero_when_consistent_and_weighted_in():
    left, right = _pair(3.0)
    consistent = _disps(3.0, 3.0)
    assert float(monodepth_loss(consistent, left, right)[1]["left_right"]) == pytest.approx(0.0, abs=1e-7)
    inconsistent = _disps(3.0, 5.0)
    full, terms = monodepth_loss(inconsistent, left, right, MonodepthConfig(variant="lr", left_right_weight=1.0))
    no_lr, terms_no = monodepth_loss(inconsistent, left, right, MonodepthConfig(variant="no_lr"))
    assert float(terms["left_right"]) == pytest.approx(4 * 2 * 2 / W, rel=1e-4)  # 4 scales, 2 terms, 2 px
    assert float(full - no_lr) == pytest.approx(float(terms["left_right"]), rel=1e-5)
    assert float(terms_no["left_right"]) == 0.0


def test_left_right_consistency_against_an_explicit_loop():
    # integer disparities hit pixel centres exactly, so the term can be computed by indexing:
    # mean |d_l(x) - d_r(x - d_l(x))| + mean |d_r(x) - d_l(x + d_r(x))|, indices clamped (border)
    g = torch.Generator().manual_seed(3)
    h, w = 5, 32
    dl = torch.randint(0, 6, (1, 1, h, w), generator=g).float()
    dr = torch.randint(0, 6, (1, 1, h, w), generator=g).float()
    t1 = t2 = 0.0
    for y in range(h):
        for x in range(w):
            xl = min(max(x - int(dl[0, 0, y, x]), 0), w - 1)
            xr = min(max(x + int(dr[0, 0, y, x]), 0), w - 1)
            t1 += abs(float(dl[0, 0, y, x] - dr[0, 0, y, xl]))
            t2 += abs(float(dr[0, 0, y, x] - dl[0, 0, y, xr]))
    want = (t1 + t2) / (h * w) / w  # in fractions of the width
    assert float(left_right_consistency(dl / w, dr / w)) == pytest.approx(want, rel=1e-5)
    # reading the other map on the wrong side (x + d_l) gives another value
    wrong = (dl / w - stereo_warp(dr / w, dl, "left", padding_mode="border")[0]).abs().mean()
    assert abs(float(wrong) - t1 / (h * w) / w) > 1e-3


def test_smoothness_known_answer_over_scales():
    # flat grey images (no edges: weight 1 everywhere) and disparities that are ramps of slope a
    # (fraction per pixel) along x at every scale: each map's smoothness is exactly a (the x term;
    # the y term is 0), so the summed term is sum_s 2 a / 2^s and the loss adds 0.1 times that
    a = 1e-3
    left = right = torch.full((1, 3, H, W), 0.5)
    d = {}
    for s in range(4):
        h, w = H // 2**s, W // 2**s
        ramp = (0.02 + a * torch.arange(w, dtype=torch.float32)).view(1, 1, 1, w).expand(1, 2, h, w)
        d[s] = ramp.contiguous()
    _, terms = monodepth_loss(d, left, right, MonodepthConfig(smoothness_weight=0.1))
    want = sum(2 * a / 2**s for s in range(4))
    assert float(terms["smoothness"]) == pytest.approx(want, rel=1e-4)
    l0, _ = monodepth_loss(d, left, right, MonodepthConfig(smoothness_weight=0.0))
    l1, _ = monodepth_loss(d, left, right, MonodepthConfig(smoothness_weight=0.1))
    assert float(l1 - l0) == pytest.approx(0.1 * want, rel=1e-3)


def _area(img, f):
    """Area reduction by ``f`` written out: the mean of each f x f block."""
    b, c, h, w = img.shape
    return img.reshape(b, c, h // f, f, w // f, f).mean(dim=(3, 5))


def test_upsample_mode_smoothness_is_at_each_outputs_own_scale_with_area_reduced_images():
    """monodepth2: the disparity is upsampled for the reconstruction only; the smoothness sees each
    output at its own scale, with the images reduced (area) to that scale.

    Textured images and disparities that are ramps of slope a (fraction per pixel at that scale)
    along x: the y term is 0 and the x term of one map is mean(a * exp(-|dx I_s|)), with I_s the
    image's f x f block means (f = 2^s), so the summed term is
    sum_s (mean(a e^{-|dx L_s|}) + mean(a e^{-|dx R_s|})) / 2^s, by hand and by kornia's
    independent inverse_depth_smoothness_loss. The upsample and downsample modes both give it;
    their appearance terms differ (the reconstructions are made at other resolutions)."""
    from kornia.losses import inverse_depth_smoothness_loss

    a = 1e-3
    left, right = _texture(seed=1, b=1), _texture(seed=2, b=1)
    d = {}
    for s in range(4):
        h, w = H // 2**s, W // 2**s
        d[s] = (0.02 + a * torch.arange(w, dtype=torch.float32)).view(1, 1, 1, w).expand(1, 2, h, w).contiguous()
    by_hand = by_kornia = 0.0
    for s in range(4):
        L, R = _area(left, 2**s), _area(right, 2**s)
        for img in (L, R):
            ix = (img[..., 1:] - img[..., :-1]).abs().mean(1)
            by_hand += float((a * torch.exp(-ix)).mean()) / 2**s
        by_kornia += float(inverse_depth_smoothness_loss(d[s][:, :1], L) + inverse_depth_smoothness_loss(d[s][:, 1:], R)) / 2**s
    assert by_kornia == pytest.approx(by_hand, rel=1e-5)
    # what the smoothness of the upsampled disparities with the full-resolution images would be
    up = sum(
        float(inverse_depth_smoothness_loss(F.interpolate(d[s], size=(H, W), mode="bilinear", align_corners=False)[:, c : c + 1], img))
        / 2**s
        for s in range(4)
        for c, img in ((0, left), (1, right))
    )
    assert abs(up - by_hand) > 0.1 * by_hand  # the test tells the two apart (measured: 27 % apart)

    terms = {m: monodepth_loss(d, left, right, MonodepthConfig(multiscale=m))[1] for m in ("downsample", "upsample")}
    for m, t in terms.items():
        assert float(t["smoothness"]) == pytest.approx(by_hand, rel=1e-5), m
    ap_down, ap_up = float(terms["downsample"]["appearance"]), float(terms["upsample"]["appearance"])
    assert abs(ap_down - ap_up) > 0.01 * ap_down, (ap_down, ap_up)
    # and the weight multiplies exactly that term in the upsample mode's loss
    l0 = monodepth_loss(d, left, right, MonodepthConfig(multiscale="upsample", smoothness_weight=0.0))[0]
    l1 = monodepth_loss(d, left, right, MonodepthConfig(multiscale="upsample", smoothness_weight=0.1))[0]
    assert float(l1 - l0) == pytest.approx(0.1 * by_hand, rel=1e-3)


def test_upsample_mode_appearance_compares_at_full_resolution():
    """In the upsample mode every scale's disparity, upsampled, reconstructs the full-resolution
    images: constant true disparity at every scale gives the scale-0 appearance error 4 times over
    (a constant upsamples to itself), whereas the downsample mode compares at each scale."""
    left, right = _pair(3.0)
    d = _disps(3.0, 3.0)
    up = monodepth_loss(d, left, right, MonodepthConfig(multiscale="upsample"))[1]["appearance"]
    only0 = monodepth_loss({0: d[0]}, left, right, MonodepthConfig(multiscale="upsample", scales=(0,)))[1]["appearance"]
    assert float(up) == pytest.approx(4 * float(only0), rel=1e-5)
    down = monodepth_loss(d, left, right, MonodepthConfig(multiscale="downsample"))[1]["appearance"]
    assert abs(float(down) - float(up)) > 0.01 * float(up)


def test_depth_to_disparity_fraction_and_back():
    K = torch.tensor([[[200.0, 0, 50], [0, 200.0, 30], [0, 0, 1]]])
    depth = torch.tensor([[[[10.0, 20.0, 0.0, 5.0]]]])  # 0: sky, no depth
    d = depth_to_disparity_fraction(depth, K[:, 0, 0], 0.5)
    assert torch.allclose(d, torch.tensor([[[[200 * 0.5 / 10 / 4, 200 * 0.5 / 20 / 4, 0.0, 200 * 0.5 / 5 / 4]]]]))
    back = disparity_fraction_to_depth(d, K[:, 0, 0], 0.5)
    assert torch.allclose(back[depth > 0], depth[depth > 0])
    assert float(back[0, 0, 0, 2]) == 100.0  # zero disparity: the far clamp, no inf


def test_post_process_ramps():
    l_mask, r_mask = post_process_weights(201)
    x = torch.linspace(0, 1, 201)
    l_mask, r_mask = l_mask.ravel(), r_mask.ravel()
    assert torch.all(l_mask[x <= 0.05] == 1) and torch.all(l_mask[x >= 0.1] == 0)
    mid = (x > 0.05) & (x < 0.1)
    assert torch.allclose(l_mask[mid], 1 - 20 * (x[mid] - 0.05), atol=1e-6)
    assert torch.equal(r_mask, l_mask.flip(0))
    assert torch.all(l_mask + r_mask <= 1)


def test_post_process_blends_as_documented():
    a, b = 0.1, 0.3
    disp = torch.full((1, 1, 4, 101), a)
    flipped = torch.full((1, 1, 4, 101), b)
    out = post_process(disp, flipped)[0, 0, 0]
    assert out[0] == pytest.approx(b) and out[-1] == pytest.approx(a)  # left edge: the mirrored one
    assert out[50] == pytest.approx((a + b) / 2)
    # a mirror-consistent prediction is left unchanged
    g = torch.Generator().manual_seed(0)
    d = torch.rand(2, 1, 5, 64, generator=g)
    assert torch.allclose(post_process(d, d.flip(-1)), d, atol=1e-7)
    with pytest.raises(ValueError, match="disp_flipped"):
        post_process(d, d[..., :-1])


def test_disparity_fraction_to_depth():
    K = torch.tensor([[[200.0, 0, 50], [0, 200.0, 30], [0, 0, 1]]] * 2)
    disp = torch.full((2, 1, 3, 100), 0.05)  # 5 px
    depth = disparity_fraction_to_depth(disp, K[:, 0, 0], torch.tensor([0.5, 1.0]))
    assert torch.allclose(depth[0], torch.full_like(depth[0], 200 * 0.5 / 5))
    assert torch.allclose(depth[1], torch.full_like(depth[1], 200 * 1.0 / 5))
    assert float(disparity_fraction_to_depth(torch.zeros(1, 1, 2, 2), K[:1, 0, 0], 0.5).max()) == 100.0
    with pytest.raises(ValueError, match=">= 0"):
        disparity_fraction_to_depth(-disp, K[:, 0, 0], 0.5)
    with pytest.raises(ValueError, match="baseline"):
        disparity_fraction_to_depth(disp, K[:, 0, 0], torch.ones(3))


class _Constant(torch.nn.Module):
    """A fake network: a constant disparity fraction at every scale."""

    def __init__(self, value):
        super().__init__()
        self.p = torch.nn.Parameter(torch.tensor(float(value)))
        self.sizes = []

    def forward(self, x):
        self.sizes.append(tuple(x.shape[-2:]))
        b, _, h, w = x.shape
        return {s: self.p.expand(b, 2, h // 2**s, w // 2**s) for s in range(4)}


def test_predict_runs_at_the_training_size_and_returns_the_input_size():
    net = _Constant(0.07)
    img = torch.rand(1, 3, 100, 330)
    d = network_disparity(net, img, size=(64, 224))
    assert d.shape == (1, 1, 100, 330) and net.sizes == [(64, 224)]
    assert torch.allclose(d, torch.full_like(d, 0.07))  # a fraction of the width does not change
    net.sizes.clear()
    network_disparity(net, img)
    assert net.sizes == [(96, 320)]  # nearest multiples of 32
    with pytest.raises(ValueError, match="image"):
        network_disparity(net, torch.rand(3, 100, 330))


def test_config_validation():
    with pytest.raises(ValueError, match="variant"):
        MonodepthConfig(variant="both")
    with pytest.raises(ValueError, match="multiple of 32"):
        MonodepthConfig(input_height=60, input_width=224)
    with pytest.raises(ValueError, match="both"):
        MonodepthConfig(input_height=64)
    with pytest.raises(ValueError, match="scales"):
        MonodepthConfig(scales=(1, 2))


class _Pairs(torch.utils.data.Dataset):
    def __init__(self, n=4):
        self.items = []
        for i in range(n):
            left, right = _pair(2.0 + i % 2, seed=i)
            K = torch.tensor([[80.0, 0, W / 2], [0, 80.0, H / 2], [0, 0, 1]])
            depth = torch.full((1, H, W), 80.0 * 0.5 / (2.0 + i % 2))
            self.items.append({"left": left[0], "right": right[0], "K": K, "baseline": torch.tensor(0.5), "depth": depth})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def _train(tmp_path, steps=25, **kw):
    cfg = TrainConfig(steps=steps, batch_size=2, lr=1e-3, out_dir=str(tmp_path / "run"), progress=False,
                      tensorboard=False, log_every=1, milestones=(0.9,))
    method = Monodepth(MonodepthConfig(encoder_width=8, **kw))
    trainer = Trainer(method, cfg, _Pairs(), _Pairs(2))
    trainer.fit()
    return trainer


def test_training_lowers_the_loss_and_writes_a_loadable_checkpoint(tmp_path):
    torch.manual_seed(0)
    trainer = _train(tmp_path)
    from lesson_lib.training import read_log

    log = read_log(tmp_path / "run" / "log.csv")
    first, last = sum(log["loss"][:5]) / 5, sum(log["loss"][-5:]) / 5
    assert last < 0.9 * first, (first, last)
    val = read_log(tmp_path / "run" / "val.csv")
    assert {"abs_rel", "a1", "abs_rel_median"} <= set(val)

    model, method, _ = load_model(tmp_path / "run" / "latest.pt")
    assert isinstance(method, Monodepth) and method.config.encoder_width == 8 and isinstance(model, MonodepthNet) and not model.training
    x = _Pairs(1)[0]["left"][None]
    assert torch.allclose(model(x)[0], trainer.model.eval()(x)[0], atol=1e-6)

    out = export_weights(tmp_path / "run" / "latest.pt", tmp_path / "w.pt", meta={"note": "test"})
    half, _, meta = load_model(out)
    assert meta["note"] == "test" and meta["step"] == 25
    assert out.stat().st_size < (tmp_path / "run" / "latest.pt").stat().st_size / 2
    assert torch.allclose(half(x)[0], model(x)[0], atol=2e-3)  # float16 storage


def test_weights_errors(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="no checkpoint file"):
        load_model(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="bad.pt"):
        load_model(bad)
    net = Monodepth(MonodepthConfig(encoder_width=8)).build_model()
    state = {"method": "no_such_method", "model": net.state_dict(), "method_config": {}}
    save_checkpoint(tmp_path / "other.pt", state)
    with pytest.raises(CheckpointError, match="no_such_method"):
        load_model(tmp_path / "other.pt")
    cfg = dataclasses.asdict(MonodepthConfig(encoder_width=16))
    save_checkpoint(tmp_path / "mismatch.pt", {"method": "monodepth", "model": net.state_dict(), "method_config": cfg})
    with pytest.raises(CheckpointError, match="does not fit the model"):
        load_model(tmp_path / "mismatch.pt")
    cfg["variant"] = "sideways"
    save_checkpoint(tmp_path / "badcfg.pt", {"method": "monodepth", "model": net.state_dict(), "method_config": cfg})
    with pytest.raises(CheckpointError, match="invalid method_config"):
        load_model(tmp_path / "badcfg.pt")
