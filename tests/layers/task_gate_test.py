"""Tests of TaskGate: mixing, top-k, noise, losses, validation, precision, serialization."""

import numpy as np
import pytest

import mtl_layers as mtl
from mtl_layers.compat import IS_KERAS_2, keras, ops

RNG = np.random.default_rng(0)


def _inputs(batch=6, num_experts=4, units=3, features=5):
    experts = RNG.normal(size=(batch, num_experts, units)).astype("float32")
    gate_inputs = RNG.normal(size=(batch, features)).astype("float32")
    return experts, gate_inputs


def _logits(gate, gate_inputs):
    kernel, bias = (ops.convert_to_numpy(weight) for weight in gate.logits_layer.weights)
    return gate_inputs @ kernel + bias


def test_task_gate_matches_softmax_reference():
    experts, gate_inputs = _inputs()
    gate = mtl.TaskGate(4, temperature=2.0, return_weights=True)
    mixture, weights = gate(experts, gate_inputs)
    logits = _logits(gate, gate_inputs) / 2.0
    expected_weights = np.exp(logits - logits.max(-1, keepdims=True))
    expected_weights /= expected_weights.sum(-1, keepdims=True)
    np.testing.assert_allclose(ops.convert_to_numpy(weights), expected_weights, rtol=1e-5, atol=1e-6)
    expected_mixture = np.einsum("be,beu->bu", expected_weights, experts)
    np.testing.assert_allclose(ops.convert_to_numpy(mixture), expected_mixture, rtol=1e-5, atol=1e-5)


def test_task_gate_weights_sum_to_one():
    experts, gate_inputs = _inputs(batch=32, num_experts=7)
    _, weights = mtl.TaskGate(7, return_weights=True)(experts, gate_inputs)
    np.testing.assert_allclose(ops.convert_to_numpy(weights).sum(-1), 1.0, atol=1e-6)


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_task_gate_top_k_zeros_the_rest(top_k):
    experts, gate_inputs = _inputs(batch=16, num_experts=5)
    gate = mtl.TaskGate(5, top_k=top_k, return_weights=True)
    _, weights = gate(experts, gate_inputs)
    weights = ops.convert_to_numpy(weights)
    assert np.all((weights > 0).sum(-1) == top_k)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)
    logits = _logits(gate, gate_inputs)
    kept = np.argsort(-logits, axis=-1)[:, :top_k]
    for row in range(16):
        assert set(np.flatnonzero(weights[row])) == set(kept[row])
        expected = np.exp(logits[row, kept[row]] - logits[row, kept[row]].max())
        np.testing.assert_allclose(weights[row, kept[row]], expected / expected.sum(), rtol=1e-5)


def test_task_gate_time_axis_gates_each_step():
    experts = RNG.normal(size=(2, 3, 4, 5)).astype("float32")
    gate_inputs = RNG.normal(size=(2, 3, 6)).astype("float32")
    gate = mtl.TaskGate(4, return_weights=True)
    mixture, weights = gate(experts, gate_inputs)
    assert tuple(mixture.shape) == (2, 3, 5)
    assert tuple(weights.shape) == (2, 3, 4)
    step = gate(experts[:, 1], gate_inputs[:, 1])
    np.testing.assert_allclose(ops.convert_to_numpy(mixture)[:, 1], ops.convert_to_numpy(step[0]), rtol=1e-5, atol=1e-6)


def test_task_gate_compute_output_shape():
    gate = mtl.TaskGate(4, return_weights=True)
    mixture_shape, weights_shape = gate.compute_output_shape((None, 4, 8), (None, 5))
    assert tuple(mixture_shape) == (None, 8)
    assert tuple(weights_shape) == (None, 4)
    assert tuple(mtl.TaskGate(4).compute_output_shape((None, 7, 4, 8))) == (None, 7, 8)


def test_task_gate_noise_only_in_training():
    experts, gate_inputs = _inputs(batch=64)
    gate = mtl.TaskGate(4, noise_stddev=1.0, return_weights=True)
    _, first = gate(experts, gate_inputs, training=False)
    _, second = gate(experts, gate_inputs, training=False)
    np.testing.assert_allclose(ops.convert_to_numpy(first), ops.convert_to_numpy(second))
    _, noisy = gate(experts, gate_inputs, training=True)
    assert not np.allclose(ops.convert_to_numpy(noisy), ops.convert_to_numpy(first))
    np.testing.assert_allclose(ops.convert_to_numpy(noisy).sum(-1), 1.0, atol=1e-6)


