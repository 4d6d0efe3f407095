"""Tests for HyperGridDense's compiled gated product against a per-example reference.

The op runs training calls, and inference calls in eager mode or in Keras's `evaluate`
and `predict`, on the TensorFlow backend. Where it cannot be built, these
tests skip with the reason, unless `MTL_LAYERS_REQUIRE_COMPILED_KERNELS=1` (as `.ci/run`
sets) makes that a failure.
"""

import os

import numpy as np
import pytest

import mtl_layers as mtl
from mtl_layers.compat import IS_KERAS_2, backend_name, keras, ops

pytestmark = pytest.mark.skipif(
    backend_name() != "tensorflow", reason="the compiled gated product is a TensorFlow op"
)


@pytest.fixture(scope="module", autouse=True)
def compiled_module():
    """Skip (or fail in CI) when the kernels cannot be built on this machine."""
    from mtl_layers.layers import _compiled_hypergrid, _compiled_lstm

    reason = _compiled_hypergrid.unavailable_reason(training=True)
    if reason is not None:
        message = f"the compiled kernels are not in use: {reason}"
        if os.environ.get("MTL_LAYERS_REQUIRE_COMPILED_KERNELS") == "1":
            pytest.fail(f"{message} (MTL_LAYERS_REQUIRE_COMPILED_KERNELS=1 makes this a failure)")
        pytest.skip(message)
    return _compiled_lstm._load()


@pytest.fixture
def product_calls(monkeypatch):
    """Count the calls that trace the compiled gated product."""
    from mtl_layers.layers import _compiled_hypergrid

    calls = []
    original = _compiled_hypergrid.run

    def counting_run(*args):
        calls.append(tuple(args[0].shape))
        return original(*args)

    monkeypatch.setattr(_compiled_hypergrid, "run", counting_run)
    return calls


def _reference(x, kernel, gate, block_shape):
    """y_b = x_b (W * expand(gate_b)), with every example's gated kernel formed explicitly."""
    expanded = np.repeat(np.repeat(gate, block_shape[0], axis=1), block_shape[1], axis=2)
    return np.einsum("btf,bfu->btu", x.astype("float64"), kernel[None] * expanded)


