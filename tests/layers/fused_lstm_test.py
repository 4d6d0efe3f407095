"""Tests for SequentialExpert's fused TensorFlow kernel against its keras.ops loop."""

import numpy as np
import pytest

import mtl_layers as mtl
from mtl_layers.compat import backend_name, ops

FEATURES = 5
TIME = 7
# Right padding, left padding, no valid step, gaps, all valid, one valid step in the middle.
MASK = np.array(
    [
        [1, 1, 1, 0, 0, 0, 0],
        [0, 0, 1, 1, 1, 1, 1],
        [0, 0, 0, 0, 0, 0, 0],
        [1, 0, 1, 1, 0, 1, 0],
        [1, 1, 1, 1, 1, 1, 1],
        [0, 0, 0, 1, 0, 0, 0],
    ],
    dtype=bool,
)

ON_TENSORFLOW = backend_name() == "tensorflow"
tensorflow_only = pytest.mark.skipif(
    not ON_TENSORFLOW, reason="the fused kernel is a TensorFlow op; other backends run the loop"
)


def _inputs(seed=0):
    # A scale of 3 drives cell states past 3, where a clipping kernel would differ.
    return 3.0 * np.random.default_rng(seed).normal(size=(len(MASK), TIME, FEATURES)).astype(
        "float32"
    )


def _layer_pair(return_sequences, **kwargs):
    """Return (fused, loop) layers with the same weights."""
    fused = mtl.SequentialExpert(
        3, 4, return_sequences=return_sequences, use_fused_kernel=True, **kwargs
    )
    loop = mtl.SequentialExpert(
        3, 4, return_sequences=return_sequences, use_fused_kernel=False, **kwargs
    )
    fused.build((None, TIME, FEATURES))
    loop.build((None, TIME, FEATURES))
    # Random biases, so a mix-up of the gate layout cannot hide behind zeros and ones.
    weights = [
        np.random.default_rng(index).normal(scale=0.5, size=weight.shape).astype("float32")
        for index, weight in enumerate(fused.get_weights())
    ]
    fused.set_weights(weights)
    loop.set_weights(weights)
    return fused, loop


def _gradients_of_both(gradients, fused, loop, x, mask):
    """Return `{"fused": ..., "loop": ...}`, the gradients of a squared-output loss."""
    results = {}
    for name, layer in (("fused", fused), ("loop", loop)):
        results[name] = gradients(
            lambda inputs, layer=layer: ops.sum(ops.square(layer(inputs, mask=mask))),
            layer.trainable_weights,
            [x],
        )
    return results


@tensorflow_only
@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("use_mask", [True, False])
@pytest.mark.parametrize("use_bias", [True, False])
def test_outputs_equal_loop(return_sequences, use_mask, use_bias):
    fused, loop = _layer_pair(return_sequences, use_bias=use_bias)
    mask = MASK if use_mask else None
    x = _inputs()
    np.testing.assert_allclose(
        ops.convert_to_numpy(fused(x, mask=mask)),
        ops.convert_to_numpy(loop(x, mask=mask)),
        rtol=1e-5,
        atol=1e-6,
    )


@tensorflow_only
def test_empty_rows_give_zeros():
    fused, _ = _layer_pair(return_sequences=True)
    outputs = ops.convert_to_numpy(fused(_inputs(), mask=MASK))
    np.testing.assert_array_equal(outputs[2], np.zeros((TIME, 3, 4)))
    np.testing.assert_array_equal(outputs[1, :2], np.zeros((2, 3, 4)))


@tensorflow_only
def test_all_rows_empty():
    fused, _ = _layer_pair(return_sequences=False)
    outputs = ops.convert_to_numpy(fused(_inputs(), mask=np.zeros_like(MASK)))
    np.testing.assert_array_equal(outputs, np.zeros((len(MASK), 3, 4)))


@tensorflow_only
@pytest.mark.parametrize("return_sequences", [True, False])
def test_gradients_equal_loop(gradients, return_sequences):
    fused, loop = _layer_pair(return_sequences)
    x = _inputs()
    x[~MASK] = np.nan
    results = _gradients_of_both(gradients, fused, loop, x, MASK)
    for fused_gradient, loop_gradient in zip(results["fused"], results["loop"]):
        fused_gradient = ops.convert_to_numpy(fused_gradient)
        assert np.isfinite(fused_gradient).all()
        np.testing.assert_allclose(
            fused_gradient, ops.convert_to_numpy(loop_gradient), rtol=1e-4, atol=1e-5
        )


@tensorflow_only
def test_xla_falls_back_to_loop():
    import tensorflow as tf

    auto = mtl.SequentialExpert(3, 4)
    auto.build((None, TIME, FEATURES))
    loop = mtl.SequentialExpert(3, 4, use_fused_kernel=False)
    loop.build((None, TIME, FEATURES))
    loop.set_weights(auto.get_weights())
    compiled = tf.function(lambda x, mask: auto(x, mask=mask), jit_compile=True)
    x = _inputs()
    np.testing.assert_allclose(
        compiled(tf.constant(x), tf.constant(MASK)).numpy(),
        loop(x, mask=MASK).numpy(),
        rtol=1e-5,
        atol=1e-6,
    )
    required = mtl.SequentialExpert(3, 4, use_fused_kernel=True)
    with pytest.raises(ValueError, match="XLA"):
        tf.function(lambda x: required(x), jit_compile=True)(tf.constant(x))


