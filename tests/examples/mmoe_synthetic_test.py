"""Quick-mode run of the synthetic task-correlation study, so the script cannot rot."""

import json
import os
import pathlib
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "examples" / "mmoe_synthetic.py"


def test_quick_mode_trains_all_models(tmp_path):
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
    # Quick mode: 2 seeds x 2 correlations x 3 models.
    assert len(results) == 12
    assert {r["model"] for r in results} == {"shared_bottom", "omoe", "mmoe"}
    assert {r["correlation"] for r in results} == {0.5, 1.0}
    for result in results:
        assert 0.0 < result["test_loss"] < 10.0
        assert len(result["test_curve"]) == 2

    params = {r["model"]: r["params"] for r in results}
    # The Shared-Bottom width is chosen to match MMoE's parameter count.
    assert abs(params["shared_bottom"] - params["mmoe"]) / params["mmoe"] < 0.02

    gates = [r["gate_weights"] for r in results if r["model"] == "mmoe"]
    assert len(gates) == 4
    for task_weights in gates[0].values():
        assert len(task_weights) == 8
        assert abs(sum(task_weights) - 1.0) < 1e-5

    for name in ("loss_vs_correlation", "curves", "final_loss_histograms", "gates"):
        assert (tmp_path / f"mmoe_synthetic_{name}.png").stat().st_size > 1000
    assert "| MMoE | 14850 |" in completed.stdout
