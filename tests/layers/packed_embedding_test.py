"""Tests of PackedEmbedding: per-feature reference, gradients, validation, serialization."""

import numpy as np
import pytest

import mtl_layers as mtl
from mtl_layers.compat import keras, ops

SIZES = [3, 5, 2]


def test_packed_embedding_matches_per_feature_tables():
    layer = mtl.PackedEmbedding(SIZES, output_dim=4)
    ids = np.array([[0, 4, 1], [2, 0, 0], [1, 3, 1]], np.int32)

    outputs = ops.convert_to_numpy(layer(ids))

    # Feature f's table is its own slice of rows of the shared table.
    table = ops.convert_to_numpy(layer.embeddings)
    tables = np.split(table, np.cumsum(SIZES)[:-1])
    expected = np.concatenate([tables[f][ids[:, f]] for f in range(len(SIZES))], axis=1)
    assert outputs.shape == (3, 12)
    np.testing.assert_array_equal(outputs, expected)


def test_packed_embedding_accepts_int64_ids():
    layer = mtl.PackedEmbedding(SIZES, output_dim=2)
    outputs = layer(np.array([[2, 4, 1]], np.int64))
    assert tuple(outputs.shape) == (1, 6)


def test_packed_embedding_gradient_rows(gradients):
    layer = mtl.PackedEmbedding(SIZES, output_dim=2)
    ids = np.array([[1, 0, 1], [1, 2, 1]], np.int32)
    layer.build(ids.shape)

    (gradient,) = gradients(lambda: ops.sum(layer(ids)), [layer.embeddings], [])

    # Rows used: feature 0 row 1, feature 1 rows 3 + 0 and 3 + 2, feature 2 row 8 + 1.
    counts = np.zeros(sum(SIZES))
    for row in (1, 1, 3, 5, 9, 9):
        counts[row] += 1
    np.testing.assert_allclose(ops.convert_to_numpy(gradient), np.repeat(counts[:, None], 2, axis=1))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"vocabulary_sizes": [], "output_dim": 2}, r"`vocabulary_sizes` must be a non-empty sequence"),
        ({"vocabulary_sizes": 5, "output_dim": 2}, r"`vocabulary_sizes` must be a non-empty sequence"),
        ({"vocabulary_sizes": {3, 5}, "output_dim": 2}, r"in the order of the id columns"),
        ({"vocabulary_sizes": [3, 0], "output_dim": 2}, r"`vocabulary_sizes\[1\]` must be an integer >= 1. Received: vocabulary_sizes\[1\]=0"),
        ({"vocabulary_sizes": [3], "output_dim": 0}, r"`output_dim` must be an integer >= 1"),
    ],
)
def test_packed_embedding_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        mtl.PackedEmbedding(**kwargs)


def test_packed_embedding_rejects_wrong_number_of_columns():
    layer = mtl.PackedEmbedding(SIZES, output_dim=2)
    with pytest.raises(ValueError, match=r"ids of shape \(batch_size, 3\).*Received: input shape=\(4, 2\)"):
        layer(np.zeros((4, 2), np.int32))


def test_packed_embedding_serialization_round_trip():
    layer = mtl.PackedEmbedding(SIZES, output_dim=3, embeddings_regularizer="l2", name="packed")
    ids = np.array([[0, 1, 1], [2, 4, 0]], np.int32)
    expected = ops.convert_to_numpy(layer(ids))

    config = keras.layers.serialize(layer)
    restored = keras.layers.deserialize(config)
    if not restored.built:  # Keras 3 rebuilds a built layer from its config; tf_keras does not.
        restored.build(ids.shape)
    restored.set_weights(layer.get_weights())

    assert restored.get_config() == layer.get_config()
    assert restored.vocabulary_sizes == SIZES
    np.testing.assert_array_equal(ops.convert_to_numpy(restored(ids)), expected)
    assert layer.compute_output_shape((None, 3)) == (None, 9)


def test_packed_embedding_invalid_ids_zero():
    layer = mtl.PackedEmbedding([3, 5], output_dim=2)
    ids = np.array([[3, 0], [-1, 4], [0, 5], [2, -9]], np.int32)

    outputs = ops.convert_to_numpy(layer(ids)).reshape(4, 2, 2)

    table = ops.convert_to_numpy(layer.embeddings)
    # Invalid ids give zeros instead of a row of the other feature.
    np.testing.assert_array_equal(outputs[0, 0], [0.0, 0.0])
    np.testing.assert_array_equal(outputs[1, 0], [0.0, 0.0])
    np.testing.assert_array_equal(outputs[2, 1], [0.0, 0.0])
    np.testing.assert_array_equal(outputs[3, 1], [0.0, 0.0])
    # Valid ids in the same rows are unaffected.
    np.testing.assert_array_equal(outputs[0, 1], table[3 + 0])
    np.testing.assert_array_equal(outputs[1, 1], table[3 + 4])
    np.testing.assert_array_equal(outputs[2, 0], table[0])
    np.testing.assert_array_equal(outputs[3, 0], table[2])


@pytest.mark.skipif(
    keras.backend.backend() == "jax",
    reason="JAX without x64 wraps int64 inputs to int32 before the layer sees them",
)
def test_packed_embedding_int64_id_beyond_int32_is_zero():
    layer = mtl.PackedEmbedding([3, 5], output_dim=2)
    ids = np.array([[1, 2**32 + 1], [2**32 + 2, 4]], "int64")

    vectors = ops.convert_to_numpy(layer(ids)).reshape(2, 2, 2)

    np.testing.assert_array_equal(vectors[0, 1], 0.0)
    np.testing.assert_array_equal(vectors[1, 0], 0.0)
    assert np.any(vectors[0, 0] != 0.0)


def test_packed_embedding_float_ids_round_down():
    layer = mtl.PackedEmbedding([3, 3], output_dim=2)
    vectors = ops.convert_to_numpy(layer(np.array([[-0.5, 1.7], [np.nan, 0.2]], "float32")))
    table = ops.convert_to_numpy(layer.embeddings)
    np.testing.assert_allclose(vectors[0], np.concatenate([np.zeros(2), table[3 + 1]]))
    np.testing.assert_allclose(vectors[1], np.concatenate([np.zeros(2), table[3 + 0]]))


def test_packed_embedding_call_after_build_checks_columns():
    layer = mtl.PackedEmbedding([3, 3], output_dim=2)
    layer(np.zeros((2, 2), "int32"))
    with pytest.raises(ValueError, match=r"expects ids of shape \(batch_size, 2\)"):
        layer(np.zeros((2, 3), "int32"))
