"""Every layer under the `mixed_float16` and `mixed_bfloat16` policies.

Each layer is built twice, in float32 and under the mixed policy, with the same weights.
The mixed outputs must be finite and close to the float32 outputs. Extreme inputs push
gate logits, LSTM states and HyperGrid gates far beyond the float16 range (about 6.5e4)
to check that the numerically sensitive steps stay finite and that gate weights still
sum to 1.
"""

import keras as keras3
import numpy as np
import pytest

import mtl_layers as mtl
from mtl_layers.compat import keras, ops

POLICIES = ("mixed_float16", "mixed_bfloat16")
COMPUTE_DTYPES = {"mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}
# Relative tolerance of mixed against float32 outputs: float16 keeps 11 significant bits
# and bfloat16 8, and the products below sum tens of terms, each rounded once.
TOLERANCE = {"mixed_float16": 2e-2, "mixed_bfloat16": 8e-2}
# The largest finite float16 value is 65504; inputs near it stay finite in float16.
NEAR_FLOAT16_MAX = 6.0e4


@pytest.fixture(params=POLICIES)
def policy(request):
    """Set the global dtype policy for one test and restore float32 afterwards."""
    keras.mixed_precision.set_global_policy(request.param)
    try:
        yield request.param
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _float32_twin(make_layer, mixed_layer, *inputs, **call_kwargs):
    """Build `make_layer()` in float32 and give it the weights of `mixed_layer`."""
    twin = make_layer(dtype="float32")
    twin(*inputs, **call_kwargs)
    twin.set_weights(mixed_layer.get_weights())
    return twin


def _dtype(value):
    """Return the standard dtype name of a tensor or variable of any backend."""
    return keras3.backend.standardize_dtype(value.dtype)


def _as_float32(tensor):
    return np.asarray(ops.convert_to_numpy(ops.cast(tensor, "float32")))


def _random(shape, seed=0, scale=1.0):
    return (scale * np.random.default_rng(seed).normal(size=shape)).astype("float32")


def _assert_close_relative(actual, expected, tolerance):
    scale = max(1.0, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(actual, expected, rtol=tolerance, atol=tolerance * scale)


def test_expert_bank_mixed_matches_float32(policy):
    inputs = _random((8, 12))

    def make_layer(**kwargs):
        return mtl.ExpertBank(4, [16, 8], **kwargs)

    layer = make_layer()
    outputs = layer(inputs)
    assert _dtype(outputs) == COMPUTE_DTYPES[policy]
    assert all(_dtype(weight) == "float32" for weight in layer.weights)
    twin = _float32_twin(make_layer, layer, inputs)
    _assert_close_relative(_as_float32(outputs), _as_float32(twin(inputs)), TOLERANCE[policy])


def test_expert_bank_near_float16_max_finite(policy):
    layer = mtl.ExpertBank(3, 4, activation="tanh")
    outputs = _as_float32(layer(_random((4, 6), scale=NEAR_FLOAT16_MAX / 4)))
    assert np.isfinite(outputs).all()


@pytest.mark.parametrize(
    "gate_options",
    [{}, {"top_k": 2}, {"temperature": 0.01}, {"noise_stddev": 1.0}],
    ids=["dense", "top_k", "low_temperature", "noisy"],
)
def test_task_gate_extreme_logits(policy, gate_options):
    num_experts = 4
    gate = mtl.TaskGate(
        num_experts,
        return_weights=True,
        kernel_initializer=keras.initializers.Constant(1.0e3),
        **gate_options,
    )
    experts = _random((16, num_experts, 8), seed=1, scale=NEAR_FLOAT16_MAX / 8)
    # Gate inputs near the float16 maximum times a kernel of 1e3 give logits near 1e8,
    # which overflow float16; the gate computes them in float32.
    gate_inputs = _random((16, 5), seed=2, scale=NEAR_FLOAT16_MAX / 4)
    gate_inputs = np.clip(gate_inputs, -NEAR_FLOAT16_MAX, NEAR_FLOAT16_MAX)
    mixture, weights = gate(
        ops.cast(experts, COMPUTE_DTYPES[policy]),
        ops.cast(gate_inputs, COMPUTE_DTYPES[policy]),
        training=True,
    )

    assert _dtype(weights) == "float32"
    assert _dtype(mixture) == COMPUTE_DTYPES[policy]
    weights = _as_float32(weights)
    assert not np.isnan(weights).any()
    assert np.isfinite(_as_float32(mixture)).all()
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, atol=1e-3)
    assert (weights >= 0).all()
    if "top_k" in gate_options:
        assert ((weights > 0).sum(axis=-1) <= gate_options["top_k"]).all()


def test_task_gate_mixed_matches_float32(policy):
    experts = _random((8, 3, 6), seed=3)
    gate_inputs = _random((8, 5), seed=4)

    def make_layer(**kwargs):
        return mtl.TaskGate(3, return_weights=True, **kwargs)

    gate = make_layer()
    mixture, weights = gate(experts, gate_inputs)
    twin = _float32_twin(make_layer, gate, experts, gate_inputs)
    expected_mixture, expected_weights = twin(experts, gate_inputs)
    _assert_close_relative(_as_float32(mixture), _as_float32(expected_mixture), TOLERANCE[policy])
    _assert_close_relative(_as_float32(weights), _as_float32(expected_weights), TOLERANCE[policy])


def test_task_gate_utilization_stays_float32(policy):
    gate = mtl.TaskGate(3)
    gate(_random((8, 3, 4)), _random((8, 2)), training=True)
    utilization = _as_float32(gate.expert_utilization)
    assert _dtype(gate.expert_utilization) == "float32"
    np.testing.assert_allclose(utilization.sum(), 1.0, atol=1e-3)


def test_sequential_expert_mixed_matches_float32(policy):
    inputs = _random((4, 10, 5), seed=5)
    mask = np.arange(10)[None, :] < np.array([[10], [7], [3], [1]])

    def make_layer(**kwargs):
        return mtl.SequentialExpert(3, 6, **kwargs)

    layer = make_layer()
    outputs = layer(inputs, mask=mask)
    assert _dtype(outputs) == COMPUTE_DTYPES[policy]
    twin = _float32_twin(make_layer, layer, inputs, mask=mask)
    expected = _as_float32(twin(inputs, mask=mask))
    _assert_close_relative(_as_float32(outputs), expected, TOLERANCE[policy])


# Absolute tolerance at every step of the 200-step test below. SequentialExpert carries its
# states in float32, so the remaining error comes from rounding inputs, weights, products and
# outputs to the compute dtype. Measured on CPU: 0.0052 (Keras 3) and 0.0103 (tf_keras) in
# bfloat16, 0.0008 and 0.0012 in float16. A state carried in the compute dtype drifted by
# 0.062 and 0.053 in bfloat16, 0.0064 and 0.0055 in float16.
LONG_SEQUENCE_TOLERANCE = {"mixed_float16": 4e-3, "mixed_bfloat16": 2e-2}


def test_sequential_expert_long_sequence_matches_float32(policy):
    keras.utils.set_random_seed(0)
    # A forget-gate bias of 6 keeps f = sigmoid(6) ~ 0.9975, so the cell state sums the
    # small updates of about the last 400 steps. A float16 or bfloat16 state would drop
    # updates below its spacing (0.0625 near 10 in bfloat16) and drift from float32.
    units = 6
    inputs = _random((4, 200, 5), seed=10, scale=0.5)

    def make_layer(**kwargs):
        return mtl.SequentialExpert(2, units, recurrent_initializer="zeros", **kwargs)

    layer = make_layer()
    layer(inputs[:, :1])
    kernel, recurrent_kernel, bias = layer.get_weights()
    bias[:, units : 2 * units] = 6.0
    layer.set_weights([kernel, recurrent_kernel, bias])
    outputs = layer(inputs)
    assert _dtype(outputs) == COMPUTE_DTYPES[policy]
    twin = _float32_twin(make_layer, layer, inputs)
    expected = _as_float32(twin(inputs))
    np.testing.assert_allclose(
        _as_float32(outputs), expected, rtol=0, atol=LONG_SEQUENCE_TOLERANCE[policy]
    )


def test_sequential_expert_saturated_long_sequence_finite(policy):
    # Inputs of 3e4 on 3 features with a kernel of ones give gate pre-activations of 9e4,
    # beyond the float16 maximum. The gates saturate to 1, so the cell state grows by 1 per
    # step (c_t = c_{t-1} + tanh(z_c)) over 300 steps, and h_t = tanh(c_t) tends to 1.
    layer = mtl.SequentialExpert(
        2,
        4,
        kernel_initializer=keras.initializers.Constant(1.0),
        recurrent_initializer="zeros",
    )
    inputs = np.full((2, 300, 3), NEAR_FLOAT16_MAX / 2, "float32")
    outputs = _as_float32(layer(inputs))
    assert np.isfinite(outputs).all()
    np.testing.assert_allclose(outputs[:, -1], 1.0, atol=1e-2)


@pytest.mark.parametrize("mode", ["LG", "GL", "LL", "GG"])
def test_hypergrid_dense_mixed_matches_float32(policy, mode):
    inputs = _random((4, 3, 8), seed=6)
    conditioning = _random((4, 5), seed=7)

    def make_layer(**kwargs):
        return mtl.HyperGridDense(6, block_shape=(4, 3), mode=mode, **kwargs)

    layer = make_layer()
    outputs = layer(inputs, conditioning)
    assert _dtype(outputs) == COMPUTE_DTYPES[policy]
    twin = _float32_twin(make_layer, layer, inputs, conditioning)
    expected = _as_float32(twin(inputs, conditioning))
    _assert_close_relative(_as_float32(outputs), expected, TOLERANCE[policy])


@pytest.mark.parametrize("mode", ["LG", "GL", "LL"])
def test_hypergrid_dense_extreme_conditioning_finite(policy, mode):
    layer = mtl.HyperGridDense(
        6,
        block_shape=(4, 3),
        mode=mode,
        local_initializer=keras.initializers.Constant(1.0e2),
        global_initializer=keras.initializers.Constant(1.0e3),
    )
    inputs = _random((4, 8), seed=8)
    # The local projections reach about 1e2 * 5 * 6e4, far beyond the float16 range.
    conditioning = np.full((4, 5), NEAR_FLOAT16_MAX, "float32")
    conditioning[1] *= -1.0
    conditioning[2, :3] = 0.0
    outputs = _as_float32(layer(inputs, conditioning))
    assert np.isfinite(outputs).all()
    if mode == "LL":
        # The LG and GL gates are checked through the outputs above; see the next test.
        gate = _as_float32(layer.compute_gate(ops.cast(conditioning, COMPUTE_DTYPES[policy])))
        assert not np.isnan(gate).any()
        assert ((gate >= 0.0) & (gate <= 1.0)).all()


@pytest.mark.parametrize("mode", ["LG", "GL"])
def test_hypergrid_compute_gate_outside_call(policy, mode):
    layer = mtl.HyperGridDense(6, block_shape=(4, 3), mode=mode)
    conditioning = _random((4, 5), seed=11)
    layer(_random((4, 8), seed=12), conditioning)
    gate = _as_float32(layer.compute_gate(ops.cast(conditioning, COMPUTE_DTYPES[policy])))
    assert gate.shape == (4, 2, 2)


def test_task_embedding_uses_compute_dtype(policy):
    layer = mtl.TaskEmbedding(3, 4)
    outputs = layer(np.array([0, 2, 1]))
    assert _dtype(outputs) == COMPUTE_DTYPES[policy]
    assert _dtype(layer.embeddings) == "float32"


@pytest.mark.parametrize("builder", ["mmoe", "ple", "shared_bottom"])
def test_model_trains_under_mixed_policy(policy, builder):
    keras.utils.set_random_seed(0)
    tasks = [mtl.tasks.TaskSpec("click"), mtl.tasks.TaskSpec("rating", kind="regression")]
    model = getattr(mtl.models, builder)(tasks, keras.Input((6,)))
    mtl.tasks.compile_for_tasks(model, tasks, optimizer=keras.optimizers.Adam(1e-2))
    rng = np.random.default_rng(9)
    features = rng.normal(size=(64, 6)).astype("float32")
    labels = {
        "click": rng.integers(0, 2, size=(64, 1)).astype("float32"),
        "rating": rng.normal(size=(64, 1)).astype("float32"),
    }
    history = model.fit(features, labels, batch_size=16, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    outputs = model.predict_on_batch(features[:4])
    # The task output layers compute in float32, so predictions leave the model in float32.
    assert all(np.asarray(value).dtype == np.float32 for value in outputs.values())
    assert all(_dtype(weight) == "float32" for weight in model.trainable_weights)
