"""lesson_lib.evaluation: the one evaluation protocol (chapters 06-11) on tiny fake datasets whose
answers are known -- a predictor that returns the truth, one that doubles it, per-image
averaging, which rows appear, and ``evaluate_model`` through a method's ``predict_depth``."""

import math

import pytest
import torch

from lesson_lib.evaluation import evaluate, evaluate_model, model_predictor, region_abs_rel, row_baseline
from lesson_lib.methods.monodepth import Monodepth, MonodepthConfig
from lesson_lib.metrics import METRIC_NAMES

H, W = 8, 12
LABELS = ["metres", "metres + pp", "median-scaled", "median-scaled + pp"]


def _item(seed: int, factor: float = 1.0, sky_rows: int = 0, far_rows: int = 0) -> dict:
    """A fake stereo item whose ground truth is written into the image, so that a predictor can
    read it back: channel 0 = depth / 100, channel 1 = ``factor`` / 10 (how much the predictor
    below multiplies the truth by). Depth 2-30 m; ``sky_rows`` top rows have no ground truth (0),
    ``far_rows`` bottom rows lie beyond 80 m (left out of every metric)."""
    g = torch.Generator().manual_seed(seed)
    depth = 2 + 28 * torch.rand(1, H, W, generator=g)
    if sky_rows:
        depth[:, :sky_rows] = 0.0
    if far_rows:
        depth[:, H - far_rows :] = 90.0
    left = torch.stack([depth[0] / 100, torch.full((H, W), factor / 10), torch.zeros(H, W)])
    K = torch.tensor([[10.0, 0, W / 2], [0, 10.0, H / 2], [0, 0, 1]])
    return {"left": left, "depth": depth, "K": K, "baseline": torch.tensor(0.5)}


class Decoder:
    """A predictor that reads the depth (times the item's factor) back out of the image, and
    records every call's post-processing flag."""

    def __init__(self, factor: float | None = None):
        self.factor, self.calls = factor, []

    def __call__(self, image, K, baseline, pp):
        assert image.shape[1:] == (3, H, W) and K.shape == (image.shape[0], 3, 3) and baseline.shape == (image.shape[0],)
        self.calls.append(pp)
        factor = image[:, 1:2] * 10 if self.factor is None else self.factor
        return (image[:, :1] * 100 * factor).clamp(min=0)


def _valid_depths(items):
    return [it["depth"][(it["depth"] > 1e-3) & (it["depth"] <= 80)].double() for it in items]


def test_the_truth_scores_perfectly_in_every_row():
    data = [_item(i, sky_rows=i % 3) for i in range(5)]
    res = evaluate(Decoder(1.0), data, batch_size=2)
    assert list(res) == LABELS
    for label, m in res.items():
        for name in ("abs_rel", "sq_rel", "rmse", "rmse_log"):
            assert m[name] == pytest.approx(0.0, abs=1e-6), (label, name)
        for name in ("a1", "a2", "a3"):
            assert m[name] == 1.0, (label, name)
    assert res["median-scaled"]["scale"] == pytest.approx(1.0, abs=1e-6)


def test_twice_the_truth_is_abs_rel_1_in_metres_and_perfect_median_scaled():
    """d = 2 g: |d - g| / g = 1 at every pixel; sq_rel = mean(g); rmse = sqrt(mean(g^2)); the
    ratio 2 exceeds 1.25, 1.25^2 and 1.25^3 (1.95): a1 = a2 = a3 = 0. Median scaling multiplies
    by median(g) / median(2 g) = 1/2 exactly: no error left."""
    data = [_item(i, sky_rows=1) for i in range(3)]
    res = evaluate(Decoder(2.0), data, batch_size=8)
    g = _valid_depths(data)
    for label in ("metres", "metres + pp"):
        m = res[label]
        assert m["abs_rel"] == pytest.approx(1.0, abs=1e-6)
        assert m["sq_rel"] == pytest.approx(sum(float(x.mean()) for x in g) / 3, rel=1e-5)
        assert m["rmse"] == pytest.approx(sum(math.sqrt(float(x.square().mean())) for x in g) / 3, rel=1e-5)
        assert m["rmse_log"] == pytest.approx(math.log(2), rel=1e-5)
        assert m["a1"] == m["a2"] == m["a3"] == 0.0
    for label in ("median-scaled", "median-scaled + pp"):
        m = res[label]
        assert m["abs_rel"] == pytest.approx(0.0, abs=1e-6) and m["a1"] == 1.0
        assert m["scale"] == pytest.approx(0.5, abs=1e-6)


