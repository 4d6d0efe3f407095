"""The MoSE experiment script runs in its quick mode on real MovieLens data."""

import os
import pathlib
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent.parent


def _run_quick_mode(folder, *flags):
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "examples" / "mose_experiments.py"), "--quick",
         f"--data_dir={folder}", *flags],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO_ROOT)},
        timeout=600,
    )  # fmt: skip


def _table_rows(stdout):
    return [line for line in stdout.splitlines() if line.startswith("| ")]


def test_quick_mode_prints_tables(data_file):
    folder = data_file("movielens-100k/u.data").parent
    result = _run_quick_mode(folder)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _table_rows(result.stdout)
    assert any(line.startswith("| 0.2 | 0.9 | mose |") for line in rows)
    assert any(line.startswith("| mose |") for line in rows)
    assert any(line.startswith("| pooled_mmoe |") for line in rows)
    assert "| model | RMSE rating | AUC liked | epochs |" in result.stdout
    assert "MoSE ranks" in result.stdout
    # Quick mode trains 2 models x 2 seeds on each data set, one progress line each.
    assert "[8/8," in result.stderr

    # A reused compiled model, with its weights and optimizer reset, must train exactly
    # as a new model does.
    new_models = _run_quick_mode(folder, "--reuse_compiled=false")
    assert new_models.returncode == 0, new_models.stderr[-3000:]
    assert _table_rows(new_models.stdout) == rows


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--epochs=-1"], "flag --epochs=-1: -1 is not a positive integer"),
        (["--seeds=0"], "flag --seeds=0: 0 is not a positive integer"),
        (["--experiments=synthtic"], "--experiments entries must be one of synthetic, movielens. Received: 'synthtic'"),
        (["--quick", "--sparsities=1"], "--sparsities entries must each be a number in [0, 1). Received: '1'"),
        (["--quick", "--num_examples=5"], "flag --num_examples=5: 5 is not integer >= 10"),
    ],
)
def test_bad_flag_fails_at_start(run_script, flags, message):
    result = run_script("examples/mose_experiments.py", *flags, timeout=120)
    assert result.returncode == 1
    assert message in result.stderr


def test_missing_movielens_fails_before_training(run_script, tmp_path):
    result = run_script(
        "examples/mose_experiments.py", "--quick", f"--data_dir={tmp_path}", timeout=120
    )
    assert result.returncode == 1
    assert str(tmp_path) in result.stderr
    # No synthetic model trained before the MovieLens files were looked for.
    assert "[1/8," not in result.stderr
