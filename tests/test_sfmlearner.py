"""SfMLearner (lesson_lib.methods.sfmlearner): the loss against the synthetic world's true depth
and poses, its scale ambiguity, the explainability regulariser and its collapse, the smoothness,
training a few steps through the registry, and the commands."""

import math

import pytest
import torch

from lesson_lib import methods
from lesson_lib.data.synthetic import VideoDataset
from lesson_lib.methods.sfmlearner import SfMLearner, SfMLearnerConfig, SfMLearnerNet, sfmlearner_loss
from lesson_lib.training import TrainConfig, Trainer, read_log


@pytest.fixture(scope="module")
def snippets():
    """Three 3-frame snippets of the first test world (the camera moves 0.31-0.37 m per frame)."""
    from lesson_lib.data.synthetic import load_split

    data = VideoDataset(load_split("test", 1, 6, progress=False), 3, flow=False)
    return torch.utils.data.default_collate([data[i] for i in range(3)])


def _outputs(disp_full, logits=None, poses=None):
    """Network-like outputs from a full-resolution disparity: each scale area-reduced."""
    disp = {s: torch.nn.functional.interpolate(disp_full, scale_factor=0.5**s, mode="area") if s else disp_full
            for s in range(4)}
    return {"disp": disp, "poses": poses, "logits": logits}


def _true_disp(batch):
    depth = batch["depth"].clone()
    depth[depth <= 0] = 1000.0  # sky: very far
    return 1.0 / depth


def test_true_depth_and_pose_rebuild_the_target(snippets):
    cfg = SfMLearnerConfig(mask=False, smoothness_weight=0.0)
    b = snippets
    true = sfmlearner_loss(_outputs(_true_disp(b)), b["target"], b["sources"], b["K"], cfg, T_t_to_s=b["T_t_to_s"])[1]
    ident = torch.eye(4).expand_as(b["T_t_to_s"])
    still = sfmlearner_loss(_outputs(_true_disp(b)), b["target"], b["sources"], b["K"], cfg, T_t_to_s=ident)[1]
    inverted = sfmlearner_loss(_outputs(_true_disp(b)), b["target"], b["sources"], b["K"], cfg,
                               T_t_to_s=torch.linalg.inv(b["T_t_to_s"]))[1]
    # measured on these snippets: 0.072 (4 scales x 2 sources, ~0.009 each) with the truth, 0.134 with
    # no motion, 0.188 with the inverted poses (0.54 and 0.38 of the truth's)
    assert float(true["view_synthesis"]) < 0.65 * float(still["view_synthesis"])
    assert float(true["view_synthesis"]) < 0.5 * float(inverted["view_synthesis"])


def test_scale_ambiguity_depth_and_translation_scaled_together(snippets):
    """Monocular video cannot tell a world from one twice as large: depth x 2 with translation
    x 2 rebuilds exactly the same images."""
    b = snippets
    cfg = SfMLearnerConfig(mask=False, smoothness_weight=0.0)
    T2 = b["T_t_to_s"].clone()
    T2[..., :3, 3] *= 2.0
    one = sfmlearner_loss(_outputs(_true_disp(b)), b["target"], b["sources"], b["K"], cfg, T_t_to_s=b["T_t_to_s"])[0]
    two = sfmlearner_loss(_outputs(_true_disp(b) / 2), b["target"], b["sources"], b["K"], cfg, T_t_to_s=T2)[0]
    assert float(two) == pytest.approx(float(one), rel=1e-4)
    wrong = sfmlearner_loss(_outputs(_true_disp(b) / 2), b["target"], b["sources"], b["K"], cfg, T_t_to_s=b["T_t_to_s"])[0]
    assert float(wrong) > 1.2 * float(one)


