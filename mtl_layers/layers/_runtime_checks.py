"""Checks of task ids whose failure may only show at run time, with clear messages.

A size or value that is known when the layer is traced is checked in Python and raises
ValueError. One that is only known at run time is checked with a TensorFlow assertion on
the TensorFlow backend, which raises InvalidArgumentError with the same message. XLA
compiles TensorFlow assertions to no-ops, and JAX and PyTorch have no graph assertion,
so there only the Python checks apply.
"""

from mtl_layers.compat import backend_name, ops


def check_same_batch(layer_name: str, values, values_name: str, task_ids):
    """Return `task_ids`, or raise unless it has as many rows as `values`."""
    message = (
        f"{layer_name} needs one task id per example: `{values_name}` and `task_ids` must "
        "have the same batch size."
    )
    values_batch, ids_batch = values.shape[0], task_ids.shape[0] if task_ids.shape else None
    if values_batch is not None and ids_batch is not None:
        if values_batch != ids_batch:
            raise ValueError(
                f"{message} Received: {values_name} shape={tuple(values.shape)}, task_ids "
                f"shape={tuple(task_ids.shape)}."
            )
        return task_ids
    return same_rows_at_run_time(values, task_ids, message)


def same_rows_at_run_time(values, other, message: str):
    """Return `other`, checked at run time to have as many rows as `values`.

    For sizes unknown when the layer is traced; on other backends `other` is returned as is.
    """
    if backend_name() != "tensorflow":
        return other
    import tensorflow as tf

    check = tf.debugging.assert_equal(tf.shape(values)[0], tf.shape(other)[0], message=message)
    with tf.control_dependencies([check]):
        return tf.identity(other)


def check_task_id_range(layer_name: str, task_ids, num_tasks: int):
    """Return `task_ids`, or raise at run time for an id outside [0, num_tasks).

    NOTE: on JAX and PyTorch an id outside the range passes unchecked, and so it does
    under XLA, which drops assertions. Callers must make such ids harmless or visible.
    """
    if backend_name() != "tensorflow":
        return task_ids
    import tensorflow as tf

    message = (
        f"{layer_name} received a task id outside [0, {num_tasks}). Map every task to an "
        f"id from 0 to {num_tasks - 1}, or raise num_tasks"
    )
    # assert_non_negative ends the message with ". " before its condition; assert_less
    # only adds a space.
    checks = [
        tf.debugging.assert_non_negative(task_ids, message=message),
        tf.debugging.assert_less(
            task_ids, ops.cast(num_tasks, task_ids.dtype), message=message + "."
        ),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(task_ids)
