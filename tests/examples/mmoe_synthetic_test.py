"""Quick-mode run of the synthetic task-correlation study, so the script cannot rot."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

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


def _load_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("mmoe_synthetic_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paired_analysis_compares_seed_by_seed():
    script = _load_script()
    # Two seeds: seed 1's data is twice as hard for every model, and MMoE's loss is 0.8x Shared-Bottom's.
    base = {"shared_bottom": 0.10, "mmoe": 0.08}
    results = [
        {
            "model": model,
            "correlation": correlation,
            "seed": seed,
            "test_loss": base[model] * (1 + seed) * (1.1 if correlation == 0.5 else 1.0),
            "test_curve": [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
        }
        for model in base
        for correlation in (0.5, 1.0)
        for seed in (0, 1)
    ]

    lines = script.paired_analysis(results, [0.5, 1.0], ["shared_bottom", "mmoe"])

    assert lines[0].startswith("* Spread:")
    assert "Shared-Bottom +0.0150 ± 0.0050" in lines[1]
    assert "MMoE +0.0120 ± 0.0040" in lines[1]
    assert "0.5: 0.80 (± 0.00), 1.0: 0.80 (± 0.00)" in lines[2]
    assert "8 of 8 runs had a lower test loss" in lines[3]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--epochs=-1"], "flag --epochs=-1: -1 is not a positive integer"),
        (["--num_seeds=0"], "flag --num_seeds=0: 0 is not a positive integer"),
        (["--input_dim=1"], "flag --input_dim=1: 1 is not integer >= 2"),
        (["--quick", "--correlations=high"], "--correlations entries must each be a number in [-1, 1]. Received: 'high'"),
        (["--quick", "--models=mmoe,moe"], "--models entries must be one of shared_bottom, omoe, mmoe. Received: 'moe'"),
    ],
)
def test_bad_flag_fails_at_start(run_script, tmp_path, flags, message):
    result = run_script("examples/mmoe_synthetic.py", *flags, f"--output_dir={tmp_path}", timeout=120)
    assert result.returncode == 1
    assert message in result.stderr


def test_existing_results_are_kept(run_script, tmp_path):
    results = tmp_path / "results.json"
    results.write_text("[]", encoding="utf-8")
    result = run_script("examples/mmoe_synthetic.py", "--quick", f"--output_dir={tmp_path}", timeout=120)
    assert result.returncode == 1
    assert f"{results} already exists. Pass --overwrite to replace it" in result.stderr
    assert results.read_text(encoding="utf-8") == "[]"


def test_quick_mode_keeps_given_epochs(run_script, tmp_path):
    # --from_results skips training but rejects runs whose epoch count differs from
    # --epochs, so the report succeeds only if --quick keeps --epochs=1 instead of 2.
    runs = [
        {"model": model, "correlation": 0.5, "seed": 0, "params": 100, "test_loss": 0.1,
         "train_curve": [0.2], "test_curve": [0.1]}
        for model in ("shared_bottom", "omoe", "mmoe")
    ]  # fmt: skip
    runs[2]["gate_weights"] = {"task_1": [0.5, 0.5], "task_2": [0.5, 0.5]}
    results = tmp_path / "results.json"
    results.write_text(json.dumps(runs), encoding="utf-8")
    result = run_script(
        "examples/mmoe_synthetic.py", "--quick", "--epochs=1", f"--from_results={results}",
        f"--output_dir={tmp_path / 'report'}", timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--quick keeps --epochs=1 from the command line." in result.stderr
    assert "| MMoE | 100 | 0.1000 ± 0.0000 |" in result.stdout
