"""The method contract, checked for every registered method (and each of its stages), so a
method added later is covered without a new test: it builds, its declared data gives batches
its loss takes, the loss of two items is a finite scalar whose backward reaches the trained
parameters, each declared predictor returns the contract's shape, the others refuse, and its
validation gives finite numbers. And the command line asks the methods instead of guessing.
"""

import dataclasses
import math
import re
from pathlib import Path

import pytest
import torch
from torch.utils.data import default_collate

from lesson_lib import methods
from lesson_lib.training.datasets import DATA_KINDS, datasets_from_worlds
from lesson_lib.training import Method, StepContext, step_generator

CASES = [(name, stage) for name in methods.available() for stage in (methods.get_method(name).stages or (None,))]
IDS = [name + (f"-{stage}" if stage else "") for name, stage in CASES]
PREDICTORS = ("depth", "poses", "flow")


@pytest.fixture(scope="module")
def worlds():
    """One training world, 5 frames at 64x96 (a 5-frame snippet for 5-frame models)."""
    from lesson_lib.data.synthetic import load_split

    return load_split("train", 1, 5, height=64, width=96, use_cache=False, progress=False)


def small_method(name: str, stage: str | None) -> Method:
    """The method with its networks narrowed (every ``*_width`` option to 4) and, for a method
    trained in stages, ``stage``; a later stage builds without an earlier stage's weights file."""
    cls = methods.get_method(name)
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    options = {f: 4 for f in fields if f.endswith("_width") and f not in ("input_width", "image_width")}
    if stage is not None:
        options["stage"] = stage
    method = methods.build_method(name, options)
    if hasattr(method, "load_pretrained"):
        method.load_pretrained = False
    return method


def two_items(method: Method, worlds) -> tuple[dict, dict]:
    train, val = datasets_from_worlds(method.data_kind, worlds, worlds, 0, **method.data_options())
    assert len(train) >= 2 and val is not None and len(val) >= 2
    return default_collate([train[0], train[1]]), default_collate([val[0], val[1]])


