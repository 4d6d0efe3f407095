"""Shuffled batches of in-memory columns with a few ops per batch, not per example.

`tf.data.Dataset.from_tensor_slices(...).shuffle(n).batch(b)` moves every example
through the shuffle buffer and the batcher one at a time. For a small model, whose
training step takes about a millisecond, that per-example work competes with the step
for the CPU. `in_memory_batches` shuffles whole epochs of row indices with one op per
epoch, gathers each epoch's examples with one op per column, and slices the epochs into
batches.
"""

import numbers
from typing import Mapping, Optional

import numpy as np


def in_memory_batches(
    features: Mapping[str, np.ndarray],
    labels: Optional[Mapping[str, np.ndarray]] = None,
    batch_size: int = 32,
    shuffle: bool = False,
    seed: Optional[int] = None,
    repeat: bool = False,
):
    """Return a `tf.data.Dataset` of batches gathered from in-memory columns.

    Args:
        features: Columns keyed by name, NumPy arrays (or array-likes) that share their
            first dimension, the examples.
        labels: Optional label columns in the same form. With labels, the elements are
            `(features, labels)` tuples of dicts; without, feature dicts.
        batch_size: Examples per batch, an integer >= 1.
        shuffle: Visit the examples in a new random order in every epoch.
        seed: Seed of the shuffling. The same seed gives the same sequence of batches.
        repeat: Visit epoch after epoch without end, and give only full batches. The
            last batch of an epoch is completed with the first examples of the next
            epoch. So every batch has the same shape, and an XLA-compiled step is
            compiled once. Each example is still seen once per epoch. A batch larger
            than the data contains some examples more than once. Pass
            `steps_per_epoch=ceil(num_examples / batch_size)` and `shuffle=False` to
            `model.fit`: without `steps_per_epoch` the first epoch never ends. Without
            `repeat`, the dataset is one epoch and its last batch may be smaller.
            Iterating it again reshuffles.

    Returns:
        The batched `tf.data.Dataset`, prefetching. Its `cardinality()` is the number
        of batches in one epoch, or infinite with `repeat`.

    Raises:
        ValueError: for an invalid `batch_size`, no columns, or columns of different
            lengths.

    Example:

    >>> import numpy as np
    >>> from mtl_layers.datasets.batching import in_memory_batches
    >>> features = {"x": np.arange(10, dtype="float32")}
    >>> labels = {"y": np.arange(10) % 2}
    >>> batches = in_memory_batches(features, labels, batch_size=4, shuffle=True, seed=0)
    >>> [len(x["x"]) for x, y in batches]
    [4, 4, 2]
    """
    import tensorflow as tf

    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"`batch_size` must be an integer >= 1. Received: batch_size={batch_size!r}")
    if not features:
        raise ValueError("`features` must contain at least one column. Received: features={}")
    columns = {"features": dict(features), "labels": dict(labels or {})}
    lengths = {
        f"{group}[{name!r}]": len(values)
        for group, group_columns in columns.items()
        for name, values in group_columns.items()
    }
    if len(set(lengths.values())) > 1:
        raise ValueError(
            f"Every column must have the same number of examples. Received lengths: {lengths}. "
            "Pass columns of one split together."
        )
    count = next(iter(lengths.values()))
    if count == 0:
        raise ValueError("The columns contain no examples. Received lengths of 0.")

    tensors = {
        group: {name: tf.constant(values) for name, values in group_columns.items()}
        for group, group_columns in columns.items()
    }

    # One element per epoch: the row indices of that epoch, shuffled or in order.
    if shuffle:
        # `Dataset.random` gives a new stream of seeds each time the dataset is iterated,
        # so every epoch and every iteration gets its own order.
        epoch_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        if not repeat:
            epoch_seeds = epoch_seeds.take(1)
        epochs = epoch_seeds.map(
            lambda epoch_seed: tf.random.experimental.stateless_shuffle(
                tf.range(count, dtype=tf.int64), seed=tf.stack([epoch_seed, tf.constant(0, tf.int64)])
            )
        )
    else:
        epochs = tf.data.Dataset.from_tensors(tf.range(count, dtype=tf.int64))
        if repeat:
            epochs = epochs.repeat()

    def gather_batch(batch_indices):
        # One gather per column and batch: no op runs per example except the batching
        # of the int64 row indices.
        gathered = {
            group: {name: tf.gather(values, batch_indices) for name, values in group_tensors.items()}
            for group, group_tensors in tensors.items()
        }
        if labels is None:
            return gathered["features"]
        return gathered["features"], gathered["labels"]

    # The index streams of the epochs, one after another, cut into batches by a plain
    # `batch`: when repeating, the end of one epoch joins the start of the next.
    # tf.distribute splits global batches across replicas by rewriting such a `batch`.
    # It left a `rebatch` of whole epochs alone, so a distributed dataset gave one batch
    # per epoch.
    indices = epochs.flat_map(tf.data.Dataset.from_tensor_slices)
    batches = indices.batch(batch_size, drop_remainder=repeat).map(gather_batch)
    # `flat_map` leaves the cardinality unknown. Keras reads it to end an epoch without
    # warning that the input "ran out of data", and to size its progress bar.
    batch_count = tf.data.INFINITE_CARDINALITY if repeat else -(-count // batch_size)
    batches = batches.apply(tf.data.experimental.assert_cardinality(batch_count))
    return batches.prefetch(tf.data.AUTOTUNE)
