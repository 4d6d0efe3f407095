"""Tests for SortByTask, which groups a batch by task and restores its order."""

import numpy as np
import pytest

from mtl_layers.compat import backend_name, keras
from mtl_layers.models.sort_by_task import SortByTask

TASK_IDS = np.array([2, 0, 1, 0, 2, 1, 1], dtype="int32")


def _values():
    return np.arange(len(TASK_IDS) * 3, dtype="float32").reshape(len(TASK_IDS), 3)


def test_sorted_rows_are_grouped_by_task():
    sorted_values = np.asarray(SortByTask()(_values(), TASK_IDS))
    sorted_ids = np.asarray(SortByTask()(TASK_IDS, TASK_IDS))
    assert sorted_ids.tolist() == sorted(TASK_IDS.tolist())
    for row, task in zip(sorted_values, sorted_ids):
        original = int(row[0]) // 3
        assert TASK_IDS[original] == task


def test_restore_undoes_sort():
    sorted_values = SortByTask()(_values(), TASK_IDS)
    restored = SortByTask(restore=True)(sorted_values, TASK_IDS[:, None])
    np.testing.assert_array_equal(restored, _values())


def test_restore_must_be_bool():
    with pytest.raises(ValueError, match="`restore` must be True or False"):
        SortByTask(restore="yes")


def test_config_round_trip():
    layer = SortByTask(restore=True, name="restore")
    clone = SortByTask.from_config(layer.get_config())
    assert clone.restore is True
    assert clone.name == "restore"


def test_functional_model_keeps_order():
    values = keras.Input((3,))
    task_ids = keras.Input((), dtype="int32")
    sorted_values = SortByTask()(values, task_ids)
    doubled = keras.layers.Lambda(lambda x: 2.0 * x)(sorted_values)
    outputs = SortByTask(restore=True)(doubled, task_ids)
    model = keras.Model([values, task_ids], outputs)
    np.testing.assert_allclose(model([_values(), TASK_IDS]), 2.0 * _values())


def test_batch_mismatch_rejected():
    with pytest.raises(ValueError, match="same batch size"):
        SortByTask()(_values(), TASK_IDS[:5])


@pytest.mark.skipif(
    backend_name() != "tensorflow",
    reason="an unknown batch size is checked with a TensorFlow assertion",
)
def test_batch_mismatch_raises_at_run_time():
    import tensorflow as tf

    layer = SortByTask()
    traced = tf.function(
        layer,
        input_signature=[tf.TensorSpec((None, 3), tf.float32), tf.TensorSpec((None,), tf.int32)],
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="same batch size"):
        traced(_values(), TASK_IDS[:5])
