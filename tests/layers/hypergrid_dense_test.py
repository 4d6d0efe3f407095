"""Tests of HyperGridDense against a naive per-example reference."""

import numpy as np
import pytest

import mtl_layers as mtl
from mtl_layers.compat import backend_name, keras, ops

# Keras 3 raises from the InputSpec; tf_keras skips it for symbolic inputs, and the layer
# raises its own message.
OTHER_FEATURES = "expected axis -1 of input shape to have value|was built for inputs with"

MODES = ("LG", "GL", "LL", "GG")


def _sigmoid(values):
    return 1.0 / (1.0 + np.exp(-values))


def _naive_outputs(layer, inputs, conditioning):
    """Build every example's gated kernel explicitly and apply it (the slow reference)."""
    kernel = ops.convert_to_numpy(layer.kernel)
    block_rows, block_cols = layer.block_shape
    grid_rows, grid_cols = kernel.shape[0] // block_rows, kernel.shape[1] // block_cols
    outputs = []
    for example in range(inputs.shape[0]):
        if layer.local_rows is not None:
            local_kernel, local_bias = (ops.convert_to_numpy(w) for w in layer.local_rows.weights)
            rows = conditioning[example] @ local_kernel + local_bias
        else:
            rows = ops.convert_to_numpy(layer.global_rows)
        if layer.local_cols is not None:
            local_kernel, local_bias = (ops.convert_to_numpy(w) for w in layer.local_cols.weights)
            cols = conditioning[example] @ local_kernel + local_bias
        else:
            cols = ops.convert_to_numpy(layer.global_cols)
        gate = _sigmoid(np.outer(rows, cols))
        assert gate.shape == (grid_rows, grid_cols)
        gated_kernel = kernel * np.kron(gate, np.ones((block_rows, block_cols)))
        outputs.append(inputs[example] @ gated_kernel + ops.convert_to_numpy(layer.bias))
    return np.stack(outputs)


def _random(shape, seed):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


# With 12 features and 6 units, (4, 2) makes the layer sum gated row blocks (3 x 6 <
# 3 x 12 elementwise products per position), and (2, 3) makes it concatenate gated
# column blocks (2 x 12 < 6 x 6).
BLOCK_SHAPES = [(4, 2), (2, 3)]


@pytest.mark.parametrize("block_shape, uses_row_blocks", zip(BLOCK_SHAPES, [True, False]))
def test_block_shapes_cover_both_forms(block_shape, uses_row_blocks):
    layer = mtl.HyperGridDense(units=6, block_shape=block_shape)
    layer(_random((4, 12), 0), _random((4, 5), 1))
    assert layer._uses_row_blocks() == uses_row_blocks


def test_one_block_column_takes_the_column_form():
    # The row form has less elementwise work here (3 x 2 < 1 x 12 per position), but one
    # block column makes the column form a single full-width product.
    layer = mtl.HyperGridDense(units=2, block_shape=(4, 2))
    inputs, conditioning = _random((4, 12), 0), _random((4, 5), 1)
    outputs = ops.convert_to_numpy(layer(inputs, conditioning))

    assert not layer._uses_row_blocks()
    np.testing.assert_allclose(outputs, _naive_outputs(layer, inputs, conditioning), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("input_shape", [(4, 12), (4, 3, 12), (4, 2, 3, 12)])
@pytest.mark.parametrize("block_shape", BLOCK_SHAPES)
def test_matches_naive_reference(mode, input_shape, block_shape):
    inputs = _random(input_shape, 0)
    conditioning = _random((4, 5), 1)
    layer = mtl.HyperGridDense(
        units=6,
        block_shape=block_shape,
        mode=mode,
        bias_initializer="random_normal",
        global_initializer="random_normal",
    )
    outputs = ops.convert_to_numpy(layer(inputs, conditioning))
    expected = _naive_outputs(layer, inputs, conditioning)
    assert outputs.shape == input_shape[:-1] + (6,)
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5)


def test_gate_differs_between_tasks():
    layer = mtl.HyperGridDense(units=4, block_shape=(2, 2), mode="LG")
    conditioning = _random((2, 3), 2)
    layer(_random((2, 4), 3), conditioning)
    gate = ops.convert_to_numpy(layer.compute_gate(conditioning))
    assert gate.shape == (2, 2, 2)
    assert np.abs(gate[0] - gate[1]).max() > 1e-3


