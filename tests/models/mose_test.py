"""Tests for the MoSE model builder, its baselines and its sequence layers."""

import numpy as np
import pytest
import tensorflow as tf

import mtl_layers as mtl
from mtl_layers.compat import keras, ops
from mtl_layers.models.mose import ARCHITECTURES
from mtl_layers.models.mose_layers import CausalMeanPooling, LastValidStep
from mtl_layers.tasks import TaskSpec, compile_for_tasks

FEATURES = 6
TASKS = [TaskSpec("click", tower_units=(4,)), TaskSpec("rating", kind="regression")]
MASK = np.array(
    [[1, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 0, 0, 0], [1, 0, 1, 1, 0]], dtype=bool
)


def _data(seed=0):
    rng = np.random.default_rng(seed)
    sequence = rng.normal(size=(4, 5, FEATURES)).astype("float32")
    labels = {
        "click": (rng.random((4, 5, 1)) > 0.5).astype("float32"),
        "rating": rng.normal(size=(4, 5, 1)).astype("float32"),
    }
    return {"sequence": sequence, "mask": MASK}, labels


def _all_models(output_steps):
    models = [mtl.models.mose(TASKS, FEATURES, num_experts=3, output_steps=output_steps)]
    for architecture in ARCHITECTURES:
        for sequential in (True, False) if output_steps == "all" else (False,):
            models.append(
                mtl.models.mose_baseline(
                    TASKS, FEATURES, architecture, sequential=sequential, output_steps=output_steps
                )
            )
    return models


@pytest.mark.parametrize("output_steps", ["all", "last"])
def test_output_shapes_of_every_architecture(output_steps):
    inputs, _ = _data()
    names = set()
    for model in _all_models(output_steps):
        names.add(model.name)
        outputs = model(inputs)
        expected = (4, 5, 1) if output_steps == "all" else (4, 1)
        assert sorted(outputs) == ["click", "rating"]
        for output in outputs.values():
            assert tuple(output.shape) == expected, model.name
            assert np.isfinite(output.numpy()).all(), model.name
    assert len(names) == 1 + (2 if output_steps == "all" else 1) * len(ARCHITECTURES)


def test_mose_structure():
    model = mtl.models.mose(TASKS, FEATURES, num_experts=3, expert_units=5, bottom_units=7)
    experts = model.get_layer("sequential_experts")
    assert isinstance(experts, mtl.SequentialExpert)
    assert experts.num_experts == 3
    assert experts.units == 5
    assert isinstance(model.get_layer("bottom_lstm"), keras.layers.LSTM)
    for task in TASKS:
        assert isinstance(model.get_layer(f"{task.name}_gate"), mtl.TaskGate)


@pytest.mark.parametrize("architecture", ["mose"] + list(ARCHITECTURES))
def test_padded_steps_do_not_change_predictions(architecture):
    if architecture == "mose":
        model = mtl.models.mose(TASKS, FEATURES, num_experts=2)
    else:
        model = mtl.models.mose_baseline(TASKS, FEATURES, architecture)
    inputs, _ = _data()
    outputs = model(inputs)
    corrupted = dict(inputs, sequence=inputs["sequence"].copy())
    corrupted["sequence"][~MASK] = 100.0
    corrupted_outputs = model(corrupted)
    for name in outputs:
        np.testing.assert_allclose(
            corrupted_outputs[name].numpy()[MASK], outputs[name].numpy()[MASK], atol=1e-6
        )


@pytest.mark.parametrize("architecture", ["mose"] + list(ARCHITECTURES))
def test_nan_at_padded_steps_keeps_weights_finite(architecture):
    if architecture == "mose":
        model = mtl.models.mose(TASKS, FEATURES, num_experts=2)
    else:
        model = mtl.models.mose_baseline(TASKS, FEATURES, architecture)
    compile_for_tasks(model, TASKS, optimizer=keras.optimizers.SGD(0.1))
    inputs, labels = _data()
    inputs["sequence"][~MASK] = np.nan

    model.fit(
        inputs,
        labels,
        sample_weight=mtl.models.sequence_sample_weights(TASKS, MASK),
        epochs=1,
        verbose=0,
    )

    for weight in model.weights:
        assert np.all(np.isfinite(ops.convert_to_numpy(weight))), weight.name


