"""The backend and replica benchmark runs in its quick mode and prints its table."""

import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

from mtl_layers.compat import IS_KERAS_2

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent.parent


@pytest.mark.skipif(IS_KERAS_2, reason="the benchmark runs its children in Keras 3 mode")
def test_quick_mode_prints_table():
    # One non-TensorFlow backend and the two-replica strategy cover every code path.
    configurations = ["mirrored_2"]
    if importlib.util.find_spec("jax") is not None:
        configurations.insert(0, "jax")
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "benchmarks" / "backends_and_replicas.py"),
            "--quick",
            f"--configurations={','.join(configurations)}",
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO_ROOT)},
        timeout=290,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| configuration | backend | replicas | examples/s |" in result.stdout
    for configuration in configurations:
        rows = [line for line in result.stdout.splitlines() if line.startswith(f"| {configuration} |")]
        assert len(rows) == 1, f"no table row for {configuration}:\n{result.stdout}"
    assert "| mirrored_2 | tensorflow | 2 |" in result.stdout
