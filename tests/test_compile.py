"""Every registered method's training step (network forward + loss) compiles as ONE graph:
``torch._dynamo.explain`` on the CPU finds no graph break, so ``torch.compile`` can fuse the
step's many small operations and a CUDA graph can capture it. Run as the trainer runs the step:
inside ``value_checks(False)`` (small networks and images: the graph does not depend on them).

TrianFlow is checked in both stages. Its depth stage estimates each pair's pose with RANSAC
(lesson_lib.twoview): with a fixed sample count (``ransac_iters``, drawn from the step's key,
lesson_lib.keyed_random) it compiles as one graph; with the default adaptive count
(``while bool(active.any())``, draws from a ``torch.Generator``) it breaks, and the method says
so (``graph_blocker``): a strict xfail that fails if those breaks ever disappear.
"""

import collections
import dataclasses

import pytest
import torch
import torch._dynamo

from lesson_lib import methods
from lesson_lib._validate import value_checks
from lesson_lib.training import StepContext, step_generator
from lesson_lib.training.opcount import example_batch

pytestmark = pytest.mark.slow  # dynamo traces each step: about 35 s in all on 2 cores

SMALL = {"encoder_width": 8, "pose_width": 8, "flow_width": 8}


def _cases():
    for name in methods.available():
        if name == "trianflow":
            yield pytest.param(name, "flow", id="trianflow-flow")
            yield pytest.param(name, "depth-fixed", id="trianflow-depth-fixed-ransac")
            yield pytest.param(name, "depth", id="trianflow-depth-adaptive-ransac", marks=pytest.mark.xfail(
                strict=True, reason="RANSAC's adaptive loop and generator draws (data-dependent control flow)"))
        else:
            yield pytest.param(name, None, id=name)
    yield pytest.param("monodepth", "packed", id="monodepth-packed-loss")  # the loss layout a GPU runs


def _step(name, stage):
    method = methods.build_method(name)
    small = {k: v for k, v in SMALL.items() if hasattr(method.config, k)}
    if stage == "packed":
        small["loss_layout"] = "packed"
    elif stage == "depth-fixed":
        small.update(stage="depth", ransac_iters=512)
    elif stage is not None:
        small["stage"] = stage
    method = methods.build_method(name, dataclasses.replace(method.config, **small))
    if hasattr(method, "load_pretrained"):
        method.load_pretrained = False  # the depth stage's flow network stays random here
    model = method.build_model().train()
    device = torch.device("cpu")
    ctx = StepContext(step=0, generator=step_generator(0, 0, 0, device), device=device)

    def step(batch):
        return method.loss(model, batch, ctx)[0]

    return step, example_batch(method, batch_size=2, size=(64, 128))


def _explain(fn, *args):
    torch._dynamo.reset()
    try:
        with value_checks(False):
            return torch._dynamo.explain(fn)(*args)
    finally:
        torch._dynamo.reset()


def _reasons(explanation):
    where = collections.Counter()
    for b in explanation.break_reasons:
        frame = b.user_stack[-1] if b.user_stack else None
        at = f"{frame.filename.rsplit('lesson_lib', 1)[-1]}:{frame.lineno}" if frame else "?"
        where[f"{at}: {b.reason.splitlines()[0][:160]}"] += 1
    return "\n".join(f"  {n} x {r}" for r, n in where.most_common())


@pytest.mark.parametrize("name, stage", list(_cases()))
def test_step_compiles_without_graph_breaks(name, stage):
    step, batch = _step(name, stage)
    explanation = _explain(step, batch)
    assert explanation.graph_break_count == 0, (
        f"{name} ({stage or 'default'}): {explanation.graph_break_count} graph breaks\n{_reasons(explanation)}")
    assert explanation.graph_count == 1


def test_a_loss_that_reads_a_value_breaks_the_graph():
    """The check can fail: ``.item()`` in a loss is a graph break, and its reason is reported."""
    model = torch.nn.Conv2d(3, 1, 3)

    def step(x):
        out = model(x)
        return out.mean() * float(out.max().item() > 0)

    explanation = _explain(step, torch.rand(1, 3, 8, 8))
    assert explanation.graph_break_count >= 1
    assert "item" in _reasons(explanation).lower()


def test_value_checks_still_run_outside_a_compiled_step():
    from lesson_lib.warping import stereo_warp

    with pytest.raises(ValueError, match="disparity must be >= 0"):
        stereo_warp(torch.rand(1, 3, 4, 5), -torch.ones(1, 1, 4, 5))