def test_last_step_output_equals_step_output():
    inputs, _ = _data()
    every_step = mtl.models.mose(TASKS, FEATURES, num_experts=2)
    last_step = mtl.models.mose(TASKS, FEATURES, num_experts=2, output_steps="last")
    last_step.set_weights(every_step.get_weights())
    steps = every_step(inputs)
    last = last_step(inputs)
    # Last valid step of rows 0, 1 and 3; row 2 has none.
    for row, index in ((0, 3), (1, 4), (3, 3)):
        for name in steps:
            np.testing.assert_allclose(
                last[name].numpy()[row], steps[name].numpy()[row, index], atol=1e-6
            )


def test_training_updates_every_expert():
    inputs, labels = _data()
    model = mtl.models.mose(TASKS, FEATURES, num_experts=3)
    # Eager training keeps the test fast: tracing the recurrent loop costs seconds.
    compile_for_tasks(model, TASKS, optimizer=keras.optimizers.Adam(0.01), run_eagerly=True)
    experts = model.get_layer("sequential_experts")
    before = experts.kernel.numpy().copy()
    model.fit(
        inputs,
        labels,
        sample_weight=mtl.models.sequence_sample_weights(TASKS, MASK),
        epochs=2,
        verbose=0,
    )
    # The kernel is (features, num_experts, 4 * units).
    per_expert = np.abs(experts.kernel.numpy() - before).max(axis=(0, 2))
    assert (per_expert > 0).all(), per_expert


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mose_trains_under_mixed_policy(policy):
    inputs, labels = _data()
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        model = mtl.models.mose(TASKS, FEATURES, num_experts=2)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    compile_for_tasks(model, TASKS, optimizer=keras.optimizers.Adam(0.01), run_eagerly=True)
    experts = model.get_layer("sequential_experts")
    before = experts.kernel.numpy().copy()
    history = model.fit(
        inputs,
        labels,
        sample_weight=mtl.models.sequence_sample_weights(TASKS, MASK),
        epochs=2,
        verbose=0,
    )
    assert np.isfinite(history.history["loss"]).all()
    assert np.abs(experts.kernel.numpy() - before).max() > 0
    assert all(weight.numpy().dtype == np.float32 for weight in model.trainable_weights)
    outputs = model.predict_on_batch(inputs)
    for name in ("click", "rating"):
        assert np.asarray(outputs[name]).dtype == np.float32
        assert np.isfinite(np.asarray(outputs[name])).all()


def test_padded_step_labels_do_not_affect_training():
    inputs, labels = _data()
    weights = mtl.models.sequence_sample_weights(TASKS, MASK)
    results = []
    for fill in (0.0, 1e3):
        keras.utils.set_random_seed(3)
        model = mtl.models.mose(TASKS, FEATURES, num_experts=2)
        compile_for_tasks(model, TASKS, run_eagerly=True)
        changed = {name: value.copy() for name, value in labels.items()}
        changed["rating"][~MASK] = fill
        model.fit(inputs, changed, sample_weight=weights, epochs=1, verbose=0, shuffle=False)
        results.append(model.get_weights())
    for first, second in zip(*results):
        np.testing.assert_allclose(first, second, atol=1e-6)


def test_tensor_inputs_with_embedding():
    items = keras.Input((None,), dtype="int32", name="item")
    numbers = keras.Input((None, 2), name="numbers")
    embedded = keras.layers.Embedding(20, 3)(items)
    sequence = keras.layers.Concatenate()([embedded, numbers])
    mask = keras.layers.Lambda(lambda ids: ops.not_equal(ids, 0))(items)
    model = mtl.models.mose(
        TASKS, sequence, mask=mask, model_inputs={"item": items, "numbers": numbers}
    )
    ids = np.array([[1, 2, 0], [0, 5, 6]], "int32")
    outputs = model({"item": ids, "numbers": np.ones((2, 3, 2), "float32")})
    assert tuple(outputs["click"].shape) == (2, 3, 1)


def test_computed_features_need_model_inputs():
    items = keras.Input((None,), dtype="int32", name="item")
    sequence = keras.layers.Embedding(20, 3)(items)

    with pytest.raises(ValueError, match="`model_inputs` must be given"):
        mtl.models.mose(TASKS, sequence)