def test_explainability_regulariser_and_collapse(snippets):
    b = snippets
    B, S = b["sources"].shape[:2]
    H, W = b["target"].shape[-2:]

    def logits(diff):  # l1 - l0 = diff everywhere: mask = sigmoid(diff)
        return {s: torch.stack([torch.zeros(B, S, H >> s, W >> s), torch.full((B, S, H >> s, W >> s), diff)], 2)
                for s in range(4)}

    ident = torch.eye(4).expand_as(b["T_t_to_s"])
    cfg = SfMLearnerConfig(smoothness_weight=0.0, explainability_weight=0.2)
    for diff in (-3.0, 0.0, 4.0):
        loss, t = sfmlearner_loss(_outputs(_true_disp(b), logits(diff)), b["target"], b["sources"], b["K"], cfg, T_t_to_s=ident)
        m = 1 / (1 + math.exp(-diff))
        assert float(t["mask_mean"]) == pytest.approx(m, rel=1e-5)
        # cross-entropy towards "explainable": -log(m) per source and scale
        assert float(t["explainability"]) == pytest.approx(-math.log(m) * S * 4, rel=1e-5)
    # without the regulariser, a mask that explains nothing zeroes the view synthesis: the collapse
    free = SfMLearnerConfig(smoothness_weight=0.0, explainability_weight=0.0)
    collapsed = sfmlearner_loss(_outputs(_true_disp(b), logits(-20.0)), b["target"], b["sources"], b["K"], free, T_t_to_s=ident)[0]
    honest = sfmlearner_loss(_outputs(_true_disp(b), logits(20.0)), b["target"], b["sources"], b["K"], free, T_t_to_s=ident)[0]
    assert float(collapsed) < 1e-6 * float(honest)
    # with it, explaining nothing costs 0.2 x 20 per source and scale
    costly = sfmlearner_loss(_outputs(_true_disp(b), logits(-20.0)), b["target"], b["sources"], b["K"], cfg, T_t_to_s=ident)[0]
    assert float(costly) == pytest.approx(0.2 * 20 * S * 4, rel=1e-3)


def test_second_order_smoothness_known_answers(snippets):
    b = snippets
    B = b["target"].shape[0]
    H, W = b["target"].shape[-2:]
    cfg = SfMLearnerConfig(mask=False, smoothness_weight=1.0, scales=(0,))
    ramp = torch.linspace(0.1, 0.5, W).expand(B, 1, H, W).contiguous()  # linear: no second derivative
    terms = sfmlearner_loss(_outputs(ramp), b["target"], b["sources"], b["K"], cfg, T_t_to_s=b["T_t_to_s"])[1]
    assert float(terms["smoothness"]) == pytest.approx(0.0, abs=1e-6)
    x = torch.arange(W, dtype=torch.float32)
    quad = (0.1 + 1e-4 * x**2).expand(B, 1, H, W).contiguous()  # d_xx = 2e-4 everywhere
    terms = sfmlearner_loss(_outputs(quad), b["target"], b["sources"], b["K"], cfg, T_t_to_s=b["T_t_to_s"])[1]
    assert float(terms["smoothness"]) == pytest.approx(2e-4, rel=1e-3)


def test_upsampled_multiscale_warps_every_scale_at_full_resolution(snippets):
    """multiscale="upsample": each scale's disparity is upsampled and warped at full resolution,
    so a scale whose disparity is the full-resolution map area-reduced and upsampled again gives
    the full-resolution loss of that upsampled map; the paper's "downsample" compares it with
    reduced images instead (a different number)."""
    b = snippets
    H, W = b["target"].shape[-2:]
    up = SfMLearnerConfig(mask=False, smoothness_weight=0.0, scales=(0, 2), multiscale="upsample")
    down = SfMLearnerConfig(mask=False, smoothness_weight=0.0, scales=(0, 2))
    full = SfMLearnerConfig(mask=False, smoothness_weight=0.0, scales=(0,))
    outs = _outputs(_true_disp(b))
    back = torch.nn.functional.interpolate(outs["disp"][2], size=(H, W), mode="bilinear", align_corners=False)

    def vs(outputs, cfg):
        return float(sfmlearner_loss(outputs, b["target"], b["sources"], b["K"], cfg, T_t_to_s=b["T_t_to_s"])[1]["view_synthesis"])

    as_full = vs(outs, full) + vs({"disp": {0: back}, "poses": None, "logits": None}, full)
    assert vs(outs, up) == pytest.approx(as_full, rel=1e-5)
    assert abs(vs(outs, down) - as_full) > 1e-3 * as_full
    # the mask of a coarse scale is upsampled with its disparity: a constant mask m scales the term by m
    B, S = b["sources"].shape[:2]
    logits = {s: torch.stack([torch.zeros(B, S, H >> s, W >> s), torch.full((B, S, H >> s, W >> s), 1.0)], 2)
              for s in range(4)}
    masked = SfMLearnerConfig(smoothness_weight=0.0, explainability_weight=0.0, scales=(0, 2), multiscale="upsample")
    assert vs(_outputs(_true_disp(b), logits), masked) == pytest.approx(as_full / (1 + math.exp(-1.0)), rel=1e-5)


