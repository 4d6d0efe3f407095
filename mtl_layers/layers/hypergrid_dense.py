"""HyperGridDense: a Dense layer whose kernel is gated block-wise per example."""

import numbers
from typing import Sequence

from mtl_layers.compat import keras, ops, register_serializable
from mtl_layers.layers import _compiled_hypergrid, _runtime_checks, _task_kernels, _validation
from mtl_layers.layers._initializers import copy_initializer

MODES = ("LG", "GL", "LL", "GG")

_SAME_BATCH_MESSAGE = (
    "`inputs` and `conditioning` must have the same batch size: one conditioning vector "
    "per example."
)


def _seed_offset(name: str) -> int:
    """Return the seed offset of a row or column weight, so the two never start equal."""
    return 1 if name.endswith("cols") else 0


def _check_block_shape(block_shape) -> tuple:
    if (
        not isinstance(block_shape, (list, tuple))
        or len(block_shape) != 2
        or any(
            isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1
            for size in block_shape
        )
    ):
        raise ValueError(
            "`block_shape` must be a pair of integers >= 1, (block_rows, block_cols). "
            f"Received: block_shape={block_shape!r}"
        )
    return int(block_shape[0]), int(block_shape[1])


@register_serializable
class HyperGridDense(keras.layers.Layer):
    """A Dense layer whose kernel is gated by a task-conditioned grid of blocks.

    HyperGrid (Tay et al., "HyperGrid Transformers: Towards A Single Model for Multiple
    Tasks", ICLR 2021) lets one network serve many tasks by gating the weight matrix
    W (features x units) of a dense layer per example. W is split into a grid of
    `grid_rows x grid_cols` blocks of `block_shape = (block_rows, block_cols)`, and every
    block is scaled by one gate value:

        gate = sigmoid(r c^T)                      (grid_rows x grid_cols)
        W'   = W * expand(gate)                    (each value repeated over its block)
        y    = activation(x W' + b)

    The row vector r (length grid_rows) and the column vector c (length grid_cols) are
    each either "local", a linear projection of the example's `conditioning` vector
    (for example a task embedding), or "global", a learned vector shared by all tasks:

    - `"LG"`: local rows, global columns (the paper's grid-wise projection).
    - `"GL"`: global rows, local columns (the paper's other orientation).
    - `"LL"`: both local, so the gate depends on the task alone. Added here for
      ablation; it is not one of the paper's two grid layouts.
    - `"GG"`: both global, so the gate is the same for every example and the layer
      reduces to a Dense layer with a reparametrised kernel. Added here for ablation;
      `conditioning` is ignored and may be omitted.

    The local vector here is an affine projection of whatever `conditioning` the caller
    passes; in the paper it is computed from the task-prefix representation. The
    initializers are this library's choice.

    The layer never writes a per-example kernel to memory. With the input split into
    `grid_rows` row blocks x_i, the output column block j is

        y_j = sum_i gate[i, j] * (x_i W_ij),

    which it computes exactly in one of two ways, each with the FLOPs of one Dense layer:
    a loop over the row blocks that adds up the gated partial products x_i W_i (extra
    elementwise work: `grid_rows x units` values per position), or a loop over the
    column blocks that scales every row block x_i by gate[i, j] and multiplies the
    scaled input by W_j (extra work: `grid_cols x features`). It takes the form with less
    extra work. In `"GG"` mode the gate is folded into the kernel once per call instead.

    When the conditioning comes from task ids, the examples of one task share one gate, so
    a batch holds only a few distinct gated kernels. Given `task_ids`, on TensorFlow and
    outside XLA, the layer then forms one gated kernel per task in the batch and multiplies
    each task's examples by its own kernel (`task_kernels`, below). That costs one Dense
    layer's matmuls plus `tasks x features x units` values for the kernels and two
    reorderings of the batch. The number of kernels is bounded by the number of tasks,
    never by the batch size. The reorderings are skipped when each task's examples are
    contiguous in the batch, as `mtl.models.hypergrid_transformer` arranges them. By
    process CPU time on 2 shared cores (`benchmarks/hypergrid_dense.py`, 5 tasks, batches
    sorted by task), this path measured 1.11-1.24x a Dense layer's forward pass and
    training step from 64 x 64 positions on, for blocks from 32x32 to 256x256.

    On CPU, the layer runs a compiled TensorFlow op instead (`compiled_kernel`, below),
    a matrix product that applies the gate inside its tiles. It serves training calls
    (`training=True`, as `fit` passes it) and inference calls that run eagerly or inside
    the functions that Keras traces for `evaluate` and `predict` (and their `*_on_batch`
    forms). Its forward pass forms each example's gated kernel 32 columns at a time in a
    buffer that stays in the core's cache. Its gradient op gates the partial products of
    each column block in registers and scales the output gradient by the gate before the
    kernel-gradient product, so the block shape costs little. The op is built from the
    package's C++ source on first use, like SequentialExpert's kernel
    (docs/hypergrid.md). It needs float32, features and units that are multiples of 32,
    and at least 16 positions per example. It runs for blocks of fewer than 256 rows and
    columns; larger blocks leave the block forms little extra work, so they run those.
    Every graph that a SavedModel keeps runs the block forms or the per-task kernels, so
    TF Serving needs nothing extra. Inference calls in a `tf.function` of your own run
    them too, because it may be saved. Calls with task ids take the per-task kernels
    instead when `num_tasks` is set and the batch has at least 4 examples per task or an
    unknown size.

    NOTE: training steps with the compiled op still cost more than 1.3x a Dense layer at
    some shapes on CPU (process CPU time on 2 shared cores, `benchmarks/hypergrid_dense.py`,
    tables in docs/hypergrid.md): 1.36-1.44x at 8 x 64 positions with blocks of 32 rows
    and 1.37-1.57x at 256 x 32, in two runs. At 64 x 64 they measured 1.18-1.27x in one
    run and 1.30-1.40x in a run on a busier machine. Inference calls in `predict` took
    1.06-1.20x at 8 x 64 and 64 x 64, and 1.21-1.40x at 256 x 32. Inference calls in a
    `tf.function` of your own run the block forms: up to 3x for 32x32 blocks.

    Args:
        units: Output size, an integer >= 1.
        block_shape: `(block_rows, block_cols)`, the size of one grid block. `block_rows`
            must divide the input features and `block_cols` must divide `units`.
        mode: One of `"LG"`, `"GL"`, `"LL"`, `"GG"` (see above). Defaults to `"LG"`.
        activation: Activation of the output. None (default) means linear.
        use_bias: Whether the layer adds a bias (not gated).
        kernel_initializer: Initializer of the kernel W.
        bias_initializer: Initializer of the bias.
        local_initializer: Initializer of the kernels that project `conditioning` to the
            local vectors.
        global_initializer: Initializer of the global vectors. The default, ones, starts
            each gate as sigmoid of the local value alone.
        kernel_regularizer: Regularizer of the kernel W.
        bias_regularizer: Regularizer of the bias.
        task_kernels: `"auto"` (the default), True or False. Whether a call with
            `task_ids` runs one gated kernel per task (see above) instead of a block form.
            `"auto"` does so where the path can run, on the TensorFlow backend outside
            XLA, and where the kernels touch no more values than the block form's extra
            work: `kernels x features x units <= batch x positions x extra`, with
            `extra = grid_rows x units` or `grid_cols x features` per position. It counts
            `kernels` as `num_tasks` (or the batch size, if smaller or if `num_tasks` is
            None), and takes an unknown batch size or number of positions as large. True
            runs the path wherever it can run and raises elsewhere. False always runs a
            block form. All three compute the same function. Calls without `task_ids`
            always run a block form.
        num_tasks: The number of distinct task ids that calls pass, or None (the default)
            if unknown. Only the `task_kernels="auto"` choice reads it.
        compiled_kernel: Whether training calls, and inference calls in eager mode or in
            Keras's `evaluate` and `predict` (and `*_on_batch`), may run the compiled
            gated product (default True). It runs where it can (TensorFlow backend, CPU,
            outside XLA, float32, features and units multiples of 32, 16 or more
            positions, blocks under 256 rows and columns) and the block forms or
            per-task kernels run elsewhere. Where the op cannot be built, the first call
            that could use it logs one warning, and calls run the block forms. False
            always runs them. All choices compute the same function.
        **kwargs: Base layer keyword arguments such as `name` and `dtype`.

    Call arguments:
        inputs: `(batch_size, ..., features)`, a tensor of rank 2 or more.
        conditioning: `(batch_size, conditioning_dim)`, one task representation per
            example, shared by all positions of that example (for example the output of
            `mtl.TaskEmbedding`). Optional only in `"GG"` mode.
        task_ids: Optional `(batch_size,)` or `(batch_size, 1)` integer task ids. Pass them
            only when `conditioning` is a function of the task id alone, as the output of
            `mtl.TaskEmbedding` is: the layer then may form one kernel per task. A task
            whose examples have different conditioning vectors (or NaN) raises
            InvalidArgumentError at run time, on the TensorFlow backend outside XLA. On
            other backends and under XLA it is not checked.
            Ignored in `"GG"` mode, where the gate is the same for every example.
        training: Whether the call is a training call. Inference calls run the compiled
            gated product only eagerly or inside Keras's `evaluate` and `predict` (and
            `*_on_batch`); the result is the same either way.

    Output shape:
        `(batch_size, ..., units)`.

    Example:

    >>> import numpy as np
    >>> import mtl_layers as mtl
    >>> tokens = np.random.normal(size=(2, 5, 16)).astype("float32")
    >>> task = mtl.TaskEmbedding(num_tasks=3, output_dim=8)(np.array([0, 2]))
    >>> layer = mtl.HyperGridDense(units=12, block_shape=(4, 3), mode="LG")
    >>> tuple(layer(tokens, task).shape)
    (2, 5, 12)
    >>> tuple(layer(tokens, task, np.array([0, 2])).shape)  # with task ids: one kernel per task
    (2, 5, 12)
    """

    def __init__(
        self,
        units: int,
        block_shape: Sequence[int] = (32, 32),
        mode: str = "LG",
        activation=None,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        local_initializer="glorot_uniform",
        global_initializer="ones",
        kernel_regularizer=None,
        bias_regularizer=None,
        task_kernels="auto",
        num_tasks=None,
        compiled_kernel: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = _validation.check_positive_int("units", units)
        self.block_shape = _check_block_shape(block_shape)
        if mode not in MODES:
            raise ValueError(f"`mode` must be one of {MODES}. Received: mode={mode!r}")
        self.mode = mode
        if self.units % self.block_shape[1]:
            raise ValueError(
                "The block columns must divide `units`. Received: "
                f"block_shape={self.block_shape}, units={self.units}. Choose block_cols "
                f"among the divisors of {self.units}."
            )
        self.activation = keras.activations.get(activation)
        self.use_bias = _validation.check_bool("use_bias", use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.local_initializer = keras.initializers.get(local_initializer)
        self.global_initializer = keras.initializers.get(global_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.task_kernels = _validation.check_auto_or_bool("task_kernels", task_kernels)
        self.compiled_kernel = _validation.check_bool("compiled_kernel", compiled_kernel)
        self.num_tasks = None
        if num_tasks is not None:
            self.num_tasks = _validation.check_positive_int("num_tasks", num_tasks)
        if self.task_kernels is True:
            reason = _task_kernels.configuration_reason()
            if reason is not None:
                raise ValueError(
                    f"`task_kernels=True` is not possible for this layer: {reason}. Pass "
                    "task_kernels='auto' to use the block forms where per-task kernels "
                    "cannot run."
                )
        self.grid_cols = self.units // self.block_shape[1]
        self.grid_rows = None
        self.local_rows = None
        self.local_cols = None
        self.global_rows = None
        self.global_cols = None

    def build(self, inputs_shape, conditioning_shape=None, task_ids_shape=None):
        inputs_shape = tuple(inputs_shape)
        if len(inputs_shape) < 2 or inputs_shape[-1] is None:
            raise ValueError(
                "HyperGridDense expects inputs of shape (batch_size, ..., features) with "
                f"rank >= 2 and known features. Received: inputs shape={inputs_shape}."
            )
        input_dim = inputs_shape[-1]
        block_rows = self.block_shape[0]
        if input_dim % block_rows:
            raise ValueError(
                "The block rows must divide the input features. Received: "
                f"block_shape={self.block_shape}, inputs shape={inputs_shape} "
                f"({input_dim} features). Choose block_rows among the divisors of "
                f"{input_dim}."
            )
        self.grid_rows = input_dim // block_rows

        self.kernel = self.add_weight(
            name="kernel",
            shape=(input_dim, self.units),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.units,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
            )

        # Local vectors are Dense sublayers over `conditioning`: tf_keras passes only the
        # first argument's shape to build(), and a sublayer builds itself on first call.
        rows_are_local, cols_are_local = self.mode[0] == "L", self.mode[1] == "L"
        if rows_are_local:
            self.local_rows = self._local_projection(self.grid_rows, "local_rows")
        else:
            self.global_rows = self._global_vector(self.grid_rows, "global_rows")
        if cols_are_local:
            self.local_cols = self._local_projection(self.grid_cols, "local_cols")
        else:
            self.global_cols = self._global_vector(self.grid_cols, "global_cols")
        if conditioning_shape is not None and self.mode != "GG":
            conditioning_shape = tuple(conditioning_shape)
            self._check_conditioning_shape(inputs_shape, conditioning_shape)
            for projection in (self.local_rows, self.local_cols):
                if projection is not None:
                    projection.build(conditioning_shape)
        # Later calls with another feature count then fail with a message naming both.
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: input_dim})
        super().build(inputs_shape)

    def _local_projection(self, size, name):
        return keras.layers.Dense(
            size,
            kernel_initializer=copy_initializer(self.local_initializer, _seed_offset(name)),
            dtype=self.dtype_policy,
            name=name,
        )

    def _global_vector(self, size, name):
        initializer = copy_initializer(self.global_initializer, _seed_offset(name))
        return self.add_weight(name=name, shape=(size,), initializer=initializer)

    def _check_conditioning_shape(self, inputs_shape, conditioning_shape):
        if len(conditioning_shape) != 2 or conditioning_shape[-1] is None:
            raise ValueError(
                "HyperGridDense expects `conditioning` of shape (batch_size, "
                "conditioning_dim), one task representation per example, with a known "
                f"last axis. Received: conditioning shape={conditioning_shape}. For integer "
                "task ids, pass them through mtl.TaskEmbedding first."
            )
        batch, conditioning_batch = inputs_shape[0], conditioning_shape[0]
        if batch is not None and conditioning_batch is not None and batch != conditioning_batch:
            raise ValueError(
                f"{_SAME_BATCH_MESSAGE} Received: inputs shape={inputs_shape}, "
                f"conditioning shape={conditioning_shape}."
            )

    def compute_gate(self, conditioning=None):
        """Return the block gate sigmoid(r c^T).

        The shape is `(batch_size, grid_rows, grid_cols)`, or `(grid_rows, grid_cols)` in
        `"GG"` mode, where the gate does not depend on the example.
        """
        if self.mode == "GG":
            # convert_to_tensor: the JAX backend's outer() does not take Keras variables.
            global_rows = ops.convert_to_tensor(self.global_rows)
            global_cols = ops.convert_to_tensor(self.global_cols)
            return ops.sigmoid(ops.outer(global_rows, global_cols))
        if conditioning is None:
            raise ValueError(self._missing_conditioning_message())
        rows = self.local_rows(conditioning) if self.local_rows is not None else None
        cols = self.local_cols(conditioning) if self.local_cols is not None else None
        # The global vector is float32; under mixed precision the projection is not.
        if rows is None:
            global_rows = ops.cast(self.global_rows, cols.dtype)
            rows = ops.broadcast_to(global_rows, (ops.shape(cols)[0], self.grid_rows))
        if cols is None:
            global_cols = ops.cast(self.global_cols, rows.dtype)
            cols = ops.broadcast_to(global_cols, (ops.shape(rows)[0], self.grid_cols))
        # gate[b] = sigmoid(r_b c_b^T), one value per block of the kernel.
        return ops.sigmoid(ops.expand_dims(rows, 2) * ops.expand_dims(cols, 1))

    def _missing_conditioning_message(self):
        return (
            f"HyperGridDense in mode {self.mode!r} needs `conditioning`, a "
            "(batch_size, conditioning_dim) task representation. Received: "
            "conditioning=None. Call the layer as layer(inputs, conditioning)."
        )

    def call(self, inputs, conditioning=None, task_ids=None, training=None):
        _validation.check_feature_count(self, inputs, self.kernel.shape[0])
        if self.mode == "GG":
            outputs = self._call_global(inputs)
        else:
            if conditioning is None:
                raise ValueError(self._missing_conditioning_message())
            projection = self.local_rows if self.local_rows is not None else self.local_cols
            if not projection.built:
                # tf_keras reaches this point without having seen the conditioning shape.
                self._check_conditioning_shape(tuple(inputs.shape), tuple(conditioning.shape))
            else:
                _validation.check_feature_count(
                    self, conditioning, projection.kernel.shape[0], "conditioning"
                )
                # Every call, not only the first: the block forms would broadcast a
                # conditioning batch of 1 silently, and the compiled product would reject it.
                self._check_conditioning_shape(tuple(inputs.shape), tuple(conditioning.shape))
            if inputs.shape[0] is None or conditioning.shape[0] is None:
                # The same check when the graph runs, for a batch size unknown until then.
                conditioning = _runtime_checks.same_rows_at_run_time(
                    inputs, conditioning, _SAME_BATCH_MESSAGE
                )
            outputs = self._call_local(inputs, conditioning, task_ids, training)
        if self.use_bias:
            outputs = outputs + self.bias
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def _call_global(self, inputs):
        # W' = W * expand(gate): the gate is shared by all examples, so fold it in once.
        block_rows, block_cols = self.block_shape
        gate = ops.repeat(ops.repeat(self.compute_gate(), block_rows, axis=0), block_cols, axis=1)
        kernel = self.kernel * ops.cast(gate, self.kernel.dtype)
        if len(inputs.shape) == 2:
            return ops.matmul(inputs, kernel)
        # Flatten the positions so that the backend runs one 2-D matmul, not a batched one.
        input_shape = ops.shape(inputs)
        outputs = ops.matmul(ops.reshape(inputs, (-1, self.kernel.shape[0])), kernel)
        return ops.reshape(outputs, tuple(input_shape[:-1]) + (self.units,))

    def _call_local(self, inputs, conditioning, task_ids, training=None):
        input_shape = ops.shape(inputs)
        input_rank = len(inputs.shape)
        batch_size = input_shape[0]
        positions = 1
        for size in inputs.shape[1:-1]:
            positions = None if positions is None or size is None else positions * size
        # (batch, positions, features): every position of an example shares its gate.
        inputs = ops.reshape(inputs, (batch_size, -1, self.kernel.shape[0]))
        if task_ids is not None:
            task_ids = self._check_task_ids(task_ids, inputs)
        # An empty batch takes the block form: eager TensorFlow cannot concatenate the
        # results of zero groups.
        batch = inputs.shape[0]
        runs_task_kernels = (
            task_ids is not None and batch != 0 and self._runs_task_kernels(batch, positions)
        )
        if runs_task_kernels and self._task_kernels_beat_compiled(batch):
            outputs = _task_kernels.gated_outputs(self, inputs, conditioning, task_ids)
        else:
            runs_compiled = self._runs_compiled_product(inputs, positions, training)
            if task_ids is not None and batch != 0 and (runs_compiled or not runs_task_kernels):
                # The per-task kernels reject conditioning that differs within a task. The
                # other computations check it too, so that such a model fails as soon as
                # it trains, not later in a call that takes the per-task kernels.
                conditioning = _task_kernels.checked_conditioning(conditioning, task_ids)
            if runs_compiled:
                # y_b = x_b (W * expand(gate_b)), the gate applied inside the product's tiles.
                gate = ops.cast(self.compute_gate(conditioning), "float32")
                outputs = _compiled_hypergrid.run(inputs, self.kernel, gate)
            elif runs_task_kernels:
                outputs = _task_kernels.gated_outputs(self, inputs, conditioning, task_ids)
            else:
                outputs = self._block_form(inputs, self.compute_gate(conditioning))
        if input_rank == 2:
            return ops.reshape(outputs, (batch_size, self.units))
        return ops.reshape(outputs, tuple(input_shape[:-1]) + (self.units,))

    def _task_kernels_beat_compiled(self, batch_size):
        """Return whether per-task kernels should run rather than the compiled product.

        With many examples per task, the per-task kernels form few gated kernels and run
        one plain product per task. They measured faster than the compiled product with
        about 13 examples per task (64 x 64 positions, 5 tasks) and slower with under 2
        (8 x 64 positions). The threshold, 4 examples per task, lies between the two. An
        unknown batch size, as in `fit`, counts as large.
        """
        if self.task_kernels is True:
            return True
        if self.num_tasks is None:
            return False
        return batch_size is None or batch_size >= 4 * self.num_tasks

    def _runs_compiled_product(self, inputs, positions, training):
        """Return whether this call runs the compiled gated product."""
        if not self.compiled_kernel:
            return False
        # The block forms' extra work is about 1/max(block_rows, block_cols) of the product.
        # For blocks of 256 rows or columns, or more, they measured about as fast as the
        # compiled product or faster (benchmarks/hypergrid_dense.py), so they run instead.
        if max(self.block_shape) >= _compiled_hypergrid.MAX_BLOCK_SIZE:
            return False
        features = self.kernel.shape[0]
        reason = _compiled_hypergrid.shape_reason(features, self.units, positions, inputs.dtype)
        if reason is not None or "float32" not in str(self.kernel.dtype):
            return False
        return _compiled_hypergrid.unavailable_reason(training) is None

    def _runs_task_kernels(self, batch_size, positions):
        """Return whether this call takes the per-task kernels, or raise if it must and cannot.

        `batch_size` and `positions` (per example) are the static sizes, None where unknown.
        """
        if self.task_kernels is False:
            return False
        reason = _task_kernels.call_reason()
        if reason is None:
            if self.task_kernels is True:
                return True
            return self._task_kernels_cost_less(batch_size, positions)
        if self.task_kernels is True:
            raise ValueError(
                f"`task_kernels=True` cannot be used in this call: {reason}. Pass "
                "task_kernels='auto' to fall back to the block forms where per-task kernels "
                "cannot run."
            )
        return False

    def _check_task_ids(self, task_ids, inputs):
        """Return `task_ids` as a `(batch,)` integer tensor, or raise for a wrong shape or dtype."""
        task_ids = ops.convert_to_tensor(task_ids)
        shape = tuple(task_ids.shape)
        if len(shape) == 2 and shape[1] == 1:
            task_ids = ops.reshape(task_ids, (-1,))
        elif len(shape) != 1:
            raise ValueError(
                "`task_ids` must have shape (batch_size,) or (batch_size, 1). Received: "
                f"task_ids shape={shape}."
            )
        if "int" not in str(task_ids.dtype):
            raise ValueError(
                "`task_ids` must be integer task ids. Received: task_ids dtype="
                f"{task_ids.dtype}. Cast them to int32."
            )
        return _runtime_checks.check_same_batch("HyperGridDense", inputs, "inputs", task_ids)

    def _block_form(self, inputs, gate):
        """Return the gated product of `(batch, positions, features)` inputs by block form."""
        gate = ops.cast(gate, inputs.dtype)
        if self._uses_row_blocks():
            return self._sum_gated_row_blocks(inputs, gate)
        return self._concat_gated_column_blocks(inputs, gate)

    def _task_kernels_cost_less(self, batch_size, positions):
        """Return whether per-task kernels touch no more values than the block form.

        Both are memory-bound: the kernels take `features x units` values each, the block
        form `extra` values per position. An unknown size counts as large.
        """
        if positions is None:
            return True
        kernel_size = self.kernel.shape[0] * self.units
        extra_per_example = positions * self._block_form_extra_values()
        if self.num_tasks is None:
            # At most one kernel per example, whatever the batch size.
            return kernel_size <= extra_per_example
        if batch_size is None:
            return True
        kernels = min(batch_size, self.num_tasks)
        return kernels * kernel_size <= batch_size * extra_per_example

    def _block_form_extra_values(self):
        """Return the elementwise values per position that the chosen block form adds."""
        if self._uses_row_blocks():
            return self.grid_rows * self.units
        return self.grid_cols * self.kernel.shape[0]

    def _uses_row_blocks(self):
        """Return whether `_call_local` sums gated row blocks rather than column blocks.

        A grid with one column of blocks takes the column form, a single full-width
        product of the gated inputs. On CPU that measured faster than several narrow
        row-block products, even with more elementwise work. Otherwise the layer picks
        the form with less elementwise work per position, grid_rows x units or
        grid_cols x features, and on a tie the one with fewer loop steps.
        """
        if self.grid_cols == 1:
            return False
        row_form_cost = (self.grid_rows * self.units, self.grid_rows)
        column_form_cost = (self.grid_cols * self.kernel.shape[0], self.grid_cols)
        return row_form_cost < column_form_cost

    def _sum_gated_row_blocks(self, inputs, gate):
        """Return y = sum_i expand(gate[:, i, :]) * (x_i W_i), shape (batch, positions, units).

        The extra elementwise work is `grid_rows x units` per position, and the loop has
        `grid_rows` steps.
        """
        batch_size = ops.shape(inputs)[0]
        flat_inputs = ops.reshape(inputs, (-1, self.kernel.shape[0]))
        # Each row block i of the gate, repeated over the columns of its blocks: (batch, 1, units).
        row_gates = ops.split(ops.repeat(gate, self.block_shape[1], axis=2), self.grid_rows, axis=1)
        # `split` rather than slicing: the gradient of a split is one concatenation, while
        # every slice's gradient would be padded to the full tensor.
        row_inputs = ops.split(flat_inputs, self.grid_rows, axis=1)
        row_kernels = ops.split(self.kernel, self.grid_rows, axis=0)
        outputs = None
        for row_input, row_kernel, row_gate in zip(row_inputs, row_kernels, row_gates):
            # p_i = x_i W_i, the partial product of row block i: (batch * positions, units).
            partial = ops.reshape(ops.matmul(row_input, row_kernel), (batch_size, -1, self.units))
            # y_j = sum_i gate[i, j] * p_ij, with p_ij the column block j of p_i.
            gated = partial * row_gate
            outputs = gated if outputs is None else outputs + gated
        return outputs

    def _concat_gated_column_blocks(self, inputs, gate):
        """Return y_j = (x * expand(gate[:, :, j])) W_j for each column block j, concatenated.

        The extra elementwise work is `grid_cols x features` per position, and the loop has
        `grid_cols` steps.
        """
        batch_size = ops.shape(inputs)[0]
        input_dim = self.kernel.shape[0]
        # Each column block j of the gate, repeated over the rows of its blocks: (batch, features, 1).
        column_gates = ops.split(ops.repeat(gate, self.block_shape[0], axis=1), self.grid_cols, axis=2)
        column_kernels = ops.split(self.kernel, self.grid_cols, axis=1)
        outputs = []
        for column_gate, column_kernel in zip(column_gates, column_kernels):
            # y_j = sum_i gate[i, j] * (x_i W_ij): scale each row block x_i of the input by
            # its gate value for column block j, then multiply by the column block W_j.
            scaled = inputs * ops.reshape(column_gate, (batch_size, 1, input_dim))
            outputs.append(ops.matmul(ops.reshape(scaled, (-1, input_dim)), column_kernel))
        return ops.concatenate(outputs, axis=1)

    def compute_output_shape(self, inputs_shape, conditioning_shape=None, task_ids_shape=None):
        return tuple(inputs_shape)[:-1] + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "block_shape": list(self.block_shape),
                "mode": self.mode,
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "local_initializer": keras.initializers.serialize(self.local_initializer),
                "global_initializer": keras.initializers.serialize(self.global_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
                "task_kernels": self.task_kernels,
                "num_tasks": self.num_tasks,
                "compiled_kernel": self.compiled_kernel,
            }
        )
        return config
