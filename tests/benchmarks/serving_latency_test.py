"""Smoke test of benchmarks/serving_latency.py in its quick mode."""

import os
import pathlib
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "benchmarks" / "serving_latency.py"


def test_quick_run_writes_own_section(data_root, tmp_path):
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\n<!-- begin other -->\nkept\n<!-- end other -->\n")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", f"--data_dir={data_root}", f"--page={page}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
        env=dict(os.environ),
    )
    assert result.returncode == 0, result.stderr[-3000:]

    text = page.read_text()
    assert "<!-- begin other -->\nkept\n<!-- end other -->" in text
    assert "<!-- begin serving_latency -->" in text
    for label in ("census MMoE", "census MLP (equal FLOPs)", "MovieLens MMoE", "MovieLens MLP (equal FLOPs)"):
        assert f"| {label} |" in text, label
    assert "census MMoE p50 / MLP p50" in text
