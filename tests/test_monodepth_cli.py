"""``python -m lesson_lib train monodepth | evaluate | predict | export-weights`` as real
subprocesses: a tiny run end to end, and clear messages for wrong arguments and files."""

import json
from pathlib import Path

import numpy as np
import pytest

from _commands import one_thread, run_command


def cli(*args, cache, timeout=300):
    return run_command(*args, cache=cache, timeout=timeout)


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


def test_export_weights_writes_the_checkpoints_model_in_float16(trained):
    import torch

    from lesson_lib.methods import load_model
    from lesson_lib.training import load_checkpoint

    tmp, run, _ = trained
    w = tmp / "w.pt"
    r = cli("export-weights", run / "latest.pt", w, cache=tmp / "cache")
    assert r.returncode == 0 and w.is_file(), r.stderr
    assert f"wrote {w}" in r.stdout
    ckpt = load_checkpoint(run / "latest.pt")
    exported = torch.load(w, weights_only=True)
    assert exported["method"] == "monodepth" and exported["method_config"] == ckpt["method_config"]
    assert exported["model"].keys() == ckpt["model"].keys()
    for k, v in ckpt["model"].items():
        want = v.half() if v.is_floating_point() else v
        assert torch.equal(exported["model"][k], want), k
    model, method, meta = load_model(w)
    assert meta["step"] == 3 and method.config.encoder_width == 8
    assert w.stat().st_size < (run / "latest.pt").stat().st_size / 2


# -- the shipped weights on a fixed piece of the synthetic test split -----------------------------

SUBSET = ["--sequences", "1", "--frames", "2"]


@pytest.fixture(scope="module")
def test_world(tmp_path_factory):
    """The first world of the test split, 2 frames, rendered once into a cache the commands share."""
    from lesson_lib.data.synthetic import StereoDataset, load_split

    tmp = tmp_path_factory.mktemp("world")
    cache = tmp / "cache"
    data = StereoDataset(load_split("test", 1, 2, cache_dir=cache, progress=False), augment=False)
    return tmp, cache, data