def test_normalised_smoothness_does_not_reward_shrinking_the_disparity(snippets):
    b = snippets
    B = b["target"].shape[0]
    H, W = b["target"].shape[-2:]
    x = torch.arange(W, dtype=torch.float32)
    quad = (0.1 + 1e-4 * x**2).expand(B, 1, H, W).contiguous()
    for normalise in (False, True):
        cfg = SfMLearnerConfig(mask=False, smoothness_weight=1.0, scales=(0,), smoothness_normalize=normalise)
        one, half = (sfmlearner_loss(_outputs(d), b["target"], b["sources"], b["K"], cfg, T_t_to_s=b["T_t_to_s"])[1]["smoothness"]
                     for d in (quad, quad / 2))
        if normalise:  # scale-free: the same for the map and half of it
            assert float(half) == pytest.approx(float(one), rel=1e-5)
        else:  # the paper's: halving the disparity halves the penalty
            assert float(half) == pytest.approx(float(one) / 2, rel=1e-5)


def test_config_rejects_bad_values():
    for bad in ({"n_sources": 3}, {"explainability_weight": -1.0}, {"scales": (1, 2)}, {"input_height": 100, "input_width": 96},
                {"multiscale": "sideways"}, {"photometric": "l2"}, {"pose_width": 5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SfMLearnerConfig(**bad)


class _Snippets(torch.utils.data.Dataset):
    def __init__(self, batch):
        self.b = batch

    def __len__(self):
        return self.b["target"].shape[0] * 4

    def __getitem__(self, i):
        j = i % self.b["target"].shape[0]
        return {k: v[j] for k, v in self.b.items()}


def test_trains_through_the_registry_and_reloads(snippets, tmp_path):
    assert "sfmlearner" in methods.available()
    cfg = SfMLearnerConfig(encoder_width=8, input_height=64, input_width=224)
    method = methods.build_method("sfmlearner", cfg)
    trainer = Trainer(method, TrainConfig(steps=12, batch_size=2, lr=2e-4, out_dir=str(tmp_path / "run"), log_every=1,
                                          progress=False, tensorboard=False), _Snippets(snippets), _Snippets(snippets))
    trainer.fit()
    log = read_log(tmp_path / "run" / "log.csv")
    assert all(math.isfinite(v) for v in log["loss"]) and len(log["loss"]) == 12
    assert sum(log["loss"][-3:]) < sum(log["loss"][:3])  # the loss falls over 12 steps
    assert {"abs_rel_median", "a1_median"} <= set(read_log(tmp_path / "run" / "val.csv"))
    model, loaded, _ = methods.load_model(tmp_path / "run" / "latest.pt")
    assert isinstance(loaded, SfMLearner) and isinstance(model, SfMLearnerNet)
    depth = loaded.predict_depth(model, snippets["target"], snippets["K"])
    assert depth.shape == snippets["depth"].shape and bool(torch.isfinite(depth).all())
    T = loaded.predict_poses(model, snippets["target"], snippets["sources"])
    assert T.shape == (snippets["target"].shape[0], 2, 4, 4)
    torch.testing.assert_close(T[..., 3, :], torch.tensor([0.0, 0, 0, 1]).expand(T.shape[0], 2, 4))


def test_predict_masks_and_scoring_them_against_the_truth(snippets):
    """A mask built from the truth scores ROC AUC 1 against it, its inverse 0: the measurement
    chapter 07 makes of a trained mask."""
    from lesson_lib.metrics import roc_auc

    cfg = SfMLearnerConfig(encoder_width=8)
    method = SfMLearner(cfg)
    net = method.build_model().eval()
    b = snippets
    masks = method.predict_masks(net, b["target"], b["sources"])
    assert masks.shape == (b["target"].shape[0], 2, 1, *b["target"].shape[-2:])
    assert bool(((masks > 0) & (masks < 1)).all())
    no_mask = SfMLearner(SfMLearnerConfig(encoder_width=8, mask=False))
    assert bool((no_mask.predict_masks(no_mask.build_model(), b["target"], b["sources"]) == 1).all())
    truth = torch.zeros_like(masks, dtype=torch.bool)
    truth[..., :, -10:] = True  # pretend the right border leaves the view
    perfect = (~truth).float() * 0.9 + 0.05
    assert roc_auc(1 - perfect, truth) == 1.0 and roc_auc(perfect, truth) == 0.0


@pytest.mark.slow  # trains, evaluates and predicts in subprocesses: about 10 s
def test_commands_train_evaluate_predict_sfmlearner(tmp_path):
    """The registry's dispatch, end to end as subprocesses: a 3-step run, its evaluation
    (median-scaled depth only, ATE beside the no-motion baseline, in the JSON) and a prediction."""
    import json

    import numpy as np
    from skimage import data as skdata
    from skimage.io import imsave

    from _commands import run_command

    def cli(*args):
        return run_command(*args, cache=tmp_path / "cache")

    r = cli("train", "sfmlearner", "--steps", "3", "--batch-size", "2", "--train-sequences", "1", "--train-frames", "5",
            "--val-sequences", "0", "--image-height", "64", "--image-width", "224", "--encoder-width", "8",
            "--no-progress", "--out-dir", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    r = cli("evaluate", tmp_path / "run" / "latest.pt", "--sequences", "1", "--frames", "6", "--motion-sequences", "1",
            "--json", tmp_path / "e.json")
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["method"] == "sfmlearner" and set(report["results"]) == {"median-scaled", "median-scaled + pp"}
    ate = report["ate"]
    assert ate["snippet_length"] == 5 and ate["chained"] and ate["model"]["snippets"] == 2
    assert ate["no_motion"]["ate_mean"] > ate["mean_motion"]["ate_mean"] > 0  # the world's car drives on
    assert "ATE-5" in r.stdout and "no-motion baseline" in r.stdout and "mean-motion baseline" in r.stdout
    imsave(tmp_path / "street.png", skdata.astronaut()[::4, ::4])
    r = cli("predict", tmp_path / "street.png", "--weights", tmp_path / "run" / "latest.pt", "--out", tmp_path / "pred")
    assert r.returncode == 0, r.stderr
    disp = np.load(tmp_path / "pred" / "street_disp.npy")
    assert disp.shape == (128, 128) and np.isfinite(disp).all() and "up to scale" in r.stdout


def test_predict_depth_and_poses_shapes_direction_and_errors(snippets):
    torch.manual_seed(0)
    method = SfMLearner(SfMLearnerConfig(input_height=64, input_width=224))
    net = method.build_model()
    net.train()
    depth = method.predict_depth(net, snippets["target"])
    assert depth.shape == (3, 1, 128, 416) and bool(torch.isfinite(depth).all()) and bool((depth > 0).all())
    assert net.training  # left as it was
    snippet = torch.cat([snippets["target"][:, None], snippets["sources"]], dim=1)  # target first
    T = method.predict_poses(net, snippets["target"], snippets["sources"])
    assert T.shape == (3, 2, 4, 4)
    assert net.training  # left as it was
    # the direction: the pose network's own 6-vector read with SfMLearner's Euler order, target to source
    from lesson_lib.images import resize
    from lesson_lib.pose import pose_vector_to_matrix

    x = resize(snippet.flatten(0, 1), (64, 224)).reshape(3, 3, 3, 64, 224)
    with torch.no_grad():
        net.eval()
        vec, _ = net.pose_net(torch.cat([x[:, 0], x[:, 1:].flatten(1, 2)], dim=1))
        net.train()
    torch.testing.assert_close(T, pose_vector_to_matrix(vec.reshape(-1, 6), rotation="euler").reshape(3, 2, 4, 4))
    with pytest.raises(ValueError, match="sources"):  # one source for a 3-frame pose network
        method.predict_poses(net, snippets["target"], snippets["sources"][:, :1])
    with pytest.raises(ValueError, match="image"):
        method.predict_depth(net, snippets["target"][:, :2])
    with pytest.raises(TypeError, match="SfMLearnerNet"):
        method.predict_depth(torch.nn.Linear(2, 2), snippets["target"])


def test_ssim_photometric_option_uses_chapter_04s_error(snippets):
    """photometric='ssim': with one scale and no smoothness, the view-synthesis term is the mean
    over valid pixels of losses.photometric_error(warped, target) per source; the truth scores
    lower than a wrong depth; the default stays the paper's L1."""
    from lesson_lib.losses import photometric_error
    from lesson_lib.warping import rigid_warp

    disp = _true_disp(snippets)
    cfg = SfMLearnerConfig(mask=False, photometric="ssim", scales=(0,), smoothness_weight=0.0)
    _, terms = sfmlearner_loss(_outputs(disp), snippets["target"], snippets["sources"], snippets["K"], cfg,
                               T_t_to_s=snippets["T_t_to_s"])
    want = 0.0
    for j in range(2):
        warped, valid = rigid_warp(snippets["sources"][:, j], 1 / disp, snippets["T_t_to_s"][:, j], snippets["K"])
        err = photometric_error(warped, snippets["target"], alpha=0.85)
        want += float((err * valid).sum() / valid.sum())
    assert float(terms["view_synthesis"]) == pytest.approx(want, rel=1e-5)
    _, wrong = sfmlearner_loss(_outputs(disp * 3), snippets["target"], snippets["sources"], snippets["K"], cfg,
                               T_t_to_s=snippets["T_t_to_s"])
    assert float(wrong["view_synthesis"]) > 1.5 * want
    assert SfMLearnerConfig().photometric == "l1"
