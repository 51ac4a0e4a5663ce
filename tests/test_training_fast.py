"""The trainer's options for a busy GPU, tested on the CPU as far as the CPU allows:
``compile`` (torch.compile of the loss: the same losses as eager, and ``train --compile`` of a
real method), ``cuda_graph`` (refused without CUDA; the batch copy it relies on refuses a batch
of another shape), fused Adam (only on CUDA), loader workers (the same batches, hence the same
losses, as loading in the main process), and the public ``train_step``/``autocast``."""

import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from lesson_lib.training import Method, TrainConfig, Trainer, read_log
from lesson_lib.training.loop import _copy_into


class Points(Dataset):
    def __init__(self, n=48):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.3

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


class Regression(Method):
    name = "regression_fast_test"

    def build_model(self):
        return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))

    def loss(self, model, batch, ctx):
        err = model(batch["x"])[:, 0] - batch["y"]
        mse = err.square().mean()
        return mse, {"mse": mse.detach()}


def config(tmp_path, **kw):
    return TrainConfig(**{"steps": 12, "batch_size": 8, "lr": 1e-2, "seed": 0, "log_every": 1, "checkpoint_every": 0,
                          "progress": False, "tensorboard": False, "out_dir": str(tmp_path), **kw})


def losses(tmp_path, **kw):
    Trainer(Regression(), config(tmp_path, **kw), Points()).fit()
    return torch.tensor(read_log(tmp_path / "log.csv")["loss"])


def test_compiled_loss_trains_like_the_eager_loss(tmp_path):
    eager = losses(tmp_path / "eager", steps=24, lr=3e-2)
    compiled = losses(tmp_path / "compiled", steps=24, lr=3e-2, compile=True)
    assert len(eager) == len(compiled) == 24
    assert float(compiled[-4:].mean()) < 0.5 * float(compiled[:4].mean())  # it learns (eager: 8.7 -> 1.5)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)


def test_loader_workers_give_the_same_run(tmp_path):
    torch.testing.assert_close(losses(tmp_path / "w2", num_workers=2), losses(tmp_path / "w0"), rtol=0, atol=0)


def test_cuda_graph_is_refused_without_cuda(tmp_path):
    with pytest.raises(ValueError, match="cuda_graph needs CUDA"):
        config(tmp_path, device="cpu", cuda_graph=True)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda_graph needs CUDA"):
            Trainer(Regression(), config(tmp_path, cuda_graph=True), Points())


def test_the_graph_batch_copy_refuses_another_shape():
    static = {"x": torch.zeros(8, 4), "nested": [torch.zeros(2)]}
    _copy_into(static, {"x": torch.ones(8, 4), "nested": [torch.full((2,), 3.0)]})
    assert float(static["x"].sum()) == 32 and float(static["nested"][0].sum()) == 6
    with pytest.raises(ValueError, match="one shape"):
        _copy_into(static, {"x": torch.ones(7, 4), "nested": [torch.zeros(2)]})


def test_fused_adam_only_on_cuda(tmp_path):
    trainer = Trainer(Regression(), config(tmp_path, device="cpu"), Points())
    assert not trainer.optimizer.defaults.get("fused")  # the CPU: the plain kernels
    if torch.cuda.is_available():
        trainer = Trainer(Regression(), config(tmp_path / "cuda", device="cuda"), Points())
        assert trainer.optimizer.defaults.get("fused")
        trainer = Trainer(Regression(), config(tmp_path / "cuda2", device="cuda", fused_adam=False), Points())
        assert not trainer.optimizer.defaults.get("fused")


def test_public_train_step_is_the_step_fit_takes(tmp_path):
    fitted = losses(tmp_path / "fit", steps=3, milestones=(0.9,))
    trainer = Trainer(Regression(), config(tmp_path / "manual", steps=3, milestones=(0.9,)), Points())
    loader = trainer.train_loader(0, 0)
    manual = []
    trainer.set_mode(True)
    for batch, _ in zip(loader, range(3)):
        loss, logs, lr = trainer.train_step(batch)
        manual.append(float(loss))
        assert lr == pytest.approx(1e-2) and "mse" in logs
    assert trainer.step == 3
    torch.testing.assert_close(torch.tensor(manual), fitted.float(), rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_train_compile_on_the_command_line(tmp_path):
    """``train monodepth --compile`` with a small model and small images trains and checkpoints."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "lesson_lib", "train", "monodepth", "--compile", "--steps", "2", "--batch-size", "2",
           "--encoder-width", "4", "--train-sequences", "1", "--train-frames", "2", "--val-sequences", "0",
           "--image-height", "32", "--image-width", "64", "--out-dir", str(out), "--no-progress", "--no-tensorboard",
           "--device", "cpu", "--log-every", "1"]
    env = {**__import__("os").environ, "LESSON_LIB_CACHE": str(tmp_path / "cache")}
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (out / "latest.pt").is_file()
    log = read_log(out / "log.csv")
    assert len(log["loss"]) == 2 and all(torch.isfinite(torch.tensor(log["loss"])))


def test_train_cuda_graph_on_the_cpu_is_one_clear_error(capsys):
    from lesson_lib.course.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["train", "monodepth", "--cuda-graph", "--device", "cpu", "--steps", "1"])
    assert exit_.value.code == 2
    assert "cuda_graph needs CUDA" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_replay_trains_like_the_eager_step(tmp_path):
    """On a GPU: the captured and replayed step gives the eager step's losses (the data and the
    schedule are the same; replay changes only how the kernels are launched), also across a
    learning-rate milestone, and the compiled loss in reduce-overhead mode too."""
    kw = dict(device="cuda", steps=24, lr=3e-2, milestones=(0.5,), amp=False)
    eager = losses(tmp_path / "eager", **kw)
    graph = losses(tmp_path / "graph", cuda_graph=True, **kw)
    compiled = losses(tmp_path / "compiled", compile=True, **kw)
    assert float(graph[-4:].mean()) < 0.5 * float(graph[:4].mean())
    torch.testing.assert_close(graph, eager, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(compiled, eager, rtol=1e-3, atol=1e-4)
