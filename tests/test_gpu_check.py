"""benchmarks/gpu_check.py, the one command for a borrowed GPU, checked on the CPU: without a GPU
it says so and exits 0; it finds the tests that skip without CUDA and reads pytest's outcomes;
its parts run on the CPU (``--device cpu --quick``) into a summary that names every registered
method with finite numbers; a failing part does not hide the others; a part that overruns its
budget is cut off."""

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from lesson_lib import methods
from lesson_lib.training.syncs import copies_to_host
from lesson_lib.course.env import device_name

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


gc = _load()


@pytest.fixture(scope="module")
def worlds():
    """The --quick data: one world x 6 frames at 64x96, rendered once for this file."""
    return gc.render_worlds(gc.QUICK)


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the script runs every check")
def test_without_a_gpu_it_says_so_and_exits_0(tmp_path):
    run = subprocess.run([sys.executable, str(SCRIPT)], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, CUDA_VISIBLE_DEVICES=""))
    assert run.returncode == 0, run.stderr
    assert "no CUDA GPU: nothing to check" in run.stdout
    assert device_name("cpu") in run.stdout
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_finds_the_tests_that_skip_without_cuda(tmp_path):
    found = gc.find_cuda_tests()
    assert "tests/test_training.py::test_cuda_mixed_precision_trains_and_resumes" in found
    assert "tests/test_camera.py::test_device_mismatch_is_reported" in found
    assert not any("test_plotting_widgets" in t for t in found)  # mentions CUDA in an assert, runs on the CPU
    for node in found:
        assert (REPO / node.split("::")[0]).is_file()

    (tmp_path / "test_a.py").write_text(textwrap.dedent("""
        import pytest, torch

        @pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU")
        def test_decorated(): pass

        def test_skips_in_body():
            if not torch.cuda.is_available():
                pytest.skip("GPU")

        @pytest.mark.cuda
        def test_marked(): pass

        def test_only_reads_it():
            assert torch.cuda.is_available() in (True, False)

        @pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
        def test_skips_with_cuda(): pass

        def test_skips_in_body_with_cuda():
            if torch.cuda.is_available():
                pytest.skip("CPU only")

        class TestGroup:
            @pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU")
            def test_method(self): pass
    """))
    (tmp_path / "test_b.py").write_text(
        "import pytest, torch\npytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='GPU')\n"
        "def test_one(): pass\ndef helper(): pass\n"
    )
    names = [t.split(str(tmp_path.as_posix()) + "/")[-1] for t in gc.find_cuda_tests(tmp_path)]
    assert names == ["test_a.py::test_decorated", "test_a.py::test_skips_in_body", "test_a.py::test_marked",
                     "test_a.py::TestGroup::test_method", "test_b.py::test_one"]


def test_the_verdict_on_a_pytest_run():
    def verdict(passed=0, failure=0, error=0, skipped=0, rc=0, cuda=True):
        count = {"passed": passed, "failure": failure, "error": error, "skipped": skipped}
        return gc.tests_verdict(count, rc, cuda=cuda, timeout_s=60)

    assert verdict(passed=2) == []
    assert verdict(passed=1, skipped=1) == ["1 skipped on a CUDA machine"]
    assert verdict(skipped=2, cuda=False) == []  # on the CPU these tests skip
    assert verdict(passed=1, failure=1, rc=1) == ["1 failed, 0 errors"]
    assert verdict(rc=5) == ["pytest exited with status 5", "no test passed"]  # nothing collected
    assert verdict(rc=None) == ["pytest timed out after 60 s", "no test passed"]


