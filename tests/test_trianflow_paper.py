"""TrianFlow's depth stage as the paper defines it (chapter 09): scale registration, the point
loss L_pt, the two-view depth consistency L_pj and the flow's epipolar loss, on a noiseless
two-view scene whose depth is known in *both* frames (a curved surface intersected analytically
by every pixel's ray), and the options around it (frozen or trained flow, the oracle flow, the
frame gap)."""

import pytest
import torch

from lesson_lib import twoview
from lesson_lib.camera import pixel_grid
from lesson_lib.methods.trianflow import (TrianFlow, TrianFlowConfig, move_depth, paper_depth_loss, ray_angle_deg,
                                         register_depth)
from lesson_lib.pose import axis_angle_to_matrix

H, W = 48, 96
K = torch.tensor([[60.0, 0.0, 47.5], [0.0, 60.0, 23.5], [0.0, 0.0, 1.0]], dtype=torch.float64)


def _surface(x, y):
    """The scene: ``z = g(x, y)`` in camera 1's frame, gently curved both ways (not a plane, for
    which F would not be determined), with slopes small enough that every ray meets it once."""
    return 9.0 + 1.0 * torch.sin(0.6 * x) + 0.8 * torch.cos(0.7 * y), 0.6 * torch.cos(0.6 * x), -0.56 * torch.sin(0.7 * y)


def _hit(origin, d):
    """Distance ``l`` along each ray ``origin + l d`` (``d`` with unit z in its own camera) to the
    surface, by Newton's method on ``f(l) = z(l) - g(x(l), y(l))`` (monotone here: one root)."""
    ox, oy, oz = origin
    dx, dy, dz = d.unbind(-1)
    lam = torch.full_like(dx, 9.0)
    for _ in range(60):
        g, gx, gy = _surface(ox + lam * dx, oy + lam * dy)
        f = oz + lam * dz - g
        lam = lam - f / (dz - gx * dx - gy * dy)
    g, _, _ = _surface(ox + lam * dx, oy + lam * dy)
    assert float((oz + lam * dz - g).abs().max()) < 1e-9, "Newton did not converge"
    return lam


def _scene(t=(0.3, -0.05, 1.0), rot=(0.01, -0.03, 0.005)):
    """``(depth1, depth2, flow, R, t)``: the surface seen from camera 1 and from camera 2
    (``X2 = R X1 + t``), both depth maps exact, and the exact flow of frame 1's pixels."""
    R = axis_angle_to_matrix(torch.tensor([rot], dtype=torch.float64))[0]
    t = torch.tensor(t, dtype=torch.float64)
    pix = pixel_grid(H, W, torch.float64).reshape(3, -1).T  # (HW, 3) homogeneous
    rays = pix @ torch.linalg.inv(K).T  # unit z
    depth1 = _hit((0.0, 0.0, 0.0), rays)
    centre2 = -(R.T @ t)
    depth2 = _hit(tuple(centre2.tolist()), rays @ R)  # rays of camera 2 in camera 1's frame; l = depth in camera 2
    X1 = rays * depth1[:, None]
    q = (X1 @ R.T + t) @ K.T
    flow = (q[:, :2] / q[:, 2:] - pix[:, :2]).T.reshape(1, 2, H, W)
    return depth1.reshape(1, 1, H, W), depth2.reshape(1, 1, H, W), flow, R, t


def _loss(d1, d2, flow, cfg, valid=None, seed=0):
    img = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(1))
    valid = torch.ones(1, 1, H, W, dtype=torch.bool) if valid is None else valid
    return paper_depth_loss((1 / d1).float(), (1 / d2).float(), flow.float(), None, img, img, K.float()[None], cfg,
                            generator=torch.Generator().manual_seed(seed), flow_valid=valid)


CFG = dict(samples=800, min_parallax_deg=0.2, depth_smoothness_weight=0.0)


def test_scene_is_consistent():
    d1, d2, flow, R, t = _scene()
    assert bool((d1 > 5).all()) and bool((d2 > 3).all())
    # frame 1's points land where frame 2's depth says they are
    from lesson_lib.warping import sample

    uv = pixel_grid(H, W, torch.float64)[:2][None] + flow
    X1 = (pixel_grid(H, W, torch.float64).reshape(3, -1).T @ torch.linalg.inv(K).T) * d1.reshape(-1, 1)
    z_moved = (X1 @ R.T + t)[:, 2].reshape(1, 1, H, W)
    read, inside = sample(d2, uv, "border")
    assert float(((read - z_moved).abs() / z_moved)[inside].max()) < 2e-3  # bilinear reading of a smooth map


