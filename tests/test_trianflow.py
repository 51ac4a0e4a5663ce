"""TrianFlow's flow stage (chapter 09): forward-backward consistency, the occlusion-aware flow
loss on known shifts, training through the registry, TrianFlow.predict_flow and validation EPE."""

import pytest
import torch

from lesson_lib import methods
from lesson_lib.methods.trianflow import (
    TrianFlow,
    TrianFlowConfig,
    TrianFlowNet,
    fb_consistency,
    fb_score,
    flow_loss,
    visible_mask,
)
from lesson_lib.metrics import flow_epe


def _const(u, v, h=8, w=12):
    f = torch.zeros(1, 2, h, w, dtype=torch.float64)
    f[:, 0], f[:, 1] = u, v
    return f


def test_forward_backward_consistency_known_answers():
    d, bw = fb_consistency(_const(2.0, 0.0), _const(-2.0, 0.0))
    assert float(d[..., :10].max()) == 0.0  # comes back exactly where the forward flow stays inside
    assert float(d[..., 10:].min()) == pytest.approx(2.0)  # leaves the image: the backward flow reads zeros
    vis = visible_mask(_const(2.0, 0.0), _const(-2.0, 0.0))
    assert bool(vis[..., :10].all()) and not bool(vis[..., 10:].any())
    # a backward flow that does not undo the forward one: occluded (4 > 0.01 * 4 + 0.5)
    assert not bool(visible_mask(_const(2.0, 0.0), _const(0.0, 0.0)).any())
    s = fb_score(_const(2.0, 0.0), _const(-2.0, 0.0))
    assert float(s.max()) == pytest.approx(10.0) and float(s[..., 10:].max()) == pytest.approx(1 / 2.1)
    with pytest.raises(ValueError, match="flow_bw"):
        fb_consistency(_const(1.0, 0.0), _const(1.0, 0.0, h=4))


def test_flow_loss_prefers_the_true_shift():
    g = torch.Generator().manual_seed(0)
    image1 = torch.rand(2, 3, 32, 64, generator=g)
    image2 = torch.roll(image1, shifts=4, dims=3)  # every pixel moves 4 columns right
    true_fw = {2: torch.zeros(2, 2, 8, 16)}
    true_fw[2][:, 0] = 1.0  # 4 px at full resolution = 1 px at level 2
    true_bw = {2: -true_fw[2]}
    zero = {2: torch.zeros(2, 2, 8, 16)}
    cfg = TrianFlowConfig(smoothness_weight=0.0)
    good, terms = flow_loss(true_fw, true_bw, image1, image2, cfg)
    bad, _ = flow_loss(zero, zero, image1, image2, cfg)
    assert float(good) < 0.1 * float(bad)
    assert float(terms["visible"]) > 0.9
    wrong_sign, _ = flow_loss(true_bw, true_fw, image1, image2, cfg)
    assert float(wrong_sign) > 5 * float(good)


def test_config_rejects_bad_values():
    for bad in ({"stage": "depth2"}, {"ssim_weight": 1.5}, {"smoothness_weight": -1.0}, {"input_height": 50, "input_width": 64},
                {"input_height": 64}, {"flow_width": 0}):
        with pytest.raises(ValueError):
            TrianFlowConfig(**bad)


@pytest.fixture(scope="module")
def pairs():
    from lesson_lib.data.synthetic import VideoDataset, load_split

    data = VideoDataset(load_split("test", 1, 5, progress=False), 3, flow=True)
    return data