def test_reads_pytest_outcomes_and_cuts_a_hanging_run(tmp_path):
    f = tmp_path / "test_fake.py"
    f.write_text("import pytest, time\ndef test_ok(): pass\ndef test_skip(): pytest.skip('no GPU')\n"
                 "def test_bad(): assert 1 == 2\ndef test_slow(): time.sleep(60)\n")
    (tmp_path / "helper_mod.py").write_text("X = 1\n")
    needs = tmp_path / "test_needs.py"  # a package this Python lacks: listed, not run, not a failure
    needs.write_text("import helper_mod\nimport surely_not_installed_pkg.sub\ndef test_it(): pass\n")
    assert gc.missing_imports(needs) == ["surely_not_installed_pkg"] and gc.missing_imports(f) == []
    nodes = [f"{f}::test_{n}" for n in ("ok", "skip", "bad")] + [f"{needs}::test_it"]
    r = gc.run_cuda_tests(nodes, timeout_s=60, cuda=True)
    assert r["not_run"] == {f"{needs}::test_it": ["surely_not_installed_pkg"]}
    assert (r["passed"], r["skipped"], r["failed"], r["errors"], r["returncode"]) == (1, 1, 1, 0, 1), r
    assert r["status"] == "FAIL" and r["error"] == "1 failed, 0 errors; 1 skipped on a CUDA machine"
    assert [c["outcome"] for c in r["cases"]] == ["passed", "skipped", "failure"]
    assert r["cases"][1]["reason"] == "no GPU" and "assert 1 == 2" in r["output_tail"]
    t0 = time.perf_counter()
    r = gc.run_cuda_tests([f"{f}::test_slow"], timeout_s=3, cuda=True)
    assert r["status"] == "FAIL" and "timed out after 3 s" in r["error"] and time.perf_counter() - t0 < 20
    assert gc.run_cuda_tests([], timeout_s=10)["status"] == "FAIL"


def test_the_real_cuda_tests_are_collected_and_skip_on_the_cpu():
    if torch.cuda.is_available():
        pytest.skip("on a GPU machine gpu_check.py runs them")
    r = gc.run_cuda_tests(gc.find_cuda_tests(), timeout_s=120, cuda=False)
    assert r["status"] == "PASS", r
    assert r["not_run"] == {}  # kornia (tests/test_camera.py) is in the course's environment
    assert r["skipped"] == len(r["selected"]) >= 2 and r["passed"] == r["failed"] == r["errors"] == 0


