"""Tests of in_memory_batches: epochs, shuffling, repetition, validation."""

import numpy as np
import pytest

from mtl_layers.datasets.batching import in_memory_batches

FEATURES = {"x": np.arange(10, dtype="float32"), "word": np.array([f"w{i}" for i in range(10)])}
LABELS = {"y": np.arange(10, dtype="int64") * 10}


def _label_batches(dataset):
    return [labels["y"].numpy().tolist() for _, labels in dataset]


def test_unshuffled_epoch_in_order():
    batches = list(in_memory_batches(FEATURES, LABELS, batch_size=4))

    assert [len(features["x"]) for features, _ in batches] == [4, 4, 2]
    assert np.concatenate([labels["y"] for _, labels in batches]).tolist() == LABELS["y"].tolist()
    # Features and labels of a row stay together.
    for features, labels in batches:
        np.testing.assert_array_equal(features["x"].numpy() * 10, labels["y"].numpy())
        assert [word.decode() for word in features["word"].numpy()] == [f"w{int(x)}" for x in features["x"].numpy()]


def test_shuffle_reshuffles_each_iteration():
    dataset = in_memory_batches(FEATURES, LABELS, batch_size=4, shuffle=True, seed=3)

    first, second = _label_batches(dataset), _label_batches(dataset)

    assert sorted(sum(first, [])) == LABELS["y"].tolist()
    assert sorted(sum(second, [])) == LABELS["y"].tolist()
    assert first != second


def test_same_seed_gives_same_batches():
    first = _label_batches(in_memory_batches(FEATURES, LABELS, batch_size=3, shuffle=True, seed=5))
    second = _label_batches(in_memory_batches(FEATURES, LABELS, batch_size=3, shuffle=True, seed=5))
    other = _label_batches(in_memory_batches(FEATURES, LABELS, batch_size=3, shuffle=True, seed=6))

    assert first == second
    assert first != other


@pytest.mark.parametrize("batch_size, batches", [(4, 3), (5, 2), (10, 1), (32, 1)])
def test_one_epoch_has_known_cardinality(batch_size, batches):
    for shuffle in (False, True):
        dataset = in_memory_batches(FEATURES, LABELS, batch_size=batch_size, shuffle=shuffle, seed=0)

        assert int(dataset.cardinality()) == batches
        assert len(list(dataset)) == batches


def test_repeat_has_infinite_cardinality():
    import tensorflow as tf

    dataset = in_memory_batches(FEATURES, LABELS, batch_size=4, repeat=True)

    assert int(dataset.cardinality()) == int(tf.data.INFINITE_CARDINALITY)


def test_repeat_gives_full_batches():
    dataset = in_memory_batches(FEATURES, batch_size=4, shuffle=True, seed=1, repeat=True)

    rows = np.concatenate([features["x"].numpy() for features in dataset.take(10)]).astype(int)

    assert rows.shape == (40,)
    for epoch in range(4):
        assert sorted(rows[10 * epoch : 10 * (epoch + 1)].tolist()) == list(range(10))
    assert rows[:10].tolist() != rows[10:20].tolist()


def test_repeat_without_shuffle_wraps_in_order():
    dataset = in_memory_batches(FEATURES, LABELS, batch_size=4, repeat=True)

    assert _label_batches(dataset.take(3)) == [[0, 10, 20, 30], [40, 50, 60, 70], [80, 90, 0, 10]]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"features": FEATURES, "batch_size": 0}, r"`batch_size` must be an integer >= 1. Received: batch_size=0"),
        ({"features": {}, "batch_size": 2}, r"`features` must contain at least one column"),
        (
            {"features": FEATURES, "labels": {"y": np.zeros(3)}, "batch_size": 2},
            r"same number of examples. Received lengths: .*labels\['y'\]\": 3",
        ),
        ({"features": {"x": np.zeros(0)}, "batch_size": 2}, "contain no examples"),
    ],
)
def test_invalid_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        in_memory_batches(**kwargs)


@pytest.mark.parametrize("shuffle", [False, True])
def test_distributed_dataset_keeps_every_batch(shuffle):
    import tensorflow as tf

    batches = in_memory_batches(FEATURES, LABELS, batch_size=4, shuffle=shuffle, seed=0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    distributed = strategy.experimental_distribute_dataset(batches)

    sizes = [int(tf.shape(x["x"])[0]) for x, _ in distributed]
    assert sizes == [4, 4, 2]
