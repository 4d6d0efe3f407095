"""End-to-end test of the census main job: AUC targets, export, reload without mtl_layers."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mtl_layers.compat import keras
from mtl_layers.datasets import census

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "examples" / "census_income.py"

# Loads the SavedModel with TensorFlow alone: importing mtl_layers raises ImportError.
RELOAD_WITHOUT_LIBRARY = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class BlockLibrary(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "mtl_layers" or name.startswith("mtl_layers."):
                raise ImportError("mtl_layers is blocked in this process")
            return None

    sys.meta_path.insert(0, BlockLibrary())
    import tensorflow as tf

    request = json.load(open(sys.argv[2]))
    serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
    inputs = {
        name: tf.constant(values, dtype=serve.structured_input_signature[1][name].dtype)
        for name, values in request.items()
    }
    outputs = serve(**inputs)
    print(json.dumps({name: value.numpy().reshape(-1).tolist() for name, value in outputs.items()}))
    """
)


@pytest.fixture(scope="module")
def main_job(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("census")
    command = [
        sys.executable, str(SCRIPT),
        f"--export_dir={workdir / 'exports'}",
        f"--metrics_json={workdir / 'metrics.json'}",
        f"--keras_model_path={workdir / 'model.keras'}",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workdir, result.stdout


def test_main_job_meets_auc_targets(main_job):
    workdir, stdout = main_job
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["auc"]["income"] >= 0.905
    assert metrics["auc"]["never_married"] >= 0.960
    assert "| income" in stdout
    assert "| never_married" in stdout


def test_main_job_export_is_versioned(main_job):
    workdir, stdout = main_job
    assert (workdir / "exports" / "1" / "saved_model.pb").is_file()
    assert (workdir / "exports" / "1" / "assets.extra" / "tf_serving_warmup_requests").is_file()
    assert f"SavedModel written to {workdir / 'exports' / '1'}" in stdout
    assert [path.name for path in (workdir / "exports").iterdir()] == ["1"]


def test_export_predicts_without_library(main_job):
    workdir, _ = main_job
    test = census.load_adult().test
    rows = slice(0, 6)
    request = {
        name: (values[rows].astype(str).tolist() if values.dtype == object else values[rows].tolist())
        for name, values in test.features.items()
    }
    request_path = workdir / "request.json"
    request_path.write_text(json.dumps(request))
    result = subprocess.run(
        [sys.executable, "-c", RELOAD_WITHOUT_LIBRARY, str(workdir / "exports" / "1"), str(request_path)],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])
    assert sorted(served) == ["income", "never_married"]

    # compile=False: tf_keras's predict_on_batch fails with the saved steps_per_execution > 1.
    model = keras.models.load_model(workdir / "model.keras", compile=False)
    import tensorflow as tf

    expected = model.predict_on_batch({name: tf.constant(values[rows]) if values.dtype != object
                                       else tf.constant(values[rows].astype(str)) for name, values in test.features.items()})
    for task in ("income", "never_married"):
        np.testing.assert_allclose(served[task], np.asarray(expected[task]).reshape(-1), rtol=1e-5, atol=1e-6)


# Runs the main job on Adult with every training label set to NaN.
NAN_LABELS_DRIVER = textwrap.dedent(
    """
    import importlib.util, sys
    import numpy as np
    from absl import app

    spec = importlib.util.spec_from_file_location("census_income", sys.argv[1])
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    original_load_data = job.load_data

    def load_data_with_nan_labels():
        data = original_load_data()
        data.train.labels["income"] = np.full_like(data.train.labels["income"], np.nan)
        return data

    job.load_data = load_data_with_nan_labels
    app.run(job.main, argv=["census_income", "--epochs=1", "--max_examples=2048", "--export_dir="])
    """
)


def test_main_job_stops_on_nan_loss():
    result = subprocess.run(
        [sys.executable, "-c", NAN_LABELS_DRIVER, str(SCRIPT)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "Training stopped: The training loss became nan at epoch 1, batch" in result.stderr
    assert "lower the learning rate" in result.stderr


def test_main_job_rejects_bad_learning_rate():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--learning_rate=nan", "--export_dir="],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "--learning_rate must be a finite number > 0. Received: nan" in result.stderr


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--epochs=-1", "flag --epochs=-1: -1 is not a positive integer"),
        ("--epochs=0", "flag --epochs=0: 0 is not a positive integer"),
        ("--batch_size=0", "flag --batch_size=0: 0 is not a positive integer"),
        ("--steps_per_execution=0", "flag --steps_per_execution=0: 0 is not a positive integer"),
        ("--max_examples=-5", "flag --max_examples=-5: -5 is not a positive integer"),
        ("--task_group=3", "flag --task_group=3: 3 is not an integer in the range [1, 2]"),
        ("--seed=-1", "flag --seed=-1: -1 is not an integer in the range [0, 4294967295]"),
        ("--cpu_devices=-1", "flag --cpu_devices=-1: -1 is not a non-negative integer"),
    ],
)
def test_bad_count_flag_fails_at_start(run_script, flag, message):
    result = run_script("examples/census_income.py", flag, "--export_dir=", timeout=120)
    assert result.returncode == 1
    assert message in result.stderr


def test_missing_model_folder_fails_before_training(run_script, tmp_path):
    path = tmp_path / "missing" / "model.keras"
    result = run_script("examples/census_income.py", f"--keras_model_path={path}", "--export_dir=", timeout=120)
    assert result.returncode == 1
    assert f"The folder of --keras_model_path does not exist: {path.parent}." in result.stderr
    assert "Trained in" not in result.stderr


def test_model_path_needs_keras_suffix(run_script, tmp_path):
    path = tmp_path / "model"
    result = run_script("examples/census_income.py", f"--keras_model_path={path}", "--export_dir=", timeout=120)
    assert result.returncode == 1
    assert f"--keras_model_path must name a file ending in .keras. Received: --keras_model_path={path}" in result.stderr


def test_missing_metrics_folder_fails_before_training(run_script, tmp_path):
    path = tmp_path / "missing" / "metrics.json"
    result = run_script("examples/census_income.py", f"--metrics_json={path}", "--export_dir=", timeout=120)
    assert result.returncode == 1
    assert f"The folder of --metrics_json does not exist: {path.parent}." in result.stderr


def test_existing_metrics_file_is_kept(run_script, tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("{}", encoding="utf-8")
    result = run_script("examples/census_income.py", f"--metrics_json={path}", "--export_dir=", timeout=120)
    assert result.returncode == 1
    assert f"{path} already exists. Pass --overwrite to replace it" in result.stderr
    assert path.read_text(encoding="utf-8") == "{}"


def test_export_dir_below_file_fails_at_start(run_script, tmp_path):
    (tmp_path / "exports").write_text("", encoding="utf-8")
    result = run_script("examples/census_income.py", f"--export_dir={tmp_path / 'exports' / 'census'}", timeout=120)
    assert result.returncode == 1
    assert f"--export_dir is below {tmp_path / 'exports'}, which is a file" in result.stderr


def test_version_folder_as_export_dir_fails_at_start(run_script, tmp_path):
    version = tmp_path / "exports" / "census" / "1"
    version.mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"")
    metrics = tmp_path / "metrics.json"

    result = run_script(
        "examples/census_income.py", f"--export_dir={version}", f"--metrics_json={metrics}", timeout=120
    )

    assert result.returncode == 1
    assert "is itself a SavedModel" in result.stderr
    # The run stopped before training, so it wrote no metrics that would block a rerun.
    assert not metrics.exists()


def test_rerun_names_every_existing_output(run_script, tmp_path):
    metrics = tmp_path / "metrics.json"
    model = tmp_path / "model.keras"
    metrics.write_text("{}", encoding="utf-8")
    model.write_text("saved", encoding="utf-8")

    result = run_script(
        "examples/census_income.py",
        f"--metrics_json={metrics}",
        f"--keras_model_path={model}",
        "--export_dir=",
        timeout=120,
    )

    assert result.returncode == 1
    assert f"{metrics} already exists" in result.stderr
    assert f"{model} already exists" in result.stderr
    assert model.read_text(encoding="utf-8") == "saved"