def _image_and_camera(batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    image = batch["left"] if "left" in batch else batch["target"]
    return image, batch["K"], batch.get("baseline")


@pytest.mark.parametrize(("name", "stage"), CASES, ids=IDS)
def test_declarations(name, stage):
    cls = methods.get_method(name)
    method = small_method(name, stage)
    assert method.name == name and isinstance(method, Method)
    assert dataclasses.is_dataclass(cls.config_class) and isinstance(method.config, cls.config_class)
    assert method.data_kind in DATA_KINDS
    assert method.predicts and set(method.predicts) <= set(PREDICTORS)
    if "poses" in method.predicts:
        assert method.pose_frames in (3, 5)
    else:
        assert method.pose_frames is None
    assert method.describe().startswith(name)
    if stage is not None:
        assert method.config.stage == stage


@pytest.mark.parametrize(("name", "stage"), CASES, ids=IDS)
def test_build_loss_backward_predict_validate(name, stage, worlds):
    torch.manual_seed(0)
    method = small_method(name, stage)
    model = method.build_model()
    assert isinstance(model, torch.nn.Module)
    batch, val_batch = two_items(method, worlds)
    frozen = {id(p) for m in method.frozen_modules(model) for p in m.parameters()}
    trained = [p for p in model.parameters() if id(p) not in frozen]
    assert trained, "a method trains some parameters"

    model.train()
    for m in method.frozen_modules(model):
        m.requires_grad_(False)
    ctx = StepContext(step=0, generator=step_generator(0, 0), device=torch.device("cpu"))
    loss, logs = method.loss(model, batch, ctx)
    assert isinstance(loss, torch.Tensor) and loss.numel() == 1 and loss.requires_grad
    assert math.isfinite(float(loss.detach()))
    assert all(math.isfinite(float(v)) for v in logs.values() if isinstance(v, torch.Tensor) and v.numel() == 1)
    loss.backward()
    grads = [p.grad for p in trained if p.grad is not None]
    assert grads, "the loss reaches the trained parameters"
    assert all(bool(torch.isfinite(g).all()) for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)
    assert all(p.grad is None for p in model.parameters() if id(p) in frozen)

    image, K, baseline = _image_and_camera(val_batch)
    b, _, h, w = image.shape
    model.eval()
    if "depth" in method.predicts:
        disp = method.predict_disparity(model, image)
        depth = method.predict_depth(model, image, K, baseline)
        assert disp.shape == depth.shape == (b, 1, h, w)
        assert bool(torch.isfinite(depth).all()) and bool((depth > 0).all())
    else:
        with pytest.raises(NotImplementedError):
            method.predict_depth(model, image, K, baseline)
    if "poses" in method.predicts:
        sources = val_batch["sources"][:, : method.pose_frames - 1]
        T = method.predict_poses(model, image, sources, K)
        assert T.shape == (b, method.pose_frames - 1, 4, 4) and bool(torch.isfinite(T).all())
        torch.testing.assert_close(T[..., 3, :], torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(b, T.shape[1], 4))
    else:
        with pytest.raises(NotImplementedError):
            method.predict_poses(model, image, image[:, None], K)
    if "flow" in method.predicts:
        flow = method.predict_flow(model, image, image.flip(0))
        assert flow.shape == (b, 2, h, w) and bool(torch.isfinite(flow).all())
    else:
        with pytest.raises(NotImplementedError):
            method.predict_flow(model, image, image)

    with torch.no_grad():
        metrics = method.validate(model, val_batch)
    assert metrics and all(math.isfinite(float(v)) for v in metrics.values())


def test_a_new_method_is_one_class_and_its_registration(worlds):
    """What the contract promises a newcomer: declare data, loss and predictors, register, and the
    registry, the data builder and the predictors' defaults work; a second name clash is refused."""

    @dataclasses.dataclass
    class MeanDepthConfig:
        scale: float = 1.0

    class MeanDepth(Method):
        name = "mean_depth_contract_test"
        config_class = MeanDepthConfig
        data_kind = "video"

        def __init__(self, config=None):
            self.config = config or MeanDepthConfig()

        def build_model(self):
            return torch.nn.Conv2d(3, 1, 1)

        def loss(self, model, batch, ctx):
            return model(batch["target"]).abs().mean(), {}

        def predict_disparity(self, model, image, *, post_processing=False):
            return model(image).abs() + 0.1

        def predict_depth(self, model, image, K=None, baseline=None, *, post_processing=False, max_depth=100.0):
            return 1.0 / self.predict_disparity(model, image)

    methods.register(MeanDepth)
    try:
        assert MeanDepth.name in methods.available()
        method = methods.build_method(MeanDepth.name, {"scale": 2.0})
        assert method.config.scale == 2.0 and method.predicts == {"depth"} and method.pose_frames is None
        batch, _ = two_items(method, worlds)
        model = method.build_model()
        method.loss(model, batch, None)[0].backward()
        assert method.predict_depth(model, batch["target"]).shape == (2, 1, 64, 96)
        with pytest.raises(NotImplementedError, match="does not predict poses"):
            method.predict_poses(model, batch["target"], batch["sources"])
        with pytest.raises(ValueError, match="already registered"):
            methods.register(type("Other", (MeanDepth,), {}))
    finally:
        methods._REGISTRY.pop(MeanDepth.name, None)


def test_the_command_line_asks_the_methods_instead_of_guessing():
    """No method name, no ``hasattr``/``getattr`` probe of a method in the command line: what
    it does for a method comes from the contract. (A source check: each guess it replaces was
    a line of this file.)"""
    import lesson_lib.course.cli as cli

    source = Path(cli.__file__).read_text()
    code = "\n".join(line.split("#")[0] for line in source.splitlines())
    assert "hasattr(" not in code and "getattr(method" not in code and "getattr(cls" not in code
    for name in methods.available():
        assert not re.search(rf"[\"']{name}[\"']", code), f"the command line names the method {name!r}"
    assert "data_kind" not in code and "n_sources" not in code
