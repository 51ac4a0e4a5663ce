"""An exercise's library twin is used only after the exercise: a learner writes each step before
the chapter calls the library's version of it (the course's rule for chapters 07-11).

For each exercise (its solution cell's nbgrader grade_id prefix), the library functions that
compute the same thing, or hand the learner its answer; no code cell above the solution cell may
call one of them."""
import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

TWINS = {
    "07_sfmlearner.ipynb": {
        "ex7_1_": ["rigid_sample_points", "rigid_warp"],
        "ex7_2_": ["sfmlearner_loss", "Trainer"],
        "ex7_3_": ["ate_snippets"],
    },
    "08_two_view_geometry.ipynb": {
        "ex8_1_": ["normalising_transform"],
        "ex8_2_": ["fundamental_8point", "enforce_rank2", "ransac_fundamental", "recover_pose"],
        "ex8_3_": ["ransac_fundamental"],
        "ex8_4_": ["decompose_essential", "recover_pose", "motion_from_essential"],
        "ex8_5_": ["in_front", "recover_pose", "motion_from_essential_choose_solution"],
        "ex8_6_": ["triangulate_midpoint"],
    },
    "09_trianflow.ipynb": {
        "ex9_1_": ["ray_angle_deg"],
        "ex9_2_": ["move_depth"],
        "ex9_4_": ["register_depth"],
    },
    "10_evaluation.ipynb": {
        "ex10_1_": ["image_depth_errors", "per_image_metrics", "evaluate", "evaluate_model"],
        "ex10_2_": ["per_image_metrics", "evaluate", "evaluate_model"],
        "ex10_3_": ["umeyama_alignment", "align_trajectory", "trajectory_report"],
    },
    "11_beyond_the_papers.ipynb": {
        "ex11_1_": ["min_reprojection"],
        "ex11_2_": ["automask"],
    },
}


def _cells(name):
    return json.loads((NOTEBOOKS / name).read_text())["cells"]


def _solution_index(cells, prefix):
    for i, c in enumerate(cells):
        nbg = c.get("metadata", {}).get("nbgrader", {})
        if nbg.get("solution") and nbg.get("grade_id", "").startswith(prefix):
            return i
    raise AssertionError(f"no solution cell with grade_id {prefix}*")


CASES = [(nb, prefix, twins) for nb, table in TWINS.items() for prefix, twins in table.items()]


def _twins_above(cells, prefix, twins):
    """(cell index, function) of every call of a twin in the code cells above the exercise."""
    end = _solution_index(cells, prefix)
    calls = re.compile(r"\b(" + "|".join(map(re.escape, twins)) + r")\s*\(")
    return [(i, m.group(1)) for i, c in enumerate(cells[:end]) if c["cell_type"] == "code"
            for m in calls.finditer("".join(c["source"]))]


@pytest.mark.parametrize("notebook, prefix, twins", CASES, ids=[f"{nb[:2]}-{p.rstrip('_')}" for nb, p, _ in CASES])
def test_no_twin_above_the_exercise(notebook, prefix, twins):
    above = _twins_above(_cells(notebook), prefix, twins)
    assert not above, f"{notebook}: {prefix}'s library twin called above the exercise (cell, function): {above}"


def test_the_scan_finds_a_planted_call():
    """The scan itself: a twin called above an exercise is found, the same call below it is not."""
    cells = _cells("08_two_view_geometry.ipynb")
    end = _solution_index(cells, "ex8_3_")
    planted = {"cell_type": "code", "source": ["F, inl = twoview.ransac_fundamental (p1, p2)\n"], "metadata": {}}
    assert _twins_above(cells[:end] + [planted] + cells[end:], "ex8_3_", ["ransac_fundamental"]) == [(end, "ransac_fundamental")]
    assert _twins_above(cells[: end + 1] + [planted] + cells[end + 1:], "ex8_3_", ["ransac_fundamental"]) == []
    assert _twins_above(cells[:end] + [{**planted, "cell_type": "markdown"}] + cells[end:], "ex8_3_", ["ransac_fundamental"]) == []
