"""Tests of TaskEmbedding: lookups, id checks on every backend, config."""

import numpy as np
import pytest

import mtl_layers as mtl
from mtl_layers.compat import backend_name, ops


def test_task_embedding_looks_up_rows():
    layer = mtl.TaskEmbedding(num_tasks=3, output_dim=4)
    vectors = ops.convert_to_numpy(layer(np.array([[2], [0], [2]], "int32")))
    table = ops.convert_to_numpy(layer.embeddings)
    np.testing.assert_allclose(vectors, table[[2, 0, 2]])


@pytest.mark.skipif(
    backend_name() != "tensorflow",
    reason="the id range is checked with TensorFlow assertions; other backends do not check",
)
@pytest.mark.parametrize("task_id", [-1, 3])
def test_task_embedding_rejects_ids_out_of_range(task_id):
    import tensorflow as tf

    layer = mtl.TaskEmbedding(num_tasks=3, output_dim=4)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"task id outside \[0, 3\)"):
        layer(np.array([0, task_id], "int32"))
    traced = tf.function(layer, input_signature=[tf.TensorSpec((None,), tf.int32)])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"task id outside \[0, 3\)"):
        traced(np.array([task_id, 1], "int32"))


@pytest.mark.skipif(
    backend_name() != "tensorflow",
    reason="the id range is checked with TensorFlow assertions; other backends do not check",
)
def test_task_embedding_rejects_int64_id_beyond_int32():
    import tensorflow as tf

    layer = mtl.TaskEmbedding(num_tasks=3, output_dim=4)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"task id outside \[0, 3\)"):
        layer(np.array([0, 2**32 + 1], "int64"))


@pytest.mark.parametrize("task_id", [-1, 3, 2**32 + 1])
def test_task_embedding_unchecked_ids_give_nan(task_id):
    if backend_name() == "jax" and task_id > 2**31:
        pytest.skip("JAX without x64 wraps int64 inputs to int32 before the layer sees them")
    layer = mtl.TaskEmbedding(num_tasks=3, output_dim=4)
    ids = np.array([1, task_id], "int64")
    if backend_name() == "tensorflow":
        import tensorflow as tf

        # XLA drops the assertion, so the vector of NaN is what shows the bad id there.
        vectors = tf.function(layer, jit_compile=True)(ids)
    else:
        vectors = layer(ids)

    vectors = ops.convert_to_numpy(vectors)
    assert np.all(np.isfinite(vectors[0]))
    assert np.all(np.isnan(vectors[1]))


def test_task_embedding_rejects_sequences():
    with pytest.raises(ValueError, match="one integer task id per example"):
        mtl.TaskEmbedding(num_tasks=3, output_dim=4)(np.zeros((2, 3), "int32"))


@pytest.mark.parametrize("arguments", [{"num_tasks": 0, "output_dim": 2}, {"num_tasks": 2, "output_dim": 0}])
def test_task_embedding_invalid_sizes_rejected(arguments):
    with pytest.raises(ValueError, match="must be an integer >= 1"):
        mtl.TaskEmbedding(**arguments)


def test_task_embedding_config_round_trip():
    layer = mtl.TaskEmbedding(num_tasks=5, output_dim=3, name="tasks")
    config = layer.get_config()
    assert mtl.TaskEmbedding.from_config(config).get_config() == config


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_task_embedding_rejects_float_ids(dtype):
    layer = mtl.TaskEmbedding(num_tasks=3, output_dim=4)
    with pytest.raises(ValueError, match="must be integer task ids. Received: task_ids dtype=float"):
        layer(np.array([0.0, 1.5], dtype))


def test_task_embedding_call_after_build_checks_shape():
    layer = mtl.TaskEmbedding(num_tasks=3, output_dim=4)
    layer(np.array([0, 1], "int32"))
    with pytest.raises(ValueError, match="one integer task id per example"):
        layer(np.zeros((3, 2), "int32"))
