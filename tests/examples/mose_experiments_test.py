"""The MoSE experiment script runs in its quick mode on real MovieLens data."""

import os
import pathlib
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent.parent


def test_quick_mode_prints_tables(data_file):
    folder = data_file("movielens-100k/u.data").parent
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "examples" / "mose_experiments.py"), "--quick",
         f"--data_dir={folder}"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO_ROOT)},
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert any(line.startswith("| 0.2 | 0.9 | mose |") for line in rows)
    assert any(line.startswith("| mose |") for line in rows)
    assert any(line.startswith("| pooled_mmoe |") for line in rows)