def test_one_block_per_matrix_scales_whole_kernel():
    # A single block makes the gate a scalar per example: y = sigmoid(r c) * x W + b.
    layer = mtl.HyperGridDense(units=3, block_shape=(4, 3), mode="LG", use_bias=False)
    inputs, conditioning = _random((2, 4), 4), _random((2, 2), 5)
    outputs = ops.convert_to_numpy(layer(inputs, conditioning))
    gate = ops.convert_to_numpy(layer.compute_gate(conditioning)).reshape(2, 1)
    np.testing.assert_allclose(outputs, gate * (inputs @ ops.convert_to_numpy(layer.kernel)), rtol=1e-5, atol=1e-6)


def test_activation_is_applied():
    layer = mtl.HyperGridDense(units=4, block_shape=(2, 2), activation="relu")
    outputs = ops.convert_to_numpy(layer(_random((8, 4), 6), _random((8, 3), 7)))
    assert outputs.min() >= 0.0


@pytest.mark.parametrize("mode", MODES)
def test_gradients_reach_every_weight(mode, gradients):
    layer = mtl.HyperGridDense(units=4, block_shape=(2, 2), mode=mode)
    inputs = _random((3, 2, 4), 8)
    conditioning = _random((3, 5), 9)
    layer(inputs, conditioning)
    expected_count = {"LG": 5, "GL": 5, "LL": 6, "GG": 4}[mode]
    assert len(layer.trainable_weights) == expected_count
    results = gradients(
        lambda x: ops.sum(ops.square(layer(x, conditioning) - 1.0)), layer.trainable_weights, [inputs]
    )
    for weight, gradient in zip(layer.trainable_weights, results):
        assert np.abs(gradient).max() > 0, weight.name


def _naive_outputs_ops(layer, inputs, conditioning):
    """Apply every example's gated kernel W * expand(gate_b) with `keras.ops`."""
    block_rows, block_cols = layer.block_shape
    gate = layer.compute_gate(conditioning)
    if layer.mode == "GG":
        gate = ops.broadcast_to(gate, (inputs.shape[0],) + tuple(gate.shape))
    gate = ops.repeat(ops.repeat(gate, block_rows, axis=1), block_cols, axis=2)
    kernels = ops.expand_dims(layer.kernel, 0) * gate
    return ops.einsum("bti,biu->btu", inputs, kernels) + layer.bias


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("block_shape", BLOCK_SHAPES)
def test_gradients_match_naive_reference(mode, block_shape, gradients):
    layer = mtl.HyperGridDense(
        units=6, block_shape=block_shape, mode=mode, global_initializer="random_normal"
    )
    inputs = _random((4, 3, 12), 21)
    conditioning = _random((4, 5), 22)
    layer(inputs, conditioning)
    targets = _random((4, 3, 6), 23)

    def squared_error(outputs_fn):
        # ops.subtract, because a PyTorch tensor minus a NumPy array fails.
        return lambda x, c: ops.sum(ops.square(ops.subtract(outputs_fn(x, c), targets)))

    sources = (layer.trainable_weights, [inputs, conditioning])
    results = gradients(squared_error(layer), *sources)
    expected = gradients(squared_error(lambda x, c: _naive_outputs_ops(layer, x, c)), *sources)
    names = [weight.name for weight in layer.trainable_weights] + ["inputs", "conditioning"]
    for name, gradient, expected_gradient in zip(names, results, expected):
        np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-4, atol=1e-4, err_msg=name)
    if mode == "GG":
        # The global gate does not read the conditioning vectors.
        np.testing.assert_array_equal(results[-1], np.zeros_like(conditioning))


def test_global_mode_ignores_conditioning():
    layer = mtl.HyperGridDense(units=4, block_shape=(2, 2), mode="GG")
    inputs = _random((3, 4), 10)
    without = ops.convert_to_numpy(layer(inputs))
    with_conditioning = ops.convert_to_numpy(layer(inputs, _random((3, 2), 11)))
    np.testing.assert_allclose(without, with_conditioning)


