"""The method contract (lesson_lib.training.method) and the registry (lesson_lib.methods): each
promise the contract makes to the four methods built on it, with a test that fails if it breaks.

(a) the loss gets a StepContext whose step counts 0, 1, 2, ... and whose generator depends only
    on (seed, step, rank): an interrupted and resumed run draws what an uninterrupted one drew,
    and drawing from it leaves the global generator alone;
(b) frozen_modules: frozen sub-networks keep weights and batch-norm statistics, stay in eval mode
    in every loss call (also after a validation), and are not in the optimizer;
(c) load_weights_into: part of a model from another run's checkpoint or float16 weights file,
    with CheckpointErrors that name the path;
(d) StepContext.full_precision: bf16 autocast in the loss on the CPU's fast path, float32 inside;
(e) the registry: names, refusals, load_model from checkpoints and weights files, legacy keys.
"""

import copy
import dataclasses
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from lesson_lib import methods
from lesson_lib.methods import available, build_method, config_from_dict, get_method, load_model, register
from lesson_lib.methods.monodepth import Monodepth, MonodepthConfig
from lesson_lib.models import MonodepthNet
from lesson_lib.training import (
    CheckpointError,
    CheckpointNotFoundError,
    Method,
    StepContext,
    TrainConfig,
    Trainer,
    export_weights,
    load_checkpoint,
    load_weights_into,
    save_checkpoint,
    step_generator,
)

# -- a toy method: a frozen-able backbone with batch norm and dropout, and a head ----------------


class ToyNet(nn.Module):
    def __init__(self, hidden: int = 8):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(4, hidden), nn.BatchNorm1d(hidden), nn.Dropout(0.5), nn.ReLU())
        self.head = nn.Linear(hidden, 1)

    def forward(self, x):
        return self.head(self.backbone(x))


@dataclass
class ToyConfig:
    hidden: int = 8


class Toy(Method):
    """Regression; records what every loss call saw."""

    name = "toy_contract"
    config_class = ToyConfig

    def __init__(self, config=None, freeze=False, draws=0):
        self.config = config or ToyConfig()
        self.freeze, self.draws = freeze, draws
        self.seen = []  # one dict per loss call

    def build_model(self):
        return ToyNet(self.config.hidden)

    def frozen_modules(self, model):
        return [model.backbone] if self.freeze else []

    def loss(self, model, batch, ctx):
        record = {"step": ctx.step, "ctx": ctx}
        if self.draws:
            before = torch.get_rng_state()
            record["draws"] = torch.rand(self.draws, generator=ctx.generator)
            record["global_untouched"] = torch.equal(torch.get_rng_state(), before)
        record["modes"] = {name: m.training for name, m in model.named_modules()}
        x = batch["x"]
        if self.freeze:
            # a frozen backbone is in eval mode: dropout off, so two passes agree
            assert not model.backbone.training and not model.backbone[1].training and not model.backbone[2].training
            assert model.head.training
            assert torch.equal(model.backbone(x), model.backbone(x))
        m = torch.ones(4, 4)
        record["dtype"] = (x @ m).dtype
        with ctx.full_precision():
            record["dtype_full"] = (x.float() @ m).dtype
        record["dtype_after"] = (x @ m).dtype
        self.seen.append(record)
        err = model(x).float() - batch["y"]
        return err.square().mean(), {"mse": err.square().mean().detach()}

    def validate(self, model, batch):
        return {"val_mse": float((model(batch["x"]) - batch["y"]).square().mean())}


