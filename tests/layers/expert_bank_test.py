"""Tests of ExpertBank: shapes, the per-expert reference, gradients, serialization."""

import os

import numpy as np
import pytest

import mtl_layers as mtl
from mtl_layers.compat import IS_KERAS_2, keras, ops

# Keras 3 raises from the InputSpec; tf_keras skips it for symbolic inputs, and the layer
# raises its own message.
OTHER_FEATURES = "expected axis -1 of input shape to have value|was built for inputs with"


def _reference(layer, inputs):
    """Compute each expert separately with NumPy from the layer's weights."""
    kernels = [ops.convert_to_numpy(k) for k in layer.kernels]
    biases = [ops.convert_to_numpy(b) for b in layer.biases]
    outputs = []
    for expert in range(layer.num_experts):
        hidden = inputs @ kernels[0][:, expert, :]
        if biases:
            hidden = hidden + biases[0][expert]
        hidden = np.maximum(hidden, 0.0)
        for depth in range(1, len(kernels)):
            hidden = hidden @ kernels[depth][expert]
            if biases:
                hidden = hidden + biases[depth][expert]
            hidden = np.maximum(hidden, 0.0)
        outputs.append(hidden)
    return np.stack(outputs, axis=-2)


@pytest.mark.parametrize("units", [8, [8], [16, 4], [6, 5, 3]])
@pytest.mark.parametrize("use_bias", [True, False])
def test_expert_bank_matches_reference(units, use_bias):
    layer = mtl.ExpertBank(3, units, use_bias=use_bias, bias_initializer="random_normal")
    inputs = np.random.default_rng(0).normal(size=(5, 7)).astype("float32")
    outputs = ops.convert_to_numpy(layer(inputs))
    np.testing.assert_allclose(outputs, _reference(layer, inputs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "input_shape, units, expected",
    [
        ((4, 10), 8, (4, 5, 8)),
        ((4, 10), [8, 3], (4, 5, 3)),
        ((4, 6, 10), [8, 3], (4, 6, 5, 3)),
        ((2, 3, 4, 10), 2, (2, 3, 4, 5, 2)),
    ],
)
def test_expert_bank_output_shapes(input_shape, units, expected):
    layer = mtl.ExpertBank(5, units)
    outputs = layer(np.ones(input_shape, "float32"))
    assert tuple(outputs.shape) == expected
    assert tuple(layer.compute_output_shape(input_shape)) == expected


def test_expert_bank_rank3_matches_rank2():
    layer = mtl.ExpertBank(4, [6, 3])
    inputs = np.random.default_rng(1).normal(size=(2, 5, 7)).astype("float32")
    batched = ops.convert_to_numpy(layer(inputs))
    flat = ops.convert_to_numpy(layer(inputs.reshape(10, 7))).reshape(2, 5, 4, 3)
    np.testing.assert_allclose(batched, flat, rtol=1e-5, atol=1e-6)


def test_expert_bank_experts_start_different():
    layer = mtl.ExpertBank(4, [8, 8])
    layer.build((None, 6))
    for kernel, axis in ((layer.kernels[0], 1), (layer.kernels[1], 0)):
        values = np.moveaxis(ops.convert_to_numpy(kernel), axis, 0).reshape(4, -1)
        for first in range(4):
            for second in range(first + 1, 4):
                assert not np.allclose(values[first], values[second])


def test_expert_bank_seeded_initializer_reproducible():
    def kernel_values():
        layer = mtl.ExpertBank(3, 4, kernel_initializer=keras.initializers.GlorotUniform(seed=7))
        layer.build((None, 5))
        return ops.convert_to_numpy(layer.kernels[0])

    first, second = kernel_values(), kernel_values()
    np.testing.assert_array_equal(first, second)
    assert not np.allclose(first[:, 0], first[:, 1])


def test_expert_bank_per_expert_glorot_scale():
    # Glorot uniform bound for one expert's (fan_in, fan_out) = (64, 64) is sqrt(6/128).
    layer = mtl.ExpertBank(16, 64)
    layer.build((None, 64))
    kernel = ops.convert_to_numpy(layer.kernels[0])
    assert np.abs(kernel).max() <= np.sqrt(6.0 / 128.0) + 1e-6
    assert np.abs(kernel).max() > 0.9 * np.sqrt(6.0 / 128.0)


def test_expert_bank_gradients_reach_every_expert(gradients):
    layer = mtl.ExpertBank(4, [5, 3])
    inputs = np.random.default_rng(2).normal(size=(16, 6)).astype("float32")
    layer.build(inputs.shape)
    assert len(layer.trainable_weights) == 4
    # The first kernel is (features, experts, units); the other weights start with experts.
    weights = [layer.kernels[0], layer.kernels[1], layer.biases[0], layer.biases[1]]
    expert_axes = [1, 0, 0, 0]
    results = gradients(lambda x: ops.sum(ops.square(layer(x))), weights, [inputs])
    for weight, gradient, expert_axis in zip(weights, results, expert_axes):
        per_expert = np.moveaxis(np.abs(gradient), expert_axis, 0).reshape(4, -1).sum(axis=1)
        assert np.all(per_expert > 0), weight.name


def test_expert_bank_dropout_only_in_training():
    layer = mtl.ExpertBank(2, 32, dropout=0.5)
    inputs = np.ones((8, 4), "float32")
    inference = ops.convert_to_numpy(layer(inputs, training=False))
    np.testing.assert_allclose(inference, ops.convert_to_numpy(layer(inputs, training=False)))
    training = ops.convert_to_numpy(layer(inputs, training=True))
    assert np.mean(training == 0) > np.mean(inference == 0)


def test_expert_bank_get_config_round_trip():
    layer = mtl.ExpertBank(
        3, [4, 2], activation="tanh", dropout=0.1, use_bias=False, kernel_regularizer="l2"
    )
    config = layer.get_config()
    clone = mtl.ExpertBank.from_config(config)
    assert clone.get_config() == config
    assert config["units"] == [4, 2]
    assert config["num_experts"] == 3


def test_expert_bank_extreme_inputs_finite():
    layer = mtl.ExpertBank(4, [8, 4])
    inputs = np.random.default_rng(3).choice([-1e4, 1e4], size=(8, 6)).astype("float32")
    assert np.all(np.isfinite(ops.convert_to_numpy(layer(inputs))))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_experts": 0, "units": 4}, "`num_experts` must be an integer >= 1"),
        ({"num_experts": 2.5, "units": 4}, "`num_experts` must be an integer >= 1"),
        ({"num_experts": 2, "units": []}, "`units` must be an integer or a non-empty list"),
        ({"num_experts": 2, "units": [4, 0]}, "Every entry of `units`"),
        ({"num_experts": 2, "units": 4, "dropout": 1.0}, "`dropout` must be a float in the range"),
        ({"num_experts": 2, "units": 4, "use_bias": "False"}, "`use_bias` must be True or False"),
    ],
)
def test_expert_bank_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        mtl.ExpertBank(**kwargs)