@pytest.mark.parametrize(
    "block_shape", [(4,), (0, 2), (2, -1), (2.0, 2), "2x2", (True, 2), None]
)
def test_invalid_block_shape_rejected(block_shape):
    with pytest.raises(ValueError, match="block_shape"):
        mtl.HyperGridDense(units=4, block_shape=block_shape)


def test_block_cols_must_divide_units():
    with pytest.raises(ValueError, match="block columns must divide `units`"):
        mtl.HyperGridDense(units=6, block_shape=(2, 4))


def test_block_rows_must_divide_features():
    layer = mtl.HyperGridDense(units=4, block_shape=(3, 2))
    with pytest.raises(ValueError, match="block rows must divide the input features"):
        layer(_random((2, 8), 12), _random((2, 3), 13))


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"units": 0}, "units"),
        ({"units": 4, "mode": "lg"}, "mode"),
        ({"units": 4, "mode": "LGL"}, "mode"),
        ({"units": 4, "use_bias": "False"}, "`use_bias` must be True or False"),
    ],
)
def test_invalid_arguments_rejected(arguments, message):
    with pytest.raises(ValueError, match=message):
        mtl.HyperGridDense(block_shape=(2, 2), **arguments)


def test_missing_conditioning_rejected():
    layer = mtl.HyperGridDense(units=4, block_shape=(2, 2), mode="GL")
    with pytest.raises(ValueError, match="needs `conditioning`"):
        layer(_random((2, 4), 14))


def test_conditioning_with_time_axis_rejected():
    layer = mtl.HyperGridDense(units=4, block_shape=(2, 2))
    with pytest.raises(ValueError, match="conditioning_dim"):
        layer(_random((2, 3, 4), 15), _random((2, 3, 5), 16))


def test_conditioning_batch_mismatch_rejected():
    layer = mtl.HyperGridDense(units=4, block_shape=(2, 2))
    with pytest.raises(ValueError, match="same batch size"):
        layer(_random((2, 4), 17), _random((3, 5), 18))


def test_config_round_trip():
    layer = mtl.HyperGridDense(
        units=8,
        block_shape=(4, 2),
        mode="GL",
        activation="gelu",
        use_bias=False,
        kernel_regularizer="l2",
        name="grid",
    )
    config = layer.get_config()
    clone = mtl.HyperGridDense.from_config(config)
    assert clone.get_config() == config
    assert config["block_shape"] == [4, 2]
    assert config["mode"] == "GL"


def _tiny_model(mode="LG"):
    tokens = keras.Input((3, 8), name="tokens")
    task_id = keras.Input((), dtype="int32", name="task_id")
    task_vector = mtl.TaskEmbedding(num_tasks=3, output_dim=4)(task_id)
    hidden = mtl.HyperGridDense(units=6, block_shape=(4, 3), mode=mode)(tokens, task_vector)
    return keras.Model({"tokens": tokens, "task_id": task_id}, hidden)


def _tiny_batch():
    return {"tokens": _random((4, 3, 8), 19), "task_id": np.array([0, 1, 2, 1], "int32")}


@pytest.mark.parametrize("mode", ["LG", "GL"])
def test_keras_file_reloads(tmp_path, mode):
    model = _tiny_model(mode)
    batch = _tiny_batch()
    expected = model.predict_on_batch(batch)
    path = tmp_path / "hypergrid.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(reloaded.predict_on_batch(batch), expected, rtol=1e-6)


def test_saved_model_export_with_task_id(tmp_path):
    import tensorflow as tf

    model = _tiny_model()
    batch = _tiny_batch()
    expected = model.predict_on_batch(batch)

    module = tf.Module()
    module.model = model
    module.serve = tf.function(
        lambda tokens, task_id: {"outputs": model({"tokens": tokens, "task_id": task_id})},
        input_signature=[
            tf.TensorSpec((None, 3, 8), tf.float32, name="tokens"),
            tf.TensorSpec((None,), tf.int32, name="task_id"),
        ],
    )
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.serve})

    signature = tf.saved_model.load(str(tmp_path)).signatures["serving_default"]
    served = signature(tokens=tf.constant(batch["tokens"]), task_id=tf.constant(batch["task_id"]))
    np.testing.assert_allclose(served["outputs"].numpy(), expected, rtol=1e-5, atol=1e-6)


