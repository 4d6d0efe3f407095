"""Tests for the sequential synthetic generator."""

import numpy as np
import pytest

from mtl_layers.datasets.synthetic import sequential_regression
from mtl_layers.datasets.synthetic.mmoe import clean_labels


def test_shapes_and_mask():
    data, params = sequential_regression(50, 0.5, num_sources=4, input_dim=16, seed=0)
    assert data["sequence"].shape == (50, 20, 20)
    assert data["mask"].shape == (50, 20)
    assert data["labels"]["task_1"].shape == (50, 20)
    np.testing.assert_array_equal(data["mask"].sum(1), params.lengths)
    assert params.lengths.min() >= 5
    assert params.lengths.max() <= 20
    assert not data["sequence"][~data["mask"]].any()
    assert not data["labels"]["task_2"][~data["mask"]].any()


@pytest.mark.parametrize("correlation", [-0.5, 0.0, 0.9])
def test_task_weights_have_requested_cosine(correlation):
    _, params = sequential_regression(5, correlation, seed=1)
    first, second = params.weights
    cosine = first @ second / np.linalg.norm(first) / np.linalg.norm(second)
    assert cosine == pytest.approx(correlation, abs=1e-9)


def test_labels_follow_the_state_recursion():
    data, params = sequential_regression(
        30, 0.3, sparsity=[0.0, 0.8], num_sources=2, input_dim=6, noise_stddev=0.0, seed=2
    )
    inputs = data["sequence"][..., :6].astype(np.float64)
    state = np.zeros((30, 6))
    for t in range(20):
        state = params.memory * state + np.sqrt(1 - params.memory**2) * inputs[:, t]
        valid = data["mask"][:, t]
        expected = clean_labels(state[valid], params.weights, params.alphas, params.betas)
        np.testing.assert_allclose(data["labels"]["task_1"][valid, t], expected[:, 0], atol=1e-4)
        np.testing.assert_allclose(data["labels"]["task_2"][valid, t], expected[:, 1], atol=1e-4)


def test_sparsity_controls_missing_sources():
    data, params = sequential_regression(
        400, 0.5, sparsity=[0.0, 0.9], num_sources=2, input_dim=8, seed=3
    )
    indicators = data["sequence"][..., 8:][data["mask"]]
    assert indicators[:, 0].mean() == 1.0
    assert indicators[:, 1].mean() == pytest.approx(0.1, abs=0.02)
    # Unobserved sources are zero, and observed sparse values are scaled up.
    sparse_values = data["sequence"][..., 4:8][data["mask"]]
    assert not sparse_values[indicators[:, 1] == 0].any()
    assert sparse_values[indicators[:, 1] == 1].std() == pytest.approx(np.sqrt(10), rel=0.1)


def test_left_padding_moves_valid_steps_to_the_end():
    right, right_params = sequential_regression(20, 0.5, seed=4)
    left, left_params = sequential_regression(20, 0.5, padding="left", seed=4)
    np.testing.assert_array_equal(left_params.lengths, right_params.lengths)
    for row, length in enumerate(right_params.lengths):
        assert left["mask"][row, -length:].all()
        assert not left["mask"][row, :-length].any()
        np.testing.assert_array_equal(left["sequence"][row, -length:], right["sequence"][row, :length])
        np.testing.assert_array_equal(
            left["labels"]["task_1"][row, -length:], right["labels"]["task_1"][row, :length]
        )


def test_same_seed_same_data():
    first, _ = sequential_regression(10, 0.5, sparsity=0.5, seed=7)
    second, _ = sequential_regression(10, 0.5, sparsity=0.5, seed=7)
    np.testing.assert_array_equal(first["sequence"], second["sequence"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"correlation": 1.5}, "correlation"),
        ({"sparsity": 1.0}, "sparsity"),
        ({"sparsity": [0.1, 0.2]}, "sparsity"),
        ({"num_sources": 40}, "num_sources"),
        ({"min_length": 10, "max_length": 5}, "max_length"),
        ({"memory": 1.0}, "memory"),
        ({"padding": "middle"}, "padding"),
    ],
)
def test_invalid_arguments(kwargs, message):
    arguments = {"num_examples": 5, "correlation": 0.5, **kwargs}
    with pytest.raises(ValueError, match=message):
        sequential_regression(**arguments)


def test_min_length_above_max_length_named():
    with pytest.raises(ValueError, match="Received: min_length=30, max_length=20"):
        sequential_regression(5, 0.5, min_length=30)
