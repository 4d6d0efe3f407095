"""Smoke test of examples/movielens_multitask.py in its quick mode."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from mtl_layers.compat import IS_KERAS_2

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "examples" / "movielens_multitask.py"


@pytest.mark.skipif(
    not IS_KERAS_2,
    reason="the script runs TensorFlow Recommenders in Keras 2 mode; the Keras 2 run covers it",
)
def test_quick_run_reports_and_exports(data_root, tmp_path):
    metrics_path = tmp_path / "metrics.json"
    command = [
        sys.executable, str(SCRIPT), "--quick", "--models=mmoe", "--retrieval",
        f"--data_dir={data_root}", f"--export_dir={tmp_path / 'exports'}",
        f"--metrics_json={metrics_path}",
    ]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, cwd=tmp_path, timeout=600, env=dict(os.environ)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| mmoe |" in result.stdout
    assert "epoch 1/1" in result.stderr

    metrics = json.loads(metrics_path.read_text())["mmoe"]
    assert 0.0 < metrics["rating_rmse"] < 5.0
    assert 0.0 <= metrics["liked_auc"] <= 1.0
    assert 0.0 <= metrics["recall@100"] <= 1.0
    version = tmp_path / "exports" / "mmoe" / "1"
    assert (version / "saved_model.pb").is_file()
    assert (version / "assets.extra" / "tf_serving_warmup_requests").is_file()


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--models=mmoe,xx", "--models entries must be one of mmoe, shared_bottom, tutorial_joint. Received: 'xx'"),
        ("--epochs=0", "flag --epochs=0: 0 is not a positive integer"),
        ("--batch_size=-1", "flag --batch_size=-1: -1 is not a positive integer"),
    ],
)
def test_bad_flag_fails_at_start(run_script, flag, message):
    result = run_script("examples/movielens_multitask.py", "--quick", flag, timeout=120)
    assert result.returncode == 1
    assert message in result.stderr


def test_existing_metrics_file_is_kept(run_script, tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("{}", encoding="utf-8")
    result = run_script("examples/movielens_multitask.py", "--quick", f"--metrics_json={path}", timeout=120)
    assert result.returncode == 1
    assert f"{path} already exists. Pass --overwrite to replace it" in result.stderr
    assert path.read_text(encoding="utf-8") == "{}"
