"""The census main job trains under a strategy with `--strategy` (Keras 2 mode)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

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
    # One epoch of 8 steps is too short for a stable AUC; full training reaches about 0.91
    # and 0.96, which tests/examples/census_income_test.py checks. distributed_test.py
    # checks that distributed and single-process training agree.
    for task_name, value in auc.items():
        assert 0.0 <= value <= 1.0, f"{task_name}: AUC {value}"


def test_cpu_devices_needs_mirrored(tmp_path):
    result = _run(["--strategy=default", "--cpu_devices=2"], tmp_path)
    assert result.returncode != 0
    assert "--cpu_devices" in result.stderr


@pytest.mark.skipif(not IS_KERAS_2, reason="Multi-worker training of raw-feature models needs Keras 2 mode.")
def test_multi_worker_strategy_flag(tmp_path, scale_harness):
    harness = scale_harness
    ports = harness._free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    processes, logs = [], []
    try:
        for index in range(2):
            worker_dir = tmp_path / f"worker{index}"
            worker_dir.mkdir()
            log = open(worker_dir / "log.txt", "w+", encoding="utf-8")
            logs.append(log)
            tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
            command = [
                sys.executable, str(SCRIPT), "--strategy=multi_worker_mirrored", "--epochs=1",
                "--max_examples=4096", "--export_dir=exports/census", f"--metrics_json={worker_dir / 'metrics.json'}",
            ]  # fmt: skip
            processes.append(
                subprocess.Popen(
                    command, cwd=worker_dir, stdout=log, stderr=subprocess.STDOUT,
                    env=harness._child_environment(TF_CONFIG=tf_config),
                )  # fmt: skip
            )
        for process in processes:
            process.wait(timeout=280)
    finally:
        harness._stop(processes)
    outputs = []
    for log in logs:
        log.seek(0)
        outputs.append(log.read())
        log.close()

    for index, process in enumerate(processes):
        assert process.returncode == 0, f"worker {index}:\n{outputs[index][-3000:]}"
    # Both workers print the test AUC of the whole test split; only worker 0 writes files.
    for output in outputs:
        assert "| income" in output
    chief = json.loads((tmp_path / "worker0" / "metrics.json").read_text(encoding="utf-8"))
    assert chief["replicas"] == 2
    assert sorted(chief["auc"]) == ["income", "never_married"]
    assert (tmp_path / "worker0" / "exports" / "census" / "1" / "saved_model.pb").exists()
    assert not (tmp_path / "worker1" / "metrics.json").exists()
    assert not (tmp_path / "worker1" / "exports").exists()
