"""benchmarks/monodepth2_min_diagnosis.py and the record it shipped (chapter 11, section 4)."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from lesson_lib import weights

REPO = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("min_diagnosis", REPO / "benchmarks" / "monodepth2_min_diagnosis.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_run_without_checkpoints_is_named(tmp_path, monkeypatch):
    module = _script()
    monkeypatch.setattr(module, "snippets_batch", lambda: {})  # no data needed to reach the check
    monkeypatch.setattr(module, "truth_errors", lambda batch: {"picks_prev": 0.5, "min_err": 0.0, "mean_err": 0.0})
    with pytest.raises(SystemExit, match=str(tmp_path.name) + ".*step_N.pt"):
        module.main([str(tmp_path)])


def test_the_shipped_record_is_complete_and_consistent():
    record = json.loads(weights.path("monodepth2_min_diagnosis.json").read_text())
    assert set(record["runs"]) == {"diag_B_base", "diag_B_min"}
    fields = {"abs_rel", "factor", "factor_spread", "at_ceiling", "t_prev", "t_next", "t_true", "t_next_angle",
              "picks_prev", "min_err", "mean_err"}
    for run in record["runs"].values():
        assert sorted(int(s) for s in run) == list(range(100, 1001, 100))
        for row in run.values():
            assert set(row) == fields
            assert all(np.isfinite(v) for v in row.values())
            assert 0.0 <= row["picks_prev"] <= 1.0 and row["min_err"] <= row["mean_err"]  # a minimum is at most the mean
    assert 0.0 <= record["truth"]["picks_prev"] <= 1.0
    maps = np.load(weights.path("monodepth2_min_diagnosis.npz"))
    assert set(maps.files) == {"target", "depth", "disp_diag_B_base", "disp_diag_B_min"}
    n, h, w = maps["depth"].shape
    assert maps["target"].shape == (n, 3, h, w) and maps["target"].dtype == np.uint8
    for key in ("disp_diag_B_base", "disp_diag_B_min"):
        assert maps[key].shape == (n, h, w) and (maps[key] > 0).all()