def test_true_depth_gives_zero_point_and_consistency_losses_at_any_scale():
    d1, d2, flow, _, _ = _scene()
    cfg = TrianFlowConfig(stage="depth", **CFG)
    loss, logs = _loss(3.0 * d1, 0.5 * d2, flow, cfg)  # each frame's scale is registered on its own
    assert float(logs["pose_ok"]) == 1.0 and float(logs["tri_points"]) > 300
    assert float(logs["points"]) < 1e-5
    assert float(logs["consistency"]) < 2e-3
    assert float(logs["geometric"]) == 0.0  # exact flow: no pixel between 0.1 and 0.5 px of its line
    # the registration brings the depth into baselines (|t| = 1): 3 d1 · c = d1 / |t|
    baseline = (0.3**2 + 0.05**2 + 1.0) ** 0.5
    assert float(logs["scale"]) == pytest.approx(0.5 * (1 / (3 * baseline) + 2 / baseline), rel=1e-3)
    flat, flat_logs = _loss(torch.full_like(d1, 10.0), torch.full_like(d2, 10.0), flow, cfg)
    assert float(flat_logs["points"]) > 100 * max(float(logs["points"]), 1e-7)
    assert float(flat_logs["consistency"]) > 5 * float(logs["consistency"])
    assert float(flat) > float(loss)


def test_register_depth_known_answers_and_no_gradient_along_the_scale():
    ref = torch.tensor([[1.0, 2.0, 4.0, 8.0]])
    valid = torch.ones_like(ref, dtype=torch.bool)
    assert float(register_depth(ref / 3, ref, valid)[0]) == pytest.approx(3.0)
    noisy = ref * torch.tensor([[1.1, 0.9, 1.05, 0.97]]) / 7
    c = register_depth(noisy, ref, valid)
    # the point loss at the registered scale is stationary along the overall scale
    alpha = torch.tensor(1.0, requires_grad=True)
    ((1 - alpha * c * noisy / ref).square().mean()).backward()
    assert abs(float(alpha.grad)) < 1e-6
    # a wrong rule (ratio of medians alone) is not stationary
    med = (ref.median() / noisy.median())
    beta = torch.tensor(1.0, requires_grad=True)
    ((1 - beta * med * noisy / ref).square().mean()).backward()
    assert abs(float(beta.grad)) > 1e-3
    assert float(register_depth(noisy, ref, torch.zeros_like(valid))[0]) == 1.0  # nothing valid
    p = noisy.clone().requires_grad_()
    assert not register_depth(p, ref, valid).requires_grad


def test_ray_angle_known_answers():
    """The angle between corresponding rays: a pixel theta off the principal point seen against
    the principal point (no rotation) meets at theta; the principal point of both cameras under
    a rotation by phi meets at phi; a pure rotation's exact correspondence meets at 0."""
    Kb = K[None].float()
    f, cx, cy = 60.0, 47.5, 23.5
    theta = torch.tensor([0.3, 2.0, 10.0])
    p1 = torch.tensor([[cx, cy]]).expand(3, 2)[None]
    p2 = torch.stack([cx + f * torch.tan(torch.deg2rad(theta)), torch.full_like(theta, cy)], -1)[None]
    torch.testing.assert_close(ray_angle_deg(p1, p2, Kb, torch.eye(3)[None]), theta[None], rtol=0, atol=1e-4)
    R = axis_angle_to_matrix(torch.tensor([[0.0, 0.05, 0.0]], dtype=torch.float64)).float()
    centre = torch.tensor([[[cx, cy]]])
    torch.testing.assert_close(ray_angle_deg(centre, centre, Kb, R), torch.tensor([[float(torch.rad2deg(torch.tensor(0.05)))]]),
                               rtol=0, atol=1e-4)
    q1 = torch.tensor([[[10.0, 5.0], [80.0, 40.0]]])
    h = torch.cat([q1.double(), torch.ones(1, 2, 1, dtype=torch.float64)], -1) @ (K @ R[0].double() @ torch.linalg.inv(K)).mT
    q2 = (h[..., :2] / h[..., 2:]).float()
    assert float(ray_angle_deg(q1, q2, Kb, R).abs().max()) < 1e-2


