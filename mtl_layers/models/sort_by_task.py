"""SortByTask: reorder a batch so that each task's examples are contiguous, and back."""

from mtl_layers.compat import keras, ops, register_serializable
from mtl_layers.layers import _runtime_checks


@register_serializable
class SortByTask(keras.layers.Layer):
    """Reorder the rows of a batch by task id, or restore the original order.

    `HyperGridDense` with `task_ids` multiplies each task's examples by that task's gated
    kernel. When each task's examples are contiguous in the batch, it skips two
    reorderings of its inputs and outputs. A model sorts its batch once at the input, so
    that every HyperGridDense layer receives a sorted batch, and restores the order before its
    outputs.

    The order is `argsort(task_ids)`, computed again in every call from the same task
    ids, so a `restore=True` layer undoes a `restore=False` layer given the same ids.

    Args:
        restore: False (the default) sorts the rows by task id. True applies the inverse
            permutation, which puts rows sorted by task back into the order of `task_ids`.
        **kwargs: Base layer keyword arguments such as `name`.

    Call arguments:
        values: `(batch_size, ...)`, the rows to reorder.
        task_ids: `(batch_size,)` or `(batch_size, 1)` integer task ids in the original
            order of the batch.

    Output shape:
        The shape of `values`.

    Example:

    >>> import numpy as np
    >>> from mtl_layers.models.sort_by_task import SortByTask
    >>> ids = np.array([2, 0, 1, 0])
    >>> values = np.array([[20.0], [0.0], [10.0], [1.0]])
    >>> sorted_values = SortByTask()(values, ids)
    >>> np.asarray(SortByTask(restore=True)(sorted_values, ids))[:, 0].tolist()
    [20.0, 0.0, 10.0, 1.0]
    """

    def __init__(self, restore: bool = False, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(restore, bool):
            raise ValueError(f"`restore` must be True or False. Received: restore={restore!r}")
        self.restore = restore

    def call(self, values, task_ids):
        task_ids = ops.reshape(task_ids, (-1,))
        task_ids = _runtime_checks.check_same_batch("SortByTask", values, "values", task_ids)
        order = ops.argsort(task_ids)
        if self.restore:
            # The argsort of a permutation is its inverse.
            order = ops.argsort(order)
        return ops.take(values, order, axis=0)

    def compute_output_shape(self, values_shape, task_ids_shape=None):
        return tuple(values_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"restore": self.restore})
        return config
