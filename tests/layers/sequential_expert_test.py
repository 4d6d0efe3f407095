"""Tests for SequentialExpert and for TaskGate over a time axis."""

import numpy as np
import pytest

import mtl_layers as mtl
from mtl_layers.compat import IS_KERAS_2, keras, ops

# Keras 3 raises from the InputSpec; tf_keras skips it for symbolic inputs, and the layer
# raises its own message.
OTHER_FEATURES = "expected axis -1 of input shape to have value|was built for inputs with"

FEATURES = 5
TIME = 6
# Row 0 right-padded, row 1 left-padded, row 2 without any valid step, row 3 with a gap.
MASK = np.array(
    [
        [1, 1, 1, 0, 0, 0],
        [0, 0, 1, 1, 1, 1],
        [0, 0, 0, 0, 0, 0],
        [1, 0, 1, 1, 0, 1],
    ],
    dtype=bool,
)


def _inputs(seed=0, batch=4):
    return np.random.default_rng(seed).normal(size=(batch, TIME, FEATURES)).astype("float32")


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _numpy_lstm(x, mask, kernel, recurrent_kernel, bias):
    """Step-by-step LSTM of one expert in NumPy, carrying the state over padded steps."""
    batch, time, _ = x.shape
    units = recurrent_kernel.shape[0]
    hidden = np.zeros((batch, units))
    cell = np.zeros((batch, units))
    outputs = np.zeros((batch, time, units))
    for t in range(time):
        gates = x[:, t] @ kernel + hidden @ recurrent_kernel + bias
        i, f, c, o = np.split(gates, 4, axis=-1)
        new_cell = _sigmoid(f) * cell + _sigmoid(i) * np.tanh(c)
        new_hidden = _sigmoid(o) * np.tanh(new_cell)
        keep = mask[:, t : t + 1]
        cell = np.where(keep, new_cell, cell)
        hidden = np.where(keep, new_hidden, hidden)
        outputs[:, t] = hidden
    return outputs, hidden


def _expert_weights(layer, expert):
    return (
        ops.convert_to_numpy(layer.kernel)[:, expert],
        ops.convert_to_numpy(layer.recurrent_kernel)[expert],
        ops.convert_to_numpy(layer.bias)[expert],
    )


def test_output_shapes():
    x = _inputs()
    assert tuple(mtl.SequentialExpert(3, 7)(x).shape) == (4, TIME, 3, 7)
    assert tuple(mtl.SequentialExpert(3, 7)(x, mask=MASK).shape) == (4, TIME, 3, 7)
    last = mtl.SequentialExpert(3, 7, return_sequences=False)(x, mask=MASK)
    assert tuple(last.shape) == (4, 3, 7)
    layer = mtl.SequentialExpert(3, 7)
    assert layer.compute_output_shape((None, None, FEATURES)) == (None, None, 3, 7)


def test_layer_dtype_reaches_outputs():
    # The recurrent loop is a sublayer, so it must run in this layer's dtype, not the global one.
    outputs = mtl.SequentialExpert(2, 3, dtype="float64")(_inputs(), mask=MASK)
    assert ops.dtype(outputs) == "float64"
    layer = mtl.SequentialExpert(2, 3, dropout=0.3, recurrent_dropout=0.3, dtype="float64")
    assert ops.dtype(layer(_inputs(), mask=MASK, training=True)) == "float64"


@pytest.mark.parametrize(
    "policy, compute_dtype", [("mixed_float16", "float16"), ("mixed_bfloat16", "bfloat16")]
)
def test_dropout_under_mixed_policy(policy, compute_dtype):
    # The recurrent dropout mask multiplies the float32 hidden state inside the loop.
    keras.mixed_precision.set_global_policy(policy)
    try:
        layer = mtl.SequentialExpert(2, 4, dropout=0.3, recurrent_dropout=0.3)
        outputs = layer(_inputs(), mask=MASK, training=True)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert ops.dtype(outputs) == compute_dtype
    values = ops.convert_to_numpy(ops.cast(outputs, "float32"))
    assert np.isfinite(values).all()
    np.testing.assert_array_equal(values[0, 4], values[0, 2])
    np.testing.assert_array_equal(values[2], np.zeros((TIME, 2, 4)))