def test_move_depth_agrees_with_the_warping_chapters_sampling_and_the_moved_points_depth():
    """L_pj's z' and landing pixel against an independent route: chapter 03's
    rigid_sample_points (the same p' from a 4x4 pose) and the moved points' z computed directly."""
    from lesson_lib.warping import rigid_sample_points

    g = torch.Generator().manual_seed(3)
    depth = (3.0 + 10.0 * torch.rand(2, 1, 6, 9, generator=g, dtype=torch.float64))
    R = axis_angle_to_matrix(torch.tensor([[0.02, -0.06, 0.01], [0.0, 0.03, -0.02]], dtype=torch.float64))
    t = torch.tensor([[0.1, 0.0, -0.8], [-0.2, 0.05, 0.5]], dtype=torch.float64)
    Kb = K[None].expand(2, 3, 3)
    uv, z = move_depth(depth, R, t, Kb)
    T = torch.eye(4, dtype=torch.float64).repeat(2, 1, 1)
    T[:, :3, :3], T[:, :3, 3] = R, t
    uv_ref, _ = rigid_sample_points(depth, T, Kb)
    torch.testing.assert_close(uv, uv_ref)
    X = (torch.linalg.inv(K) @ pixel_grid(6, 9, torch.float64).reshape(3, -1))[None] * depth.reshape(2, 1, -1)
    torch.testing.assert_close(z, (R @ X + t[..., None])[:, 2].reshape(2, 1, 6, 9))


def test_point_loss_cannot_move_the_overall_scale_of_the_depth():
    d1, d2, flow, _, _ = _scene()
    g = torch.Generator().manual_seed(3)
    wobble = 1 + 0.1 * torch.rand(1, 1, H, W, generator=g, dtype=torch.float64)
    cfg = TrianFlowConfig(stage="depth", consistency_weight=0.0, geometric_weight=0.0, **CFG)
    disp1 = (1 / (d1 * wobble)).float().requires_grad_()
    img = torch.rand(1, 3, H, W)
    loss, logs = paper_depth_loss(disp1, (1 / d2).float(), flow.float(), None, img, img, K.float()[None], cfg,
                                  generator=torch.Generator().manual_seed(0), flow_valid=torch.ones(1, 1, H, W, dtype=torch.bool))
    assert float(logs["points"]) > 1e-4
    loss.backward()
    along_scale = float((disp1.grad * disp1.detach()).sum())  # d loss / d alpha for disp -> alpha disp
    assert abs(along_scale) < 1e-4 * float(disp1.grad.abs().sum() * disp1.detach().mean())


def test_geometric_loss_trains_the_flow_towards_its_epipolar_lines():
    d1, d2, flow, _, _ = _scene()
    noise = 0.3 * torch.randn(1, 2, H, W, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    f = (flow + noise).float().requires_grad_()
    cfg = TrianFlowConfig(stage="depth", point_weight=0.0, consistency_weight=0.0, **CFG)
    img = torch.rand(1, 3, H, W)
    loss, logs = paper_depth_loss((1 / d1).float(), (1 / d2).float(), f, None, img, img, K.float()[None], cfg,
                                  generator=torch.Generator().manual_seed(0), flow_valid=torch.ones(1, 1, H, W, dtype=torch.bool))
    assert 0.1 < float(logs["geometric"]) < 0.5
    loss.backward()
    assert f.grad is not None and float(f.grad.abs().sum()) > 0
    # a small step against the gradient brings the flow nearer the true epipolar lines
    _, _, _, R, t = _scene()
    tx = torch.tensor([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]], dtype=torch.float64)
    F_true = torch.linalg.inv(K).T @ tx @ R @ torch.linalg.inv(K)
    grid = pixel_grid(H, W, torch.float64)[:2].reshape(2, -1).T

    def distance(fl):
        return twoview.sampson_distance(F_true, grid, grid + fl.detach().double().reshape(2, -1).T).mean()

    with torch.no_grad():
        f2 = f - 0.05 * f.grad / f.grad.abs().max()
    assert float(distance(f2)) < float(distance(f)) - 1e-4


