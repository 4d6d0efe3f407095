"""The GLUE HyperGrid experiment runs end to end in its quick mode."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent.parent


def test_quick_mode_reports_every_setting(data_file, tmp_path):
    glue_dir = data_file("glue/README.md").parent
    output = tmp_path / "glue.json"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "examples" / "glue_hypergrid.py"),
            "--quick",
            f"--data_dir={glue_dir}",
            f"--output_json={output}",
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| HyperGrid GL |" in result.stdout
    runs = json.loads(output.read_text(encoding="utf-8"))
    assert len(runs) == 2  # two seeds
    for seed_runs in runs:
        assert set(seed_runs) == {"single-task", "vanilla", "HyperGrid LG", "HyperGrid GL"}
        for setting in seed_runs.values():
            assert set(setting["metrics"]) == {"CoLA", "MRPC", "RTE", "STS-B", "SST-2"}
            for metrics in setting["metrics"].values():
                assert -1.0 <= metrics["score"] <= 1.0
    # One multi-task model has about a fifth of the five single-task models' parameters.
    first = runs[0]
    assert first["vanilla"]["parameters"] < first["single-task"]["parameters"] / 4
    assert first["HyperGrid LG"]["parameters"] > first["vanilla"]["parameters"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--seeds=0"], "flag --seeds=0: 0 is not a positive integer"),
        (["--steps=-1"], "flag --steps=-1: -1 is not a positive integer"),
        (["--quick", "--block_rows=7", "--steps=-5"], "flag --steps=-5: -5 is not a positive integer"),
        (["--quick", "--block_rows=7"], "--block_rows must divide --d_ff. Received: --block_rows=7, --d_ff=32"),
        (["--sequence_length=0"], "flag --sequence_length=0: 0 is not integer >= 3"),
        (["--dropout=1"], "--dropout must be a number in [0, 1). Received: 1.0"),
    ],
)
def test_bad_flag_fails_at_start(run_script, flags, message):
    result = run_script("examples/glue_hypergrid.py", *flags, timeout=120)
    assert result.returncode == 1
    assert message in result.stderr


def test_quick_mode_keeps_given_width(run_script):
    # Quick mode sets --d_ff=32; the error shows that the given 64 was kept.
    result = run_script("examples/glue_hypergrid.py", "--quick", "--d_ff=64", "--block_rows=7", timeout=120)
    assert result.returncode == 1
    assert "--block_rows must divide --d_ff. Received: --block_rows=7, --d_ff=64" in result.stderr


def test_missing_output_folder_fails_at_start(run_script, tmp_path):
    path = tmp_path / "missing" / "glue.json"
    result = run_script("examples/glue_hypergrid.py", "--quick", f"--output_json={path}", timeout=120)
    assert result.returncode == 1
    assert f"The folder of --output_json does not exist: {path.parent}." in result.stderr


def test_existing_output_json_is_kept(run_script, tmp_path):
    path = tmp_path / "glue.json"
    path.write_text("[]", encoding="utf-8")
    result = run_script("examples/glue_hypergrid.py", "--quick", f"--output_json={path}", timeout=120)
    assert result.returncode == 1
    assert f"{path} already exists. Pass --overwrite to replace it" in result.stderr
    assert path.read_text(encoding="utf-8") == "[]"
