"""The HyperGrid transformer benchmark runs in its quick mode and prints its ratio table."""


def test_quick_mode_prints_ratios(run_script):
    result = run_script("benchmarks/hypergrid_transformer.py", "--quick")
    assert result.returncode == 0, result.stderr[-3000:]
    table_rows = [line for line in result.stdout.splitlines() if line.startswith("| 16 | 32 | 8 | 8 |")]
    assert len(table_rows) == 1
    assert "HyperGrid, per-task kernels / Dense" in result.stdout
    assert "HyperGrid, compiled / Dense" in result.stdout