def test_bad_inputs_and_options_get_clear_errors():
    d1, d2, flow, _, _ = _scene()
    img = torch.rand(1, 3, H, W)
    cfg = TrianFlowConfig(stage="depth")
    with pytest.raises(ValueError, match="flow_bw .* or flow_valid"):
        paper_depth_loss((1 / d1).float(), (1 / d2).float(), flow.float(), None, img, img, K.float()[None], cfg)
    with pytest.raises(ValueError, match="disp2"):
        paper_depth_loss((1 / d1).float(), (1 / d2).float()[..., :-1], flow.float(), None, img, img, K.float()[None], cfg,
                         flow_valid=torch.ones(1, 1, H, W, dtype=torch.bool))
    with pytest.raises(ValueError, match="oracle_flow"):
        TrianFlowConfig(stage="flow", oracle_flow=True)
    with pytest.raises(ValueError, match="flow_lr_scale"):
        TrianFlowConfig(flow_lr_scale=0.0)
    with pytest.raises(ValueError, match="frame_gap"):
        TrianFlowConfig(frame_gap=3)
    from lesson_lib.data.synthetic import VideoDataset

    with pytest.raises(ValueError, match="flow_offset"):
        VideoDataset.__init__(VideoDataset.__new__(VideoDataset), [object()], 3, flow_offset=2)


def test_options_choose_the_data_and_what_trains():
    paper = TrianFlow(TrianFlowConfig(stage="depth"))
    assert paper.config.flow_trains and paper.data_options() == {"snippet_length": 3, "flow_offset": 1, "val_flow": True, "train_flow": False}
    gap2 = TrianFlow(TrianFlowConfig(stage="depth", frame_gap=2, oracle_flow=True))
    assert not gap2.config.flow_trains
    assert gap2.data_options() == {"snippet_length": 5, "flow_offset": 2, "val_flow": True, "train_flow": True}
    assert not TrianFlowConfig(stage="depth", freeze_flow=True).flow_trains
    assert not TrianFlowConfig(stage="depth", depth_loss="photometric").flow_trains
    assert TrianFlowConfig(stage="flow").flow_trains


def test_flow_weights_start_either_stage_from_a_trained_flow_network():
    """The flow stage given --flow-weights starts from them (fine-tuning); without, it starts from
    a random initialisation; the depth stage needs them unless the flow is the oracle's."""
    from lesson_lib import methods, weights

    shipped, _, _ = methods.load_model(weights.path("trianflow.pt"))
    want = {k: v.float() for k, v in shipped.flow.state_dict().items()}
    tuned = TrianFlow(TrianFlowConfig(stage="flow", flow_weights=str(weights.path("trianflow.pt")))).build_model()
    for k, v in tuned.flow.state_dict().items():
        torch.testing.assert_close(v.float(), want[k], msg=k)
    torch.manual_seed(0)
    fresh = TrianFlow(TrianFlowConfig(stage="flow")).build_model()
    assert not all(torch.equal(v.float(), want[k]) for k, v in fresh.flow.state_dict().items() if v.is_floating_point())
    with pytest.raises(ValueError, match="--flow-weights"):
        TrianFlow(TrianFlowConfig(stage="depth")).build_model()
    TrianFlow(TrianFlowConfig(stage="depth", oracle_flow=True)).build_model()  # the oracle needs no flow network's weights


def test_paper_depth_stage_trains_the_flow_on_and_the_oracle_reads_the_worlds_flow(tmp_path):
    import csv

    import numpy as np

    from lesson_lib.data.synthetic import VideoDataset, load_split
    from lesson_lib.training import TrainConfig, Trainer

    seqs = load_split("test", 1, 6, progress=False)
    five = VideoDataset(seqs, 5, flow=True, flow_offset=2)
    c = five.index[0][1]
    np.testing.assert_array_equal(five[0]["flow"].numpy(), seqs[0].flow_to(c, c + 2)[0])  # the flow to the pair's frame
    data = VideoDataset(seqs, 3, flow=True)
    small = dict(stage="depth", flow_width=4, encoder_width=4, samples=500, input_height=64, input_width=224)

    def trainer_for(out, **kw):
        torch.manual_seed(0)
        method = TrianFlow(TrianFlowConfig(**small, **kw))
        method.load_pretrained = False  # a random flow network stands in for the flow stage's
        trainer = Trainer(method, TrainConfig(steps=1, batch_size=2, out_dir=str(tmp_path / out), progress=False,
                                              tensorboard=False, log_every=1), data)
        flow_params = {id(p) for p in trainer.model.flow.parameters()}
        in_optimizer = any(id(p) in flow_params for g in trainer.optimizer.param_groups for p in g["params"])
        return trainer, in_optimizer

    # the paper's default: the flow network trains on (it is in the optimiser, in its own group at
    # flow_lr_scale of the learning rate); frozen on request
    trainer, in_opt = trainer_for("paper")
    assert in_opt
    flow_ids = {id(p) for p in trainer.model.flow.parameters()}
    lrs = {("flow" if id(g["params"][0]) in flow_ids else "depth"): g["lr"] for g in trainer.optimizer.param_groups}
    assert lrs["flow"] == pytest.approx(0.1 * lrs["depth"]) and len(trainer.optimizer.param_groups) == 2
    assert trainer.optimizer.param_groups[0]["lr"] == lrs["depth"]  # the logged learning rate is the depth's
    trainer.fit()
    assert not trainer_for("frozen", freeze_flow=True)[1]
    # the oracle: the world's flow is triangulated (points found at once), the flow network unused
    oracle, in_opt = trainer_for("oracle", oracle_flow=True)
    assert not in_opt
    oracle.fit()
    with open(tmp_path / "oracle" / "log.csv") as f:
        row = list(csv.DictReader(f))[-1]
    assert float(row["pose_ok"]) == 1.0 and float(row["tri_points"]) > 100 and np.isfinite(float(row["loss"]))


