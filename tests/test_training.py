"""The training loop of chapters 06, 07 and 09 on a toy problem: logs, validation, exact
resumption, atomic and checked checkpoints, the command-line generator, and two-process
DistributedDataParallel with Gloo on the CPU."""

import argparse
import json
import os
import pickle
import re
import socket
import subprocess
import sys
import textwrap
from collections import namedtuple
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from lesson_lib import training
from lesson_lib.training import (
    CheckpointError,
    CheckpointNotFoundError,
    Method,
    TrainConfig,
    Trainer,
    config_from_args,
    config_to_argparse,
    config_to_argv,
    load_checkpoint,
    read_log,
    save_checkpoint,
)

TESTS = Path(__file__).resolve().parent
W_TRUE = torch.tensor([1.0, -2.0, 0.5, 3.0])


# The toy method: a small regression network on synthetic data -------------------------------


class ToyDataset(Dataset):
    """``y = x . w + 0.3`` for ``n`` fixed Gaussian ``x``; with ``noise`` every access adds fresh
    noise from the *global* generator (as a random augmentation would), so an exact resume
    needs the random states restored."""

    def __init__(self, n=40, seed=0, noise=0.0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 4, generator=g)
        self.y = (self.x @ W_TRUE + 0.3)[:, None]
        self.noise = noise

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        x = self.x[i]
        if self.noise:
            x = x + self.noise * torch.randn(4)
        return {"x": x, "y": self.y[i], "extra": [self.x[i, :2], "tag"]}  # nested: moved alike


class ToyMethod(Method):
    """Linear-tanh-dropout-linear regression; ``fail_at=k`` raises ``exc`` in the k-th loss call."""

    name = "toy"

    def __init__(self, hidden=16, dropout=0.2, fail_at=None, exc=RuntimeError):
        self.hidden, self.dropout, self.fail_at, self.exc = hidden, dropout, fail_at, exc
        self.calls = 0

    def build_model(self):
        return nn.Sequential(nn.Linear(4, self.hidden), nn.Tanh(), nn.Dropout(self.dropout), nn.Linear(self.hidden, 1))

    def loss(self, model, batch, ctx):
        self.calls += 1
        if self.calls == self.fail_at:
            raise self.exc("simulated interruption")
        assert batch["extra"][0].shape[1] == 2 and list(batch["extra"][1]) == ["tag"] * len(batch["x"])
        err = model(batch["x"]) - batch["y"]
        mse = err.square().mean()
        return mse, {"mse": mse.item(), "mae": err.abs().mean().item()}

    def validate(self, model, batch):
        err = model(batch["x"]) - batch["y"]
        return {"val_mse": err.square().mean().item(), "val_mae": err.abs().mean().item()}


def cfg(tmp, **kw):
    base = dict(batch_size=8, lr=1e-2, milestones=(0.5,), seed=0, log_every=1, checkpoint_every=0, progress=False)
    return TrainConfig(**{**base, "out_dir": str(tmp), **kw})


def weights(path):
    return torch.load(path, weights_only=True)["model"]


# 1. Training, logs, validation ---------------------------------------------------------------


