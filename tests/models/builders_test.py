"""Tests of the MMoE, OMoE, Shared-Bottom and PLE builders."""

import numpy as np
import pytest
import tensorflow as tf

import mtl_layers as mtl
from mtl_layers.compat import IS_KERAS_2, keras, ops
from mtl_layers.models import FeatureSpec
from mtl_layers.tasks import TaskSpec, compile_for_tasks

BUILDERS = {
    "mmoe": lambda tasks, features: mtl.models.mmoe(tasks, features, num_experts=3, expert_units=4),
    "omoe": lambda tasks, features: mtl.models.omoe(tasks, features, num_experts=3, expert_units=4),
    "shared_bottom": lambda tasks, features: mtl.models.shared_bottom(tasks, features, bottom_units=(8,)),
    "ple": lambda tasks, features: mtl.models.ple(
        tasks, features, num_levels=2, num_task_experts=2, num_shared_experts=1, expert_units=4
    ),
}
TASKS = [
    TaskSpec("click", kind="binary", tower_units=(4,)),
    TaskSpec("rating", kind="regression", tower_units=(4, 2), loss_weight=0.5),
    TaskSpec("genre", kind="multiclass", num_classes=3, tower_units=()),
]
FEATURES = [
    FeatureSpec("age", "numeric", mean=40.0, variance=100.0),
    FeatureSpec("job", "categorical", vocabulary=("clerk", "nurse", "pilot")),
    FeatureSpec("region", "integer_categorical", vocabulary=(1, 2, 3, 7)),
]


def _raw_features(size):
    rng = np.random.default_rng(0)
    return {
        "age": tf.constant(rng.uniform(18, 80, size), dtype="float32"),
        "job": tf.constant(rng.choice(["clerk", "nurse", "pilot", "unknown"], size)),
        "region": tf.constant(rng.choice([1, 2, 3, 7, 9], size), dtype="int64"),
    }


def _labels(size, column):
    rng = np.random.default_rng(1)
    labels = {
        "click": rng.integers(0, 2, size).astype("float32"),
        "rating": rng.normal(size=size).astype("float32"),
        "genre": rng.integers(0, 3, size),
    }
    if column:
        labels = {name: values.reshape(-1, 1) for name, values in labels.items()}
    return labels


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_builder_outputs_named_per_task(name):
    model = BUILDERS[name](TASKS, FEATURES)
    outputs = model(_raw_features(5))
    assert sorted(outputs) == ["click", "genre", "rating"]
    assert tuple(outputs["click"].shape) == (5, 1)
    assert tuple(outputs["rating"].shape) == (5, 1)
    assert tuple(outputs["genre"].shape) == (5, 3)
    np.testing.assert_allclose(np.asarray(outputs["genre"]).sum(-1), 1.0, rtol=1e-5)
    click = np.asarray(outputs["click"])
    assert np.all((click > 0) & (click < 1))


@pytest.mark.parametrize("name", sorted(BUILDERS))
@pytest.mark.parametrize("column_labels", [False, True])
def test_builder_trains_with_both_label_shapes(name, column_labels):
    keras.utils.set_random_seed(0)
    model = BUILDERS[name](TASKS, FEATURES)
    compile_for_tasks(model, TASKS, optimizer=keras.optimizers.Adam(0.01))
    dataset = tf.data.Dataset.from_tensor_slices((_raw_features(64), _labels(64, column_labels))).batch(16)
    history = model.fit(dataset, epochs=2, verbose=0)
    for key in ("loss", "click_loss", "rating_loss", "genre_loss", "click_auc", "rating_rmse", "genre_accuracy"):
        assert key in history.history, key
        assert np.all(np.isfinite(history.history[key])), key
    # The total loss is the weighted sum of the task losses.
    last = {key: values[-1] for key, values in history.history.items()}
    assert last["loss"] > 0


def _encoded_features(size):
    return np.random.default_rng(2).normal(size=(size, 6)).astype("float32")


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_builder_outputs_on_encoded_features(name):
    # Encoded features need no preprocessing layers, so this runs on every backend.
    model = BUILDERS[name](TASKS, keras.Input((6,), name="features"))
    outputs = model(_encoded_features(5))
    assert sorted(outputs) == ["click", "genre", "rating"]
    assert tuple(outputs["click"].shape) == (5, 1)
    assert tuple(outputs["rating"].shape) == (5, 1)
    assert tuple(outputs["genre"].shape) == (5, 3)
    np.testing.assert_allclose(ops.convert_to_numpy(outputs["genre"]).sum(-1), 1.0, rtol=1e-5)
    click = ops.convert_to_numpy(outputs["click"])
    assert np.all((click > 0) & (click < 1))


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_builder_trains_on_encoded_features(name):
    keras.utils.set_random_seed(0)
    model = BUILDERS[name](TASKS, keras.Input((6,), name="features"))
    compile_for_tasks(model, TASKS, optimizer=keras.optimizers.Adam(0.01))
    history = model.fit(
        _encoded_features(64), _labels(64, column=True), batch_size=16, epochs=3, verbose=0
    ).history
    for key in ("loss", "click_loss", "rating_loss", "genre_loss", "click_auc", "rating_rmse", "genre_accuracy"):
        assert key in history, key
        assert np.all(np.isfinite(history[key])), key
    assert history["loss"][-1] < history["loss"][0]