def test_metrics_are_averaged_per_image_and_ignore_sky_and_far_pixels():
    """Image A predicted exactly, image B at twice the truth: abs_rel = (0 + 1) / 2 = 0.5 per
    image, whatever their numbers of valid pixels: A has 2 sky rows (predicted at 50 m, which would
    count as errors) and 3 rows beyond 80 m, so 36 valid pixels against B's 96; a pixel-weighted
    mean would give 96 / 132 = 0.73."""
    a, b = _item(0, factor=1.0, sky_rows=2, far_rows=3), _item(1, factor=2.0)
    a["left"][0, :2] = 0.5  # the sky predicted at 50 m: must not count
    res = evaluate(Decoder(), [a, b], batch_size=2, metric=True)
    assert res["metres"]["abs_rel"] == pytest.approx(0.5, abs=1e-6)
    assert res["metres"]["a1"] == pytest.approx(0.5, abs=1e-9)
    same = evaluate(Decoder(), [a, b], batch_size=1)
    for label in res:
        for name in METRIC_NAMES:
            assert same[label][name] == pytest.approx(res[label][name], abs=1e-9), (label, name)


def test_metric_false_leaves_out_the_metres_rows():
    res = evaluate(Decoder(2.0), [_item(0)], metric=False)
    assert list(res) == ["median-scaled", "median-scaled + pp"]
    assert res["median-scaled"]["abs_rel"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    "flags, labels",
    [
        ((False,), ["metres", "median-scaled"]),
        ((True,), ["metres + pp", "median-scaled + pp"]),
        ((False, True), LABELS),
    ],
)
def test_pp_rows_appear_only_with_post_processing(flags, labels):
    pred = Decoder(1.0)
    res = evaluate(pred, [_item(0), _item(1), _item(2)], batch_size=2, post_processing=flags)
    assert list(res) == labels
    assert pred.calls == list(flags) * 2  # two batches, each predicted once per flag, flag passed on