def test_trains_through_the_registry_validates_and_predicts(pairs, tmp_path):
    from lesson_lib.training import TrainConfig, Trainer, read_log

    assert "trianflow" in methods.available()
    cfg = TrianFlowConfig(flow_width=8, input_height=64, input_width=224)
    trainer = Trainer(TrianFlow(cfg), TrainConfig(steps=4, batch_size=2, lr=1e-4, out_dir=str(tmp_path), log_every=1,
                                                  validate_every=4, progress=False, tensorboard=False), pairs, pairs)
    trainer.fit()
    log = read_log(tmp_path / "log.csv")
    assert len(log["loss"]) == 4 and all(torch.isfinite(torch.tensor(log["loss"])))
    val = read_log(tmp_path / "val.csv")
    assert val["epe"][-1] > 0 and val["epe_zero_flow"][-1] > 0.5  # the camera moves: zero flow is wrong
    model, method, _ = methods.load_model(tmp_path / "latest.pt")
    item = pairs[0]
    assert method.predicts == {"flow"}
    flow = method.predict_flow(model, item["target"][None], item["sources"][None, 1])
    assert flow.shape == (1, 2, 128, 416) and bool(torch.isfinite(flow).all())
    with pytest.raises(TypeError, match="TrianFlowNet"):
        method.predict_flow(torch.nn.Linear(2, 2), item["target"][None], item["sources"][None, 1])
    with pytest.raises(NotImplementedError, match="flow stage"):  # a flow model has no depth, hence no poses
        method.predict_depth(model, item["target"][None])
    with pytest.raises(NotImplementedError, match="flow stage"):
        method.predict_poses(model, item["target"][None], item["sources"][None], item["K"])


def test_flow_epe_known_answers():
    gt = _const(3.0, 4.0).float()
    assert flow_epe(torch.zeros_like(gt), gt) == pytest.approx(5.0)
    valid = torch.zeros(1, 1, 8, 12, dtype=torch.bool)
    valid[..., :2, :] = True
    pred = gt.clone()
    pred[..., 2:, :] = 100.0  # wrong only where not valid
    assert flow_epe(pred, gt, valid) == 0.0
    with pytest.raises(ValueError, match="no pixel"):
        flow_epe(pred, gt, torch.zeros_like(valid))
    with pytest.raises(ValueError, match="gt"):
        flow_epe(pred, gt[..., :4])


