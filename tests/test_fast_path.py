"""The GPU's fast path (mixed precision + channels-last) run on the CPU with
``TrainConfig(fast_path_on_cpu=True)``: Monodepth trains in bfloat16 on a scene of known
disparity, its weights stay float32, a checkpoint written on the fast path resumes bit for bit,
and the loss as the trainer calls it makes no host sync (a GPU would wait for none).

The scene: a textured plane seen by a stereo rig with a constant disparity of 3 px at 64x96
(``left(x) = right(x - 3)``); the untrained network predicts about 1 px (``initial_disparity``
0.01 of the width). Everything is tiny (encoder width 8, batches of 2) so the file runs in
5-10 s on two CPU cores (bf16 on the CPU can be slower than float32).
"""

import pytest
import torch
import torch.nn.functional as F

from lesson_lib._validate import value_checks
from lesson_lib.methods.monodepth import Monodepth, MonodepthConfig, network_disparity
from lesson_lib.training import TrainConfig, Trainer, move_to, read_log
from lesson_lib.training.syncs import HostSyncCounter
from lesson_lib.warping import stereo_warp

H, W = 64, 96
TRUE_DISP = 3.0  # pixels


def _texture(seed, h=H, w=W):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, h // 4, w // 4, generator=g)
    return F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)[0]


class _ConstantDisparity(torch.utils.data.Dataset):
    """``n`` stereo pairs of different textures, all with disparity ``TRUE_DISP`` px."""

    def __init__(self, n=4):
        self.items = []
        for i in range(n):
            right = _texture(i)[None]
            left, _ = stereo_warp(right, torch.full((1, 1, H, W), TRUE_DISP), "right", padding_mode="border")
            self.items.append({"left": left[0], "right": right[0]})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def _config(out_dir, steps, **kw):
    base = dict(steps=steps, batch_size=2, lr=1e-3, milestones=(0.9,), log_every=1, checkpoint_every=0,
                progress=False, tensorboard=False, fast_path_on_cpu=True, out_dir=str(out_dir))
    return TrainConfig(**{**base, **kw})


def _trainer(out_dir, steps, **kw):
    return Trainer(Monodepth(MonodepthConfig(encoder_width=8)), _config(out_dir, steps, **kw), _ConstantDisparity())


def _median_disparity_px(model):
    x = _ConstantDisparity(1)[0]["left"][None]
    return float(network_disparity(model, x).median()) * W


STEPS = 40


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One fast-path run of STEPS steps: (trainer, median disparity before training in px)."""
    trainer = _trainer(tmp_path_factory.mktemp("fast") / "run", STEPS)
    before = _median_disparity_px(trainer.model)
    trainer.fit()
    return trainer, before


def test_fast_path_is_on_and_weights_stay_float32(trained):
    trainer, _ = trained
    assert trainer.device.type == "cpu"
    assert trainer.amp_dtype == torch.bfloat16 and trainer.channels_last
    assert not trainer.scaler.is_enabled()  # bf16 needs no loss scaling
    assert {p.dtype for p in trainer.model.parameters()} == {torch.float32}
    convs = [p for p in trainer.model.parameters() if p.ndim == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    for state in trainer.optimizer.state.values():
        assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.float32
    saved = torch.load(trainer.out_dir / "latest.pt", weights_only=True)
    assert {v.dtype for v in saved["model"].values() if v.is_floating_point()} == {torch.float32}
    assert saved["config"]["fast_path_on_cpu"] is True


def test_the_network_runs_in_bf16_and_the_loss_in_float32(trained):
    trainer, _ = trained
    left = torch.stack([_ConstantDisparity(1)[0]["left"]]).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), trainer.autocast():
        disps = trainer.model(left)
    assert all(d.dtype == torch.bfloat16 for d in disps.values())  # autocast reaches the convolutions
    batch = move_to(torch.utils.data.default_collate([_ConstantDisparity()[i] for i in range(2)]), "cpu",
                    channels_last=True)
    with torch.no_grad():
        with trainer.autocast(), value_checks(False):
            fast, _ = trainer.method.loss(trainer.model, batch, trainer.step_context())
        plain, _ = trainer.method.loss(trainer.model, batch, trainer.step_context())
    assert fast.dtype == torch.float32  # monodepth_loss lifts the disparities to float32
    assert float(fast) == pytest.approx(float(plain), rel=0.03)  # bf16 network, same loss to ~1 %


def test_loss_falls_and_the_disparity_moves_to_the_true_one(trained):
    """Known answer: the scene's disparity is 3 px everywhere. The untrained network says about
    1 px; after 40 bf16 steps the median is within 0.75 px of the truth (measured 2.94-3.28 px
    with seeds 0-2, float32 within 0.04 px of bf16), and the mean loss of the last 5 steps is
    under half the first step's (measured 25-34 %)."""
    trainer, before = trained
    log = read_log(trainer.out_dir / "log.csv")
    losses = log["loss"]
    assert log["step"] == list(range(1, STEPS + 1))
    assert all(torch.isfinite(torch.tensor(losses)))
    first, last = losses[0], sum(losses[-5:]) / 5
    assert last < 0.5 * first, losses
    after = _median_disparity_px(trainer.model)
    assert abs(before - 0.01 * W) < 0.1, before  # the untrained network's initial disparity
    assert abs(after - TRUE_DISP) < 0.75, (before, after)


def test_a_fast_path_checkpoint_resumes_exactly(tmp_path):
    steps, stop = 6, 2
    whole = _trainer(tmp_path / "whole", steps)
    whole.fit()
    _trainer(tmp_path / "parts", steps, stop_at_step=stop).fit()
    assert torch.load(tmp_path / "parts" / "latest.pt", weights_only=True)["step"] == stop
    resumed = _trainer(tmp_path / "parts", steps, resume=True)
    resumed.fit()
    assert resumed.step == steps
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert read_log(tmp_path / "parts" / "log.csv")["loss"] == read_log(tmp_path / "whole" / "log.csv")["loss"]


# Host syncs ---------------------------------------------------------------------------------


def test_the_training_loss_makes_no_host_sync(tmp_path):
    """The loss exactly as ``Trainer.train_step`` calls it (autocast bf16, value checks off,
    the trainer's step context, a channels-last batch) calls nothing that reads tensor data;
    with value checks on the same call does (the counter sees this code path)."""
    trainer = _trainer(tmp_path / "run", 1)
    data = _ConstantDisparity()
    batch = move_to(torch.utils.data.default_collate([data[0], data[1]]), trainer.device,
                    channels_last=trainer.channels_last)
    with HostSyncCounter() as off:
        with trainer.autocast(), value_checks(False):
            loss, logs = trainer.method.loss(trainer.train_model, batch, trainer.step_context())
    assert off.calls == [], off.calls
    assert loss.requires_grad and all(isinstance(v, torch.Tensor) for v in logs.values())  # logs stay tensors
    with HostSyncCounter() as on:
        with trainer.autocast():
            trainer.method.loss(trainer.train_model, batch, trainer.step_context())
    assert len(on.calls) > 0 and all("lesson_lib" in c for c in on.calls)