def test_post_processing_flag_reaches_the_predictor():
    """A predictor that is exact without post-processing and doubles with it."""

    def predict(image, K, baseline, pp):
        return image[:, :1] * 100 * (2.0 if pp else 1.0)

    res = evaluate(predict, [_item(0), _item(1)])
    assert res["metres"]["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    assert res["metres + pp"]["abs_rel"] == pytest.approx(1.0, abs=1e-6)


def test_empty_dataset_and_bad_batch_size_raise():
    with pytest.raises(ValueError, match="empty"):
        evaluate(Decoder(1.0), [])
    with pytest.raises(ValueError, match="batch_size"):
        evaluate(Decoder(1.0), [_item(0)], batch_size=0)


class _ConstantDisparity(torch.nn.Module):
    """A stand-in network: the disparity fraction ``value`` at every pixel and scale."""

    def __init__(self, value: float):
        super().__init__()
        self.value = torch.nn.Parameter(torch.tensor(value))

    def forward(self, x):
        b, _, h, w = x.shape
        return {s: self.value.expand(b, 2, h // 2**s, w // 2**s) for s in range(4)}


def _region_item(seed: int, n_region: int, wrong: float = 1.0, scale: float = 1.0) -> dict:
    """An item whose ``n_region`` deepest pixels are its region ("moving"); the image tells the
    predictor below to return the truth times ``scale``, and times ``scale * wrong`` inside the
    region (channel 2 = ``wrong - 1`` there). With ``wrong > 1`` and fewer than half the pixels
    in the region, the deepest pixels stay the deepest: the image's median is untouched."""
    it = _item(seed, factor=scale)
    moving = torch.zeros(H * W, dtype=torch.bool)
    if n_region:
        moving[it["depth"].flatten().topk(n_region).indices] = True
    moving = moving.reshape(1, H, W)
    it["left"][2] = moving[0].float() * (wrong - 1.0)
    it["moving"] = moving
    return it


def _region_predictor(image, K, baseline, pp):
    assert pp is False
    return image[:, :1] * 100 * image[:, 1:2] * 10 * (1.0 + image[:, 2:3])


def test_region_abs_rel_known_answers():
    # right everywhere up to one scale per image: 0 on the region whatever the scale
    data = [_region_item(i, 12, scale=0.1 * (i + 1)) for i in range(4)]
    assert region_abs_rel(_region_predictor, data, min_pixels=1, batch_size=3) == pytest.approx([0.0] * 4, abs=1e-6)
    # the region 1.5 times too far: the median scale is still right, so its abs rel is exactly
    # 0.5, whatever the image's scale
    data = [_region_item(i, 16, wrong=1.5, scale=3.0) for i in range(3)]
    assert region_abs_rel(_region_predictor, data, min_pixels=1) == pytest.approx([0.5] * 3, abs=1e-5)
    # images with fewer than min_pixels region pixels are left out, in order
    data = [_region_item(0, 16, wrong=1.5), _region_item(1, 0), _region_item(2, 8, wrong=2.0)]
    res = region_abs_rel(_region_predictor, data, min_pixels=8)
    assert res == pytest.approx([0.5, 1.0], abs=1e-5)
    assert len(region_abs_rel(_region_predictor, data, min_pixels=17)) == 0


def test_region_abs_rel_bad_input():
    data = [_region_item(0, 3, wrong=2.0)]
    with pytest.raises(ValueError, match="empty"):
        region_abs_rel(_region_predictor, [])
    with pytest.raises(ValueError, match="min_pixels"):
        region_abs_rel(_region_predictor, data, min_pixels=0)
    with pytest.raises(KeyError, match="'cars'"):
        region_abs_rel(_region_predictor, data, region="cars")
    with pytest.raises(ValueError, match="positive"):
        region_abs_rel(lambda x, K, b, pp: torch.zeros(x.shape[0], 1, H, W), data, min_pixels=1)
    with pytest.raises(ValueError):
        region_abs_rel(lambda x, K, b, pp: torch.ones(x.shape[0], 1, H, W + 1), data, min_pixels=1)


def test_evaluate_model_goes_through_the_methods_predict_depth():
    """Monodepth's depth is f * B / (d * W): a constant disparity of 0.05 of the width on a
    64-pixel-wide image with f = 80 px and B = 0.5 m is 80 * 0.5 / 3.2 = 12.5 m. Ground truth
    12.5 m: no error; ground truth 25 m: abs_rel 0.5 in metres, 0 median-scaled."""
    method = Monodepth(MonodepthConfig(encoder_width=8))
    model = _ConstantDisparity(0.05)
    K = torch.tensor([[80.0, 0, 32], [0, 80.0, 16], [0, 0, 1]])

    def item(gt):
        return {"left": torch.rand(3, 32, 64), "depth": torch.full((1, 32, 64), gt), "K": K, "baseline": torch.tensor(0.5)}

    res = evaluate_model(model, method, [item(12.5), item(12.5)])
    assert list(res) == LABELS  # Monodepth's depth is metric: the metres rows are there
    for m in res.values():
        assert m["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    res = evaluate_model(model, method, [item(25.0)], post_processing=(False,))
    assert list(res) == ["metres", "median-scaled"]
    assert res["metres"]["abs_rel"] == pytest.approx(0.5, abs=1e-6)
    assert res["median-scaled"]["abs_rel"] == pytest.approx(0.0, abs=1e-6)

    class UpToScale(Monodepth):
        metric_depth = False

    res = evaluate_model(model, UpToScale(method.config), [item(25.0)])
    assert list(res) == ["median-scaled", "median-scaled + pp"]


def test_model_predictor_passes_the_flag_and_clamps():
    """A constant disparity of 0.001 of the width is 80 * 0.5 / 0.064 = 625 m: clamped to the
    predictor's ``clamp``; the post-processing flag reaches ``predict_depth``."""
    method = Monodepth(MonodepthConfig(encoder_width=8))
    model = _ConstantDisparity(0.001)
    K = torch.tensor([[[80.0, 0, 32], [0, 80.0, 16], [0, 0, 1]]])
    image, baseline = torch.rand(1, 3, 32, 64), torch.tensor([0.5])
    for clamp in (100.0, 300.0):
        depth = model_predictor(model, method, clamp=clamp)(image, K, baseline, False)
        assert depth.shape == (1, 1, 32, 64) and torch.allclose(depth, torch.full_like(depth, clamp))
    seen = []

    class Spy(Monodepth):
        def predict_depth(self, model, image, K, baseline=None, *, post_processing=False, max_depth=100.0):
            seen.append((post_processing, max_depth))
            return super().predict_depth(model, image, K, baseline, post_processing=post_processing, max_depth=max_depth)

    predict = model_predictor(model, Spy(method.config), clamp=150.0)
    predict(image, K, baseline, True)
    predict(image, K, baseline, False)
    assert seen == [(True, 150.0), (False, 150.0)]
    with pytest.raises(ValueError, match="clamp"):
        model_predictor(model, method, clamp=0.0)


# --------------------------------------------------------------------------- paired bootstrap


def test_paired_bootstrap_known_answers():
    import numpy as np

    from lesson_lib.evaluation import paired_bootstrap

    # a constant difference: the interval is that difference exactly
    a = np.linspace(0.1, 0.3, 40)
    r = paired_bootstrap(a, a - 0.02, n_resamples=500)
    assert r["mean"] == pytest.approx(0.02) and r["low"] == pytest.approx(0.02) and r["high"] == pytest.approx(0.02)
    # a difference of +-1 in equal numbers: mean 0 and an interval around it, roughly
    # +-1.96 * 1/sqrt(n) for n = 400 independent images
    d = np.tile([1.0, -1.0], 200)
    r = paired_bootstrap(d, np.zeros_like(d), n_resamples=4000, seed=1)
    assert r["mean"] == pytest.approx(0.0) and r["low"] < 0 < r["high"]
    assert r["high"] - r["low"] == pytest.approx(2 * 1.96 / 20, rel=0.1)
    # grouped: 4 worlds of 5 images, differences constant within a world: only 4 values resampled
    groups = np.repeat(np.arange(4), 5)
    diff = np.repeat([0.1, 0.2, 0.3, 0.4], 5)
    r = paired_bootstrap(diff, np.zeros(20), groups, n_resamples=2000)
    assert r["groups"] == 4 and r["mean"] == pytest.approx(0.25)
    assert 0.1 <= r["low"] < 0.25 < r["high"] <= 0.4
    # the same seed gives the same interval
    assert paired_bootstrap(diff, np.zeros(20), groups, n_resamples=2000) == r


def test_paired_bootstrap_bad_input():
    from lesson_lib.evaluation import paired_bootstrap

    with pytest.raises(ValueError, match="equal length"):
        paired_bootstrap([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="finite"):
        paired_bootstrap([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError, match="groups"):
        paired_bootstrap([1.0, 2.0], [1.0, 2.0], [0])
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap([1.0, 2.0], [1.0, 2.0], confidence=95)


# --------------------------------------------------------------------------- poses and ATE


def _forward_snippet(step=1.0, n=3):
    """A camera moving ``step`` m forward per frame, target in the middle: T_t_to_s for each source."""
    mid = n // 2
    Ts = []
    for k in range(n):
        if k == mid:
            continue
        T = torch.eye(4, dtype=torch.float64)
        T[2, 3] = (mid - k) * step  # a target point at z sits at z + (mid - k) * step in frame k
        Ts.append(T)
    return torch.stack(Ts)[None]


def test_snippet_trajectory_known_answer():
    from lesson_lib.trajectory import snippet_trajectory

    traj = snippet_trajectory(_forward_snippet(1.0, 3), target_index=1)
    torch.testing.assert_close(traj[0], torch.tensor([[0.0, 0, 0], [0, 0, 1], [0, 0, 2]], dtype=torch.float64))
    traj5 = snippet_trajectory(_forward_snippet(0.5, 5), target_index=2)
    torch.testing.assert_close(traj5[0, :, 2], torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="target_index"):
        snippet_trajectory(_forward_snippet(), target_index=5)


class _Snips(torch.utils.data.Dataset):
    def __init__(self, T):
        self.T = T

    def __len__(self):
        return len(self.T)

    def __getitem__(self, i):
        return {"target": torch.zeros(3, 4, 4), "sources": torch.zeros(self.T.shape[1], 3, 4, 4), "T_t_to_s": self.T[i]}


def test_evaluate_poses_known_answers():
    from lesson_lib.evaluation import evaluate_poses

    T = torch.cat([_forward_snippet(1.0, 3), _forward_snippet(2.0, 3)]).float()
    data = _Snips(T)
    truth = lambda target, sources, T=T: T[: target.shape[0]]  # noqa: E731  (batch of 2 = everything)
    r = evaluate_poses(truth, data)
    assert r["ate_mean"] == pytest.approx(0.0, abs=1e-6) and r["snippets"] == 2
    half = T.clone()
    half[..., :3, 3] *= 0.5
    assert evaluate_poses(lambda t, s: half, data)["ate_mean"] == pytest.approx(0.0, abs=1e-6)  # scale is free
    still = evaluate_poses(lambda t, s: torch.eye(4).expand_as(T), data)
    # no motion: sqrt(0 + 1 + 4) / 3 and sqrt(0 + 4 + 16) / 3
    assert still["ate_mean"] == pytest.approx((math.sqrt(5) + math.sqrt(20)) / 6, rel=1e-6)
    with pytest.raises(ValueError, match="expected"):
        evaluate_poses(lambda t, s: T[:, :1], data)


def test_evaluate_poses_on_the_synthetic_world():
    from lesson_lib.data.synthetic import VideoDataset, load_split
    from lesson_lib.evaluation import evaluate_poses

    data = VideoDataset(load_split("test", 1, 7, progress=False), 5, flow=False)
    truth = evaluate_poses(lambda t, s: torch.stack([data[i]["T_t_to_s"] for i in range(len(data))])[: t.shape[0]], data,
                           batch_size=len(data))
    still = evaluate_poses(lambda t, s: torch.eye(4).expand(t.shape[0], 4, 4, 4), data)
    assert truth["ate_mean"] < 1e-5 < 0.05 < still["ate_mean"]


def _random_trajectory(n_frames=5, seed=0):
    """Camera-to-world poses of a turning, accelerating drive, and the oracle T_a_to_b."""
    from lesson_lib.pose import axis_angle_to_matrix, make_pose

    g = torch.Generator().manual_seed(seed)
    r = torch.randn(n_frames, 3, generator=g, dtype=torch.float64) * 0.1
    t = torch.cumsum(torch.randn(n_frames, 3, generator=g, dtype=torch.float64) * 0.4 + torch.tensor([0, 0, 1.0], dtype=torch.float64), 0)
    W = make_pose(axis_angle_to_matrix(r), t)  # camera k -> world

    def T(a, b):  # points of camera a's frame into camera b's frame
        return torch.linalg.inv(W[b]) @ W[a]
    return T


def test_chained_poses_equal_the_true_five_frame_poses_with_an_exact_3_frame_predictor():
    from lesson_lib.evaluation import chained_poses

    T = _random_trajectory()

    def oracle(target, sources):
        # every image is filled with its frame number: the predictor reads which frames it got
        t = [int(v) for v in target[:, 0, 0, 0]]
        s = [[int(v) for v in row] for row in sources[:, :, 0, 0, 0]]
        return torch.stack([torch.stack([T(a, b) for b in bs]) for a, bs in zip(t, s)])

    frames = torch.arange(5, dtype=torch.float64)[:, None, None, None].expand(5, 3, 2, 2)
    target, sources = frames[2][None], frames[[0, 1, 3, 4]][None]
    got = chained_poses(oracle, target, sources)
    want = torch.stack([T(2, b) for b in (0, 1, 3, 4)])[None]
    torch.testing.assert_close(got, want)
    # the wrong order of composition (T_2_to_1 . T_1_to_0) is not the same pose on a turning drive
    assert not torch.allclose(T(2, 1) @ T(1, 0), want[0, 0])
    with pytest.raises(ValueError, match="sources"):
        chained_poses(oracle, target, sources[:, :2])


def test_mean_motion_poses_known_answer():
    from lesson_lib.evaluation import mean_motion_poses
    from lesson_lib.pose import axis_angle_to_matrix, make_pose

    def pose(angle, tz):
        return make_pose(axis_angle_to_matrix(torch.tensor([[0.0, angle, 0.0]], dtype=torch.float64)),
                         torch.tensor([[0.0, 0.0, tz]], dtype=torch.float64))[0]

    data = _Snips(torch.stack([torch.stack([pose(0.1, 1.0), pose(-0.1, -1.0)]),
                               torch.stack([pose(0.3, 3.0), pose(-0.3, -3.0)])]))
    mean = mean_motion_poses(data)
    torch.testing.assert_close(mean, torch.stack([pose(0.2, 2.0), pose(-0.2, -2.0)]))
    with pytest.raises(ValueError, match="empty"):
        mean_motion_poses(_Snips(torch.zeros(0, 2, 4, 4)))


def test_evaluate_flow_known_answers():
    from lesson_lib.data.synthetic import VideoDataset, load_split
    from lesson_lib.evaluation import evaluate_flow

    data = VideoDataset(load_split("test", 1, 4, progress=False), 3, flow=True, skip_static=False)
    truth = torch.stack([data[i]["flow"] for i in range(len(data))])
    exact = evaluate_flow(lambda a, b: truth[: a.shape[0]], data, batch_size=len(data))
    assert exact["epe_all"] == 0.0 and exact["pixels_all"] == exact["pixels_static"] + exact["pixels_moving"]
    zero = evaluate_flow(lambda a, b: torch.zeros_like(truth[: a.shape[0]]), data, batch_size=len(data))
    assert zero["epe_all"] == pytest.approx(zero["zero_flow_epe_all"]) and zero["epe_all"] > 0.5
    with pytest.raises(ValueError, match="expected"):
        evaluate_flow(lambda a, b: truth[: a.shape[0], :1], data, batch_size=len(data))


def test_row_baseline_known_answers():
    # row 0: sky everywhere; row 1: 1, 2, 3, 10 (and 0 = sky, 90 > max: ignored); row 2: 5, 5, 7
    d = torch.zeros(2, 3, 4)
    d[0, 1] = torch.tensor([1.0, 2.0, 0.0, 90.0])
    d[1, 1] = torch.tensor([3.0, 10.0, 0.0, 0.0])
    d[0, 2] = torch.tensor([5.0, 5.0, 7.0, 0.0])
    median = row_baseline(d)
    assert median.shape == (1, 1, 3, 1)
    assert median.flatten().tolist() == pytest.approx([80.0, 2.5, 5.0])  # even count: mean of the middle two
    assert row_baseline(d, "mean").flatten().tolist() == pytest.approx([80.0, 4.0, 17.0 / 3.0])
    assert row_baseline(d.numpy(), max_depth=100.0).flatten().tolist() == pytest.approx([100.0, 3.0, 5.0])
    # the same as numpy's nanmedian over random maps
    import numpy as np

    g = torch.Generator().manual_seed(0)
    r = 100 * torch.rand(5, 7, 6, generator=g)
    r[torch.rand(r.shape, generator=g) < 0.3] = 0
    ref = np.nan_to_num(np.nanmedian(np.where((r > 0) & (r <= 80), r, np.nan), axis=(0, 2)), nan=80.0)
    assert row_baseline(r).flatten().numpy() == pytest.approx(ref, abs=1e-5)


def test_row_baseline_bad_input():
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        row_baseline(torch.ones(3, 4))
    with pytest.raises(ValueError, match="statistic"):
        row_baseline(torch.ones(1, 3, 4), "mode")
    with pytest.raises(ValueError, match="finite"):
        row_baseline(torch.full((1, 3, 4), -1.0))
    with pytest.raises(ValueError, match="finite"):
        row_baseline(torch.full((1, 3, 4), float("nan")))
