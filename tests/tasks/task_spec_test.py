"""Tests of TaskSpec and compile_for_tasks."""

import pytest

from mtl_layers.compat import keras
from mtl_layers.tasks import TaskSpec, compile_for_tasks


@pytest.mark.parametrize(
    "kind, units, activation, loss_class",
    [
        ("binary", 1, "sigmoid", keras.losses.BinaryCrossentropy),
        ("regression", 1, None, keras.losses.MeanSquaredError),
    ],
)
def test_task_spec_kinds(kind, units, activation, loss_class):
    task = TaskSpec("target", kind=kind)
    assert task.output_units == units
    assert task.output_activation == activation
    assert isinstance(task.loss(), loss_class)


def test_task_spec_multiclass():
    task = TaskSpec("genre", kind="multiclass", num_classes=5)
    assert task.output_units == 5
    assert task.output_activation == "softmax"
    assert isinstance(task.metrics()[0], keras.metrics.SparseCategoricalAccuracy)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "1abc"}, "`name` must start with a letter"),
        ({"name": "has space"}, "`name` must start with a letter"),
        ({"name": "a", "kind": "ranking"}, "`kind` must be one of"),
        ({"name": "a", "kind": "multiclass"}, "`num_classes` must be an integer >= 2"),
        ({"name": "a", "kind": "multiclass", "num_classes": 1}, "`num_classes` must be an integer >= 2"),
        ({"name": "a", "tower_units": (8, 0)}, "Every entry of `tower_units`"),
        ({"name": "a", "loss_weight": 0}, "`loss_weight` must be a finite number > 0"),
        ({"name": "a", "loss_weight": float("inf")}, "`loss_weight` must be a finite number > 0"),
    ],
)
def test_task_spec_invalid(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TaskSpec(**kwargs)


def test_compile_for_tasks_rejects_missing_output():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, {"a": keras.layers.Dense(1, name="a")(inputs)})
    with pytest.raises(ValueError, match=r"no output named \['b'\]"):
        compile_for_tasks(model, [TaskSpec("a"), TaskSpec("b")])


@pytest.mark.parametrize("track_metrics", [True, False])
def test_compile_for_tasks_track_metrics(track_metrics):
    import numpy as np

    inputs = keras.Input((3,))
    outputs = {
        "a": keras.layers.Dense(1, activation="sigmoid", name="a")(inputs),
        "b": keras.layers.Dense(1, name="b")(inputs),
    }
    model = keras.Model(inputs, outputs)
    compile_for_tasks(model, [TaskSpec("a"), TaskSpec("b", kind="regression")], track_metrics=track_metrics)
    features = np.random.default_rng(0).normal(size=(16, 3)).astype("float32")
    labels = {"a": np.ones((16, 1), "float32"), "b": np.zeros((16, 1), "float32")}
    history = model.fit(features, labels, epochs=1, verbose=0).history

    metric_names = [name for name in history if name.endswith("auc") or name.endswith("rmse")]
    if track_metrics:
        assert sorted(metric_names) == ["a_auc", "b_rmse"]
    else:
        assert metric_names == []
    assert "loss" in history


def test_compile_for_tasks_metrics_use_sample_weights():
    import numpy as np

    inputs = keras.Input((3,))
    outputs = {
        "a": keras.layers.Dense(1, activation="sigmoid", name="a")(inputs),
        "b": keras.layers.Dense(1, name="b")(inputs),
    }
    model = keras.Model(inputs, outputs)
    compile_for_tasks(model, [TaskSpec("a"), TaskSpec("b", kind="regression")])
    rng = np.random.default_rng(0)
    features = rng.normal(size=(32, 3)).astype("float32")
    labels = {"a": np.ones((32, 1), "float32"), "b": rng.normal(size=(32, 1)).astype("float32")}
    # Every other example is excluded, as padded steps are by sequence_sample_weights.
    weights = {"a": np.ones(32, "float32"), "b": (np.arange(32) % 2).astype("float32")}

    results = model.evaluate(features, labels, sample_weight=weights, return_dict=True, verbose=0)

    predictions = model.predict_on_batch(features)["b"]
    weighted_rows = weights["b"] == 1
    expected_rmse = np.sqrt(np.mean((predictions[weighted_rows] - labels["b"][weighted_rows]) ** 2))
    np.testing.assert_allclose(results["b_rmse"], expected_rmse, rtol=1e-5)


def _two_task_model():
    features = keras.Input((4,), name="x")
    hidden = keras.layers.Dense(3)(features)
    return keras.Model(features, {"a": keras.layers.Dense(1, name="a")(hidden), "b": keras.layers.Dense(1, name="b")(hidden)})


def test_compile_in_scope_rejects_model_built_outside():
    import tensorflow as tf

    model = _two_task_model()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        with pytest.raises(ValueError, match="weights were created outside it"):
            compile_for_tasks(model, [TaskSpec("a"), TaskSpec("b")])


def test_compile_in_scope_accepts_model_built_inside():
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = _two_task_model()
        compile_for_tasks(model, [TaskSpec("a"), TaskSpec("b")])
    assert model.optimizer is not None


class _TwoReplicas:
    num_replicas_in_sync = 2


def test_keras_3_strategy_problem_names_string_inputs():
    from mtl_layers.tasks.task_spec import keras_3_strategy_problem

    words = keras.Input((1,), dtype="string", name="words")
    numbers = keras.Input((2,), name="numbers")
    model = keras.Model([words, numbers], keras.layers.Dense(1)(numbers))
    problem = keras_3_strategy_problem(_TwoReplicas(), model)
    assert "Received: inputs words (string)" in problem
    assert "TF_USE_LEGACY_KERAS=1" in problem


def test_keras_3_strategy_problem_none_for_numbers():
    from mtl_layers.tasks.task_spec import keras_3_strategy_problem

    model = _two_task_model()
    assert keras_3_strategy_problem(_TwoReplicas(), model) is None
