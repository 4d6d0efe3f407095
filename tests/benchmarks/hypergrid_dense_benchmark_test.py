"""The HyperGridDense benchmark runs in its quick mode and prints its ratio table."""

import os
import pathlib
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent.parent


def test_quick_mode_prints_ratios():
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "hypergrid_dense.py"), "--quick"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table_rows = [line for line in result.stdout.splitlines() if line.startswith("| 4 × 8")]
    assert len(table_rows) == 2  # forward and training step
    assert "HyperGridDense / Dense" in result.stdout