def test_matches_numpy_reference_with_mask():
    x = _inputs()
    layer = mtl.SequentialExpert(3, 4)
    outputs = ops.convert_to_numpy(layer(x, mask=MASK))
    last = mtl.SequentialExpert(3, 4, return_sequences=False)
    last.build(x.shape)
    last.set_weights(layer.get_weights())
    last_outputs = ops.convert_to_numpy(last(x, mask=MASK))
    for expert in range(3):
        reference, reference_last = _numpy_lstm(x, MASK, *_expert_weights(layer, expert))
        np.testing.assert_allclose(outputs[:, :, expert], reference, atol=1e-5)
        np.testing.assert_allclose(last_outputs[:, expert], reference_last, atol=1e-5)


@pytest.mark.parametrize("use_mask", [False, True])
def test_matches_keras_lstm_per_expert(use_mask):
    x = _inputs(seed=1)
    mask = MASK if use_mask else None
    layer = mtl.SequentialExpert(3, 4)
    outputs = ops.convert_to_numpy(layer(x, mask=mask))
    for expert in range(3):
        lstm = keras.layers.LSTM(4, return_sequences=True)
        lstm.build((None, TIME, FEATURES))
        lstm.set_weights(list(_expert_weights(layer, expert)))
        reference = ops.convert_to_numpy(lstm(x, mask=mask))
        np.testing.assert_allclose(outputs[:, :, expert], reference, atol=1e-5)


def test_padded_steps_do_not_change_valid_outputs():
    x = _inputs()
    layer = mtl.SequentialExpert(2, 4)
    outputs = ops.convert_to_numpy(layer(x, mask=MASK))
    # Replace every padded input by garbage, including NaN and infinity.
    corrupted = x.copy()
    corrupted[~MASK] = np.nan
    corrupted[3, 1] = np.inf
    corrupted_outputs = ops.convert_to_numpy(layer(corrupted, mask=MASK))
    np.testing.assert_array_equal(corrupted_outputs, outputs)
    assert np.isfinite(outputs).all()


def test_padded_steps_carry_state():
    x = _inputs()
    outputs = ops.convert_to_numpy(mtl.SequentialExpert(2, 4)(x, mask=MASK))
    # Right padding repeats the last valid output, left padding outputs zeros.
    np.testing.assert_array_equal(outputs[0, 3], outputs[0, 2])
    np.testing.assert_array_equal(outputs[0, 5], outputs[0, 2])
    np.testing.assert_array_equal(outputs[1, :2], np.zeros((2, 2, 4)))
    assert np.abs(outputs[1, 2]).max() > 0
    # A gap repeats the output before it, and the row without valid steps is all zeros.
    np.testing.assert_array_equal(outputs[3, 1], outputs[3, 0])
    np.testing.assert_array_equal(outputs[2], np.zeros((TIME, 2, 4)))


def test_left_padding_equals_unpadded_sequence():
    x = _inputs()
    layer = mtl.SequentialExpert(2, 4, return_sequences=False)
    unpadded = ops.convert_to_numpy(layer(x[1:2, 2:]))
    left_padded = ops.convert_to_numpy(layer(x[1:2], mask=MASK[1:2]))
    np.testing.assert_allclose(left_padded, unpadded, atol=1e-6)


def test_float_mask_equals_bool_mask():
    x = _inputs()
    layer = mtl.SequentialExpert(2, 4)
    float_mask_outputs = ops.convert_to_numpy(layer(x, mask=MASK.astype("float32")))
    np.testing.assert_array_equal(float_mask_outputs, ops.convert_to_numpy(layer(x, mask=MASK)))


def test_gradients_reach_every_expert(gradients):
    x = _inputs()
    layer = mtl.SequentialExpert(3, 4)
    layer.build(x.shape)
    # The kernel is (features, experts, 4 units); the other weights start with experts.
    weights = [layer.kernel, layer.recurrent_kernel, layer.bias]
    results = gradients(lambda inputs: ops.sum(ops.square(layer(inputs, mask=MASK))), weights, [x])
    for weight, gradient, expert_axis in zip(weights, results, [1, 0, 0]):
        assert np.isfinite(gradient).all(), weight.name
        per_expert = np.abs(np.moveaxis(gradient, expert_axis, 0)).reshape(3, -1).sum(axis=1)
        assert (per_expert > 0).all(), per_expert


def test_gradients_finite_with_nan_padding(gradients):
    x = _inputs()
    x[~MASK] = np.nan
    layer = mtl.SequentialExpert(2, 4)
    layer.build(x.shape)
    weights = layer.trainable_weights
    results = gradients(lambda inputs: ops.sum(layer(inputs, mask=MASK)), weights, [x])
    for weight, gradient in zip(weights, results):
        assert np.isfinite(gradient).all(), weight.name