def test_encoded_model_keras_file_round_trip(tmp_path):
    model = mtl.models.mmoe(TASKS, keras.Input((6,), name="features"), num_experts=3, gate_top_k=2)
    path = str(tmp_path / "mmoe.keras")
    model.save(path)
    restored = (
        keras.models.load_model(path) if IS_KERAS_2 else keras.models.load_model(path, safe_mode=True)
    )
    features = _encoded_features(7)
    expected = model.predict_on_batch(features)
    got = restored.predict_on_batch(features)
    for task in ("click", "rating", "genre"):
        np.testing.assert_allclose(got[task], expected[task], rtol=1e-6)


def test_gate_counts_mmoe_and_omoe():
    mmoe = mtl.models.mmoe(TASKS, FEATURES, num_experts=3)
    omoe = mtl.models.omoe(TASKS, FEATURES, num_experts=3)
    assert sum(isinstance(layer, mtl.TaskGate) for layer in mmoe.layers) == 3
    assert sum(isinstance(layer, mtl.TaskGate) for layer in omoe.layers) == 1
    assert sum(isinstance(layer, mtl.ExpertBank) for layer in mmoe.layers) == 1


def test_ple_levels_and_gates():
    model = mtl.models.ple(TASKS, FEATURES, num_levels=2, num_task_experts=2, num_shared_experts=1)
    gates = [layer for layer in model.layers if isinstance(layer, mtl.TaskGate)]
    # Two levels of 3 task gates, and one shared gate below the last level.
    assert len(gates) == 7
    shared = [gate for gate in gates if gate.name.startswith("shared_gate")]
    assert [gate.num_experts for gate in shared] == [3 * 2 + 1]


def test_builder_from_feature_tensor():
    inputs = keras.Input((10,), name="dense_features")
    model = mtl.models.mmoe(TASKS[:2], inputs, num_experts=2, expert_units=[8, 4])
    outputs = model(np.ones((3, 10), "float32"))
    assert tuple(outputs["click"].shape) == (3, 1)


def test_builder_from_derived_tensor_with_model_inputs():
    inputs = keras.Input((10,))
    hidden = keras.layers.Dense(6)(inputs)
    model = mtl.models.omoe(TASKS[:1], hidden, model_inputs=inputs, num_experts=2)
    assert tuple(model(np.ones((2, 10), "float32"))["click"].shape) == (2, 1)


def test_builder_from_derived_tensor_needs_model_inputs():
    inputs = keras.Input((10,))
    hidden = keras.layers.Dense(6)(inputs)

    with pytest.raises(ValueError, match="`model_inputs` must be given"):
        mtl.models.mmoe(TASKS[:1], hidden, num_experts=2)


def test_builder_rejects_bad_features():
    with pytest.raises(ValueError, match="`features` must be a symbolic Keras tensor"):
        mtl.models.mmoe(TASKS, np.ones((3, 4)))


def test_builder_rejects_duplicate_tasks():
    with pytest.raises(ValueError, match="Task names must be unique"):
        mtl.models.mmoe([TaskSpec("a"), TaskSpec("a")], FEATURES)


def test_builder_rejects_empty_tasks():
    with pytest.raises(ValueError, match="at least one TaskSpec"):
        mtl.models.shared_bottom([], FEATURES)


def test_model_keras_file_round_trip(tmp_path):
    model = mtl.models.mmoe(TASKS, FEATURES, num_experts=3, gate_top_k=2)
    path = str(tmp_path / "mmoe.keras")
    model.save(path)
    restored = (
        keras.models.load_model(path) if IS_KERAS_2 else keras.models.load_model(path, safe_mode=True)
    )
    features = _raw_features(7)
    expected = model.predict_on_batch(features)
    got = restored.predict_on_batch(features)
    for task in ("click", "rating", "genre"):
        np.testing.assert_allclose(got[task], expected[task], rtol=1e-6)


def test_models_contain_no_lambda_layers():
    for name, builder in BUILDERS.items():
        model = builder(TASKS, FEATURES)
        assert not any(isinstance(layer, keras.layers.Lambda) for layer in model.layers), name


@pytest.mark.skipif(
    IS_KERAS_2 or keras.backend.backend() == "tensorflow",
    reason="checks the error that other backends raise; the TensorFlow backend exports",
)
def test_export_names_backend_and_fix(tmp_path):
    model = mtl.models.shared_bottom([TaskSpec("a")], keras.Input((4,), name="x"))
    with pytest.raises(ValueError, match="needs the TensorFlow backend. Received: Keras backend"):
        mtl.export.export_saved_model(model, tmp_path / "export")
    assert list(tmp_path.iterdir()) == []