def test_keras_file_round_trip(tmp_path):
    inputs, _ = _data()
    model = mtl.models.mose(TASKS, FEATURES, num_experts=2, output_steps="last")
    path = str(tmp_path / "mose.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    for name, value in model(inputs).items():
        np.testing.assert_allclose(restored(inputs)[name].numpy(), value.numpy(), atol=1e-6)


def test_saved_model_export(tmp_path):
    inputs, _ = _data()
    model = mtl.models.mose(TASKS, FEATURES, num_experts=2)
    module = tf.Module()
    module.model = model
    module.serve = tf.function(
        lambda sequence, mask: model({"sequence": sequence, "mask": mask}),
        input_signature=[
            tf.TensorSpec((None, None, FEATURES), tf.float32, name="sequence"),
            tf.TensorSpec((None, None), tf.bool, name="mask"),
        ],
    )
    path = str(tmp_path / "saved_model")
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    served = tf.saved_model.load(path).signatures["serving_default"](
        sequence=tf.constant(inputs["sequence"]), mask=tf.constant(MASK)
    )
    for name, value in model(inputs).items():
        np.testing.assert_allclose(served[name].numpy(), value.numpy(), atol=1e-5)


def test_last_valid_step_layer():
    values = np.arange(4 * 5 * 2, dtype="float32").reshape(4, 5, 2)
    selected = LastValidStep()(values, mask=MASK).numpy()
    np.testing.assert_array_equal(selected[0], values[0, 3])
    np.testing.assert_array_equal(selected[1], values[1, 4])
    np.testing.assert_array_equal(selected[2], np.zeros(2))
    np.testing.assert_array_equal(selected[3], values[3, 3])
    np.testing.assert_array_equal(LastValidStep()(values).numpy(), values[:, -1])


def test_causal_mean_pooling_layer():
    values = np.random.default_rng(0).normal(size=(4, 5, 2)).astype("float32")
    pooled = CausalMeanPooling()(values, mask=MASK).numpy()
    assert pooled.shape == (4, 5, 4)
    for row in range(4):
        for t in range(5):
            valid = MASK[row, : t + 1]
            expected_mean = values[row, : t + 1][valid].mean(0) if valid.any() else np.zeros(2)
            expected_current = values[row, t] if MASK[row, t] else np.zeros(2)
            np.testing.assert_allclose(pooled[row, t, 2:], expected_mean, atol=1e-6)
            np.testing.assert_allclose(pooled[row, t, :2], expected_current, atol=1e-6)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: mtl.models.mose(TASKS, 0), "sequence_features"),
        (lambda: mtl.models.mose(TASKS, np.zeros((2, 3, 4))), "sequence_features"),
        (lambda: mtl.models.mose(TASKS, FEATURES, output_steps="first"), "output_steps"),
        (lambda: mtl.models.mose(TASKS, FEATURES, bottom_units=0), "bottom_units"),
        (lambda: mtl.models.mose_baseline(TASKS, FEATURES, "moe"), "architecture"),
        (lambda: mtl.models.mose([], FEATURES), "tasks"),
        (lambda: mtl.models.mose(TASKS, FEATURES, tower_dropout=-1), "tower_dropout=-1"),
        (
            lambda: mtl.models.mose_baseline(TASKS, FEATURES, "mmoe", tower_dropout=-0.5),
            "tower_dropout=-0.5",
        ),
        (
            lambda: mtl.models.mose_baseline(TASKS, FEATURES, "mmoe", sequential="no"),
            "`sequential` must be True or False. Received: sequential='no'",
        ),
        (
            lambda: mtl.models.mose_baseline(TASKS, FEATURES, "shared_bottom", sequential=1),
            "sequential=1",
        ),
    ],
)
def test_invalid_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("task_name", ["sequence", "mask"])
def test_task_named_like_input_rejected(task_name):
    tasks = [TaskSpec(task_name), TaskSpec("rating", kind="regression")]
    message = f"Task name '{task_name}' is also the name of a model input"
    with pytest.raises(ValueError, match=message):
        mtl.models.mose(tasks, FEATURES)
    with pytest.raises(ValueError, match="rename the task"):
        mtl.models.mose_baseline(tasks, FEATURES, "shared_bottom")


def test_task_named_like_tensor_input_rejected():
    items = keras.Input((None, 3), name="item")
    with pytest.raises(ValueError, match="Task name 'item' is also the name of a model input"):
        mtl.models.mose([TaskSpec("item")], items)


def test_task_named_like_builder_layer_rejected():
    with pytest.raises(ValueError, match="bottom_lstm.*must be renamed"):
        mtl.models.mose([TaskSpec("bottom_lstm")], FEATURES)


def test_sample_weights_reject_mask_with_feature_axis():
    message = r"`mask` must have shape \(batch_size, time\).*\(4, 5, 1\)"
    with pytest.raises(ValueError, match=message):
        mtl.models.sequence_sample_weights(TASKS, MASK[..., None])