def test_loss_decreases_and_logs_and_validation_are_written(tmp_path):
    val = ToyDataset(20, seed=1)
    config = cfg(tmp_path, steps=60, log_every=5, validate_every=20)
    trainer = Trainer(ToyMethod(dropout=0.0), config, ToyDataset(64), val)
    assert trainer.device.type == "cpu" and trainer.amp_dtype is None and not trainer.channels_last  # CPU: fp32
    assert not trainer.scaler.is_enabled() and trainer.steps_per_epoch == 8 and trainer.total_steps == 60
    trainer.fit()
    with open(tmp_path / "log.csv") as f:
        assert f.readline().strip() == "step,epoch,lr,loss,mse,mae,time"
    log = read_log(tmp_path / "log.csv")
    assert log["step"] == list(range(5, 61, 5))
    assert log["epoch"] == [(s - 1) // 8 for s in log["step"]]
    assert log["lr"] == [1e-2 if s <= 30 else 1e-3 for s in log["step"]]  # decay after half the run
    assert log["loss"] == log["mse"] and all(t >= 0 for t in log["time"])
    assert log["loss"][-1] < 0.2 * log["loss"][0], log["loss"]

    vlog = read_log(tmp_path / "val.csv")
    assert vlog["step"] == [20, 40, 60] and set(vlog) == {"step", "epoch", "val_mse", "val_mae", "time"}
    assert vlog["val_mse"][-1] < vlog["val_mse"][0]
    # batches of 8, 8 and 4 weighted by their size: the mean over all 20 samples
    with torch.no_grad():
        full = float((trainer.model(val.x) - val.y).square().mean())
    assert vlog["val_mse"][-1] == pytest.approx(full, rel=1e-6)
    assert trainer.validate()["val_mse"] == pytest.approx(full, rel=1e-6)
    assert trainer.model.training  # validation leaves train mode as it was
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt", "log.csv", "val.csv"]


def test_existing_run_is_refused_resumed_when_finished_or_overwritten(tmp_path):
    Trainer(ToyMethod(), cfg(tmp_path, steps=4), ToyDataset()).fit()
    with pytest.raises(FileExistsError, match="resume"):
        Trainer(ToyMethod(), cfg(tmp_path, steps=4), ToyDataset()).fit()
    before = (tmp_path / "log.csv").read_text()
    done = Trainer(ToyMethod(), cfg(tmp_path, steps=4, resume=True), ToyDataset())
    done.fit()  # a finished run: nothing to do
    assert done.step == 4 and (tmp_path / "log.csv").read_text() == before
    again = cfg(tmp_path, steps=2, overwrite=True, keep_checkpoints=True, checkpoint_every=1)
    Trainer(ToyMethod(), again, ToyDataset()).fit()
    assert read_log(tmp_path / "log.csv")["step"] == [1, 2]
    assert {p.name for p in tmp_path.glob("*.pt")} == {"latest.pt", "step_1.pt", "step_2.pt"}


def test_bad_method_output_and_bad_configs_are_reported(tmp_path):
    class NoGrad(ToyMethod):
        def loss(self, model, batch, ctx):
            return torch.tensor(1.0), {}

    with pytest.raises(ValueError, match="requires grad"):
        Trainer(NoGrad(), cfg(tmp_path, steps=1), ToyDataset()).fit()
    with pytest.raises(ValueError, match="too few"):
        Trainer(ToyMethod(), cfg(tmp_path / "b", steps=1, batch_size=64), ToyDataset())
    for bad in ({"batch_size": 0}, {"milestones": (0.8, 0.2)}, {"milestones": (1.5,)}, {"device": "tpu"}, {"lr": 0.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TrainConfig(**bad)


def test_move_to_recurses_and_sets_channels_last():
    Pair = namedtuple("Pair", "a b")
    img = torch.rand(2, 3, 4, 5)
    batch = {"img": img, "seq": [torch.zeros(2), (torch.ones(1), "s")], "n": 3, "p": Pair(torch.rand(2, 3, 4, 5), 1)}
    out = training.move_to(batch, "cpu", channels_last=True)
    assert out["img"].is_contiguous(memory_format=torch.channels_last)
    assert not img.is_contiguous(memory_format=torch.channels_last)
    assert isinstance(out["seq"][1], tuple) and out["seq"][1][1] == "s" and out["n"] == 3
    assert isinstance(out["p"], Pair) and out["p"].a.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out["img"], batch["img"], rtol=0, atol=0)


# 2. Resuming gives exactly the uninterrupted run ---------------------------------------------


@pytest.mark.parametrize("how", ["stop_at_step", "exception", "keyboard_interrupt"])
def test_resumed_run_equals_uninterrupted_run(tmp_path, how):
    """14 steps, 5 batches per epoch (so the interruption falls mid-epoch), dropout, noisy
    samples from the global generator, weight decay, clipping and a decay at step 7."""
    data, val = ToyDataset(40, noise=0.05), ToyDataset(12, seed=1)
    common = dict(steps=14, weight_decay=1e-3, grad_clip=0.5, validate_every=4)
    Trainer(ToyMethod(), cfg(tmp_path / "a", checkpoint_every=4, **common), data, val).fit()

    b = tmp_path / "b"
    if how == "stop_at_step":  # stops with a checkpoint at step 8
        Trainer(ToyMethod(), cfg(b, checkpoint_every=4, stop_at_step=8, **common), data, val).fit()
        assert read_log(b / "log.csv")["step"] == list(range(1, 9))
    elif how == "exception":  # fails in step 9; the last checkpoint is step 6, rows 7, 8 are dropped
        with pytest.raises(RuntimeError, match="simulated"):
            Trainer(ToyMethod(fail_at=9), cfg(b, checkpoint_every=3, **common), data, val).fit()
        assert read_log(b / "log.csv")["step"] == list(range(1, 9)) and read_log(b / "val.csv")["step"] == [4, 8]
        assert torch.load(b / "latest.pt", weights_only=True)["step"] == 6
    else:  # Ctrl-C in step 9: the state at its start (step 8) is saved
        with pytest.raises(KeyboardInterrupt):
            Trainer(ToyMethod(fail_at=9, exc=KeyboardInterrupt), cfg(b, checkpoint_every=0, **common), data, val).fit()
        assert torch.load(b / "latest.pt", weights_only=True)["step"] == 8
    resumed = Trainer(ToyMethod(), cfg(b, checkpoint_every=4, resume=True, **common), data, val)
    resumed.fit()
    assert resumed.step == 14

    log_a, log_b = read_log(tmp_path / "a" / "log.csv"), read_log(b / "log.csv")
    assert log_b["step"] == list(range(1, 15))
    for col in ("epoch", "lr", "loss", "mse", "mae"):
        assert log_b[col] == log_a[col], col  # bit for bit
    val_a, val_b = read_log(tmp_path / "a" / "val.csv"), read_log(b / "val.csv")
    assert val_b["step"] == [4, 8, 12, 14] and val_b["val_mse"] == val_a["val_mse"]
    wa, wb = weights(tmp_path / "a" / "latest.pt"), weights(b / "latest.pt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


# 3. Checkpoints: atomic writes, clear errors ---------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt")
    Trainer(ToyMethod(), cfg(out, steps=2), ToyDataset()).fit()
    return out / "latest.pt"


def test_crash_while_saving_keeps_the_previous_checkpoint(checkpoint, tmp_path, monkeypatch):
    path = tmp_path / "latest.pt"
    path.write_bytes(checkpoint.read_bytes())
    state = torch.load(path, weights_only=True)

    def crashing_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, {**state, "step": 99})
    monkeypatch.undo()
    assert path.read_bytes() == checkpoint.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt"]  # no temporary file left
    model = ToyMethod().build_model()
    assert load_checkpoint(path, model, method="toy")["step"] == 2
    assert all(torch.equal(v, state["model"][k]) for k, v in model.state_dict().items())


def _variants(state):
    """name -> (write the broken file, the text the error must contain besides the path)."""
    missing = {k: state[k] for k in ("format_version", "method", "model")}
    noise = bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0)).tolist())
    forbidden = pickle.dumps({"f": argparse.Namespace()}, protocol=2)  # not a tensor or plain value
    return {
        "truncated": (lambda p, raw: p.write_bytes(raw[: len(raw) // 2]), "not a readable torch checkpoint"),
        "random_bytes": (lambda p, raw: p.write_bytes(noise), "not a readable"),
        "empty": (lambda p, raw: p.write_bytes(b""), "not a readable"),
        "not_a_dict": (lambda p, raw: torch.save([1, 2, 3], p), "holds a list"),
        "forbidden_object": (lambda p, raw: p.write_bytes(forbidden), "Unsupported global"),
        "missing_keys": (lambda p, raw: torch.save(missing, p), "missing keys ['step', 'epoch', 'optimizer'"),
        "other_method": (lambda p, raw: torch.save({**state, "method": "sfm"}, p), "method 'sfm', not of 'toy'"),
        "other_version": (lambda p, raw: torch.save({**state, "format_version": 99}, p), "format version 99"),
    }


@pytest.mark.parametrize("case", list(_variants({k: 0 for k in ("format_version", "method", "model")})))
def test_broken_or_foreign_checkpoints_raise_checkpoint_error(checkpoint, tmp_path, case):
    state = torch.load(checkpoint, weights_only=True)
    write, text = _variants(state)[case]
    path = tmp_path / f"{case}.pt"
    write(path, checkpoint.read_bytes())
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, ToyMethod().build_model(), method="toy")
    assert str(path) in str(err.value) and text in str(err.value), str(err.value)


def test_checkpoint_of_another_model_shape_names_the_parameter(checkpoint):
    text = f"{checkpoint} does not fit the model: parameter '0.weight' has shape (16, 4) in the checkpoint but (8, 4)"
    with pytest.raises(CheckpointError, match=re.escape(text)):
        load_checkpoint(checkpoint, ToyMethod(hidden=8).build_model())
    wider = nn.Sequential(*ToyMethod().build_model(), nn.Linear(1, 1))
    with pytest.raises(CheckpointError, match="lacks the model's parameter '4.weight'"):
        load_checkpoint(checkpoint, wider)


def test_missing_checkpoint_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "latest.pt"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))) as err:
        load_checkpoint(path)
    assert isinstance(err.value, CheckpointError) and isinstance(err.value, CheckpointNotFoundError)