@tensorflow_only
@pytest.mark.parametrize(
    "kwargs, reason",
    [
        ({"activation": "relu"}, "activation='tanh'"),
        ({"recurrent_activation": "hard_sigmoid"}, "recurrent_activation='sigmoid'"),
        ({"dtype": "float64"}, "float32 only"),
    ],
)
def test_required_kernel_names_the_reason(kwargs, reason):
    with pytest.raises(ValueError, match=reason):
        mtl.SequentialExpert(2, 3, use_fused_kernel=True, **kwargs)


@tensorflow_only
def test_recurrent_dropout_uses_loop_in_training():
    layer = mtl.SequentialExpert(2, 3, recurrent_dropout=0.5, use_fused_kernel=True)
    x = _inputs()
    # Outside training the recurrent dropout is off, so the fused kernel applies.
    assert layer(x, training=False).shape == (len(MASK), TIME, 2, 3)
    with pytest.raises(ValueError, match="recurrent_dropout"):
        layer(x, training=True)
    auto = mtl.SequentialExpert(2, 3, recurrent_dropout=0.5)
    assert np.isfinite(ops.convert_to_numpy(auto(x, mask=MASK, training=True))).all()


@pytest.mark.skipif(ON_TENSORFLOW, reason="checks the error on the JAX and PyTorch backends")
def test_required_kernel_on_other_backend():
    with pytest.raises(ValueError, match="Keras backend"):
        mtl.SequentialExpert(2, 3, use_fused_kernel=True)


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_invalid_choice(value):
    with pytest.raises(ValueError, match="use_fused_kernel"):
        mtl.SequentialExpert(2, 3, use_fused_kernel=value)


@pytest.mark.parametrize("value", ["auto", True, False] if ON_TENSORFLOW else ["auto", False])
def test_config_keeps_choice(value):
    layer = mtl.SequentialExpert(2, 3, use_fused_kernel=value)
    restored = mtl.SequentialExpert.from_config(layer.get_config())
    assert restored.use_fused_kernel == value


def _large_batch(batch):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(batch, 4, FEATURES)).astype("float32")
    mask = rng.random((batch, 4)) < 0.7
    return x, mask


@tensorflow_only
@pytest.mark.parametrize("batch", [129, 300])
def test_row_chunks_equal_loop(gradients, batch):
    from mtl_layers.layers import _fused_lstm

    assert batch > _fused_lstm.ROWS_PER_OP
    x, mask = _large_batch(batch)
    fused, loop = _layer_pair(return_sequences=True)
    np.testing.assert_allclose(
        ops.convert_to_numpy(fused(x, mask=mask)),
        ops.convert_to_numpy(loop(x, mask=mask)),
        rtol=1e-5,
        atol=1e-6,
    )
    results = _gradients_of_both(gradients, fused, loop, x, mask)
    for fused_gradient, loop_gradient in zip(results["fused"], results["loop"]):
        np.testing.assert_allclose(
            ops.convert_to_numpy(fused_gradient),
            ops.convert_to_numpy(loop_gradient),
            rtol=1e-4,
            atol=1e-4,
        )


@tensorflow_only
@pytest.mark.parametrize("known_batch", [True, False], ids=["static batch", "unknown batch"])
def test_chunk_of_empty_rows_equals_loop(known_batch):
    import tensorflow as tf

    # Rows are sorted by length before chunking, so the last chunks of 300 rows, half of
    # them empty, have no valid step at all and run the kernel for zero steps.
    x, mask = _large_batch(300)
    mask[::2] = False
    fused, loop = _layer_pair(return_sequences=True)
    signature = [
        tf.TensorSpec((None if not known_batch else 300, None, FEATURES), tf.float32),
        tf.TensorSpec((None if not known_batch else 300, None), tf.bool),
    ]
    function = tf.function(lambda x, mask: fused(x, mask=mask), input_signature=signature)
    np.testing.assert_allclose(
        function(tf.constant(x), tf.constant(mask)).numpy(),
        ops.convert_to_numpy(loop(x, mask=mask)),
        rtol=1e-5,
        atol=1e-6,
    )


@tensorflow_only
@pytest.mark.parametrize("batch", [5, 300])
def test_unknown_batch_size(batch):
    import tensorflow as tf

    fused, loop = _layer_pair(return_sequences=False)
    function = tf.function(
        lambda x, mask: fused(x, mask=mask),
        input_signature=[
            tf.TensorSpec((None, None, FEATURES), tf.float32),
            tf.TensorSpec((None, None), tf.bool),
        ],
    )
    x, mask = _large_batch(batch)
    np.testing.assert_allclose(
        function(tf.constant(x), tf.constant(mask)).numpy(),
        loop(x, mask=mask).numpy(),
        rtol=1e-5,
        atol=1e-6,
    )