def test_task_gate_load_balance_loss():
    experts, gate_inputs = _inputs(batch=32)
    gate = mtl.TaskGate(4, load_balance_weight=0.5, return_weights=True)
    _, weights = gate(experts, gate_inputs)
    assert len(gate.losses) == 1
    importance = ops.convert_to_numpy(weights).sum(0)
    expected = 0.5 * importance.var() / importance.mean() ** 2
    np.testing.assert_allclose(float(ops.convert_to_numpy(gate.losses[0])), expected, rtol=1e-4)


def test_task_gate_no_loss_by_default():
    experts, gate_inputs = _inputs()
    gate = mtl.TaskGate(4)
    gate(experts, gate_inputs)
    assert gate.losses == []


def test_task_gate_utilization_tracks_training():
    experts, gate_inputs = _inputs(batch=64)
    gate = mtl.TaskGate(4, utilization_momentum=0.0, return_weights=True)
    _, weights = gate(experts, gate_inputs, training=False)
    np.testing.assert_allclose(ops.convert_to_numpy(gate.expert_utilization), 0.25)
    _, weights = gate(experts, gate_inputs, training=True)
    np.testing.assert_allclose(
        ops.convert_to_numpy(gate.expert_utilization), ops.convert_to_numpy(weights).mean(0), rtol=1e-5
    )


def test_task_gate_gradients_reach_gate_and_experts(gradients):
    experts, gate_inputs = _inputs(batch=16)
    gate = mtl.TaskGate(4)
    gate(experts, gate_inputs)
    kernel, bias = gate.logits_layer.trainable_weights
    kernel_gradient, bias_gradient, expert_gradient = gradients(
        lambda x: ops.sum(ops.square(gate(x, gate_inputs))), [kernel, bias], [experts]
    )
    assert np.all(np.abs(kernel_gradient).sum(0) > 0)
    assert np.all(np.abs(bias_gradient) > 0)
    assert np.all(np.abs(expert_gradient).sum(axis=(0, 2)) > 0)


def test_task_gate_utilization_skips_empty_batch():
    experts, gate_inputs = _inputs()
    gate = mtl.TaskGate(4, utilization_momentum=0.5)
    gate(experts, gate_inputs, training=True)
    before = ops.convert_to_numpy(gate.expert_utilization)

    gate(experts[:0], gate_inputs[:0], training=True)

    np.testing.assert_array_equal(ops.convert_to_numpy(gate.expert_utilization), before)


def test_task_gate_rejects_integer_experts():
    experts, gate_inputs = _inputs()
    with pytest.raises(ValueError, match="expert outputs must be floating point"):
        mtl.TaskGate(4)(experts.astype("int32"), gate_inputs)


def test_task_gate_rejects_missing_gate_inputs():
    experts, _ = _inputs()
    with pytest.raises(ValueError, match="Received: gate_inputs=None"):
        mtl.TaskGate(4)(experts, None)


def test_task_gate_extreme_logits_finite():
    experts, _ = _inputs(batch=8, features=5)
    gate_inputs = RNG.choice([-1e4, 1e4], size=(8, 5)).astype("float32")
    for top_k in (None, 2):
        gate = mtl.TaskGate(4, top_k=top_k, return_weights=True, load_balance_weight=0.1)
        mixture, weights = gate(experts, gate_inputs, training=True)
        assert np.all(np.isfinite(ops.convert_to_numpy(mixture)))
        np.testing.assert_allclose(ops.convert_to_numpy(weights).sum(-1), 1.0, atol=1e-6)
        assert np.isfinite(float(ops.convert_to_numpy(gate.losses[-1])))