def toy_data(n=8, seed=0, offset=3.0):
    """``n`` items; ``x`` has mean ``offset``, so batch norm in train mode would move its running mean."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g) + offset
    y = x.sum(1, keepdim=True) * 0.1
    return [{"x": x[i], "y": y[i]} for i in range(n)]


def toy_config(out_dir, **kw):
    base = dict(steps=6, batch_size=2, lr=1e-2, seed=0, log_every=1, checkpoint_every=0, progress=False,
                tensorboard=False, milestones=(0.5,))
    return TrainConfig(**{**base, "out_dir": str(out_dir), **kw})


# -- (a) the step context: step counter and a per-step generator -----------------------------------


def test_step_generator_depends_only_on_seed_step_and_rank():
    def draw(*args):
        return torch.rand(6, generator=step_generator(*args))

    torch.manual_seed(1)
    a = draw(0, 3, 0)
    torch.manual_seed(2)
    torch.rand(100)  # whatever the global generator did before
    assert torch.equal(draw(0, 3, 0), a)
    for other in [(1, 3, 0), (0, 4, 0), (0, 3, 1)]:
        assert not torch.equal(draw(*other), a), other
    state = torch.get_rng_state()
    draw(5, 7, 0)
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is not consumed


def test_loss_gets_steps_0_1_2_and_resumed_draws_equal_uninterrupted(tmp_path):
    full = Toy(draws=5)
    trainer = Trainer(full, toy_config(tmp_path / "full"), toy_data())
    state = torch.get_rng_state()
    ctx = trainer.step_context()
    assert torch.equal(torch.get_rng_state(), state)  # making the context draws nothing globally
    assert isinstance(ctx, StepContext) and ctx.step == 0 and ctx.device == torch.device("cpu")
    assert ctx.autocast_dtype is None  # the CPU trains in float32 by default
    trainer.fit()
    assert [r["step"] for r in full.seen] == [0, 1, 2, 3, 4, 5]
    assert all(r["global_untouched"] for r in full.seen)
    assert all(r["ctx"].generator is not torch.default_generator for r in full.seen)
    # the draws are step_generator(seed, step, rank)'s: a known answer, different at every step
    for r in full.seen:
        assert torch.equal(r["draws"], torch.rand(5, generator=step_generator(0, r["step"], 0)))
    assert len({tuple(r["draws"].tolist()) for r in full.seen}) == 6

    first, second = Toy(draws=5), Toy(draws=5)
    Trainer(first, toy_config(tmp_path / "split", stop_at_step=3), toy_data()).fit()
    Trainer(second, toy_config(tmp_path / "split", resume=True), toy_data()).fit()
    assert [r["step"] for r in first.seen] == [0, 1, 2]
    assert [r["step"] for r in second.seen] == [3, 4, 5]
    for a, b in zip(full.seen, first.seen + second.seen):
        assert torch.equal(a["draws"], b["draws"]), a["step"]


def test_another_seed_gives_other_draws(tmp_path):
    a, b = Toy(draws=3), Toy(draws=3)
    Trainer(a, toy_config(tmp_path / "a", steps=2), toy_data()).fit()
    Trainer(b, toy_config(tmp_path / "b", steps=2, seed=1), toy_data()).fit()
    assert not torch.equal(a.seen[0]["draws"], b.seen[0]["draws"])


# -- (b) frozen modules ----------------------------------------------------------------------------


def test_frozen_modules_keep_weights_and_statistics_stay_in_eval_and_out_of_the_optimizer(tmp_path):
    method = Toy(freeze=True)
    trainer = Trainer(method, toy_config(tmp_path / "run", validate_every=2), toy_data(), toy_data(4, seed=1))
    frozen_before = copy.deepcopy(trainer.model.backbone.state_dict())
    head_before = copy.deepcopy(trainer.model.head.state_dict())
    assert {"1.running_mean", "1.running_var", "1.num_batches_tracked"} <= set(frozen_before)
    trainer.fit()
    assert len(method.seen) == 6  # the loss asserted the modes at every call, also after validations
    for r in method.seen:
        assert not any(v for k, v in r["modes"].items() if k.startswith("backbone")), r["step"]
        assert r["modes"][""] and r["modes"]["head"]  # the rest trains
    after = trainer.model.backbone.state_dict()
    for k, v in frozen_before.items():
        assert torch.equal(after[k], v), k  # weights AND running statistics
    assert any(not torch.equal(trainer.model.head.state_dict()[k], v) for k, v in head_before.items())
    in_optimizer = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert all(id(p) not in in_optimizer and not p.requires_grad for p in trainer.model.backbone.parameters())
    assert all(id(p) in in_optimizer for p in trainer.model.head.parameters())


def test_without_freezing_the_same_run_changes_the_backbone(tmp_path):
    """The control: the same run with nothing frozen moves the weights and the running mean, so
    the test above would see a frozen module that was not frozen."""
    trainer = Trainer(Toy(), toy_config(tmp_path / "run"), toy_data())
    before = copy.deepcopy(trainer.model.backbone.state_dict())
    trainer.fit()
    after = trainer.model.backbone.state_dict()
    assert not torch.equal(after["0.weight"], before["0.weight"])
    assert float((after["1.running_mean"] - before["1.running_mean"]).abs().max()) > 0.1


def test_frozen_module_outside_the_model_is_refused(tmp_path):
    class Stray(Toy):
        def frozen_modules(self, model):
            return [nn.Linear(4, 8)]

    with pytest.raises(ValueError, match="not part of the model"):
        Trainer(Stray(), toy_config(tmp_path / "run"), toy_data())


# -- (c) load_weights_into -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A finished toy run: its checkpoint, a float16 weights file of it, and the trained model."""
    tmp = tmp_path_factory.mktemp("toyrun")
    trainer = Trainer(Toy(), toy_config(tmp / "run", steps=3), toy_data())
    trainer.fit()
    weights = export_weights(tmp / "run" / "latest.pt", tmp / "toy_weights.pt")
    return tmp / "run" / "latest.pt", weights, trainer.model


