"""The HyperGridDense benchmark runs in its quick mode and prints its ratio table."""


def test_quick_mode_prints_ratios(run_script):
    result = run_script("benchmarks/hypergrid_dense.py", "--quick")
    assert result.returncode == 0, result.stderr[-3000:]
    table_rows = [line for line in result.stdout.splitlines() if line.startswith("| 4 × 8")]
    assert len(table_rows) == 3  # forward, forward of a training call, training step
    assert "HyperGridDense / Dense" in result.stdout
    assert "block forms / Dense" in result.stdout
