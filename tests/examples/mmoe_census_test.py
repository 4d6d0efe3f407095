"""Quick-mode run of the census experiments, so the script cannot rot."""

import json
import os
import pathlib
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "examples" / "mmoe_census.py"


def test_quick_mode_reports_auc_per_task(tmp_path):
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", f"--output_dir={tmp_path}"],
        capture_output=True,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        # A safety net only: the quick run uses about 30-50 s of CPU time, and far more
        # wall time when other jobs share the cores.
        timeout=1200,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]

    results = json.loads((tmp_path / "results.json").read_text())
    # Quick mode: Adult task group 1, single-task and MMoE, 2 seeds.
    assert [(r["model"], r["seed"]) for r in results] == [
        ("single_task", 0), ("mmoe", 0), ("single_task", 1), ("mmoe", 1),
    ]  # fmt: skip
    for result in results:
        assert sorted(result["auc"]) == ["income", "never_married"]
        # 48 steps on 3,000 examples already separate the marital-status classes.
        assert result["auc"]["never_married"] > 0.6
        assert result["auc"]["income"] < 1.0
    single_task = results[0]["params"]
    mmoe = results[1]["params"]
    assert single_task > mmoe
    assert len(results[1]["gates"]["income"]) == 8
    assert (tmp_path / "mmoe_census_gates.png").stat().st_size > 1000
    assert "| MMoE | 5,750 |" in completed.stdout