def test_lr_scales_give_modules_their_own_learning_rate_and_must_name_the_models_modules():
    from lesson_lib.training.loop import _param_groups

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))

    class Scaled:
        def lr_scales(self, m):
            return [(m[1], 0.5)]

    groups = _param_groups(model, Scaled(), 1e-3)
    assert [g["lr"] for g in groups] == [1e-3, 5e-4]
    assert [len(g["params"]) for g in groups] == [2, 2] and groups[1]["params"][0] is model[1].weight

    class Foreign:
        def lr_scales(self, m):
            return [(torch.nn.Linear(2, 2), 0.1)]

    with pytest.raises(ValueError, match="not part of the model"):
        _param_groups(model, Foreign(), 1e-3)

    class Zero:
        def lr_scales(self, m):
            return [(m[0], 0.0)]

    with pytest.raises(ValueError, match="> 0"):
        _param_groups(model, Zero(), 1e-3)
    assert [g["lr"] for g in _param_groups(model, object(), 1e-3)] == [1e-3]  # no lr_scales: one group


def test_fixed_count_ransac_trains_from_the_step_key_and_the_trainer_says_when_a_step_cannot_be_one_graph(tmp_path):
    """``ransac_iters``: the depth stage's draws come from the step's key (no host sync: it compiles
    as one graph, tests/test_compile.py). On the world's exact flow it finds every pose and
    triangulates; the run is repeatable; with the adaptive default ``--compile`` warns and
    ``graph_blocker`` names the option."""
    import csv
    import warnings

    import numpy as np

    from lesson_lib.data.synthetic import VideoDataset, load_split
    from lesson_lib.training import TrainConfig, Trainer

    data = VideoDataset(load_split("test", 1, 6, progress=False), 3, flow=True)
    small = dict(stage="depth", flow_width=4, encoder_width=4, samples=500, input_height=64, input_width=224)

    def run(out, compile=False, **kw):
        torch.manual_seed(0)
        method = TrianFlow(TrianFlowConfig(**small, **kw))
        method.load_pretrained = False
        trainer = Trainer(method, TrainConfig(steps=2, batch_size=2, out_dir=str(tmp_path / out), progress=False,
                                              tensorboard=False, log_every=1, compile=compile), data)
        return method, trainer

    rows = []
    for out in ("a", "b"):
        method, trainer = run(out, oracle_flow=True, ransac_iters=256)
        assert method.graph_blocker is None
        trainer.fit()
        with open(tmp_path / out / "log.csv") as f:
            rows.append([{k: v for k, v in r.items() if k != "time"} for r in csv.DictReader(f)])
    assert rows[0] == rows[1] and len(rows[0]) == 2
    for row in rows[0]:
        assert float(row["pose_ok"]) == 1.0 and float(row["tri_points"]) > 100 and np.isfinite(float(row["loss"]))

    method, _ = run("c", ransac_iters=0)
    assert "--ransac-iters" in method.graph_blocker
    with pytest.warns(UserWarning, match="graph breaks.*--ransac-iters"):
        run("d", compile=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run("e", compile=True, ransac_iters=128)
    with pytest.raises(ValueError, match="ransac_iters"):
        TrianFlowConfig(ransac_iters=-1)
