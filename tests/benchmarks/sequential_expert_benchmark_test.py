"""The SequentialExpert benchmark runs in its quick mode and prints its ratio table."""


def test_quick_mode_prints_ratios(run_script):
    result = run_script("benchmarks/sequential_expert.py", "--quick")

    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| 16 | 8 | 4 | 2 | 4 |")]
    assert len(rows) == 1
    assert "separate / SequentialExpert" in result.stdout


def test_rounds_help_says_minimum_is_kept(run_script):
    result = run_script("benchmarks/sequential_expert.py", "--helpshort")

    # absl prints the help to stdout and exits with status 1.
    assert "--rounds:" in result.stdout, result.stderr[-3000:]
    rounds_help = result.stdout.split("--rounds:")[1].split("--")[0]
    assert "median" not in rounds_help
    assert "minimum step time" in rounds_help