def test_load_weights_into_part_of_a_model_from_a_checkpoint(toy_run):
    ckpt, _, trained = toy_run
    torch.manual_seed(123)
    model = ToyNet()
    head_before = copy.deepcopy(model.head.state_dict())
    assert not torch.equal(model.backbone[0].weight, trained.backbone[0].weight)
    assert load_weights_into(model.backbone, ckpt, prefix="backbone.", method="toy_contract") is model.backbone
    for k, v in trained.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[k], v), k
    for k, v in head_before.items():  # only the part named by the prefix
        assert torch.equal(model.head.state_dict()[k], v), k


def test_load_weights_into_from_a_float16_weights_file(toy_run):
    _, weights, trained = toy_run
    saved = torch.load(weights, weights_only=True)["model"]
    assert saved["backbone.0.weight"].dtype == torch.float16
    model = ToyNet()
    load_weights_into(model.backbone, weights, prefix="backbone.")
    for k, v in trained.backbone.state_dict().items():
        got = model.backbone.state_dict()[k]
        assert got.dtype == v.dtype, k  # converted to the module's dtype (float32; the step counter int64)
        want = v.half().to(v.dtype) if v.is_floating_point() else v
        assert torch.equal(got, want), k


def test_load_weights_into_errors_name_the_path(toy_run, tmp_path):
    ckpt, weights, _ = toy_run
    model = ToyNet()
    with pytest.raises(CheckpointError, match=rf"{ckpt.name}.*no model entry starting with 'flow\.'") as e:
        load_weights_into(model.backbone, ckpt, prefix="flow.")
    assert str(ckpt) in str(e.value)
    wide = ToyNet(hidden=16)
    with pytest.raises(CheckpointError, match=r"'0\.weight' has shape \(8, 4\) in the checkpoint but \(16, 4\)") as e:
        load_weights_into(wide.backbone, weights, prefix="backbone.")
    assert str(weights) in str(e.value)
    missing = tmp_path / "nowhere" / "latest.pt"
    with pytest.raises(CheckpointNotFoundError) as e:
        load_weights_into(model.backbone, missing, prefix="backbone.")
    assert str(missing) in str(e.value) and isinstance(e.value, FileNotFoundError)
    with pytest.raises(CheckpointError, match=r"'toy_contract', not of 'monodepth'") as e:
        load_weights_into(model.backbone, ckpt, prefix="backbone.", method="monodepth")
    assert str(ckpt) in str(e.value)


# -- (d) full precision inside mixed precision ------------------------------------------------------


def test_full_precision_inside_the_cpu_fast_path(tmp_path):
    method = Toy()
    trainer = Trainer(method, toy_config(tmp_path / "run", steps=2, fast_path_on_cpu=True), toy_data())
    assert trainer.amp_dtype == torch.bfloat16
    trainer.fit()
    assert len(method.seen) == 2
    for r in method.seen:
        assert r["ctx"].autocast_dtype == torch.bfloat16
        assert r["dtype"] == torch.bfloat16  # the loss runs under bf16 autocast
        assert r["dtype_full"] == torch.float32  # ... but not inside full_precision()
        assert r["dtype_after"] == torch.bfloat16  # and autocast is back on after it


def test_full_precision_is_a_no_op_without_mixed_precision(tmp_path):
    method = Toy()
    Trainer(method, toy_config(tmp_path / "run", steps=1), toy_data()).fit()
    r = method.seen[0]
    assert r["ctx"].autocast_dtype is None
    assert r["dtype"] == r["dtype_full"] == r["dtype_after"] == torch.float32


