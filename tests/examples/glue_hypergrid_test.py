"""The GLUE HyperGrid experiment runs end to end in its quick mode."""

import json
import os
import pathlib
import subprocess
import sys

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