@pytest.mark.parametrize(
    "batch, positions, features, units, block_shape",
    [
        (3, 16, 64, 32, (16, 8)),  # blocks narrower than a panel of 32 columns
        (2, 17, 96, 64, (32, 64)),  # positions not a multiple of the 12-row tile
        (1, 30, 128, 64, (128, 32)),
        (2, 19, 64, 96, (4, 16)),  # block rows below the 12-row tile
        (5, 24, 32, 32, (32, 32)),  # one block
        (2, 16, 64, 128, (8, 128)),  # one column block over four panels
    ],
)
def test_op_equals_per_example_reference(compiled_module, batch, positions, features, units, block_shape):
    import tensorflow as tf

    rng = np.random.default_rng(batch * positions)
    grid = (features // block_shape[0], units // block_shape[1])
    x = rng.normal(size=(batch, positions, features)).astype("float32")
    kernel = rng.normal(size=(features, units)).astype("float32")
    gate = rng.uniform(size=(batch,) + grid).astype("float32")
    output_grad = rng.normal(size=(batch, positions, units)).astype("float32")

    outputs = compiled_module.mtl_layers_hyper_grid_matmul(x, kernel, gate).numpy()
    np.testing.assert_allclose(outputs, _reference(x, kernel, gate, block_shape), rtol=1e-4, atol=1e-4)

    # The reference gradients, from TensorFlow's gradient of the explicit form.
    x_t, kernel_t, gate_t = (tf.constant(value) for value in (x, kernel, gate))
    with tf.GradientTape() as tape:
        tape.watch([x_t, kernel_t, gate_t])
        expanded = tf.repeat(tf.repeat(gate_t, block_shape[0], axis=1), block_shape[1], axis=2)
        reference = tf.einsum("btf,bfu->btu", x_t, kernel_t[None] * expanded)
    expected = tape.gradient(reference, [x_t, kernel_t, gate_t], output_gradients=output_grad)
    gradients = compiled_module.mtl_layers_hyper_grid_matmul_grad(x, kernel, gate, output_grad)
    for name, gradient, want in zip(("inputs", "kernel", "gate"), gradients, expected):
        scale = np.abs(want.numpy()).max()
        np.testing.assert_allclose(gradient.numpy(), want.numpy(), atol=1e-5 * scale, err_msg=name)


def test_op_rejects_sizes_it_does_not_support(compiled_module):
    import tensorflow as tf

    x = np.zeros((2, 16, 48), "float32")
    with pytest.raises(tf.errors.InvalidArgumentError, match="multiples of 32"):
        compiled_module.mtl_layers_hyper_grid_matmul(x, np.zeros((48, 32), "float32"), np.zeros((2, 3, 1), "float32"))
    x = np.zeros((2, 16, 64), "float32")
    with pytest.raises(tf.errors.InvalidArgumentError, match="whole blocks"):
        compiled_module.mtl_layers_hyper_grid_matmul(x, np.zeros((64, 32), "float32"), np.zeros((2, 3, 1), "float32"))
    with pytest.raises(tf.errors.InvalidArgumentError, match="gate must be"):
        compiled_module.mtl_layers_hyper_grid_matmul(x, np.zeros((64, 32), "float32"), np.zeros((3, 2, 1), "float32"))


def _layer_pair(mode, calls, units=64, block_shape=(16, 32), features=64):
    """Return (compiled, block form) layers with the same weights.

    The eager calls that build them may run the op; `calls` (from `product_calls`) is
    emptied afterwards, so that tests count only their own calls.
    """
    compiled = mtl.HyperGridDense(units, block_shape=block_shape, mode=mode, activation="gelu")
    blocks = mtl.HyperGridDense(
        units, block_shape=block_shape, mode=mode, activation="gelu", compiled_kernel=False
    )
    x, conditioning = _inputs(features=features)
    compiled(x, conditioning)
    blocks(x, conditioning)
    rng = np.random.default_rng(1)
    weights = [rng.normal(size=w.shape).astype("float32") for w in compiled.get_weights()]
    compiled.set_weights(weights)
    blocks.set_weights(weights)
    del calls[:]
    return compiled, blocks


def _inputs(batch=4, positions=20, features=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, positions, features)).astype("float32")
    conditioning = rng.normal(size=(batch, 6)).astype("float32")
    return x, conditioning


def _training_call(layer, x, conditioning):
    import tensorflow as tf

    x, conditioning = tf.constant(x), tf.constant(conditioning)
    with tf.GradientTape() as tape:
        tape.watch([x, conditioning])
        outputs = layer(x, conditioning, training=True)
        weights = tf.reshape(tf.linspace(-1.0, 1.0, tf.size(outputs)), tf.shape(outputs))
        loss = tf.reduce_sum(tf.sin(outputs)) + tf.reduce_sum(outputs * weights)
    gradients = tape.gradient(loss, [x, conditioning] + layer.trainable_weights)
    return outputs.numpy(), [gradient.numpy() for gradient in gradients]


@pytest.mark.parametrize("mode", ["LG", "GL", "LL"])
def test_training_call_equals_block_form(product_calls, mode):
    compiled, blocks = _layer_pair(mode, product_calls)
    x, conditioning = _inputs()
    outputs, gradients = _training_call(compiled, x, conditioning)
    assert product_calls, "the training call did not run the compiled product"
    expected_outputs, expected_gradients = _training_call(blocks, x, conditioning)
    np.testing.assert_allclose(outputs, expected_outputs, rtol=1e-4, atol=1e-4)
    # Gradients reach the inputs, the conditioning, the kernel, the bias, and the local and
    # global parameters.
    assert len(gradients) == len(compiled.trainable_weights) + 2
    for gradient, expected in zip(gradients, expected_gradients):
        assert np.abs(gradient).max() > 0
        np.testing.assert_allclose(gradient, expected, atol=1e-4 * np.abs(expected).max())


