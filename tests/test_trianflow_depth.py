"""TrianFlow's depth stage (chapter 09): correspondences from the flow, pose from F without a
pose network, triangulation, scale alignment and the depth loss, on scenes with known answers
(rigid flow computed from a known depth and pose)."""

import pytest
import torch

from lesson_lib import methods
from lesson_lib.camera import pixel_grid
from lesson_lib.methods.trianflow import (
    TrianFlow,
    TrianFlowConfig,
    TrianFlowNet,
    align_scale,
    depth_loss,
    pose_from_flow,
    sample_correspondences,
    triangulate_correspondences,
)
from lesson_lib.pose import axis_angle_to_matrix, make_pose
from lesson_lib.warping import rigid_sample_points

H, W = 48, 96
K = torch.tensor([[60.0, 0.0, 47.5], [0.0, 60.0, 23.5], [0.0, 0.0, 1.0]])


def _scene(b=2, seed=0, t=(0.05, -0.02, 0.6), rot=(0.01, -0.02, 0.005)):
    """A smooth random depth (4..20 m) and a known pose: the exact rigid flow of every pixel."""
    g = torch.Generator().manual_seed(seed)
    coarse = 4.0 + 16.0 * torch.rand(b, 1, 4, 8, generator=g)
    depth = torch.nn.functional.interpolate(coarse, size=(H, W), mode="bilinear", align_corners=False)
    R = axis_angle_to_matrix(torch.tensor([rot] * b))
    T = make_pose(R, torch.tensor([t] * b))
    uv, front = rigid_sample_points(depth, T, K.expand(b, 3, 3))
    flow = uv - pixel_grid(H, W)[:2][None]
    return depth, T, flow, front


