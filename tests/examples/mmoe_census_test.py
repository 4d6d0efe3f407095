"""Quick-mode run of the census experiments, so the script cannot rot."""

import gzip
import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "examples" / "mmoe_census.py"


def test_quick_mode_reports_auc_per_task(tmp_path):
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", f"--output_dir={tmp_path}"],
        capture_output=True,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        # A safety net only: the quick run uses about 30-50 s of CPU time, and far more
        # wall time when other jobs share the cores.
        timeout=1200,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]

    results = json.loads((tmp_path / "results.json").read_text())
    # Quick mode: Adult task group 1, single-task and MMoE, 2 seeds.
    assert [(r["model"], r["seed"]) for r in results] == [
        ("single_task", 0), ("mmoe", 0), ("single_task", 1), ("mmoe", 1),
    ]  # fmt: skip
    for result in results:
        assert sorted(result["auc"]) == ["income", "never_married"]
        # 48 steps on 3,000 examples already separate the marital-status classes.
        assert result["auc"]["never_married"] > 0.6
        assert result["auc"]["income"] < 1.0
    single_task = results[0]["params"]
    mmoe = results[1]["params"]
    assert single_task > mmoe
    assert len(results[1]["gates"]["income"]) == 8
    assert (tmp_path / "mmoe_census_gates.png").stat().st_size > 1000
    assert "| MMoE | 5,750 |" in completed.stdout


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--models=mmoe,xx", "--models entries must be one of single_task, shared_bottom, omoe, mmoe, ple. Received: 'xx'"),
        ("--task_groups=7", "--task_groups entries must be one of 1, 2. Received: '7'"),
        ("--task_groups=income", "--task_groups entries must be one of 1, 2. Received: 'income'"),
        ("--datasets=adult,census", "--datasets entries must be one of adult, kdd. Received: 'census'"),
        ("--epochs=-1", "flag --epochs=-1: -1 is not a positive integer"),
        ("--num_seeds=0", "flag --num_seeds=0: 0 is not a positive integer"),
        ("--max_train_examples=0", "flag --max_train_examples=0: 0 is not a positive integer"),
    ],
)
def test_quick_mode_rejects_bad_flag(run_script, tmp_path, flag, message):
    result = run_script("examples/mmoe_census.py", "--quick", flag, f"--output_dir={tmp_path}", timeout=120)
    assert result.returncode == 1
    assert message in result.stderr


def test_existing_results_are_kept(run_script, tmp_path):
    results = tmp_path / "results.json"
    results.write_text("[]", encoding="utf-8")
    result = run_script("examples/mmoe_census.py", "--quick", f"--output_dir={tmp_path}", timeout=120)
    assert result.returncode == 1
    assert f"{results} already exists. Pass --overwrite to replace it" in result.stderr
    assert results.read_text(encoding="utf-8") == "[]"


def test_data_dir_is_read_for_adult(run_script, tmp_path):
    # A 100-row copy of adult.data: the loader must read it (and reject its checksum)
    # instead of the copy in the package.
    packaged = REPO_ROOT / "mtl_layers" / "datasets" / "data" / "adult"
    with gzip.open(packaged / "adult.data.gz", "rt", encoding="utf-8") as stream:
        rows = [next(stream) for _ in range(100)]
    (tmp_path / "adult.data").write_text("".join(rows), encoding="utf-8")
    (tmp_path / "adult.test.gz").write_bytes((packaged / "adult.test.gz").read_bytes())
    result = run_script(
        "examples/mmoe_census.py", "--quick", f"--data_dir={tmp_path}", f"--output_dir={tmp_path / 'runs'}",
        timeout=300,
    )  # fmt: skip
    assert result.returncode != 0
    assert str(tmp_path / "adult.data") in result.stderr
    assert not (tmp_path / "runs" / "results.json").exists()


def test_data_dir_accepts_kdd_folder(data_file, tmp_path):
    # --from_results skips training, so the run only loads KDD for the table's description.
    kdd_dir = data_file("census-income-kdd/census-income.test.gz").parent
    results = tmp_path / "results.json"
    results.write_text(
        json.dumps(
            [{"dataset": "kdd", "task_group": 1, "model": "omoe", "seed": 0, "params": 100,
              "auc": {"income": 0.9, "never_married": 0.8}}]
        ),
        encoding="utf-8",
    )  # fmt: skip
    environment = {key: value for key, value in os.environ.items() if key != "MTL_LAYERS_DATA_DIR"}
    environment.update(TF_CPP_MIN_LOG_LEVEL="2", MTL_LAYERS_CACHE_DIR=str(tmp_path / "cache"))
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--datasets=kdd", "--task_groups=1", "--models=omoe",
         f"--data_dir={kdd_dir}", f"--from_results={results}", f"--output_dir={tmp_path / 'runs'}"],
        capture_output=True, text=True, env=environment, timeout=300, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "### UCI Census-Income (KDD), task group 1" in completed.stdout
    assert "| OMoE | 100 | 0.9000 ± 0.0000 | 0.8000 ± 0.0000 |" in completed.stdout


def test_damaged_kdd_fails_before_training(run_script, tmp_path):
    # A whole copy of Adult, and a KDD folder that contains a truncated training file.
    packaged = REPO_ROOT / "mtl_layers" / "datasets" / "data" / "adult"
    with gzip.open(packaged / "adult.data.gz", "rb") as stream:
        (tmp_path / "adult.data").write_bytes(stream.read())
    (tmp_path / "adult.test.gz").write_bytes((packaged / "adult.test.gz").read_bytes())
    kdd_dir = tmp_path / "census-income-kdd"
    kdd_dir.mkdir()
    (kdd_dir / "census-income.data.gz").write_bytes(gzip.compress(b"39, Private,")[:20])
    result = run_script(
        "examples/mmoe_census.py", "--quick", "--datasets=adult,kdd", f"--data_dir={tmp_path}",
        f"--output_dir={tmp_path / 'runs'}", timeout=300,
    )  # fmt: skip
    assert result.returncode != 0
    assert "census-income" in result.stderr
    assert "[1/" not in result.stderr
