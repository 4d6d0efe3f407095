"""One gated kernel per task: the fast path of `HyperGridDense` for task-id conditioning.

HyperGridDense gates the kernel per example, W_b = W * expand(gate_b), and gate_b depends
on the example only through its `conditioning` vector. When that vector comes from a task
id (for example through `mtl.TaskEmbedding`), all examples of a task share one gate. A batch
then needs one gated kernel per task in it, a number bounded by the tasks and not by the
batch size. Given the task ids, this path

1. groups the examples by task id,
2. forms each group's gated kernel, W_g = W * expand(sigmoid(r_g c_g^T)),
3. sorts the examples by group and multiplies each group's rows by its kernel, one matmul
   per group, with a gradient that runs one matmul per group too,
4. restores the order of the batch.

Its extra work is tasks x features x units values for the kernels plus two reorderings of
the batch. The block forms of `HyperGridDense` touch grid_rows x units (or grid_cols x
features) extra values per position instead, which for small blocks costs more than the
matmul itself on CPU. The path needs TensorFlow outside XLA, because the number of tasks in
a batch is only known at run time.
"""

from typing import Optional

from mtl_layers.compat import backend_name, in_xla_context


def configuration_reason() -> Optional[str]:
    """Return why per-task kernels can never run in this process, or None."""
    if backend_name() != "tensorflow":
        return (
            "they group the batch with TensorFlow ops, and the Keras backend is "
            f"{backend_name()!r}"
        )
    return None


def call_reason() -> Optional[str]:
    """Return why per-task kernels cannot run the current call, or None when they can."""
    reason = configuration_reason()
    if reason is not None:
        return reason
    if in_xla_context():
        return "XLA, which compiles this call, needs a number of groups known before run time"
    return None


def gated_outputs(layer, inputs, conditioning, task_ids):
    """Return the layer's gated product `inputs W'` from one gated kernel per task.

    Args:
        layer: The `HyperGridDense` layer, built.
        inputs: `(batch, positions, features)`.
        conditioning: `(batch, conditioning_dim)`, a function of `task_ids` alone.
        task_ids: `(batch,)` integer task ids.

    Returns:
        `(batch, positions, units)`, without the bias.

    Raises:
        InvalidArgumentError: when two examples of one task have different conditioning
            vectors, at run time.
    """
    import tensorflow as tf

    tasks, group_of_example = tf.unique(task_ids, out_idx=tf.int32)
    group_count = tf.shape(tasks)[0]
    return _outputs_by_group(
        tf, layer, inputs, conditioning, task_ids, group_of_example, group_count
    )


def checked_conditioning(conditioning, task_ids):
    """Return `conditioning`, checked to hold one vector per task where the call allows it.

    The per-task kernels check this themselves. Other computations run this check so that
    conditioning that differs within a task fails in every call with task ids, not only
    in those that take the per-task kernels. It runs where they could run (TensorFlow,
    outside XLA); elsewhere `conditioning` is returned unchecked.

    Raises:
        InvalidArgumentError: when two examples of one task have different conditioning
            vectors, or NaN, at run time.
    """
    if call_reason() is not None:
        return conditioning
    import tensorflow as tf

    tasks, group_of_example = tf.unique(task_ids, out_idx=tf.int32)
    groups = _vector_per_task(tf, conditioning, task_ids, group_of_example, tf.shape(tasks)[0])
    with tf.control_dependencies([groups]):
        return tf.identity(conditioning)


def _vector_per_task(tf, conditioning, task_ids, group_of_example, group_count):
    """Return each task's conditioning vector, `(groups, conditioning_dim)`, checked.

    A task's vector is that of its first example. Its gradient is then the sum over the
    task's examples, which is what a lookup such as TaskEmbedding passes on, as long as
    the conditioning depends on the task id alone.
    """
    first_examples = tf.math.unsorted_segment_min(
        tf.range(tf.shape(task_ids)[0]), group_of_example, group_count
    )
    return _check_one_vector_per_task(
        tf, tf.gather(conditioning, first_examples), conditioning, group_of_example, task_ids
    )


