"""Every public function of the maths, evaluation and methods modules, called with tensors of
the wrong rank, either works (it accepts any rank) or fails with a ``ValueError`` or
``TypeError`` whose message names one of the arguments the caller passed. An ``IndexError``
from inside, a padding ``RuntimeError``, a ``NotImplementedError`` from ``interpolate``, or a
message that names none of the arguments fails this test.

The arguments are built from each function's signature: a parameter annotated as a tensor, or
as a number that a caller could pass as a tensor, gets the wrong-rank tensor; a depth
predictor, a pose or flow predictor gets a function that returns it; a dataset gets items whose
every tensor has it; a mapping of scales or network outputs holds it; a model is a stand-in
that returns it. Other parameters keep their defaults or get a plain valid value.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable

import pytest
import torch
from torch import nn

MODULES = [
    "camera", "images", "losses", "matching", "metrics", "pose", "stereo", "stereo_opt", "trajectory",
    "twoview", "warping", "evaluation",
    "methods.monodepth", "methods.monodepth2", "methods.sfmlearner", "methods.trianflow",
]

#: Functions left out of the sweep, each with the reason.
EXCLUDED = {
    "evaluation.test_split": "takes no tensor: renders a split from its name",
    "evaluation.paired_bootstrap": "takes sequences of per-image numbers, checked by length (tested in test_evaluation)",
    "metrics.average_metrics": "takes rows of floats, not tensors",
    "metrics.format_metrics": "takes rows of floats, not tensors",
}

# wrong ranks: a scalar, a vector, a matrix, and a 5-D tensor (one dimension too many for an image batch)
WRONG = {
    "0-D": lambda: torch.tensor(0.5),
    "1-D": lambda: torch.rand(7),
    "2-D": lambda: torch.rand(6, 7),
    "5-D": lambda: torch.rand(1, 2, 3, 6, 7),
}

DATASET_KEYS = ["left", "right", "depth", "K", "baseline", "target", "sources", "T_t_to_s", "flow", "flow_valid",
                "moving", "valid", "static"]


class Returns(nn.Module):
    """A stand-in model whose every output is the given tensor."""

    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.value = value
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        return self.value


def public_functions() -> list[tuple[str, Callable]]:
    found = []
    for name in MODULES:
        mod = importlib.import_module(f"lesson_lib.{name}")
        for fname in getattr(mod, "__all__", []):
            fn = getattr(mod, fname)
            if inspect.isfunction(fn) and f"{name}.{fname}" not in EXCLUDED:
                found.append((f"{name}.{fname}", fn))
    return found


def _annotation(p: inspect.Parameter) -> str:
    a = p.annotation
    return a if isinstance(a, str) else getattr(a, "__name__", str(a))


def arguments(fn: Callable, bad: torch.Tensor, numbers_too: bool) -> dict | None:
    """Keyword arguments for ``fn`` with ``bad`` wherever a tensor goes; None if one cannot be built."""
    from lesson_lib import methods

    kwargs = {}
    for p in inspect.signature(fn).parameters.values():
        ann = _annotation(p)
        if "Tensor" in ann and "Mapping" not in ann and "Callable" not in ann:
            kwargs[p.name] = bad
        elif numbers_too and p.default is inspect.Parameter.empty and ann in ("int", "float"):
            kwargs[p.name] = bad
        elif p.default is not inspect.Parameter.empty:
            continue
        elif ann == "int":
            kwargs[p.name] = 8
        elif ann == "float":
            kwargs[p.name] = 1.0
        elif ann == "bool":
            kwargs[p.name] = False
        elif ann.startswith("tuple[int, int]"):
            kwargs[p.name] = (6, 7)
        elif p.name in ("predict", "predict_poses", "predict_flow", "predict_3"):
            kwargs[p.name] = lambda *a, **k: bad
        elif p.name == "train_depth":
            kwargs[p.name] = bad
        elif p.name == "dataset":
            kwargs[p.name] = [dict.fromkeys(DATASET_KEYS, bad) for _ in range(2)]
        elif p.name in ("model", "net"):
            kwargs[p.name] = Returns(bad)
        elif p.name == "method":
            kwargs[p.name] = methods.build_method("monodepth")
        elif "Mapping[int" in ann:
            kwargs[p.name] = {s: bad for s in range(4)}
        elif p.name == "outputs":
            kwargs[p.name] = {"disp": {s: bad for s in range(4)}, "poses": bad, "masks": {s: bad for s in range(4)}}
        elif p.name == "pose":
            from lesson_lib.methods.trianflow import FlowPose

            kwargs[p.name] = FlowPose(**{f: bad for f in FlowPose.__dataclass_fields__})
        elif p.name == "axis":
            kwargs[p.name] = "x"
        elif ann == "str":
            return None
        else:
            return None
    return kwargs


def names_an_argument(message: str, fn: Callable) -> bool:
    params = list(inspect.signature(fn).parameters)
    return any(re.search(rf"(?<![A-Za-z0-9_]){re.escape(p)}(?![A-Za-z0-9_])", message) for p in params)


CASES = [(name, fn, rank, numbers_too) for name, fn in public_functions() for rank in WRONG
         for numbers_too in (False, True)]


def test_the_sweep_covers_the_functions_the_issue_named():
    names = {name for name, _ in public_functions()}
    for wanted in ("warping.normalize_pixels", "losses.box_filter", "stereo_opt.upsample_disparity",
                   "camera.intrinsics_matrix", "metrics.garg_crop_mask", "evaluation.per_image_metrics",
                   "evaluation.evaluate_poses", "evaluation.relative_pose_errors", "evaluation.mean_motion_poses",
                   "evaluation.region_abs_rel", "methods.monodepth.post_process_weights"):
        assert wanted in names
    assert len(names) > 100


@pytest.mark.parametrize(("name", "fn", "rank", "numbers_too"), CASES,
                         ids=[f"{n}-{r}{'-numbers' if t else ''}" for n, _, r, t in CASES])
def test_wrong_rank_fails_with_a_message_that_names_an_argument(name, fn, rank, numbers_too):
    bad = WRONG[rank]()
    kwargs = arguments(fn, bad, numbers_too)
    if kwargs is None:
        pytest.skip(f"{name}: no argument of it can be built generically")
    if not any(v is bad or isinstance(v, (list, dict, nn.Module)) or callable(v) for v in kwargs.values()):
        pytest.skip(f"{name}: takes no tensor{' or number' if numbers_too else ''}")
    try:
        fn(**kwargs)
    except (ValueError, TypeError) as e:
        assert names_an_argument(str(e), fn), f"{name} with a {rank} tensor: {type(e).__name__}: {e}"
    except Exception as e:  # noqa: BLE001 - any other error is what this test exists to catch
        pytest.fail(f"{name} with a {rank} tensor failed from inside: {type(e).__name__}: {e}")


def test_check_number_accepts_numbers_and_one_element_tensors_only():
    from lesson_lib._validate import check_number

    assert check_number(2.5, "fx") == 2.5
    assert check_number(torch.tensor(3.0), "fx") == 3.0
    assert check_number(torch.tensor([7]), "width", integer=True) == 7
    assert check_number(8.0, "width", integer=True) == 8
    for bad, match in ((torch.rand(2, 3), r"fx: expected a number, got a tensor of shape \(2, 3\)"),
                       ("3", "fx: expected a number, got str"), (None, "fx: expected a number, got NoneType"),
                       (True, "fx: expected a number, got bool")):
        with pytest.raises(TypeError, match=match):
            check_number(bad, "fx")
    with pytest.raises(TypeError, match="width: expected an integer, got 7.5"):
        check_number(7.5, "width", integer=True)


def test_the_functions_the_issue_named_now_name_their_argument():
    from lesson_lib import camera, evaluation, losses, metrics, stereo_opt, warping
    from lesson_lib.methods import monodepth

    cases = [
        (lambda: warping.normalize_pixels(torch.rand(7), 4, 5, True), "uv"),
        (lambda: losses.box_filter(torch.rand(6, 7)), "x"),
        (lambda: stereo_opt.upsample_disparity(torch.rand(6, 7), (12, 14)), "disparity"),
        (lambda: camera.intrinsics_matrix(torch.rand(2), 1.0, 1.0, 1.0), "fx"),
        (lambda: metrics.garg_crop_mask(torch.rand(2, 2), 10), "height"),
        (lambda: monodepth.post_process_weights(torch.rand(3)), "width"),
        (lambda: evaluation.mean_motion_poses([{"T_t_to_s": torch.eye(4)}]), "dataset"),
        (lambda: evaluation.evaluate_poses(lambda t, s: t, [{"target": torch.rand(3, 4, 5)}]), "dataset"),
    ]
    for call, name in cases:
        with pytest.raises((ValueError, TypeError)) as info:
            call()
        assert re.search(rf"(?<![A-Za-z0-9_]){name}(?![A-Za-z0-9_])", str(info.value)), str(info.value)