def _fit_two_scale_tasks(use_hypergrid):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,))
    task_id = keras.Input((), dtype="int32")
    if use_hypergrid:
        task_vector = mtl.TaskEmbedding(num_tasks=2, output_dim=4)(task_id)
        layer = mtl.HyperGridDense(units=1, block_shape=(1, 1), mode="LG")
        outputs = layer(inputs, task_vector)
    else:
        outputs = keras.layers.Dense(1)(inputs)
    model = keras.Model([inputs, task_id], outputs)
    model.compile(keras.optimizers.Adam(0.05), "mse")
    features = np.abs(_random((256, 8), 20))
    tasks = np.arange(256, dtype="int32") % 2
    targets = np.where(tasks == 0, 1.0, 0.1) * features.sum(axis=1)
    history = model.fit([features, tasks], targets, epochs=60, batch_size=32, verbose=0)
    return history.history["loss"][-1]


def test_gate_fits_task_specific_scales():
    # Task 1's target is 0.1 times task 0's for the same inputs. A Dense layer can only fit
    # their average, while the task-conditioned gate can scale the kernel per task.
    hypergrid_loss = _fit_two_scale_tasks(use_hypergrid=True)
    dense_loss = _fit_two_scale_tasks(use_hypergrid=False)
    assert hypergrid_loss < 0.1 * dense_loss


def test_hypergrid_dense_rejects_other_feature_count():
    layer = mtl.HyperGridDense(4, block_shape=(2, 2))
    conditioning = np.ones((2, 3), "float32")
    layer(np.ones((2, 4), "float32"), conditioning)
    with pytest.raises(ValueError, match="expected axis -1 of input shape to have value 4"):
        layer(np.ones((2, 6), "float32"), conditioning)


@pytest.mark.parametrize("mode", ["LG", "GG"])
def test_hypergrid_dense_symbolic_reuse_checks_features(mode):
    layer = mtl.HyperGridDense(4, block_shape=(2, 2), mode=mode)
    conditioning = keras.Input((3,))
    layer(keras.Input((3, 4)), conditioning)
    with pytest.raises(ValueError, match=OTHER_FEATURES):
        layer(keras.Input((3, 6)), conditioning)


def test_hypergrid_dense_other_conditioning_size_named():
    layer = mtl.HyperGridDense(4, block_shape=(2, 2))
    inputs = np.ones((2, 4), "float32")
    layer(inputs, np.ones((2, 3), "float32"))
    with pytest.raises(ValueError, match="was built for conditioning with 3 features"):
        layer(inputs, np.ones((2, 5), "float32"))


def test_conditioning_batch_checked_after_build():
    layer = mtl.HyperGridDense(8, block_shape=(4, 4))
    tokens = np.zeros((2, 3, 8), "float32")
    layer(tokens, np.zeros((2, 5), "float32"))
    # A conditioning batch of 1 would broadcast in the block forms; every call rejects it.
    with pytest.raises(ValueError, match="same batch size"):
        layer(tokens, np.zeros((1, 5), "float32"))


@pytest.mark.skipif(
    backend_name() != "tensorflow", reason="run-time assertions exist on the TensorFlow backend"
)
@pytest.mark.parametrize("compiled_kernel", [True, False])
def test_conditioning_batch_checked_at_run_time(compiled_kernel):
    import tensorflow as tf

    layer = mtl.HyperGridDense(32, block_shape=(16, 16), compiled_kernel=compiled_kernel)
    tokens = np.zeros((2, 16, 32), "float32")
    layer(tokens, np.zeros((2, 5), "float32"))
    # Traced with an unknown batch, so only the run can tell; both paths give one message.
    call = tf.function(
        lambda x, c: layer(x, c, training=True),
        input_signature=[
            tf.TensorSpec((None, 16, 32), tf.float32),
            tf.TensorSpec((None, 5), tf.float32),
        ],
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="same batch size"):
        call(tokens, np.zeros((1, 5), "float32"))