def test_expert_bank_rejects_rank1_input():
    layer = mtl.ExpertBank(2, 4)
    with pytest.raises(ValueError, match="rank >= 2"):
        layer.build((8,))


def test_expert_bank_rejects_unknown_feature_axis():
    layer = mtl.ExpertBank(2, 4)
    with pytest.raises(ValueError, match="must be known"):
        layer.build((8, None))


def test_expert_bank_keras_file_round_trip(tmp_path):
    inputs = keras.Input((6,))
    outputs = keras.layers.Flatten()(mtl.ExpertBank(3, [4, 2], dropout=0.2)(inputs))
    model = keras.Model(inputs, outputs)
    path = str(tmp_path / "model.keras")
    model.save(path)
    if IS_KERAS_2:
        restored = keras.models.load_model(path)
    else:
        restored = keras.models.load_model(path, safe_mode=True)
    data = np.random.default_rng(4).normal(size=(5, 6)).astype("float32")
    np.testing.assert_allclose(
        restored.predict_on_batch(data), model.predict_on_batch(data), rtol=1e-6
    )


def test_expert_bank_rejects_other_feature_count():
    layer = mtl.ExpertBank(2, 3)
    layer(np.ones((2, 5), "float32"))
    with pytest.raises(ValueError, match="expected axis -1 of input shape to have value 5"):
        layer(np.ones((2, 7), "float32"))


def test_expert_bank_symbolic_reuse_checks_features():
    layer = mtl.ExpertBank(2, 3)
    layer(keras.Input((5,)))
    with pytest.raises(ValueError, match=OTHER_FEATURES):
        layer(keras.Input((7,)))