def test_task_ids_with_two_vectors_per_task_rejected(product_calls):
    import tensorflow as tf

    compiled, _ = _layer_pair("LG", product_calls)
    x, conditioning = _inputs()
    with pytest.raises(tf.errors.InvalidArgumentError, match="more than one vector"):
        compiled(x, conditioning, np.array([0, 1, 0, 1], "int32"), training=True)


def test_many_examples_per_task_take_task_kernels(product_calls):
    layer = mtl.HyperGridDense(64, block_shape=(16, 32), num_tasks=2)
    x, _ = _inputs(batch=8)
    task_ids = np.array([0, 1] * 4, "int32")
    conditioning = np.random.default_rng(3).normal(size=(2, 6)).astype("float32")[task_ids]
    layer(x, conditioning, task_ids, training=True)
    assert not product_calls


def test_task_ids_training_call_compiled(product_calls):
    compiled, blocks = _layer_pair("LG", product_calls)
    x, _ = _inputs()
    task_ids = np.array([0, 2, 0, 1], "int32")
    conditioning = np.random.default_rng(3).normal(size=(3, 6)).astype("float32")[task_ids]
    outputs = compiled(x, conditioning, task_ids, training=True)
    assert product_calls
    np.testing.assert_allclose(
        ops.convert_to_numpy(outputs),
        ops.convert_to_numpy(blocks(x, conditioning, task_ids, training=True)),
        rtol=1e-4,
        atol=1e-4,
    )


@pytest.mark.parametrize(
    "features, units, block_shape, positions, dtype",
    [
        (48, 64, (16, 32), 20, "float32"),  # features not a multiple of 32
        (64, 48, (16, 16), 20, "float32"),  # units not a multiple of 32
        (64, 64, (16, 32), 8, "float32"),  # too few positions
        (256, 64, (256, 32), 20, "float32"),  # blocks of 256 rows: the block forms are cheap
        (64, 64, (16, 32), 20, "mixed_float16"),
    ],
)
def test_other_shapes_take_the_block_forms(product_calls, features, units, block_shape, positions, dtype):
    layer = mtl.HyperGridDense(units, block_shape=block_shape, dtype=dtype)
    x, conditioning = _inputs(positions=positions, features=features)
    outputs = layer(x, conditioning, training=True)
    assert tuple(outputs.shape) == (4, positions, units)
    assert not product_calls


def test_eager_inference_call_runs_the_op(product_calls):
    compiled, blocks = _layer_pair("LG", product_calls)
    x, conditioning = _inputs()
    np.testing.assert_allclose(
        ops.convert_to_numpy(compiled(x, conditioning)),
        ops.convert_to_numpy(blocks(x, conditioning)),
        rtol=1e-5,
        atol=1e-5,
    )
    assert product_calls, "an eager inference call did not run the compiled product"


def _functional_model(layer):
    tokens = keras.Input((20, 64))
    conditioning = keras.Input((6,))
    model = keras.Model([tokens, conditioning], layer(tokens, conditioning))
    model.compile(optimizer="sgd", loss="mse")
    return model