# 4. Configuration <-> command line -----------------------------------------------------------


@dataclass
class DemoConfig:
    count: int = field(default=3, metadata={"help": "how many"})
    scale: float = field(default=0.5, metadata={"help": "a factor"})
    name: str = field(default="x", metadata={"help": "a name", "choices": ("x", "y")})
    flag: bool = field(default=True, metadata={"help": "a switch"})
    size: tuple[int, int] = field(default=(4, 8), metadata={"help": "height and width"})
    weights: tuple[float, ...] = field(default=(1.0, 0.5), metadata={"help": "loss weights"})
    limit: int | None = field(default=None, metadata={"help": "an optional limit"})
    internal: list = field(default_factory=list, metadata={"cli": False})


def parser_for(*classes_and_prefixes):
    parser = argparse.ArgumentParser(prog="train", exit_on_error=True)
    for cls, prefix in classes_and_prefixes:
        config_to_argparse(parser, cls, prefix)
    return parser


def test_config_round_trips_through_the_command_line():
    parser = parser_for((DemoConfig, ""))
    assert config_from_args(DemoConfig, parser.parse_args([])) == DemoConfig()
    args = ["--count", "7", "--scale=1e-3", "--name", "y", "--no-flag", "--size", "2", "3"]
    args += ["--weights", "0.1", "0.2", "0.3", "--limit", "5"]
    got = config_from_args(DemoConfig, parser.parse_args(args))
    assert got == DemoConfig(7, 1e-3, "y", False, (2, 3), (0.1, 0.2, 0.3), 5)
    for config in (got, DemoConfig(flag=True, weights=(), limit=None), DemoConfig(scale=0.1 + 0.2)):
        assert config_from_args(DemoConfig, parser.parse_args(config_to_argv(config))) == config
    assert config_to_argv(DemoConfig(count=5), only_changed=True) == ["--count=5"]

    # the trainer's and a method's options side by side, the method's under a prefix
    both = parser_for((TrainConfig, ""), (DemoConfig, "demo-"))
    train = TrainConfig(lr=3e-4, milestones=(0.6, 0.9), amp=False, device="cpu", out_dir="runs/x")
    ns = both.parse_args(config_to_argv(train) + config_to_argv(got, "demo-"))
    assert config_from_args(TrainConfig, ns) == train and config_from_args(DemoConfig, ns, "demo-") == got
    assert both.parse_args(["--lr", "1e-4", "--demo-count", "2"]).lr == 1e-4


