"""The SequentialExpert benchmark runs in its quick mode and prints its ratio table."""

import os
import pathlib
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent.parent


def test_quick_mode_prints_ratios():
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "sequential_expert.py"), "--quick"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO_ROOT)},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| 16 | 8 | 4 | 2 | 4 |")]
    assert len(rows) == 1
    assert "separate / SequentialExpert" in result.stdout