def test_sample_correspondences_keeps_the_best_scored_inside_the_image():
    flow = torch.zeros(1, 2, H, W)
    flow[:, 0, :, W // 2 :] = 1000.0  # the right half leaves the image
    score = torch.arange(H * W, dtype=torch.float32).reshape(1, 1, H, W)  # best at the bottom right
    p1, p2, index = sample_correspondences(flow, score, top_fraction=0.1, samples=50,
                                           generator=torch.Generator().manual_seed(0))
    assert p1.shape == p2.shape == (1, 50, 2) and index.shape == (1, 50)
    assert bool((p1[..., 0] < W // 2).all())  # none of the pixels whose flow leaves
    inside_scores = score.flatten(1)[:, (pixel_grid(H, W)[0].flatten() < W // 2)]
    cutoff = inside_scores.topk(int(round(0.1 * H * W)), dim=1).values.min()
    assert bool((score.flatten(1).gather(1, index) >= cutoff).all())  # only from the top 10 %
    torch.testing.assert_close(p2, p1 + flow.flatten(2).mT.gather(1, index[..., None].expand(-1, -1, 2)))
    torch.testing.assert_close(p1[0, :, 0] + W * p1[0, :, 1], index[0].float())  # index = v * W + u
    again = sample_correspondences(flow, score, 0.1, 50, torch.Generator().manual_seed(0))[2]
    other = sample_correspondences(flow, score, 0.1, 50, torch.Generator().manual_seed(1))[2]
    assert torch.equal(again, index) and not torch.equal(other, index)  # the generator decides
    for bad in (dict(top_fraction=0.0), dict(top_fraction=1.5), dict(samples=4)):
        with pytest.raises(ValueError):
            sample_correspondences(flow, score, **{"top_fraction": 0.1, "samples": 50, **bad})
    with pytest.raises(ValueError, match="score"):
        sample_correspondences(flow, score[..., :4])


def test_pose_from_exact_flow_recovers_the_pose_and_triangulation_the_depth():
    depth, T, flow, front = _scene()
    score = front.float()
    pose = pose_from_flow(flow, None, K, score=score, samples=800, threshold=0.1,
                          generator=torch.Generator().manual_seed(0))
    assert bool(pose.ok.all())
    torch.testing.assert_close(pose.R, T[:, :3, :3], atol=1e-4, rtol=0)
    t_true = T[:, :3, 3] / T[:, :3, 3].norm(dim=1, keepdim=True)
    torch.testing.assert_close(pose.t, t_true, atol=1e-4, rtol=0)  # direction and sign (cheirality)
    assert float(pose.inliers.float().mean()) > 0.95
    z, trusted = triangulate_correspondences(pose, K, min_parallax_deg=0.2)
    true_z = depth.flatten(1).gather(1, pose.index) / T[:, :3, 3].norm(dim=1, keepdim=True)  # in baselines
    assert int(trusted.sum()) > 500
    torch.testing.assert_close(z[trusted], true_z[trusted], rtol=1e-3, atol=0)
    assert bool((z[~trusted] == 0).all())
    # the scale that brings the triangulated depths back to metres is the baseline's length
    s = align_scale(depth.flatten(1).gather(1, pose.index), z, trusted)
    torch.testing.assert_close(s, T[:, :3, 3].norm(dim=1), rtol=1e-3, atol=0)


def test_pose_from_flow_flags_a_pure_rotation_and_needs_a_score():
    depth, T, flow, front = _scene(t=(0.0, 0.0, 0.0))  # no baseline: a homography explains the flow
    pose = pose_from_flow(flow, None, K, score=front.float(), samples=500, threshold=0.1,
                          generator=torch.Generator().manual_seed(0))
    assert not bool(pose.ok.any())
    with pytest.raises(ValueError, match="flow_bw"):
        pose_from_flow(flow, None, K)


def test_forward_backward_score_selects_the_consistent_pixels():
    depth, T, flow, front = _scene(b=1)
    flow_bw = -flow.clone()  # not the exact backward flow, but close to consistent everywhere
    corrupt = torch.zeros(1, 1, H, W, dtype=torch.bool)
    corrupt[..., : H // 2, :] = True
    flow_bw = torch.where(corrupt, flow_bw + 5.0, flow_bw)  # the top half is inconsistent
    pose = pose_from_flow(flow, flow_bw, K, top_fraction=0.3, samples=300, threshold=0.5,
                          generator=torch.Generator().manual_seed(0))
    assert bool((pose.p1[..., 1] >= H // 2 - 2).all())  # drawn from the consistent half


def test_align_scale_known_answers_and_outliers():
    ref = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])
    pred = 2.5 * ref
    valid = torch.ones_like(ref, dtype=torch.bool)
    torch.testing.assert_close(align_scale(pred, ref, valid), torch.tensor([2.5]))
    pred_out = pred.clone()
    pred_out[0, -1] = 1000.0  # one wild point: the median fit keeps it out of the least squares
    torch.testing.assert_close(align_scale(pred_out, ref, valid), torch.tensor([2.5]))
    # no valid point: scale 1; invalid points do not count
    torch.testing.assert_close(align_scale(pred, ref, torch.zeros_like(valid)), torch.tensor([1.0]))
    v2 = valid.clone()
    v2[0, -1] = False
    torch.testing.assert_close(align_scale(pred_out, ref, v2), torch.tensor([2.5]))
    p = pred.clone().requires_grad_()
    assert not align_scale(p, ref, valid).requires_grad
    with pytest.raises(ValueError, match="reference"):
        align_scale(pred, ref[:, :3], valid)


def test_depth_loss_is_lowest_for_the_true_depth_and_trains_the_disparity():
    depth, T, flow, front = _scene()
    b = depth.shape[0]
    from lesson_lib.pose import invert_pose

    uv_b, _ = rigid_sample_points(depth, invert_pose(T), K.expand(b, 3, 3))
    g = torch.Generator().manual_seed(0)
    image1 = torch.nn.functional.interpolate(torch.rand(b, 3, H // 4, W // 4, generator=g), size=(H, W),
                                             mode="bilinear", align_corners=False)
    from lesson_lib.warping import sample

    image2 = sample(image1, uv_b, "border", True)[0]  # frame 2 seen from frame 1's texture
    flow_bw = uv_b - pixel_grid(H, W)[:2][None]
    cfg = TrianFlowConfig(samples=600, ransac_threshold=0.1, min_parallax_deg=0.2, rigid_threshold=1.0)

    def loss_for(d):
        disps = {0: (1.0 / d).requires_grad_()}
        loss, logs = depth_loss(disps, flow, flow_bw, image1, image2, K.expand(b, 3, 3), cfg,
                                generator=torch.Generator().manual_seed(0))
        return loss, logs, disps[0]

    good, logs, disp = loss_for(3.0 * depth)  # any scale: the loss aligns it
    assert float(logs["pose_ok"]) == 1.0 and float(logs["points"]) > 300
    assert float(logs["triangulation"]) < 1e-3
    flat, flat_logs, _ = loss_for(torch.full_like(depth, 10.0))
    assert float(flat_logs["triangulation"]) > 50 * float(logs["triangulation"])
    assert float(flat.detach()) > float(good.detach())
    assert float(flat_logs["reprojection"]) > float(logs["reprojection"])
    loss, _, d = loss_for(torch.full_like(depth, 10.0))
    loss.backward()
    assert d.grad is not None and bool(torch.isfinite(d.grad).all()) and float(d.grad.abs().sum()) > 0


def test_depth_stage_loads_and_freezes_the_flow_network(tmp_path):
    from lesson_lib.data.synthetic import VideoDataset, load_split
    from lesson_lib.training import TrainConfig, Trainer, export_weights

    data = VideoDataset(load_split("test", 1, 4, progress=False), 3, flow=True)
    flow_cfg = TrianFlowConfig(flow_width=4, input_height=64, input_width=224)
    torch.manual_seed(0)
    flow_method = TrianFlow(flow_cfg)
    Trainer(flow_method, TrainConfig(steps=1, batch_size=1, out_dir=str(tmp_path / "flow"), progress=False,
                                     tensorboard=False), data).fit()
    flow_ckpt = tmp_path / "flow" / "latest.pt"
    with pytest.raises(ValueError, match="flow-weights"):
        TrianFlow(TrianFlowConfig(stage="depth", flow_width=4)).build_model()
    cfg = TrianFlowConfig(stage="depth", flow_weights=str(flow_ckpt), flow_width=4, encoder_width=4, samples=500,
                          ransac_threshold=1.0, input_height=64, input_width=224, freeze_flow=True)
    trainer = Trainer(TrianFlow(cfg), TrainConfig(steps=2, batch_size=2, out_dir=str(tmp_path / "depth"), progress=False,
                                                  tensorboard=False, validate_every=2), data, data)
    before = {k: v.clone() for k, v in trainer.model.flow.state_dict().items()}
    saved, _, _ = methods.load_model(flow_ckpt)
    for k, v in saved.flow.state_dict().items():
        torch.testing.assert_close(before[k], v)  # the flow stage's weights were loaded
    trainer.fit()
    for k, v in trainer.model.flow.state_dict().items():
        torch.testing.assert_close(v, before[k])  # and stayed frozen
    export_weights(tmp_path / "depth" / "latest.pt", tmp_path / "depth.pt")
    flow_ckpt.unlink()  # the weights file holds every weight: the flow stage's file is not needed
    model, method, _ = methods.load_model(tmp_path / "depth.pt")
    assert isinstance(model, TrianFlowNet) and method.config.stage == "depth"
    item = data[0]
    d = method.predict_depth(model, item["target"][None])
    assert d.shape == (1, 1, 128, 416) and bool((d > 0).all())
    T = method.predict_poses(model, item["target"][None], item["sources"][None], item["K"])
    assert T.shape == (1, 2, 4, 4) and bool(torch.isfinite(T).all())
    torch.testing.assert_close(T[..., 3, :], torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(1, 2, 4))
    with pytest.raises(RuntimeError, match="no depth network"):
        method.predict_depth(TrianFlowNet(flow_cfg), item["target"][None])
    with pytest.raises(ValueError, match="intrinsics K"):
        method.predict_poses(model, item["target"][None], item["sources"][None])


def _loss_inputs(b=2):
    depth, T, flow, front = _scene(b=b)
    from lesson_lib.pose import invert_pose
    from lesson_lib.warping import sample

    uv_b, _ = rigid_sample_points(depth, invert_pose(T), K.expand(b, 3, 3))
    g = torch.Generator().manual_seed(0)
    image1 = torch.nn.functional.interpolate(torch.rand(b, 3, H // 4, W // 4, generator=g), size=(H, W),
                                             mode="bilinear", align_corners=False)
    image2 = sample(image1, uv_b, "border", True)[0]
    return depth, flow, uv_b - pixel_grid(H, W)[:2][None], image1, image2


def test_depth_loss_is_deterministic_given_the_generator_and_float32_under_autocast():
    depth, flow, flow_bw, image1, image2 = _loss_inputs()
    b = depth.shape[0]
    cfg = TrianFlowConfig(samples=400, ransac_threshold=0.1, min_parallax_deg=0.2, rigid_threshold=1.0)
    disps = {0: 1.0 / (2.0 * depth), 1: torch.nn.functional.avg_pool2d(1.0 / (2.0 * depth), 2)}

    def run(seed, autocast=False):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return depth_loss(disps, flow, flow_bw, image1, image2, K.expand(b, 3, 3), cfg,
                              generator=torch.Generator().manual_seed(seed))

    a, logs_a = run(0)
    again, logs_again = run(0)
    assert float(a) == float(again) and float(logs_a["points"]) == float(logs_again["points"])
    other, logs_other = run(1)
    assert float(logs_other["points"]) != float(logs_a["points"]) or float(other) != float(a)  # another draw
    # under bfloat16 autocast the geometry stays in float32: the same pose, the same trusted points
    mixed, logs_mixed = run(0, autocast=True)
    assert float(logs_mixed["points"]) == float(logs_a["points"])
    assert float(logs_mixed["triangulation"]) == pytest.approx(float(logs_a["triangulation"]), abs=1e-3)
    pose32 = pose_from_flow(flow, None, K, score=torch.ones_like(depth), samples=400, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pose16 = pose_from_flow(flow.bfloat16(), None, K, score=torch.ones_like(depth),
                                samples=400, generator=torch.Generator().manual_seed(0))
    assert pose16.R.dtype != torch.bfloat16 and torch.equal(pose16.index, pose32.index)


def _depth_loss_of(disp, cfg, inputs):
    depth, flow, flow_bw, image1, image2 = inputs
    disps = {0: disp}
    return depth_loss(disps, flow, flow_bw, image1, image2, K.expand(depth.shape[0], 3, 3), cfg,
                      generator=torch.Generator().manual_seed(0))


def test_flow_consistency_is_zero_for_the_true_depth_at_any_scale():
    inputs = _loss_inputs()
    depth = inputs[0]
    cfg = TrianFlowConfig(samples=400, ransac_threshold=0.1, min_parallax_deg=0.2, rigid_threshold=1.0,
                          flow_consistency_weight=1.0)
    for c in (0.5, 1.0, 4.0):  # the scaled pose follows the depth's scale: the rigid flow is the same
        _, logs = _depth_loss_of(1.0 / (c * depth), cfg, inputs)
        assert float(logs["flow_consistency"]) < 1e-3  # pixels (measured 1e-5); the input is the exact rigid flow
    _, flat = _depth_loss_of(torch.full_like(depth, 0.1), cfg, inputs)
    assert float(flat["flow_consistency"]) > 0.2  # measured 0.54 px (the mean flow is 1.8 px)
    # a depth twice too far on the left half: the rigid flow there is wrong, the term says so
    wrong = depth.clone()
    wrong[..., : W // 2] *= 2.0
    _, logs_wrong = _depth_loss_of(1.0 / wrong, cfg, inputs)
    assert float(logs_wrong["flow_consistency"]) > 0.2  # measured 0.60 px
    # weight 0 (the default): the term is not computed
    _, off = _depth_loss_of(1.0 / depth, TrianFlowConfig(samples=400, ransac_threshold=0.1, min_parallax_deg=0.2,
                                                         rigid_threshold=1.0), inputs)
    assert float(off["flow_consistency"]) == 0.0
    disp = (1.0 / wrong).requires_grad_()
    loss, _ = _depth_loss_of(disp, cfg, inputs)
    loss.backward()
    assert bool(torch.isfinite(disp.grad).all())
    # the gradient pushes the too-far half nearer (its disparity up)
    assert float(disp.grad[..., : W // 2].sum()) < 0


def test_scale_free_loss_has_no_gradient_along_the_overall_scale():
    """The loss's value never depends on the disparity's overall scale (the alignment follows
    it), but with the alignment's scale detached its gradient does, and the scale drifts;
    ``scale_free`` removes that component: d/de loss(disp·(1 + e)) = <grad, disp> = 0."""
    inputs = _loss_inputs()
    depth = inputs[0]
    wrong = depth * (1.0 + 0.5 * torch.linspace(0, 1, W))  # too far towards the right
    base = dict(samples=400, ransac_threshold=0.1, min_parallax_deg=0.2, rigid_threshold=1.0,
                flow_consistency_weight=0.05)
    along = {}
    for free in (False, True):
        cfg = TrianFlowConfig(scale_free=free, **base)
        disp = (1.0 / wrong).requires_grad_()
        loss, _ = _depth_loss_of(disp, cfg, inputs)
        loss.backward()
        g = disp.grad
        d = disp.detach()
        along[free] = float((g * d).sum() / (g.norm() * d.norm()))
        value2, _ = _depth_loss_of(2.0 / wrong, cfg, inputs)
        assert float(value2) == pytest.approx(float(loss.detach()), rel=1e-3)  # the value: scale-invariant either way
    assert abs(along[True]) < 1e-6  # measured 4e-9 (cosine of the gradient with the disparity)
    assert abs(along[False]) > 5e-3  # measured 0.018


def test_flat2_depth_smoothness_is_zero_for_a_planar_disparity():
    inputs = _loss_inputs()
    depth = inputs[0]
    ramp = (0.2 + 0.01 * torch.arange(W, dtype=torch.float32)).expand(depth.shape[0], 1, H, W).clone()
    for name, expect_zero in (("flat2", True), ("edge1", False)):
        cfg = TrianFlowConfig(samples=400, ransac_threshold=0.1, min_parallax_deg=0.2, rigid_threshold=1.0,
                              depth_smoothness=name)
        _, logs = _depth_loss_of(ramp, cfg, inputs)
        assert (float(logs["smoothness"]) < 1e-6) == expect_zero
    with pytest.raises(ValueError, match="depth_smoothness"):
        TrianFlowConfig(depth_smoothness="edge2")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pose_from_flow_on_cuda_matches_the_truth():
    depth, T, flow, front = _scene()
    dev = torch.device("cuda")
    pose = pose_from_flow(flow.to(dev), None, K.to(dev), score=front.float().to(dev), samples=800, threshold=0.1,
                          generator=torch.Generator(device=dev).manual_seed(0))
    assert pose.R.device.type == "cuda" and bool(pose.ok.all())
    torch.testing.assert_close(pose.R.cpu(), T[:, :3, :3], atol=1e-4, rtol=0)
    t_true = T[:, :3, 3] / T[:, :3, 3].norm(dim=1, keepdim=True)
    torch.testing.assert_close(pose.t.cpu(), t_true, atol=1e-4, rtol=0)
    depth_, flow_, flow_bw, image1, image2 = _loss_inputs()
    loss, logs = depth_loss({0: (1.0 / depth_).to(dev)}, flow_.to(dev), flow_bw.to(dev), image1.to(dev), image2.to(dev),
                            K.expand(2, 3, 3).to(dev), TrianFlowConfig(samples=400, min_parallax_deg=0.2, rigid_threshold=1.0),
                            generator=torch.Generator(device=dev).manual_seed(0))
    assert bool(torch.isfinite(loss)) and float(logs["pose_ok"]) == 1.0


def test_bad_inputs_get_clear_errors():
    depth, T, flow, front = _scene(b=1)
    with pytest.raises(ValueError, match="flow_fw"):
        pose_from_flow(flow[:, :1], None, K, score=front.float())
    with pytest.raises(ValueError, match="flow_bw"):
        pose_from_flow(flow, flow[..., :10], K)
    for bad in ({"samples": 4}, {"top_fraction": 0.0}, {"ransac_threshold": -1.0}, {"stage": "pose"}):
        with pytest.raises(ValueError):
            TrianFlowConfig(**bad)