def test_evaluate_json_equals_evaluate_model_in_process(test_world):
    """``evaluate`` of the shipped weights on 2 test images: the JSON it writes holds exactly what
    ``lesson_lib.evaluation.evaluate_model`` gives in this process on the same images."""
    from lesson_lib import methods, weights
    from lesson_lib.evaluation import evaluate_model

    tmp, cache, data = test_world
    shipped = weights.path("monodepth_lr.pt")
    out_json = tmp / "eval.json"
    r = cli("evaluate", shipped, *SUBSET, "--json", out_json, "--device", "cpu", cache=cache)
    assert r.returncode == 0, r.stderr
    res = json.loads(out_json.read_text())
    assert res["images"] == 2 and res["method"] == "monodepth" and res["split"] == "test"
    assert "monodepth (lr), 2 images of the test split" in r.stdout
    # data preparation reports on stderr, the results alone go to stdout
    assert "test split: 1 worlds x 2 frames" in r.stderr and "worlds x" not in r.stdout
    model, method, _ = methods.load_model(shipped)
    with one_thread():
        want = evaluate_model(model, method, data)
    assert list(res["results"]) == list(want) == ["metres", "metres + pp", "median-scaled", "median-scaled + pp"]
    for label, metrics in want.items():
        assert res["results"][label].keys() == metrics.keys()
        for name, value in metrics.items():
            assert res["results"][label][name] == pytest.approx(value, rel=1e-6, abs=1e-6), (label, name)
        # the printed table shows the same numbers
        row = next(line for line in r.stdout.splitlines() if line.startswith(label + " ") and
                   (label.endswith("pp") or "+ pp" not in line))
        printed = [float(v) for v in row[len(label):].split()]
        assert printed == pytest.approx([metrics[n] for n in ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")],
                                        abs=6e-5)
    # the shipped model is a trained one: measured abs_rel 0.133 in metres on these two images
    # (0.137 on the whole test split, weights/README.md); twice that would be a broken model
    assert want["metres"]["abs_rel"] < 0.27


def test_predict_equals_predict_disparity_in_process_and_the_ground_truth(test_world):
    """``predict`` (default weights, with post-processing) on a test image saved as PNG: its .npy is
    ``method.predict_disparity`` of the same file in this process, and it is close to the image's
    true disparity, ``f * B / Z`` as a fraction of the width, over pixels with ground truth.

    Measured on this image: mean |error| 0.00395 of the width (1.6 px of 416), median relative
    error 0.059; the thresholds are twice that. A constant disparity (the true median) scores
    0.0176 and 0.48."""
    import torch
    from matplotlib import pyplot as plt

    from lesson_lib import methods, weights
    from lesson_lib.data.folder import read_image
    from lesson_lib.stereo import depth_to_disparity_fraction

    tmp, cache, data = test_world
    item = data[0]
    img = tmp / "frame0.png"
    plt.imsave(img, item["left"].permute(1, 2, 0).numpy())  # 8-bit PNG of an 8-bit render: lossless
    out = tmp / "pred"
    r = cli("predict", img, "--out", out, "--post-process", "--device", "cpu", cache=cache)
    assert r.returncode == 0, r.stderr
    disp = np.load(out / "frame0_disp.npy")
    assert disp.shape == (128, 416) and disp.dtype == np.float32
    assert plt.imread(out / "frame0_disp.png").shape[:2] == (128, 416)

    image = torch.from_numpy(read_image(img)).permute(2, 0, 1)[None]
    assert torch.equal(image, item["left"][None])
    model, method, _ = methods.load_model(weights.path())
    with one_thread():
        want = method.predict_disparity(model, image, post_processing=True)[0, 0].numpy()
    np.testing.assert_allclose(disp, want, atol=1e-6, rtol=0)

    gt = depth_to_disparity_fraction(item["depth"][None], item["K"][None, 0, 0], item["baseline"])[0, 0].numpy()
    depth = item["depth"][0].numpy()
    valid = (depth > 0) & (depth <= 80)
    assert valid.mean() > 0.5
    err = np.abs(disp - gt)[valid]
    assert err.mean() < 0.008, err.mean()
    assert np.median(err / gt[valid]) < 0.12, np.median(err / gt[valid])


# -- errors: one line, exit status 2, no traceback --------------------------------------------------


def _error_lines(stderr):
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr  # ends with exactly one error line
    assert "Traceback" not in stderr
    return lines, errors[0]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_evaluate_on_cuda_without_a_gpu_is_one_clear_line(tmp_path):
    from lesson_lib import weights

    r = cli("evaluate", "--device", "cuda", weights.path("monodepth_lr.pt"), *SUBSET, cache=tmp_path / "cache")
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines, error = _error_lines(r.stderr)
    assert lines == [error] and "CUDA" in error, r.stderr
    assert not (tmp_path / "cache").exists()  # it stopped before rendering anything


def test_train_with_zero_steps_stops_quickly_with_a_clear_message(tmp_path):
    import time

    t0 = time.perf_counter()
    r = cli("train", "monodepth", "--steps", "0", "--out-dir", tmp_path / "run", cache=tmp_path / "cache")
    elapsed = time.perf_counter() - t0
    assert r.returncode == 2, (r.stdout, r.stderr)
    _, error = _error_lines(r.stderr)
    assert error.startswith("error: --steps must be >= 1"), error
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()  # nothing rendered, no run
    assert elapsed < 30  # measured 2.3 s; rendering the default 200 training worlds takes minutes


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_weights_of_an_unknown_method_are_refused_naming_the_file(command, tmp_path):
    import torch

    from lesson_lib import weights
    from lesson_lib.training import save_checkpoint

    state = torch.load(weights.path("monodepth_lr.pt"), weights_only=True)
    foreign = save_checkpoint(tmp_path / "future_weights.pt", {**state, "method": "no_such_method"})
    img = tmp_path / "x.png"
    from matplotlib import pyplot as plt

    plt.imsave(img, np.zeros((32, 32, 3)))
    args = [foreign, *SUBSET] if command == "evaluate" else [img, "--weights", foreign, "--out", tmp_path / "p"]
    r = cli(command, *args, cache=tmp_path / "cache")
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines, error = _error_lines(r.stderr)
    assert lines == [error]
    assert str(foreign) in error and "method 'no_such_method'" in error and "available: monodepth, monodepth2, sfmlearner" in error


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "sfm"], "unknown method 'sfm'; available: monodepth"),
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


def test_predict_on_a_folder_takes_its_images_in_natural_order(tmp_path, capsys):
    """A folder argument stands for every image in it (a video's frames), in natural order; the
    outputs equal ``predict_disparity`` of each file; a folder without images is one clear error."""
    import torch
    from PIL import Image

    from lesson_lib import methods, weights
    from lesson_lib.course.cli import main
    from lesson_lib.data.folder import read_image

    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for name in ("frame10.png", "frame2.png", "frame1.png"):
        Image.fromarray(rng.integers(0, 256, (40, 96, 3), dtype=np.uint8)).save(frames / name)
    (frames / "notes.txt").write_text("not an image")
    out = tmp_path / "pred"
    with one_thread():
        assert main(["predict", str(frames), "--out", str(out), "--device", "cpu"]) == 0
    printed = [line.split(":")[0] for line in capsys.readouterr().out.splitlines()]
    assert [Path(p).name for p in printed] == ["frame1.png", "frame2.png", "frame10.png"]
    model, method, _ = methods.load_model(weights.path())
    for name in ("frame1", "frame2", "frame10"):
        image = torch.from_numpy(read_image(frames / f"{name}.png")).permute(2, 0, 1)[None]
        with one_thread():
            want = method.predict_disparity(model, image)[0, 0].numpy()
        np.testing.assert_allclose(np.load(out / f"{name}_disp.npy"), want, atol=1e-6, rtol=0)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["predict", str(empty), "--out", str(out)]) == 2
    assert "no images in folder" in capsys.readouterr().err