# -- (e) the registry -------------------------------------------------------------------------------


def test_registry_names_and_unknown_names():
    assert "monodepth" in available() and list(available()) == sorted(available())
    assert get_method("monodepth") is Monodepth
    with pytest.raises(KeyError, match=r"unknown method 'nope'; available: .*monodepth"):
        get_method("nope")
    assert isinstance(build_method("monodepth", {"variant": "no_lr"}), Monodepth)
    assert build_method("monodepth", {"variant": "no_lr"}).config.variant == "no_lr"


def test_register_refuses_incomplete_classes_and_duplicates():
    before = available()

    class NoName(Method):
        config_class = ToyConfig

    class NoConfig(Method):
        name = "no_config_method"

    class Impostor(Method):
        name = "monodepth"
        config_class = ToyConfig

    with pytest.raises(ValueError, match="NoName needs a class attribute 'name'"):
        register(NoName)
    with pytest.raises(ValueError, match="NoConfig needs a class attribute 'config_class'"):
        register(NoConfig)
    with pytest.raises(ValueError, match="a method named 'monodepth' is already registered"):
        register(Impostor)
    assert register(Monodepth) is Monodepth  # registering the same class again is harmless
    assert available() == before and get_method("monodepth") is Monodepth


class _Pairs(torch.utils.data.Dataset):
    def __init__(self, n=2):
        g = torch.Generator().manual_seed(0)
        self.items = [{"left": torch.rand(3, 64, 96, generator=g), "right": torch.rand(3, 64, 96, generator=g)}
                      for _ in range(n)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


@pytest.fixture(scope="module")
def monodepth_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mdrun")
    cfg = MonodepthConfig(encoder_width=8, left_right_weight=0.5, smoothness_weight=0.2)
    trainer = Trainer(Monodepth(cfg), toy_config(tmp / "run", steps=1), _Pairs())
    trainer.fit()
    return tmp, trainer


def test_load_model_rebuilds_from_a_checkpoint_and_from_a_weights_file(monodepth_run):
    tmp, trainer = monodepth_run
    ckpt = tmp / "run" / "latest.pt"
    x = _Pairs(1)[0]["left"][None]
    model, method, _ = load_model(ckpt)
    assert isinstance(model, MonodepthNet) and not model.training
    assert method.config == trainer.method.config  # the options come back from the file alone
    trained = trainer.model.eval()
    with torch.no_grad():
        assert torch.equal(model(x)[0], trained(x)[0])
    weights = export_weights(ckpt, tmp / "w.pt")
    half, method2, meta = load_model(weights)
    assert method2.config == trainer.method.config and meta["step"] == 1
    state = half.state_dict()
    for k, v in trained.state_dict().items():
        want = v.half().float() if v.is_floating_point() else v
        assert state[k].dtype == (torch.float32 if v.is_floating_point() else v.dtype), k
        assert torch.equal(state[k], want), k


def test_load_model_reads_the_legacy_lr_weight_key(monodepth_run):
    tmp, _ = monodepth_run
    state = load_checkpoint(export_weights(tmp / "run" / "latest.pt", tmp / "w_legacy.pt"), required=("model",))
    cfg = dict(state["method_config"])
    cfg["lr_weight"] = cfg.pop("left_right_weight")
    assert cfg["lr_weight"] == 0.5
    save_checkpoint(tmp / "legacy.pt", {**state, "method_config": cfg})
    _, method, _ = load_model(tmp / "legacy.pt")
    assert method.config.left_right_weight == 0.5
    assert config_from_dict("monodepth", {"lr_weight": 0.25}).left_right_weight == 0.25
    assert {f.name for f in dataclasses.fields(MonodepthConfig)} >= {"left_right_weight"}


def test_load_model_of_an_unknown_method_names_the_path(monodepth_run):
    tmp, _ = monodepth_run
    state = load_checkpoint(tmp / "run" / "latest.pt")
    path = tmp / "other_method.pt"
    save_checkpoint(path, {**state, "method": "monodepth3"})
    with pytest.raises(CheckpointError, match=r"is a model of method 'monodepth3'.*available: .*monodepth") as e:
        load_model(path)
    assert str(path) in str(e.value)
    assert "monodepth3" not in methods.available()