def test_net_forward_is_one_pass_over_both_orders():
    torch.manual_seed(0)
    net = TrianFlowNet(TrianFlowConfig(flow_width=4))
    a, b = torch.rand(1, 3, 64, 96), torch.rand(1, 3, 64, 96)
    fw, bw = net(a, b)
    torch.testing.assert_close(fw[2], net.flow(a, b)[2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(bw[2], net.flow(b, a)[2], atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # trains, evaluates and predicts in subprocesses: about 20 s
def test_commands_train_evaluate_predict_trianflow(tmp_path):
    """End to end as subprocesses: a 3-step flow run with validation EPE, its flow evaluation
    (model and zero flow, static and moving pixels, in the JSON) and a flow prediction."""
    import json

    import numpy as np
    from skimage import data as skdata
    from skimage.io import imsave

    from _commands import run_command

    def cli(*args):
        return run_command(*args, cache=tmp_path / "cache")

    r = cli("train", "trianflow", "--steps", "3", "--batch-size", "2", "--train-sequences", "1", "--train-frames", "4",
            "--val-sequences", "1", "--val-frames", "3", "--validate-every", "3", "--image-height", "64",
            "--image-width", "224", "--flow-width", "4", "--no-progress", "--out-dir", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    assert "epe_zero_flow" in (tmp_path / "run" / "val.csv").read_text()
    r = cli("evaluate", tmp_path / "run" / "latest.pt", "--sequences", "1", "--frames", "4", "--json", tmp_path / "e.json")
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["method"] == "trianflow" and report["pairs"] == 2
    assert report["flow"]["zero_flow_epe_all"] > 0 and report["flow"]["pixels_all"] > 0
    assert "zero flow" in r.stdout
    a = skdata.astronaut()[::4, ::4]
    imsave(tmp_path / "a.png", a)
    imsave(tmp_path / "b.png", np.roll(a, 2, axis=1))
    r = cli("predict", tmp_path / "a.png", tmp_path / "b.png", "--weights", tmp_path / "run" / "latest.pt",
            "--out", tmp_path / "pred")
    assert r.returncode == 0, r.stderr
    flow = np.load(tmp_path / "pred" / "a_to_b_flow.npy")
    assert flow.shape == (2, 128, 128) and np.isfinite(flow).all() and (tmp_path / "pred" / "a_to_b_flow.png").is_file()
    r = cli("predict", tmp_path / "a.png", "--weights", tmp_path / "run" / "latest.pt", "--out", tmp_path / "pred")
    assert r.returncode != 0 and "two images" in r.stderr
    # the depth stage: the flow run's network loaded and frozen; evaluate reports depth, ATE-5, two-view pose, flow
    r = cli("train", "trianflow", "--stage", "depth", "--flow-weights", tmp_path / "run" / "latest.pt", "--steps", "2",
            "--batch-size", "2", "--train-sequences", "1", "--train-frames", "4", "--val-sequences", "1",
            "--val-frames", "3", "--validate-every", "2", "--image-height", "64", "--image-width", "224",
            "--flow-width", "4", "--encoder-width", "4", "--samples", "500", "--no-progress", "--out-dir", tmp_path / "depth")
    assert r.returncode == 0, r.stderr
    assert "abs_rel_median" in (tmp_path / "depth" / "val.csv").read_text()
    r = cli("evaluate", tmp_path / "depth" / "latest.pt", "--sequences", "1", "--frames", "5", "--motion-sequences", "1",
            "--json", tmp_path / "d.json")
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "d.json").read_text())
    assert report["results"]["median-scaled"]["abs_rel"] > 0
    assert report["ate"]["model"]["snippets"] == 1 and report["relative_pose"]["pairs"] == 3
    assert report["flow"]["pairs"] == 3 and "translation-direction error" in r.stdout
    r = cli("predict", tmp_path / "a.png", "--weights", tmp_path / "depth" / "latest.pt", "--out", tmp_path / "dpred")
    assert r.returncode == 0, r.stderr
    assert np.isfinite(np.load(tmp_path / "dpred" / "a_disp.npy")).all()
    # refused before any data is rendered (the default training split would take minutes)
    r = cli("train", "trianflow", "--stage", "depth", "--steps", "1", "--out-dir", tmp_path / "nope")
    assert r.returncode != 0 and "--flow-weights" in r.stderr and "training data" not in r.stdout + r.stderr
    r = cli("train", "trianflow", "--stage", "depth", "--flow-weights", tmp_path / "missing.pt", "--steps", "1",
            "--out-dir", tmp_path / "nope")
    assert r.returncode != 0 and "missing.pt" in r.stderr and "training data" not in r.stdout + r.stderr
    assert not (tmp_path / "nope").exists()


def test_occlusion_warm_up_counts_every_pixel_inside():
    g = torch.Generator().manual_seed(1)
    image1 = torch.rand(1, 3, 32, 64, generator=g)
    image2 = torch.rand(1, 3, 32, 64, generator=g)
    fw = {2: torch.zeros(1, 2, 8, 16)}
    bw = {2: torch.zeros(1, 2, 8, 16)}
    fw[2][..., :8] = 2.0  # the left half's forward flow is not undone by the backward flow: "occluded"
    cfg = TrianFlowConfig(smoothness_weight=0.0)
    with_mask, terms = flow_loss(fw, bw, image1, image2, cfg)
    without, terms2 = flow_loss(fw, bw, image1, image2, cfg, occlusion=False)
    assert float(terms["visible"]) == pytest.approx(float(terms2["visible"])) and float(terms["visible"]) < 0.8
    assert float(with_mask) != pytest.approx(float(without))
    method = TrianFlow(TrianFlowConfig(occlusion_from_step=100))
    from lesson_lib.training import StepContext

    net = method.build_model()
    batch = {"target": image1, "sources": torch.stack([image2, image2], 1)}
    early, _ = method.loss(net, batch, StepContext(step=5, generator=torch.Generator(), device=torch.device("cpu")))
    late, _ = method.loss(net, batch, StepContext(step=100, generator=torch.Generator(), device=torch.device("cpu")))
    fw_, bw_ = net(image1, image2)
    torch.testing.assert_close(early, flow_loss(fw_, bw_, image1, image2, method.config, occlusion=False)[0])
    torch.testing.assert_close(late, flow_loss(fw_, bw_, image1, image2, method.config, occlusion=True)[0])
