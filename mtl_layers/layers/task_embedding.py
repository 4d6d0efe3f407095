"""TaskEmbedding: a learned vector per task, looked up from integer task ids."""

from mtl_layers.compat import keras, ops, register_serializable
from mtl_layers.layers import _runtime_checks, _validation


@register_serializable
class TaskEmbedding(keras.layers.Layer):
    """Map integer task ids to learned task vectors.

    The output is the per-example task representation that `HyperGridDense` takes as
    `conditioning`. It is an embedding table of shape `(num_tasks, output_dim)`.

    Args:
        num_tasks: Number of tasks, an integer >= 1. Valid ids are `0 .. num_tasks - 1`.
            On the TensorFlow backend any other id raises InvalidArgumentError, except
            under XLA (`jit_compile=True`), which drops run-time assertions. There, and on
            JAX and PyTorch, such an id gets a vector of NaN: in training the loss turns
            NaN and, after the update, so do the weights, so check the ids in the input
            pipeline on those backends. JAX without 64-bit mode converts int64 inputs to
            int32 before the layer receives them, so an id above 2**31 - 1 wraps around there
            and may land in the range.
        output_dim: Size of a task vector, an integer >= 1.
        embeddings_initializer: Initializer of the table.
        embeddings_regularizer: Regularizer of the table.
        **kwargs: Base layer keyword arguments such as `name` and `dtype`.

    Input shape:
        Integer task ids of shape `(batch_size,)` or `(batch_size, 1)`. Floating point ids
        raise ValueError.

    Output shape:
        `(batch_size, output_dim)`.

    Example:

    >>> import numpy as np
    >>> import mtl_layers as mtl
    >>> tuple(mtl.TaskEmbedding(num_tasks=3, output_dim=4)(np.array([0, 2, 1])).shape)
    (3, 4)
    """

    def __init__(
        self,
        num_tasks: int,
        output_dim: int,
        embeddings_initializer="uniform",
        embeddings_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_tasks = _validation.check_positive_int("num_tasks", num_tasks)
        self.output_dim = _validation.check_positive_int("output_dim", output_dim)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.embeddings_regularizer = keras.regularizers.get(embeddings_regularizer)

    @staticmethod
    def _check_ids_shape(input_shape):
        if not (len(input_shape) == 1 or (len(input_shape) == 2 and input_shape[1] in (None, 1))):
            raise ValueError(
                "TaskEmbedding expects one integer task id per example, of shape "
                f"(batch_size,) or (batch_size, 1). Received: input shape={input_shape}."
            )

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        self._check_ids_shape(input_shape)
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.num_tasks, self.output_dim),
            initializer=self.embeddings_initializer,
            regularizer=self.embeddings_regularizer,
        )
        super().build(input_shape)

    def call(self, task_ids):
        # Without the check, TensorFlow's gather returns zeros for an id >= num_tasks on
        # GPU, and ops.take counts a negative id from the end. It runs on the ids as given,
        # so that its message shows them.
        # Keras checks the shape only when it builds the layer; later calls come here.
        self._check_ids_shape(tuple(task_ids.shape))
        task_ids = ops.reshape(task_ids, (-1,))
        if "int" not in str(ops.dtype(task_ids)):
            # A float id would be truncated to a row (1.5 -> 1) without a sign.
            raise ValueError(
                "`task_ids` must be integer task ids. Received: task_ids dtype="
                f"{ops.dtype(task_ids)}. Cast them to int32, or give the task id input "
                "dtype='int32'."
            )
        task_ids = _runtime_checks.check_task_id_range("TaskEmbedding", task_ids, self.num_tasks)

        # Clipping before the cast keeps an int64 id beyond the int32 range out of range.
        # The cast alone would wrap 2**32 + 1 to 1.
        task_ids = ops.cast(ops.clip(task_ids, -1, self.num_tasks), "int32")
        valid = ops.logical_and(ops.greater_equal(task_ids, 0), ops.less(task_ids, self.num_tasks))
        vectors = ops.take(self.embeddings, ops.where(valid, task_ids, 0), axis=0)

        # Where no check can raise (under XLA, on JAX and PyTorch), an id out of range
        # gets a NaN vector, so that the loss shows the bad id instead of hiding it.
        return ops.where(ops.expand_dims(valid, -1), vectors, float("nan"))

    def compute_output_shape(self, input_shape):
        return (tuple(input_shape)[0], self.output_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_tasks": self.num_tasks,
                "output_dim": self.output_dim,
                "embeddings_initializer": keras.initializers.serialize(
                    self.embeddings_initializer
                ),
                "embeddings_regularizer": keras.regularizers.serialize(
                    self.embeddings_regularizer
                ),
            }
        )
        return config