def test_command_line_errors_and_help():
    parser = parser_for((TrainConfig, ""), (DemoConfig, "demo-"))
    for bad in (["--no-such-option", "1"], ["--device", "tpu"], ["--demo-size", "1"], ["--batch-size", "eight"]):
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(bad)
        assert exit_.value.code == 2, bad
    text = parser.format_help()
    assert "--demo-count DEMO_COUNT" in text and "how many (default: 3)" in text
    assert "--amp, --no-amp" in text and "--resume, --no-resume" in text and "--demo-size DEMO_SIZE DEMO_SIZE" in text
    assert "learning rate of Adam (default: 0.0001)" in text and "--internal" not in text
    with pytest.raises(TypeError, match="'where'"):
        config_to_argparse(argparse.ArgumentParser(), dataclass(type("Bad", (), {"__annotations__": {"where": Path}})))
    with pytest.raises(ValueError, match="--count"):
        config_from_args(DemoConfig, argparse.Namespace())


# 5. Two processes, DistributedDataParallel with Gloo -------------------------------------------

DDP_SCRIPT = """
import argparse, json, os, sys
sys.path.insert(0, {tests!r})
import torch
from lesson_lib import training
from test_training import ToyDataset, ToyMethod

parser = argparse.ArgumentParser()
training.config_to_argparse(parser, training.TrainConfig)
config = training.config_from_args(training.TrainConfig, parser.parse_args())
rank = int(os.environ["RANK"])
from lesson_lib.training import loop
saves, save = [], loop.save_checkpoint
loop.save_checkpoint = lambda path, state: saves.append(os.path.basename(path)) or save(path, state)
trainer = training.train_worker(ToyMethod(dropout=0.0), config, ToyDataset(64), ToyDataset(20, seed=1))
torch.save(trainer.model.state_dict(), os.path.join({out!r}, f"weights_{{rank}}.pt"))
report = dict(saves=saves, world=trainer.world_size, main=trainer.is_main,
              left_group=not torch.distributed.is_initialized())
with open(os.path.join({out!r}, f"rank_{{rank}}.json"), "w") as f:
    json.dump(report, f)
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_keeps_ranks_identical_and_matches_one_process(tmp_path):
    """2 processes x batch 4 see, step by step, the samples one process sees with batch 8, so
    the weights agree with a single-process run up to rounding."""
    script = tmp_path / "ddp_train.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT).format(tests=str(TESTS), out=str(tmp_path)))
    config = cfg(tmp_path / "ddp", steps=8, batch_size=4, validate_every=4, checkpoint_every=4, keep_checkpoints=True)
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", str(script), *config_to_argv(config)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    reports = [json.loads((tmp_path / f"rank_{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in reports] == [2, 2] and [r["main"] for r in reports] == [True, False]
    assert reports[0]["saves"] == ["latest.pt", "step_4.pt", "latest.pt", "step_8.pt"] and reports[1]["saves"] == []
    assert all(r["left_group"] for r in reports)
    w0, w1 = (torch.load(tmp_path / f"weights_{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)  # identical on both ranks
    out = tmp_path / "ddp"
    assert sorted(p.name for p in out.iterdir()) == ["latest.pt", "log.csv", "step_4.pt", "step_8.pt", "val.csv"]
    ddp_log, ddp_val = read_log(out / "log.csv"), read_log(out / "val.csv")
    assert ddp_log["step"] == list(range(1, 9)) and ddp_val["step"] == [4, 8]  # written once, by rank 0

    config = cfg(tmp_path / "one", steps=8, batch_size=8, validate_every=4)
    single = Trainer(ToyMethod(dropout=0.0), config, ToyDataset(64), ToyDataset(20, seed=1))
    single.fit()
    for k, v in single.model.state_dict().items():
        torch.testing.assert_close(w0[k], v, rtol=1e-5, atol=1e-6)
    one_log, one_val = read_log(tmp_path / "one" / "log.csv"), read_log(tmp_path / "one" / "val.csv")
    assert ddp_log["loss"] == pytest.approx(one_log["loss"], rel=1e-5)  # the loss averaged over the ranks
    assert ddp_val["val_mse"] == pytest.approx(one_val["val_mse"], rel=1e-5)  # every sample once


# 6. CUDA (only where a GPU is present) ---------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_mixed_precision_trains_and_resumes(tmp_path):
    data = ToyDataset(64)
    # lr 3e-2: at the CPU tests' 1e-2 this toy needs more than 40 steps, and single-batch losses
    # are noisy, so the first and last five steps are compared (12.5 -> 0.6 on the CPU's fast path).
    a = Trainer(ToyMethod(dropout=0.0), cfg(tmp_path / "a", steps=40, lr=3e-2, device="cuda"), data)
    assert a.device.type == "cuda" and a.amp_dtype in (torch.bfloat16, torch.float16) and a.channels_last
    a.fit()
    log = read_log(tmp_path / "a" / "log.csv")
    assert sum(log["loss"][-5:]) < 0.25 * sum(log["loss"][:5])
    Trainer(ToyMethod(dropout=0.0), cfg(tmp_path / "b", steps=40, lr=3e-2, device="cuda", stop_at_step=17), data).fit()
    Trainer(ToyMethod(dropout=0.0), cfg(tmp_path / "b", steps=40, lr=3e-2, device="cuda", resume=True), data).fit()
    assert read_log(tmp_path / "b" / "log.csv")["loss"] == pytest.approx(log["loss"], rel=1e-3)