def test_experts_start_different():
    layer = mtl.SequentialExpert(3, 4)
    layer.build((None, TIME, FEATURES))
    kernel = ops.convert_to_numpy(layer.kernel)
    recurrent = ops.convert_to_numpy(layer.recurrent_kernel)
    assert np.abs(kernel[:, 0] - kernel[:, 1]).max() > 1e-3
    assert np.abs(recurrent[0] - recurrent[1]).max() > 1e-3


def test_unit_forget_bias():
    layer = mtl.SequentialExpert(2, 3)
    layer.build((None, TIME, FEATURES))
    bias = ops.convert_to_numpy(layer.bias)
    np.testing.assert_array_equal(bias[:, 3:6], np.ones((2, 3)))
    np.testing.assert_array_equal(bias[:, :3], np.zeros((2, 3)))
    np.testing.assert_array_equal(bias[:, 6:], np.zeros((2, 6)))


def test_dropout_only_in_training():
    x = _inputs()
    layer = mtl.SequentialExpert(2, 4, dropout=0.5, recurrent_dropout=0.5)
    inference = ops.convert_to_numpy(layer(x, mask=MASK, training=False))
    np.testing.assert_array_equal(ops.convert_to_numpy(layer(x, mask=MASK)), inference)
    training = ops.convert_to_numpy(layer(x, mask=MASK, training=True))
    assert np.isfinite(training).all()
    assert np.abs(training - inference).max() > 1e-4
    # Masking stays exact under dropout: padded steps repeat the previous output.
    np.testing.assert_array_equal(training[0, 4], training[0, 2])
    np.testing.assert_array_equal(training[2], np.zeros((TIME, 2, 4)))


