"""The census main job trains under MirroredStrategy with `--strategy` (Keras 2 mode)."""

import json
import os
import pathlib
import subprocess
import sys

from mtl_layers.compat import IS_KERAS_2

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "examples" / "census_income.py"


def _run(arguments, tmp_path):
    command = [sys.executable, str(SCRIPT), "--export_dir=", *arguments]
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        command, capture_output=True, text=True, timeout=280, check=False, env=environment, cwd=tmp_path
    )


def test_mirrored_strategy_flag(tmp_path):
    metrics = tmp_path / "metrics.json"
    result = _run(
        [
            "--strategy=mirrored",
            "--cpu_devices=2",
            "--epochs=1",
            "--max_examples=4096",
            f"--metrics_json={metrics}",
        ],
        tmp_path,
    )
    if not IS_KERAS_2:
        assert result.returncode != 0
        assert "TF_USE_LEGACY_KERAS=1" in result.stderr
        return
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    written = json.loads(metrics.read_text(encoding="utf-8"))
    assert written["replicas"] == 2
    auc = written["auc"]
    assert sorted(auc) == ["income", "never_married"]
    # One epoch on 4096 examples already ranks far better than chance.
    assert auc["income"] > 0.7
    assert auc["never_married"] > 0.7


def test_cpu_devices_needs_mirrored(tmp_path):
    result = _run(["--strategy=default", "--cpu_devices=2"], tmp_path)
    assert result.returncode != 0
    assert "--cpu_devices" in result.stderr