def _outputs_by_group(tf, layer, inputs, conditioning, task_ids, group_of_example, group_count):
    features, units = layer.kernel.shape
    block_rows, block_cols = layer.block_shape
    shape = tf.shape(inputs)
    batch_size, positions = shape[0], shape[1]

    groups = _vector_per_task(tf, conditioning, task_ids, group_of_example, group_count)

    # W_g = W * expand(gate_g): one (features, units) kernel per group, (groups, features, units).
    # The kernel is viewed as (grid_rows, block_rows, grid_cols, block_cols) blocks, so
    # that one broadcast multiplication applies each gate value to its whole block.
    gate = tf.cast(layer.compute_gate(groups), inputs.dtype)
    grid_rows, grid_cols = features // block_rows, units // block_cols
    gate = tf.reshape(gate, (-1, grid_rows, 1, grid_cols, 1))
    blocks = tf.reshape(
        tf.cast(layer.kernel, inputs.dtype), (1, grid_rows, block_rows, grid_cols, block_cols)
    )
    kernels = tf.reshape(blocks * gate, (-1, features, units))

    # Sort the examples by group, so that each group's rows are one contiguous slice.
    # The permutations are computed inside each branch below: a gradient function that
    # captures a tensor from outside a tf.cond branch breaks the cond's gradient.
    def order():
        return tf.argsort(group_of_example, stable=True)

    def sort(values):
        sorting = order()
        return _permute(tf, values, sorting, tf.math.invert_permutation(sorting))

    def unsort(values):
        sorting = order()
        return _permute(tf, values, tf.math.invert_permutation(sorting), sorting)

    examples_per_group = tf.math.bincount(
        group_of_example, minlength=group_count, maxlength=group_count
    )
    rows_per_group = examples_per_group * positions
    first_rows = tf.cumsum(rows_per_group, exclusive=True)

    # A batch already sorted by task (as `mtl.models.hypergrid_transformer` arranges it)
    # skips both reorderings, which copy the inputs and the outputs.
    is_sorted = tf.reduce_all(group_of_example[1:] >= group_of_example[:-1])
    sorted_inputs = tf.cond(is_sorted, lambda: inputs, lambda: sort(inputs))
    outputs = _matmul_by_group(
        tf, tf.reshape(sorted_inputs, (-1, features)), kernels, first_rows, rows_per_group
    )
    outputs = tf.reshape(outputs, (batch_size, positions, units))
    return tf.cond(is_sorted, lambda: outputs, lambda: unsort(outputs))


def _check_one_vector_per_task(tf, groups, conditioning, group_of_example, task_ids):
    """Return `groups`, or raise InvalidArgumentError if a task has two conditioning vectors."""
    differs = tf.reduce_any(tf.not_equal(tf.gather(groups, group_of_example), conditioning), axis=1)
    first_bad_task = tf.gather(task_ids, tf.argmax(tf.cast(differs, tf.int32)))
    message = (
        "HyperGridDense received task_ids together with conditioning vectors that differ "
        "between examples of one task, or that contain NaN. Pass task_ids only when the "
        "conditioning is a function of the task id (for example the output of "
        "mtl.TaskEmbedding), or call the layer without task_ids. Task id"
    )
    if tf.executing_eagerly():
        if bool(tf.reduce_any(differs)):
            raise tf.errors.InvalidArgumentError(
                None, None, f"{message} {int(first_bad_task)} has more than one vector."
            )
        return groups
    check = tf.debugging.Assert(
        tf.logical_not(tf.reduce_any(differs)),
        [message, first_bad_task, "has more than one vector."],
    )
    with tf.control_dependencies([check]):
        return tf.identity(groups)


def _permute(tf, values, order, inverse):
    """Return `values` reordered along the batch axis, with a gradient that is one gather.

    The gradient of a plain `tf.gather` scatters into zeros, which costs more than the
    inverse permutation.
    """

    @tf.custom_gradient
    def permute(values):
        def gradient(output_gradient):
            return tf.gather(output_gradient, inverse)

        return tf.gather(values, order), gradient

    return permute(values)


def _matmul_by_group(tf, rows, kernels, first_rows, rows_per_group):
    """Return the rows of each group times that group's kernel, `(rows, units)`.

    `rows` contains the groups one after another: group g is `rows_per_group[g]` rows from
    `first_rows[g]`.
    """
    group_count = tf.shape(kernels)[0]

    def group_slice(values, group):
        return tf.slice(values, [first_rows[group], 0], [rows_per_group[group], -1])

    features, units = kernels.shape[1:]

    def each_group(product, element_shape, stack):
        # One while_loop step per group. The groups' results are stacked (kernel gradients)
        # or concatenated along the rows (outputs and input gradients). The element shape
        # lets an empty batch, with no group, stack or concatenate to an empty tensor.
        results = tf.TensorArray(
            kernels.dtype, size=group_count, infer_shape=False, element_shape=element_shape
        )

        def step(group, results):
            return group + 1, results.write(group, product(group))

        _, results = tf.while_loop(lambda group, _: group < group_count, step, (0, results))
        return results.stack() if stack else results.concat()

    @tf.custom_gradient
    def matmul(rows, kernels):
        # y_g = x_g W_g for each group g.
        outputs = each_group(
            lambda g: tf.matmul(group_slice(rows, g), kernels[g]),
            tf.TensorShape([None, units]),
            stack=False,
        )

        def gradient(output_gradient):
            # dL/dx_g = dL/dy_g W_g^T and dL/dW_g = x_g^T dL/dy_g.
            rows_gradient = each_group(
                lambda g: tf.matmul(group_slice(output_gradient, g), kernels[g], transpose_b=True),
                tf.TensorShape([None, features]),
                stack=False,
            )
            kernels_gradient = each_group(
                lambda g: tf.matmul(
                    group_slice(rows, g), group_slice(output_gradient, g), transpose_a=True
                ),
                tf.TensorShape([features, units]),
                stack=True,
            )
            return rows_gradient, kernels_gradient

        return outputs, gradient

    return matmul(rows, kernels)