def test_embedding_mask_is_used():
    ids = np.array([[3, 4, 0, 0], [0, 0, 5, 6]], dtype="int32")
    embedding = keras.layers.Embedding(10, FEATURES, mask_zero=True)
    layer = mtl.SequentialExpert(2, 4)
    outputs = ops.convert_to_numpy(layer(embedding(ids)))
    explicit = ops.convert_to_numpy(layer(embedding(ids), mask=ids != 0))
    np.testing.assert_array_equal(outputs, explicit)
    np.testing.assert_array_equal(outputs[1, :2], np.zeros((2, 2, 4)))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_experts": 0, "units": 4}, "num_experts"),
        ({"num_experts": 2, "units": 2.5}, "units"),
        ({"num_experts": 2, "units": 4, "dropout": 1.0}, "dropout"),
        ({"num_experts": 2, "units": 4, "recurrent_dropout": -0.1}, "recurrent_dropout"),
        ({"num_experts": 2, "units": 4, "return_sequences": "False"}, "`return_sequences` must be True or False"),
        ({"num_experts": 2, "units": 4, "unit_forget_bias": 1}, "`unit_forget_bias` must be True or False"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        mtl.SequentialExpert(**kwargs)


def test_invalid_input_rank():
    with pytest.raises(ValueError, match="time, features"):
        mtl.SequentialExpert(2, 4)(np.zeros((3, 5), "float32"))


def test_mask_shape_mismatch():
    with pytest.raises(ValueError, match="mask"):
        mtl.SequentialExpert(2, 4)(_inputs(), mask=MASK[:, :4])


def test_config_round_trip():
    layer = mtl.SequentialExpert(
        3, 5, return_sequences=False, dropout=0.1, recurrent_dropout=0.2, unit_forget_bias=False
    )
    config = layer.get_config()
    restored = mtl.SequentialExpert.from_config(config)
    assert restored.get_config() == config
    assert restored.num_experts == 3
    assert restored.units == 5
    assert restored.return_sequences is False


def _functional_model(return_sequences=True):
    sequence = keras.Input((None, FEATURES), name="sequence")
    mask = keras.Input((None,), dtype="bool", name="mask")
    experts = mtl.SequentialExpert(3, 4, return_sequences=return_sequences, name="experts")(
        sequence, mask=mask
    )
    return keras.Model([sequence, mask], experts)


def test_functional_model_with_unknown_time():
    model = _functional_model()
    x = _inputs()
    outputs = ops.convert_to_numpy(model([x, MASK]))
    np.testing.assert_allclose(
        outputs, ops.convert_to_numpy(model.get_layer("experts")(x, mask=MASK)), atol=1e-6
    )
    shorter = ops.convert_to_numpy(model([x[:, :3], MASK[:, :3]]))
    np.testing.assert_allclose(shorter, outputs[:, :3], atol=1e-6)


def test_fit_with_varying_lengths():
    sequence = keras.Input((None, FEATURES))
    mask = keras.Input((None,), dtype="bool")
    experts = mtl.SequentialExpert(2, 4, return_sequences=False)(sequence, mask=mask)
    output = keras.layers.Dense(1)(keras.layers.Flatten()(experts))
    model = keras.Model([sequence, mask], output)
    model.compile("adam", "mse")
    before = [w.copy() for w in model.get_weights()]
    for length in (TIME, 3):
        model.fit([_inputs()[:, :length], MASK[:, :length]], np.ones((4, 1)), verbose=0)
    assert any(np.abs(a - b).max() > 0 for a, b in zip(before, model.get_weights()))


def test_keras_file_round_trip(tmp_path):
    model = _functional_model()
    x = _inputs()
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_allclose(
        ops.convert_to_numpy(restored([x, MASK])), ops.convert_to_numpy(model([x, MASK])), atol=1e-6
    )


def test_saved_model_export(tmp_path):
    import tensorflow as tf

    model = _functional_model(return_sequences=False)
    x = _inputs()
    module = tf.Module()
    module.model = model
    module.serve = tf.function(
        lambda sequence, mask: {"experts": model([sequence, mask])},
        input_signature=[
            tf.TensorSpec((None, None, FEATURES), tf.float32, name="sequence"),
            tf.TensorSpec((None, None), tf.bool, name="mask"),
        ],
    )
    path = str(tmp_path / "saved_model")
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    signature = tf.saved_model.load(path).signatures["serving_default"]
    served = signature(sequence=tf.constant(x), mask=tf.constant(MASK))["experts"].numpy()
    np.testing.assert_allclose(served, model([x, MASK]).numpy(), atol=1e-6)
    shorter = signature(sequence=tf.constant(x[:, :4]), mask=tf.constant(MASK[:, :4]))
    assert shorter["experts"].shape == (4, 3, 4)


def test_task_gate_per_step_equals_per_step_calls():
    x = _inputs()
    experts = mtl.SequentialExpert(3, 4)(x, mask=MASK)
    gate = mtl.TaskGate(3, return_weights=True)
    mixture, weights = gate(experts, x)
    assert tuple(mixture.shape) == (4, TIME, 4)
    assert tuple(weights.shape) == (4, TIME, 3)
    mixture, weights = ops.convert_to_numpy(mixture), ops.convert_to_numpy(weights)
    np.testing.assert_allclose(weights.sum(-1), np.ones((4, TIME)), atol=1e-6)
    for t in range(TIME):
        step_mixture, step_weights = gate(experts[:, t], x[:, t])
        np.testing.assert_allclose(mixture[:, t], ops.convert_to_numpy(step_mixture), atol=1e-6)
        np.testing.assert_allclose(weights[:, t], ops.convert_to_numpy(step_weights), atol=1e-6)


def test_task_gate_time_axis_in_functional_model():
    sequence = keras.Input((None, FEATURES))
    mask = keras.Input((None,), dtype="bool")
    experts = mtl.SequentialExpert(3, 4)(sequence, mask=mask)
    mixture = mtl.TaskGate(3, name="gate")(experts, sequence)
    model = keras.Model([sequence, mask], mixture)
    outputs = ops.convert_to_numpy(model([_inputs(), MASK]))
    assert outputs.shape == (4, TIME, 4)
    assert np.isfinite(outputs).all()
    if not IS_KERAS_2:
        assert tuple(model.output.shape) == (None, None, 4)


def test_sequential_expert_rejects_other_feature_count():
    layer = mtl.SequentialExpert(2, 3)
    layer(np.ones((2, 4, 5), "float32"))
    with pytest.raises(ValueError, match="expected axis -1 of input shape to have value 5"):
        layer(np.ones((2, 4, 7), "float32"))


@pytest.mark.parametrize("use_fused_kernel", ["auto", False])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_sequential_expert_zero_steps_give_zeros(use_fused_kernel, return_sequences):
    layer = mtl.SequentialExpert(
        2, 4, return_sequences=return_sequences, use_fused_kernel=use_fused_kernel
    )

    outputs = ops.convert_to_numpy(layer(np.ones((3, 0, 5), "float32")))

    expected_shape = (3, 0, 2, 4) if return_sequences else (3, 2, 4)
    assert outputs.shape == expected_shape
    assert not outputs.any()


def test_sequential_expert_symbolic_reuse_checks_features():
    layer = mtl.SequentialExpert(2, 3)
    layer(keras.Input((4, 5)))
    with pytest.raises(ValueError, match=OTHER_FEATURES):
        layer(keras.Input((4, 7)))
