"""The ExpertBank benchmark runs in quick mode and writes its section."""

import pathlib
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_expert_bank_benchmark_quick(tmp_path):
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\n<!-- begin other -->\nkept\n<!-- end other -->\n")
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "expert_bank.py"), "--quick", f"--output_page={page}"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    text = page.read_text()
    assert "<!-- begin expert_bank -->" in text
    assert "| 256 | 8 | 16 |" in text
    assert "kept" in text