def test_predict_and_evaluate_run_the_op(tmp_path, product_calls):
    import tensorflow as tf

    compiled, blocks = _layer_pair("LG", product_calls)
    model = _functional_model(compiled)
    x, conditioning = _inputs()
    expected = ops.convert_to_numpy(blocks(x, conditioning))

    np.testing.assert_allclose(
        model.predict([x, conditioning], verbose=0), expected, rtol=1e-4, atol=1e-4
    )
    assert product_calls, "predict did not run the compiled product"
    del product_calls[:]
    model.evaluate([x, conditioning], expected, verbose=0)
    assert product_calls, "evaluate did not run the compiled product"

    # Keras keeps its step functions out of SavedModels, so the op never reaches one.
    tf.saved_model.save(model, str(tmp_path / "saved"))
    saved = (tmp_path / "saved" / "saved_model.pb").read_bytes()
    assert b"MtlLayers" not in saved
    for name in (b"one_step_on_data", b"predict_function", b"test_function"):
        assert name not in saved


def test_inference_in_a_users_function_skips_the_op(tmp_path, product_calls):
    import tensorflow as tf

    compiled, blocks = _layer_pair("LG", product_calls)
    x, conditioning = _inputs()
    serve = tf.function(lambda a, b: compiled(a, b))
    np.testing.assert_allclose(
        serve(x, conditioning).numpy(),
        ops.convert_to_numpy(blocks(x, conditioning)),
        rtol=1e-5,
        atol=1e-5,
    )
    assert not product_calls

    # Saving traces the function again under TensorFlow's save context. Either trace
    # would leave the op out of the saved graph.
    module = tf.Module()
    module.layer = compiled
    module.serve = serve
    tf.saved_model.save(module, str(tmp_path / "saved"))
    assert b"MtlLayers" not in (tmp_path / "saved" / "saved_model.pb").read_bytes()


def test_compiled_kernel_argument_is_checked_and_saved():
    layer = mtl.HyperGridDense(32, block_shape=(16, 16), compiled_kernel=False)
    assert layer.get_config()["compiled_kernel"] is False
    assert mtl.HyperGridDense.from_config(layer.get_config()).compiled_kernel is False
    with pytest.raises(ValueError, match="`compiled_kernel` must be True or False"):
        mtl.HyperGridDense(32, compiled_kernel="yes")


def _transformer():
    tasks = [
        mtl.tasks.TaskSpec("a", kind="binary", tower_units=()),
        mtl.tasks.TaskSpec("b", kind="regression", tower_units=()),
    ]
    model = mtl.models.hypergrid_transformer(
        tasks, vocab_size=50, sequence_length=20, d_model=32, num_heads=2, d_ff=64,
        num_layers=1, block_shape=(16, 16), conditioning_source="prefix",
    )
    return model, tasks


def test_transformer_fit_and_export(tmp_path, product_calls):
    model, tasks = _transformer()
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 50, size=(32, 20)).astype("int32")
    task = (np.arange(32) % 2).astype("int32")
    labels = {"a": (tokens[:, 0] % 2).astype("float32"), "b": tokens[:, 1].astype("float32") / 50}
    model.compile(optimizer="adam", loss={t.name: t.loss() for t in tasks})
    model.fit({"token_ids": tokens, "task_id": task}, labels, epochs=1, batch_size=16, verbose=0)
    assert product_calls, "fit did not run the compiled product"

    version = mtl.export.export_saved_model(model, tmp_path / "model", version=1)
    assert b"MtlLayers" not in (version / "saved_model.pb").read_bytes()


@pytest.mark.skipif(not IS_KERAS_2, reason="tf_keras saves SavedModels with traced calls")
def test_keras_2_saved_model_without_op(tmp_path, product_calls):
    compiled, _ = _layer_pair("LG", product_calls)
    tokens = keras.Input((20, 64))
    conditioning = keras.Input((6,))
    model = keras.Model([tokens, conditioning], compiled(tokens, conditioning))
    model.compile(optimizer="sgd", loss="mse")
    x, c = _inputs()
    model.fit([x, c], np.zeros((4, 20, 64), "float32"), epochs=1, verbose=0)
    model.save(str(tmp_path / "saved"), save_format="tf")
    assert b"MtlLayers" not in (tmp_path / "saved" / "saved_model.pb").read_bytes()