def _check_numbers(obj, where="summary"):
    """Every float in the summary is finite."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_numbers(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _check_numbers(v, f"{where}[{i}]")
    elif isinstance(obj, float):
        assert math.isfinite(obj), where


@pytest.mark.slow  # every part of the script: about 15 s
def test_every_part_runs_on_the_cpu_into_one_summary(tmp_path, monkeypatch, capsys, worlds):
    monkeypatch.setattr(gc, "render_worlds", lambda settings: worlds)
    out = tmp_path / "check.json"
    assert gc.main(["--device", "cpu", "--quick", "--out", str(out)]) == 0
    s = json.loads(out.read_text())
    _check_numbers(s)
    assert s["status"] == "PASS" and s["failed_parts"] == [] and s["quick"] and s["device"] == "cpu"
    assert s["environment"]["device"] == device_name("cpu") and s["environment"]["torch"] == torch.__version__
    parts = s["parts"]
    assert list(parts) == list(gc.PARTS)
    assert parts["tests"]["status"] == "SKIP"
    assert all(p["status"] == "PASS" and p["seconds"] <= p["budget_s"] for n, p in parts.items() if n != "tests")

    rows = parts["benchmark"]["rows"]
    assert [(r["encoder_width"], r["mode"]) for r in rows] == [(16, "fp32"), (16, "fast")]
    assert (rows[0]["amp_dtype"], rows[0]["channels_last"]) == ("float32", False)
    assert (rows[1]["amp_dtype"], rows[1]["channels_last"]) == ("bfloat16", True)
    assert all(r["steps"] == gc.QUICK.bench_steps and r["images_per_s"] > 0 and r["peak_mib"] is None for r in rows)
    assert parts["benchmark"]["speedup"]["16"] > 0 and parts["benchmark"]["target_met"] is None

    assert parts["syncs"]["loss_host_syncs"] == 0 and parts["syncs"]["step_syncs"] is None

    stepped = parts["steps"]["methods"]
    assert set(stepped) == set(methods.available()) | set(gc.EXTRA_STEP_ENTRIES)
    for name, r in stepped.items():
        eager, graph = r["modes"]["eager"], r["modes"]["cuda_graph"]
        assert r["status"] == "PASS" and eager["ms_per_step"] > 0 and eager["aten_ops_per_step"] > 0, (name, r)
        assert eager["vs_eager"] == 1.0 and graph["error"].startswith("not run") and r["largest_batch"] is None

    trained = parts["methods"]["methods"]
    assert set(trained) == set(methods.available()) and trained
    for name, r in trained.items():
        assert r["status"] == "PASS", (name, r)
        assert r["steps"] == gc.QUICK.train_steps and r["resumed_at"] == gc.QUICK.train_steps // 5
        assert r["amp_dtype"] == "bfloat16" and r["channels_last"]
        assert r["loss_last"] < r["loss_first"] and r["loss_host_syncs"] == 0
        assert r["val"] and r["prediction"]["finite"] and r["prediction"]["median"] > 0

    printed = capsys.readouterr().out
    assert "overall: PASS" in printed and str(out) in printed
    assert all(f"[PASS] {p}" in printed for p in gc.PARTS if p != "tests")
    assert all(name in printed for name in methods.available())


def test_a_failing_part_does_not_hide_the_others(tmp_path, monkeypatch, capsys, worlds):
    monkeypatch.setattr(gc, "render_worlds", lambda settings: worlds)

    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(gc, "benchmark_part", broken)
    out = tmp_path / "check.json"
    assert gc.main(["--device", "cpu", "--quick", "--parts", "benchmark,syncs", "--out", str(out)]) == 1
    s = json.loads(out.read_text())
    assert list(s["parts"]) == ["data", "benchmark", "syncs"]  # data is added: the others need it
    assert s["status"] == "FAIL" and s["failed_parts"] == ["benchmark"]
    assert s["parts"]["benchmark"]["error"] == "RuntimeError: simulated failure"
    assert "simulated failure" in s["parts"]["benchmark"]["traceback"]
    assert s["parts"]["syncs"]["status"] == "PASS"
    assert "overall: FAIL" in capsys.readouterr().out


def test_a_part_past_its_budget_is_cut_off(tmp_path):
    summary = {"parts": {}}

    def forever(budget):
        while True:
            time.sleep(0.01)

    t0 = time.perf_counter()
    r = gc.run_part("benchmark", forever, 0.3, summary, tmp_path / "s.json")
    assert time.perf_counter() - t0 < 5
    assert r["status"] == "FAIL" and "PartTimeout" in r["error"] and "0 s" in r["error"]
    assert json.loads((tmp_path / "s.json").read_text())["parts"]["benchmark"]["status"] == "FAIL"


def test_the_sync_counter_names_the_lines_that_sync(tmp_path, worlds):
    from lesson_lib.training import move_to

    batch = gc.stereo_batch(worlds, 2)
    trainer = gc._monodepth_trainer(torch.device("cpu"), batch, 8, True, tmp_path)
    moved = move_to(batch, trainer.device, channels_last=trainer.channels_last)
    with gc.HostSyncCounter() as counter:  # value checks on: the warps read their disparities
        with trainer.autocast():
            trainer.method.loss(trainer.train_model, moved, trainer.step_context())
    assert counter.calls and all(re.fullmatch(r"\w+ at lesson_lib/[\w/]+\.py:\d+", c) for c in counter.calls)
    assert gc.loss_host_syncs(trainer, batch) == []  # as the trainer calls it: none
    assert copies_to_host((torch.empty(2, device="meta"), "cpu"), {})  # a copy to the host
    assert copies_to_host((torch.empty(2, device="meta"),), {"device": torch.device("cpu")})
    assert not copies_to_host((torch.empty(2), "cpu"), {}) and not copies_to_host((torch.empty(2, device="meta"), "meta"), {})


def test_synchronizing_cuda_calls_are_read_from_torch_warnings(tmp_path, monkeypatch, worlds):
    """The CUDA-only check, its plumbing run on the CPU: ``set_sync_debug_mode("warn")`` makes
    torch warn at each synchronizing call; here a step warns as torch would."""
    import warnings

    modes = []
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    batch = gc.stereo_batch(worlds, 2)
    trainer = gc._monodepth_trainer(torch.device("cpu"), batch, 8, True, tmp_path)
    real_step = trainer.train_step

    def step(b):
        if modes and modes[-1] == "warn":
            warnings.warn("called a synchronizing CUDA operation", UserWarning)
        return real_step(b)

    trainer.train_step = step
    found = gc.cuda_step_syncs(trainer, batch, steps=2)
    assert modes == ["warn", "default"]
    assert len(found) == 2 and all(re.fullmatch(r"tests/test_gpu_check\.py:\d+: called a synchronizing CUDA "
                                                r"operation", f) for f in found), found


def test_the_printed_summary_of_a_gpu_run():
    env = {"device": "NVIDIA H200", "torch": "2.11.0", "cuda": "13.0", "cudnn": 91000, "gpu_memory_gib": 139.8,
           "tf32_matmul": False, "tf32_cudnn": True, "python": "3.12.3", "date": "today", "git_commit": "abc"}
    row = {"encoder_width": 64, "amp_dtype": "float32", "channels_last": False, "images_per_s": 100.0,
           "ms_per_step": 80.0, "steps": 30, "peak_mib": 2048.0}
    parts = {
        "tests": {"status": "PASS", "seconds": 9.0, "passed": 1, "failed": 0, "errors": 0, "skipped": 0,
                  "cases": [{"test": "tests.test_training::test_cuda", "outcome": "passed", "reason": "",
                             "seconds": 3.0}], "not_run": {"tests/test_camera.py::test_x": ["kornia"]}},
        "benchmark": {"status": "PASS", "seconds": 20.0, "rows": [{**row, "mode": "fp32"}, {
            **row, "mode": "fast", "amp_dtype": "bfloat16", "channels_last": True, "images_per_s": 250.0}],
            "speedup": {"64": 2.5}, "target_met": {"64": True}, "cut_by_budget": []},
        "syncs": {"status": "FAIL", "seconds": 2.0, "error": "1 synchronizing CUDA call", "loss_host_syncs": 0,
                  "loss_sync_calls": [], "step_syncs": 1, "steps_checked": 3,
                  "step_sync_calls": ["lesson_lib/training/loop.py:440: called a synchronizing CUDA operation"]},
        "methods": {"status": "FAIL", "seconds": 1.0, "methods": {"x": {"status": "FAIL", "error": "KeyError: 'left'"}}},
    }
    text = gc.summary_text({"environment": env, "quick": False, "parts": parts, "status": "FAIL", "seconds": 32.0,
                            "out": "gpu_check.json"})
    for expected in ("NVIDIA H200 | torch 2.11.0 | CUDA 13.0 | cuDNN 91000", "[PASS] tests", "not run  tests/test_camera",
                     "kornia", "width 64: fast path 2.50x float32 (target 2x: MET)", "2048",
                     "loop.py:440", "x: FAIL KeyError: 'left'", "overall: FAIL in 32 s; JSON: gpu_check.json"):
        assert expected in text, expected


def test_datasets_as_each_method_declares_them(worlds):
    train, val = gc.method_datasets(methods.build_method("monodepth"), worlds)
    assert {"left", "right", "K", "baseline"} <= set(train[0]) and train.augment and not val.augment
    train, val = gc.method_datasets(methods.build_method("sfmlearner"), worlds)
    assert {"target", "sources", "K"} <= set(train[0]) and len(train) > 0 and not (train.with_flow or val.with_flow)
    train, val = gc.method_datasets(methods.build_method("trianflow"), worlds)
    assert val.with_flow and not train.with_flow  # the flow stage's validation compares with the world's flow


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit):
        gc.parse_args(["--parts", "tests,nonsense"])
    with pytest.raises(SystemExit):
        gc.parse_args(["--budget", "methods=-1"])
    with pytest.raises(SystemExit):
        gc.parse_args(["--budget", "everything=10"])
    assert gc.parse_args(["--budget", "methods=30"]).budget == ["methods=30"]
    assert sum(gc.Settings().budgets.values()) <= 9 * 60 - 20  # within 9 minutes: a device command may run 10