def test_task_gate_float32_under_mixed_precision():
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        experts = RNG.normal(size=(4, 3, 2)).astype("float16")
        gate_inputs = RNG.choice([-6e4, 6e4], size=(4, 5)).astype("float16")
        gate = mtl.TaskGate(3, return_weights=True)
        mixture, weights = gate(experts, gate_inputs)
        mixture, weights = ops.convert_to_numpy(mixture), ops.convert_to_numpy(weights)
        assert weights.dtype == np.float32
        assert mixture.dtype == np.float16
        assert np.all(np.isfinite(mixture.astype("float32")))
        np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-3)
    finally:
        keras.mixed_precision.set_global_policy(policy)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_experts": 0}, "`num_experts` must be an integer >= 1"),
        ({"num_experts": 4, "top_k": 5}, "`top_k` must be at most `num_experts`"),
        ({"num_experts": 4, "top_k": 0}, "`top_k` must be an integer >= 1"),
        ({"num_experts": 4, "temperature": 0.0}, "`temperature` must be a finite number > 0"),
        ({"num_experts": 4, "temperature": -1.0}, "`temperature` must be a finite number > 0"),
        ({"num_experts": 4, "noise_stddev": -0.1}, "`noise_stddev` must be a finite number >= 0"),
        ({"num_experts": 4, "load_balance_weight": float("nan")}, "`load_balance_weight`"),
        ({"num_experts": 4, "return_weights": "no"}, "`return_weights` must be True or False"),
    ],
)
def test_task_gate_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        mtl.TaskGate(**kwargs)


def test_task_gate_expert_count_mismatch():
    experts, gate_inputs = _inputs(num_experts=4)
    with pytest.raises(ValueError, match="does not match `num_experts`"):
        mtl.TaskGate(3)(experts, gate_inputs)


def test_task_gate_expert_count_mismatch_in_model():
    inputs = keras.Input((6,))
    experts = mtl.ExpertBank(4, 8)(inputs)
    with pytest.raises(ValueError, match="does not match `num_experts`"):
        mtl.TaskGate(5)(experts, inputs)


def test_task_gate_rejects_rank2_experts():
    with pytest.raises(ValueError, match="rank >= 3"):
        mtl.TaskGate(4)(np.ones((2, 4), "float32"), np.ones((2, 3), "float32"))


def test_task_gate_rejects_rank1_gate_inputs():
    with pytest.raises(ValueError, match="one axis fewer"):
        mtl.TaskGate(4)(np.ones((2, 4, 3), "float32"), np.ones((2,), "float32"))


def test_task_gate_rejects_batch_mismatch():
    with pytest.raises(ValueError, match="Axis 0"):
        mtl.TaskGate(4)(np.ones((2, 4, 3), "float32"), np.ones((3, 5), "float32"))


def test_task_gate_get_config_round_trip():
    gate = mtl.TaskGate(
        6, top_k=2, temperature=0.5, noise_stddev=0.3, return_weights=True, load_balance_weight=0.01
    )
    config = gate.get_config()
    assert mtl.TaskGate.from_config(config).get_config() == config
    assert config["top_k"] == 2
    assert config["noise_stddev"] == 0.3


def test_task_gate_keras_file_round_trip(tmp_path):
    inputs = keras.Input((6,))
    experts = mtl.ExpertBank(3, 4)(inputs)
    mixture, weights = mtl.TaskGate(3, top_k=2, return_weights=True, noise_stddev=0.1)(
        experts, inputs
    )
    model = keras.Model(inputs, [mixture, weights])
    path = str(tmp_path / "gate.keras")
    model.save(path)
    restored = (
        keras.models.load_model(path) if IS_KERAS_2 else keras.models.load_model(path, safe_mode=True)
    )
    data = RNG.normal(size=(5, 6)).astype("float32")
    for got, expected in zip(restored.predict_on_batch(data), model.predict_on_batch(data)):
        np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_masked_inputs_accepted_without_warning():
    import warnings

    sequence = np.random.default_rng(0).normal(size=(2, 5, 6)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=bool)
    experts = mtl.SequentialExpert(3, 4)(sequence, mask=mask)
    gate = mtl.TaskGate(3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mixture = gate(experts, sequence)
    assert not [w for w in caught if "mask" in str(w.message)]
    assert tuple(mixture.shape) == (2, 5, 4)
    assert gate.compute_mask([experts, sequence], [mask, mask]) is None


def test_task_gate_accepts_numpy_temperature():
    gate = mtl.TaskGate(4, temperature=np.float32(0.5))

    assert gate.temperature == 0.5


def test_task_gate_omitted_gate_inputs_named():
    experts, _ = _inputs()
    with pytest.raises(ValueError, match="TaskGate needs `gate_inputs`"):
        mtl.TaskGate(4)(experts)


def test_task_gate_other_gate_feature_count_named():
    experts, gate_inputs = _inputs()
    layer = mtl.TaskGate(4)
    layer(experts, gate_inputs)
    wider = np.concatenate([gate_inputs, gate_inputs], axis=-1)
    with pytest.raises(ValueError, match="was built for gate_inputs with"):
        layer(experts, wider)
