"""Tests of `export_saved_model`: the SavedModel contract that TF Serving relies on.

Each exported model is reloaded in a fresh Python process where `mtl_layers` cannot be
imported, so the SavedModel must run on TensorFlow alone.
"""

import json
import logging
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import mtl_layers as mtl
from mtl_layers.compat import keras
from mtl_layers.datasets import census
from mtl_layers.export import warmup
from mtl_layers.models import FeatureSpec
from mtl_layers.tasks import TaskSpec

NUM_WARMUP = 5

# Runs in a fresh interpreter: blocks `mtl_layers`, reloads the SavedModel, calls both
# signatures and every warm-up record, and writes the outputs as .npy files.
RELOAD_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, json, pathlib, sys

    class BlockMtlLayers(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "mtl_layers" or name.startswith("mtl_layers."):
                raise ImportError(f"{name} is blocked in this process")
            return None

    sys.meta_path.insert(0, BlockMtlLayers())
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    saved_model_dir, inputs_dir, outputs_dir = map(pathlib.Path, sys.argv[1:4])
    loaded = tf.saved_model.load(str(saved_model_dir))
    outputs_dir.mkdir()
    features = {
        path.stem: tf.constant(np.load(path, allow_pickle=True))
        for path in inputs_dir.glob("*.npy") if path.stem != "examples"
    }
    for name, value in loaded.signatures["serving_default"](**features).items():
        np.save(outputs_dir / f"raw.{name}.npy", value.numpy())
    examples = tf.constant(np.load(inputs_dir / "examples.npy", allow_pickle=True))
    for name, value in loaded.signatures["serving_tf_example"](examples=examples).items():
        np.save(outputs_dir / f"example.{name}.npy", value.numpy())

    records = tf.data.TFRecordDataset(
        str(saved_model_dir / "assets.extra" / "tf_serving_warmup_requests")
    )
    summary = []
    for index, record in enumerate(records):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        request = log.predict_log.request
        inputs = {
            key: tf.constant(tf.make_ndarray(proto)) for key, proto in request.inputs.items()
        }
        outputs = loaded.signatures[request.model_spec.signature_name](**inputs)
        for name, value in outputs.items():
            np.save(outputs_dir / f"warmup{index}.{name}.npy", value.numpy())
        summary.append(
            {"signature": request.model_spec.signature_name, "model": request.model_spec.name}
        )
    (outputs_dir / "warmup.json").write_text(json.dumps(summary))
    print("mtl_layers blocked:", "mtl_layers" not in sys.modules)
    """
)


def _with_int_id(features):
    """Add `education_code`, an int64 id feature derived from Adult's education_num."""
    features = dict(features)
    features["education_code"] = features["education_num"].astype(np.int64)
    return features


@pytest.fixture(scope="module")
def adult():
    return census.load_adult()


@pytest.fixture(scope="module")
def three_task_model(adult):
    """An MMoE with string, float and int64 inputs and three task outputs, never called."""
    features = list(adult.feature_specs) + [
        FeatureSpec("education_code", "integer_categorical", vocabulary=tuple(range(1, 17)))
    ]
    tasks = list(adult.tasks) + [TaskSpec("hours", kind="regression")]
    keras.utils.set_random_seed(1)
    return mtl.models.mmoe(tasks, features, num_experts=3, expert_units=8)


@pytest.fixture(scope="module")
def examples(adult):
    return _with_int_id({name: values[:64] for name, values in adult.test.features.items()})


@pytest.fixture(scope="module")
def exported(three_task_model, examples, tmp_path_factory):
    """Export the never-called model with warm-up records and return the version path."""
    base = tmp_path_factory.mktemp("exports") / "census"
    labelled = dict(examples, income=np.zeros(64), never_married=np.ones(64))
    path = mtl.export.export_saved_model(
        three_task_model, base, warmup_examples=labelled, num_warmup_examples=NUM_WARMUP
    )
    return path


def _run_reload(saved_model_dir, features, tmp_path):
    inputs_dir = tmp_path / "inputs"
    inputs_dir.mkdir()
    for name, values in features.items():
        np.save(inputs_dir / f"{name}.npy", values)
    np.save(inputs_dir / "examples.npy", np.array(warmup.to_tf_examples(features), dtype=object))
    outputs_dir = tmp_path / "outputs"
    environment = dict(os.environ)
    environment.pop("PYTHONPATH", None)
    result = subprocess.run(
        [sys.executable, "-c", RELOAD_SCRIPT, str(saved_model_dir), str(inputs_dir), str(outputs_dir)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=environment,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mtl_layers blocked: True" in result.stdout
    return outputs_dir


@pytest.fixture(scope="module")
def reloaded(exported, examples, tmp_path_factory):
    """Run the reload script once and return the folder of its outputs."""
    return _run_reload(exported, examples, tmp_path_factory.mktemp("reload"))


def _load_outputs(outputs_dir, prefix):
    return {
        path.name[len(prefix) + 1 : -len(".npy")]: np.load(path)
        for path in outputs_dir.glob(f"{prefix}.*.npy")
    }


def test_version_folder_layout(exported):
    assert exported.name == "1"
    assert (exported / "saved_model.pb").is_file()
    assert (exported / warmup.WARMUP_FILE).is_file()
    leftovers = [path.name for path in exported.parent.iterdir() if path.name != "1"]
    assert leftovers == []


def test_version_folder_mode_follows_umask(exported):
    umask = os.umask(0)
    os.umask(umask)
    assert exported.stat().st_mode & 0o777 == 0o777 & ~umask


def test_reload_without_library_matches(reloaded, three_task_model, examples):
    outputs_dir = reloaded
    expected = {
        name: np.asarray(value) for name, value in three_task_model(examples, training=False).items()
    }

    raw = _load_outputs(outputs_dir, "raw")
    assert sorted(raw) == ["hours", "income", "never_married"]
    for name, value in expected.items():
        np.testing.assert_allclose(raw[name], value, rtol=1e-5, atol=1e-6, err_msg=name)

    parsed = _load_outputs(outputs_dir, "example")
    assert sorted(parsed) == ["hours", "income", "never_married"]
    for name, value in expected.items():
        np.testing.assert_allclose(parsed[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_warmup_records_run_on_reload(reloaded, three_task_model, examples):
    outputs_dir = reloaded
    summary = json.loads((outputs_dir / "warmup.json").read_text())
    assert [entry["signature"] for entry in summary] == [
        "serving_default",
        "serving_default",
        "serving_tf_example",
    ]
    assert {entry["model"] for entry in summary} == {"census"}

    first = {name: values[:NUM_WARMUP] for name, values in examples.items()}
    expected = three_task_model(first, training=False)
    batch_sizes = [1, NUM_WARMUP, NUM_WARMUP]
    for index, batch_size in enumerate(batch_sizes):
        outputs = _load_outputs(outputs_dir, f"warmup{index}")
        assert sorted(outputs) == ["hours", "income", "never_married"]
        for name, value in expected.items():
            np.testing.assert_allclose(
                outputs[name], np.asarray(value)[:batch_size], rtol=1e-5, atol=1e-6, err_msg=name
            )


def test_warmup_records_hold_real_examples(exported, examples):
    logs = warmup.read_warmup_file(exported)
    assert len(logs) == 3
    single = warmup.request_inputs(logs[0])
    assert "income" not in single
    assert single["workclass"].dtype == tf.string
    assert single["education_code"].dtype == tf.int64
    assert single["age"].dtype == tf.float32
    assert single["workclass"].numpy().tolist() == [examples["workclass"][0].encode()]
    batch = warmup.request_inputs(logs[1])
    assert batch["age"].shape == (NUM_WARMUP,)
    np.testing.assert_array_equal(batch["age"].numpy(), examples["age"][:NUM_WARMUP])


def test_saved_model_cli_lists_signatures(exported):
    result = subprocess.run(
        ["saved_model_cli", "show", "--dir", str(exported), "--all"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout
    assert "signature_def['serving_default']" in text
    assert "signature_def['serving_tf_example']" in text

    default = text.split("signature_def['serving_default']")[1].split("signature_def[")[0]
    for name, dtype in [
        ("workclass", "DT_STRING"),
        ("education_code", "DT_INT64"),
        ("age", "DT_FLOAT"),
    ]:
        assert f"inputs['{name}'] tensor_info:\n        dtype: {dtype}" in default, name
    for name in ["income", "never_married", "hours"]:
        assert f"outputs['{name}'] tensor_info:\n        dtype: DT_FLOAT" in default, name
    assert "inputs['income']" not in default

    parsing = text.split("signature_def['serving_tf_example']")[1].split("signature_def[")[0]
    assert "inputs['examples'] tensor_info:\n        dtype: DT_STRING" in parsing


def test_existing_version_left_untouched(exported, three_task_model):
    before = {
        path.relative_to(exported): path.read_bytes() for path in exported.rglob("*") if path.is_file()
    }
    with pytest.raises(FileExistsError, match="Version 1 already exists"):
        mtl.export.export_saved_model(three_task_model, exported.parent, version=1)
    after = {
        path.relative_to(exported): path.read_bytes() for path in exported.rglob("*") if path.is_file()
    }
    assert after == before
    assert sorted(path.name for path in exported.parent.iterdir()) == ["1"]


def test_next_version_and_explicit_version(tmp_path):
    model = mtl.models.shared_bottom(
        [TaskSpec("a"), TaskSpec("b", kind="regression")], keras.Input((4,), name="x"),
        bottom_units=(8,),
    )  # fmt: skip
    (tmp_path / "7").mkdir()
    (tmp_path / "notes").mkdir()
    path = mtl.export.export_saved_model(model, tmp_path)
    assert path == tmp_path / "8"
    path = mtl.export.export_saved_model(model, tmp_path, version=3)
    assert path == tmp_path / "3"
    assert (path / "saved_model.pb").is_file()
    assert not (path / warmup.WARMUP_FILE).exists()


@pytest.mark.parametrize("version", [0, -1, 1.5, "2", True, 2**63])
def test_invalid_version_rejected(tmp_path, version):
    model = mtl.models.shared_bottom([TaskSpec("a")], keras.Input((4,), name="x"))
    with pytest.raises(ValueError, match="`version` must be an integer from 1 to"):
        mtl.export.export_saved_model(model, tmp_path, version=version)
    assert list(tmp_path.iterdir()) == []


def test_existing_file_as_export_dir_rejected(tmp_path):
    model = mtl.models.shared_bottom([TaskSpec("a")], keras.Input((4,), name="x"))
    saved = tmp_path / "first.keras"
    saved.write_bytes(b"user data")
    with pytest.raises(ValueError, match="`export_dir` must be a folder"):
        mtl.export.export_saved_model(model, saved)
    assert saved.read_bytes() == b"user data"


def test_tensor_input_model_exports(tmp_path):
    model = mtl.models.omoe(
        [TaskSpec("a"), TaskSpec("b"), TaskSpec("c", kind="regression")],
        keras.Input((6,), name="dense_features"),
        num_experts=2,
    )
    values = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    path = mtl.export.export_saved_model(
        model, tmp_path, warmup_examples={"dense_features": values}
    )
    loaded = tf.saved_model.load(str(path))
    outputs = loaded.signatures["serving_default"](dense_features=tf.constant(values))
    expected = model(values, training=False)
    assert sorted(outputs) == ["a", "b", "c"]
    for name in ["a", "b", "c"]:
        np.testing.assert_allclose(outputs[name].numpy(), np.asarray(expected[name]), rtol=1e-5)
    parsed = loaded.signatures["serving_tf_example"](
        examples=tf.constant(warmup.to_tf_examples({"dense_features": values}))
    )
    np.testing.assert_allclose(parsed["c"].numpy(), np.asarray(expected["c"]), rtol=1e-5)


def test_dataset_warmup_examples(tmp_path, adult, three_task_model):
    dataset = adult.validation.to_dataset(16).map(lambda x, y: (_tf_with_int_id(x), y))
    path = mtl.export.export_saved_model(
        three_task_model, tmp_path, warmup_examples=dataset, num_warmup_examples=3
    )
    logs = warmup.read_warmup_file(path)
    assert warmup.request_inputs(logs[1])["age"].shape == (3,)


def _tf_with_int_id(features):
    features = dict(features)
    features["education_code"] = tf.cast(features["education_num"], tf.int64)
    return features


def test_warmup_missing_input_fails_cleanly(tmp_path, three_task_model, examples):
    incomplete = {name: values for name, values in examples.items() if name != "race"}
    with pytest.raises(ValueError, match=r"no values for the model inputs \['race'\]"):
        mtl.export.export_saved_model(three_task_model, tmp_path, warmup_examples=incomplete)
    assert list(tmp_path.iterdir()) == []


def test_warmup_wrong_dtype_fails_cleanly(tmp_path, three_task_model, examples):
    broken = dict(examples, age=np.array(["old"] * 64, dtype=object))
    with pytest.raises(ValueError, match="warmup_examples\\['age'\\]"):
        mtl.export.export_saved_model(three_task_model, tmp_path, warmup_examples=broken)
    assert list(tmp_path.iterdir()) == []


def test_subclassed_model_without_inputs_rejected(tmp_path):
    class Subclassed(keras.Model):
        def call(self, inputs):
            return inputs

    with pytest.raises(ValueError, match="has no defined inputs"):
        mtl.export.export_saved_model(Subclassed(), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_variable_length_sequences_export(tmp_path):
    tasks = [TaskSpec("rating", kind="regression"), TaskSpec("liked")]
    model = mtl.models.mose(
        tasks, sequence_features=3, num_experts=2, expert_units=4, bottom_units=4,
        output_steps="last",
    )  # fmt: skip
    rng = np.random.default_rng(0)
    sequence = rng.normal(size=(2, 5, 3)).astype("float32")
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=bool)
    sequence[~mask] = 0.0
    path = mtl.export.export_saved_model(
        model, tmp_path, warmup_examples={"sequence": sequence, "mask": mask}
    )
    loaded = tf.saved_model.load(str(path))
    expected = model({"sequence": sequence, "mask": mask}, training=False)

    # Each tf.Example stores only its own steps: 5 for the first row, 3 for the second.
    examples = warmup.to_tf_examples({"sequence": sequence[:1], "mask": mask[:1]})
    examples += warmup.to_tf_examples({"sequence": sequence[1:, :3], "mask": mask[1:, :3]})
    parsed = loaded.signatures["serving_tf_example"](examples=tf.constant(examples))
    for name in ["rating", "liked"]:
        np.testing.assert_allclose(
            parsed[name].numpy(), np.asarray(expected[name]), rtol=1e-5, atol=1e-6
        )


def test_unknown_inner_axis_rejected(tmp_path):
    inputs = keras.Input((4, None), name="grid")
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling1D()(inputs))
    with pytest.raises(ValueError, match="grid"):
        mtl.export.export_saved_model(model, tmp_path)
    assert not any(tmp_path.iterdir())


def test_version_folder_as_export_dir_rejected(tmp_path, three_task_model, exported):
    before = sorted(path.name for path in exported.iterdir())
    with pytest.raises(ValueError, match="is itself a SavedModel"):
        mtl.export.export_saved_model(three_task_model, exported)
    assert sorted(path.name for path in exported.iterdir()) == before


def test_empty_export_dir_rejected(three_task_model):
    with pytest.raises(ValueError, match="empty path"):
        mtl.export.export_saved_model(three_task_model, "")


def test_export_dir_below_file_rejected(tmp_path, three_task_model):
    blocking = tmp_path / "notes.txt"
    blocking.write_text("user notes")
    with pytest.raises(ValueError, match="which is a file"):
        mtl.export.export_saved_model(three_task_model, blocking / "census")
    assert blocking.read_text() == "user notes"


def test_warmup_numbers_for_string_input_rejected(tmp_path, three_task_model, examples):
    broken = dict(examples, race=np.arange(64.0))
    with pytest.raises(ValueError, match="takes strings"):
        mtl.export.export_saved_model(three_task_model, tmp_path, warmup_examples=broken)
    assert list(tmp_path.iterdir()) == []


def _small_model():
    return mtl.models.shared_bottom([TaskSpec("a")], keras.Input((4,), name="x"))


def _small_mose():
    return mtl.models.mose(
        [TaskSpec("rating", kind="regression")], sequence_features=3, num_experts=2,
        expert_units=2, bottom_units=2,
    )  # fmt: skip


def test_version_named_file_skipped(tmp_path):
    (tmp_path / "1").write_text("user notes")
    path = mtl.export.export_saved_model(_small_model(), tmp_path)
    assert path == tmp_path / "2"
    assert (tmp_path / "1").read_text() == "user notes"


def test_version_named_file_blocks_version(tmp_path):
    (tmp_path / "1").write_text("user notes")
    with pytest.raises(FileExistsError, match=r"1 is a file.*Move or delete it"):
        mtl.export.export_saved_model(_small_model(), tmp_path, version=1)
    assert (tmp_path / "1").read_text() == "user notes"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["1"]


def test_broken_version_symlink_skipped(tmp_path):
    (tmp_path / "1").symlink_to(tmp_path / "missing")
    path = mtl.export.export_saved_model(_small_model(), tmp_path)
    assert path == tmp_path / "2"
    assert (tmp_path / "1").is_symlink()


def test_broken_version_symlink_blocks_version(tmp_path):
    (tmp_path / "1").symlink_to(tmp_path / "missing")
    with pytest.raises(FileExistsError, match="is a broken symbolic link"):
        mtl.export.export_saved_model(_small_model(), tmp_path, version=1)
    assert not (tmp_path / "missing").exists()


def test_broken_symlink_as_export_dir_rejected(tmp_path):
    (tmp_path / "exports").symlink_to(tmp_path / "missing")
    with pytest.raises(ValueError, match="broken symbolic link"):
        mtl.export.export_saved_model(_small_model(), tmp_path / "exports")
    assert not (tmp_path / "missing").exists()


def test_tilde_in_export_dir_expanded(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    path = mtl.export.export_saved_model(_small_model(), "~/models/a")
    assert path == home / "models" / "a" / "1"
    assert not (tmp_path / "~").exists()


@pytest.mark.parametrize("export_dir", [None, 3, b"exports"])
def test_export_dir_of_wrong_type_rejected(export_dir):
    with pytest.raises(ValueError, match=r"`export_dir` must be a path .* Received: export_dir="):
        mtl.export.export_saved_model(_small_model(), export_dir)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf, 1e300])
def test_warmup_non_finite_values_rejected(tmp_path, bad_value):
    values = np.ones((3, 4))
    values[1, 2] = bad_value
    with pytest.raises(ValueError, match=r"warmup_examples\['x'\]` contains 1 NaN or infinite"):
        mtl.export.export_saved_model(_small_model(), tmp_path, warmup_examples={"x": values})
    assert list(tmp_path.iterdir()) == []


def test_warmup_mask_steps_mismatch_rejected(tmp_path):
    warmup_examples = {
        "sequence": np.zeros((2, 6, 3), "float32"),
        "mask": np.ones((2, 7), bool),
    }
    with pytest.raises(ValueError, match=r"shape \(2, 6, 3\) and 'mask' of shape \(2, 7\)"):
        mtl.export.export_saved_model(_small_mose(), tmp_path, warmup_examples=warmup_examples)
    assert list(tmp_path.iterdir()) == []


def test_warmup_batch_size_mismatch_rejected(tmp_path):
    warmup_examples = {
        "sequence": np.zeros((2, 6, 3), "float32"),
        "mask": np.ones((3, 6), bool),
    }
    with pytest.raises(ValueError, match=r"same batch size .* \(2, 6, 3\) .* \(3, 6\)"):
        mtl.export.export_saved_model(_small_mose(), tmp_path, warmup_examples=warmup_examples)
    assert list(tmp_path.iterdir()) == []


def test_warmup_model_failure_raises_value_error(tmp_path):
    inputs = keras.Input((None,), name="x")
    outputs = keras.layers.Reshape((2, 2))(inputs)
    model = keras.Model(inputs, {"a": outputs})
    with pytest.raises(ValueError) as raised:
        mtl.export.export_saved_model(
            model, tmp_path, warmup_examples={"x": np.ones((1, 3), "float32")}
        )
    assert "failed on the warm-up request to 'serving_default'" in str(raised.value)
    assert "input shapes {'x': (1, 3)}" in str(raised.value)
    assert "Input to reshape is a tensor with 3 values" in str(raised.value)
    assert list(tmp_path.iterdir()) == []


def test_export_hides_tensorflow_info_records(three_task_model, tmp_path, caplog):
    tensorflow_logger = logging.getLogger("tensorflow")
    tensorflow_logger.setLevel(logging.INFO)
    try:
        with caplog.at_level(logging.INFO):
            mtl.export.export_saved_model(three_task_model, tmp_path)
        level_after = tensorflow_logger.level
    finally:
        tensorflow_logger.setLevel(logging.NOTSET)
    tensorflow_info = [
        record.getMessage()
        for record in caplog.records
        if record.levelno < logging.WARNING
        and (record.name == "tensorflow" or f"{os.sep}tensorflow{os.sep}" in record.pathname)
    ]
    assert tensorflow_info == []
    assert level_after == logging.INFO


def test_damaged_version_as_export_dir_rejected(tmp_path):
    # A version without saved_model.pb, as an interrupted copy leaves it.
    damaged_version = tmp_path / "census" / "1"
    (damaged_version / "variables").mkdir(parents=True)
    with pytest.raises(ValueError, match="looks like a version itself"):
        mtl.export.export_saved_model(_small_model(), damaged_version)
    assert [path.name for path in damaged_version.iterdir()] == ["variables"]


def test_numbered_folder_beside_versions_rejected(tmp_path, exported):
    sibling = exported.parent / "99"
    with pytest.raises(ValueError, match="looks like a version itself"):
        mtl.export.export_saved_model(_small_model(), sibling)
    assert not sibling.exists()


def test_numbered_new_folder_accepted(tmp_path):
    path = mtl.export.export_saved_model(_small_model(), tmp_path / "20240101")
    assert path == tmp_path / "20240101" / "1"


def test_next_version_beyond_int64_rejected(tmp_path):
    (tmp_path / str(2**63 - 1)).mkdir()
    with pytest.raises(ValueError, match="the largest version TF Serving reads"):
        mtl.export.export_saved_model(_small_model(), tmp_path)
    assert [path.name for path in tmp_path.iterdir()] == [str(2**63 - 1)]


def test_truncated_warmup_file_named(exported, tmp_path):
    copy = tmp_path / "version"
    (copy / "assets.extra").mkdir(parents=True)
    complete = (exported / warmup.WARMUP_FILE).read_bytes()
    (copy / warmup.WARMUP_FILE).write_bytes(complete[: len(complete) // 2])
    with pytest.raises(ValueError, match="warm-up file .* is corrupt or truncated"):
        warmup.read_warmup_file(copy)
