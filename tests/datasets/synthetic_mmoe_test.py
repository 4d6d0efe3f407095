"""Tests of the synthetic task-correlation data of Ma et al. (KDD 2018)."""

import numpy as np
import pytest

import mtl_layers as mtl
from mtl_layers.datasets.synthetic import mmoe as synthetic_mmoe
from mtl_layers.datasets.synthetic import mmoe_regression


@pytest.mark.parametrize("correlation", [-1.0, -0.3, 0.0, 0.5, 0.9, 1.0])
def test_weight_cosine_equals_correlation(correlation):
    _, params = mmoe_regression(10, correlation, seed=3)
    w1, w2 = params.weights
    cosine = w1 @ w2 / (np.linalg.norm(w1) * np.linalg.norm(w2))
    assert cosine == pytest.approx(correlation, abs=1e-12)


def test_weight_norms_equal_scale():
    _, params = mmoe_regression(10, 0.5, scale=2.5, seed=1)
    np.testing.assert_allclose(np.linalg.norm(params.weights, axis=1), [2.5, 2.5], rtol=1e-12)


def test_labels_recompute_from_parameters():
    (features, labels), params = mmoe_regression(2000, 0.7, input_dim=20, num_sinusoids=4, seed=5)
    recomputed = synthetic_mmoe.clean_labels(features, params.weights, params.alphas, params.betas)
    recomputed = (recomputed + params.noise).astype(np.float32)
    np.testing.assert_array_equal(labels["task_1"], recomputed[:, 0])
    np.testing.assert_array_equal(labels["task_2"], recomputed[:, 1])


def test_labels_match_written_out_formula():
    (features, labels), params = mmoe_regression(50, 0.2, input_dim=8, num_sinusoids=3, seed=9)
    x = features[7].astype(np.float64)
    for task_index, task in enumerate(("task_1", "task_2")):
        projection = float(params.weights[task_index] @ x)
        expected = projection + params.noise[7, task_index]
        for alpha, beta in zip(params.alphas, params.betas):
            expected += np.sin(alpha * projection + beta)
        assert labels[task][7] == pytest.approx(expected, rel=1e-6)


def test_noise_has_requested_stddev():
    _, params = mmoe_regression(20000, 0.5, noise_stddev=0.3, seed=2)
    assert params.noise.shape == (20000, 2)
    assert np.std(params.noise) == pytest.approx(0.3, rel=0.03)


def test_zero_noise_gives_clean_labels():
    (features, labels), params = mmoe_regression(100, 0.5, noise_stddev=0.0, seed=2)
    assert np.all(params.noise == 0.0)
    clean = synthetic_mmoe.clean_labels(features, params.weights, params.alphas, params.betas)
    np.testing.assert_allclose(labels["task_1"], clean[:, 0], rtol=1e-6)


def test_label_correlation_falls_with_requested_correlation():
    label_correlations = []
    for correlation in (1.0, 0.9, 0.5, 0.0):
        (_, labels), _ = mmoe_regression(20000, correlation, seed=11)
        label_correlations.append(np.corrcoef(labels["task_1"], labels["task_2"])[0, 1])
    assert label_correlations[0] > 0.98
    assert label_correlations[0] > label_correlations[1] > label_correlations[2] > label_correlations[3]
    assert abs(label_correlations[3]) < 0.05


def test_same_seed_gives_same_data():
    (features_a, labels_a), params_a = mmoe_regression(300, 0.5, seed=42)
    (features_b, labels_b), params_b = mmoe_regression(300, 0.5, seed=42)
    np.testing.assert_array_equal(features_a, features_b)
    np.testing.assert_array_equal(labels_a["task_2"], labels_b["task_2"])
    np.testing.assert_array_equal(params_a.alphas, params_b.alphas)
    np.testing.assert_array_equal(params_a.weights, params_b.weights)


def test_different_seeds_give_different_data():
    (features_a, _), params_a = mmoe_regression(300, 0.5, seed=1)
    (features_b, _), params_b = mmoe_regression(300, 0.5, seed=2)
    assert not np.array_equal(features_a, features_b)
    assert not np.array_equal(params_a.weights, params_b.weights)


def test_shapes_and_dtypes():
    (features, labels), params = mmoe_regression(64, 0.5, input_dim=12, num_sinusoids=5, seed=0)
    assert features.shape == (64, 12)
    assert features.dtype == np.float32
    assert sorted(labels) == ["task_1", "task_2"]
    assert labels["task_1"].shape == (64,)
    assert labels["task_1"].dtype == np.float32
    assert params.weights.shape == (2, 12)
    assert params.alphas.shape == (5,)
    assert params.betas.shape == (5,)
    assert params.correlation == 0.5
    assert params.seed == 0


def test_dataset_output_matches_arrays():
    (features, labels), _ = mmoe_regression(16, 0.9, input_dim=6, seed=4)
    dataset, _ = mmoe_regression(16, 0.9, input_dim=6, seed=4, as_dataset=True)
    batch_features, batch_labels = next(iter(dataset.batch(16)))
    np.testing.assert_array_equal(batch_features.numpy(), features)
    np.testing.assert_array_equal(batch_labels["task_2"].numpy(), labels["task_2"])


def test_exposed_as_package_attribute():
    assert mtl.datasets.synthetic.mmoe_regression is mmoe_regression


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"num_examples": 0, "correlation": 0.5}, "num_examples"),
        ({"num_examples": 10, "correlation": 1.5}, "correlation"),
        ({"num_examples": 10, "correlation": float("nan")}, "correlation"),
        ({"num_examples": 10, "correlation": 0.5, "input_dim": 1}, "input_dim"),
        ({"num_examples": 10, "correlation": 0.5, "num_sinusoids": -1}, "num_sinusoids"),
        ({"num_examples": 10, "correlation": 0.5, "scale": 0.0}, "scale"),
        ({"num_examples": 10, "correlation": 0.5, "noise_stddev": -0.1}, "noise_stddev"),
        ({"num_examples": 10, "correlation": 0.5, "seed": -1}, "seed"),
    ],
)
def test_invalid_arguments_raise(arguments, message):
    with pytest.raises(ValueError, match=message):
        mmoe_regression(**arguments)


def test_split_examples_rejects_bad_size():
    (features, labels), _ = mmoe_regression(10, 0.5, seed=0)
    with pytest.raises(ValueError, match="num_train"):
        synthetic_mmoe.split_examples(features, labels, 10)
    (train_x, train_y), (test_x, test_y) = synthetic_mmoe.split_examples(features, labels, 7)
    assert train_x.shape[0] == 7
    assert test_y["task_1"].shape == (3,)
