"""``python -m lesson_lib train monodepth | evaluate | predict | export-weights`` as real
subprocesses: a tiny run end to end, and clear messages for wrong arguments and files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, cache, timeout=300):
    env = dict(os.environ, LESSON_LIB_CACHE=str(cache), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "lesson_lib", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env)


TINY = ["--steps", "3", "--batch-size", "2", "--train-sequences", "1", "--train-frames", "4", "--val-sequences", "1",
        "--val-frames", "2", "--image-height", "64", "--image-width", "224", "--encoder-width", "8", "--no-progress",
        "--log-every", "1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mdcli")
    run = tmp / "run"
    r = cli("train", "monodepth", *TINY, "--out-dir", run, cache=tmp / "cache")
    assert r.returncode == 0, r.stderr
    return tmp, run, r


def test_train_writes_checkpoint_logs_and_validation(trained):
    tmp, run, r = trained
    assert "trained 3 steps" in r.stdout
    assert (run / "latest.pt").is_file()
    log = (run / "log.csv").read_text().splitlines()
    assert log[0].startswith("step,epoch,lr,loss,appearance,smoothness,left_right") and len(log) == 4
    val = (run / "val.csv").read_text().splitlines()
    assert "abs_rel" in val[0] and len(val) == 2


def test_train_refuses_to_overwrite_a_run(trained):
    tmp, run, _ = trained
    r = cli("train", "monodepth", *TINY, "--out-dir", run, cache=tmp / "cache")
    assert r.returncode == 2 and "already holds a run" in r.stderr and "--resume" in r.stderr


def test_export_evaluate_predict(trained):
    tmp, run, _ = trained
    w = tmp / "w.pt"
    r = cli("export-weights", run / "latest.pt", w, cache=tmp / "cache")
    assert r.returncode == 0 and w.is_file(), r.stderr
    out_json = tmp / "eval.json"
    r = cli("evaluate", w, "--sequences", "1", "--frames", "2", "--json", out_json, cache=tmp / "cache")
    assert r.returncode == 0, r.stderr
    for label in ("metres", "metres + pp", "median-scaled", "median-scaled + pp"):
        assert label in r.stdout
    res = json.loads(out_json.read_text())
    assert res["images"] == 2 and 0 < res["results"]["metres"]["abs_rel"] < 10

    from matplotlib import pyplot as plt

    img = tmp / "street.png"
    rng = np.random.default_rng(0)
    plt.imsave(img, rng.random((70, 150, 3)))
    out = tmp / "pred"
    r = cli("predict", img, "--weights", w, "--out", out, "--post-process", cache=tmp / "cache")
    assert r.returncode == 0, r.stderr
    disp = np.load(out / "street_disp.npy")
    assert disp.shape == (70, 150) and disp.dtype == np.float32
    assert 0 < disp.min() and disp.max() < 0.3  # fractions of the width, below 0.3 * sigmoid's bound
    png = plt.imread(out / "street_disp.png")
    assert png.shape[:2] == (70, 150)


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "sfm"], "unknown method 'sfm'"),
        (["train", "monodepth", "--variant", "sideways"], "invalid choice"),
        (["train", "monodepth", "--batch-size", "0"], "batch_size must be >= 1"),
        (["train", "monodepth", "--input-height", "60", "--input-width", "224"], "multiple of 32"),
        (["train", "monodepth", "--train-sequences", "0"], "--train-sequences must be >= 1"),
        (["predict", "no_such_image.png"], "no image file at no_such_image.png"),
        (["evaluate", "no_such_weights.pt"], "no checkpoint file at no_such_weights.pt"),
        (["export-weights", "no_such.pt", "out.pt"], "no checkpoint file at no_such.pt"),
    ],
)
def test_wrong_arguments_get_clear_messages(args, message, tmp_path):
    r = cli(*args, cache=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_corrupt_files_get_clear_messages(trained):
    tmp, run, _ = trained
    bad = tmp / "corrupt.pt"
    bad.write_bytes(b"\x00garbage")
    r = cli("evaluate", bad, cache=tmp / "cache")
    assert r.returncode == 2 and "corrupt.pt is not a readable torch checkpoint" in r.stderr
    notimg = tmp / "notes.png"
    notimg.write_text("this is not an image")
    r = cli("predict", notimg, "--weights", run / "latest.pt", "--out", tmp / "p2", cache=tmp / "cache")
    assert r.returncode == 2 and "could not be read as an image" in r.stderr and "notes.png" in r.stderr
    assert "Traceback" not in r.stderr
