"""TensorFlow's fused LSTM kernel as the fast path of `SequentialExpert`.

`tf.raw_ops.BlockLSTM` runs a whole LSTM, every time step, in one op, and its gradient
(`BlockLSTMGrad`) is one op too. With `forget_bias=0`, clipping off and no peepholes it
computes the cell of `keras.layers.LSTM` and of the `SequentialExpert` step. Only its gate
order differs (input, cell candidate, forget, output), so the layer reorders each expert's
kernel columns on the way in.

`BlockLSTMV2` takes the Keras gate order directly, but TensorFlow 2.21 registers the V1
gradient for it, which reads the gates in the V1 order: its weight gradients are wrong
(checked against `keras.layers.LSTM`). The V1 op and its own gradient agree.

The kernel has no mask, so the layer reorders the steps instead. Each row's valid steps
move to the front in their order, and the kernel runs over them. The output at step t is
then the output after the last valid step at or before t, and zeros before the first one.
That is the state that `keras.layers.RNN` carries over padded steps, for any mask: right
padding, left padding, gaps and rows without any valid step. The rows are also sorted by
length before they run in chunks, so that each chunk stops after its own longest row.
"""

from typing import Optional

from mtl_layers.compat import backend_name, in_xla_context, keras
from mtl_layers.layers import _compiled_lstm

# Rows of the batch per fused op. On a 2-core CPU (TensorFlow 2.21) one op over 256 or 512
# rows spent 1.3-1.4x the CPU time of chunks of 128 rows, likely because the kernel splits
# its per-step products across threads that then wait on each other. Up to 128 rows one
# op was fastest.
ROWS_PER_OP = 128
# Chunks whose ops may run at the same time.
CHUNKS_IN_PARALLEL = 4


def configuration_reason(layer) -> Optional[str]:
    """Return why the fused kernel can never run `layer` as configured, or None."""
    if backend_name() != "tensorflow":
        return f"it is a TensorFlow kernel and the Keras backend is {backend_name()!r}"
    if layer.compute_dtype != "float32" or layer.dtype_policy.variable_dtype != "float32":
        return (
            "it runs in float32 only, and the layer's dtype policy is "
            f"{layer.dtype_policy.name!r}"
        )
    if layer.activation is not keras.activations.tanh:
        return "it computes `activation='tanh'` only"
    if layer.recurrent_activation is not keras.activations.sigmoid:
        return "it computes `recurrent_activation='sigmoid'` only"
    return None


def call_reason(layer, recurrent_mask, inputs) -> Optional[str]:
    """Return why the fused kernel cannot run this call of `layer`, or None when it can."""
    reason = configuration_reason(layer)
    if reason is not None:
        return reason
    if inputs.dtype.name != "float32":
        return f"it runs in float32 only, and the inputs are {inputs.dtype.name}"
    if recurrent_mask is not None:
        return "it cannot apply `recurrent_dropout`, which is active in training"
    # XLA has no kernel for BlockLSTM, so a jit_compile=True function takes the loop.
    if in_xla_context():
        return "XLA, which compiles this call, has no kernel for it"
    return None


def run_experts(inputs, mask, kernel, recurrent_kernel, bias, return_sequences, compiled=False):
    """Run every expert's LSTM with a fused kernel and return the layer's outputs.

    Args:
        inputs: `(batch, time, features)` float32, with padded steps already zeroed.
        mask: `(batch, time)` boolean or None.
        kernel: `(features, num_experts, 4 * units)` input kernels.
        recurrent_kernel: `(num_experts, units, 4 * units)` recurrent kernels.
        bias: `(num_experts, 4 * units)` biases, or None.
        return_sequences: as in `SequentialExpert`.
        compiled: run the compiled multi-expert kernel (`_compiled_lstm`) instead of one
            `BlockLSTM` per expert. It reads the valid steps and writes the outputs in
            place, so the gathers of the `BlockLSTM` path are not needed.

    Returns:
        `(batch, time, num_experts, units)`, or `(batch, num_experts, units)` when
        `return_sequences` is False.
    """
    import tensorflow as tf

    batch_size = tf.shape(inputs)[0]
    time_steps = tf.shape(inputs)[1]

    if compiled:
        return _run_compiled(inputs, mask, kernel, recurrent_kernel, bias, return_sequences)

    # Move each row's valid steps to the front: sort the positions with padded steps keyed
    # after every valid one. The stable sort keeps the valid steps in time order.
    if mask is not None:
        order, valid_counts, lengths, by_length = _valid_step_order(mask)
        row_steps = tf.gather(lengths, by_length)
        # One gather_nd builds the kernel's time-major input, time_major[t, j] =
        # inputs[by_length[j], order[by_length[j], t]]: steps reordered, rows sorted and
        # axes swapped in one copy, whose gradient is one scatter.
        source_steps = tf.transpose(tf.gather(order, by_length))
        source_rows = tf.broadcast_to(by_length[tf.newaxis, :], tf.shape(source_steps))
        time_major = tf.gather_nd(inputs, tf.stack([source_rows, source_steps], axis=-1))
    else:
        row_steps = tf.fill([batch_size], time_steps)
        time_major = tf.transpose(inputs, [1, 0, 2])

    outputs = _run_block_lstm(inputs, time_major, row_steps, kernel, recurrent_kernel, bias)

    if mask is None:
        # (time, batch, num_experts, units) -> (batch, time, num_experts, units)
        return tf.transpose(outputs, [1, 0, 2, 3]) if return_sequences else outputs[-1]

    # Row b's output at step t is the kernel's output number valid_counts[b, t] - 1 of the
    # row's sorted position, and zeros while no valid step has been seen. One gather_nd
    # takes it from the time-major outputs and puts the rows back in the batch's order.
    if return_sequences:
        seen = valid_counts
    else:
        seen = lengths[:, tf.newaxis]
    sorted_position = tf.math.invert_permutation(by_length)
    target_rows = tf.broadcast_to(sorted_position[:, tf.newaxis], tf.shape(seen))
    gathered = tf.gather_nd(outputs, tf.stack([tf.maximum(seen - 1, 0), target_rows], axis=-1))
    gathered = tf.where((seen > 0)[:, :, tf.newaxis, tf.newaxis], gathered, tf.zeros_like(gathered))
    return gathered if return_sequences else gathered[:, 0]


def _valid_step_order(mask):
    """Return `(order, valid_counts, lengths, by_length)` for a `(batch, time)` mask.

    `order[b]` lists row b's valid steps in time order, then its padded steps.
    `valid_counts[b, t]` counts row b's valid steps up to and including step t, `lengths`
    is its last column, and `by_length` sorts the rows by length, longest first (stable).
    """
    import tensorflow as tf

    time_steps = tf.shape(mask)[1]
    positions = tf.range(time_steps)[tf.newaxis, :]
    order = tf.argsort(tf.where(mask, positions, positions + time_steps), axis=1, stable=True)
    valid_counts = tf.cumsum(tf.cast(mask, tf.int32), axis=1)
    lengths = valid_counts[:, -1]
    by_length = tf.argsort(lengths, direction="DESCENDING", stable=True)
    return order, valid_counts, lengths, by_length


def _run_compiled(inputs, mask, kernel, recurrent_kernel, bias, return_sequences):
    """Return the layer's outputs from the compiled multi-expert kernel."""
    import tensorflow as tf

    input_dim, num_experts, gate_units = kernel.shape
    batch_size = tf.shape(inputs)[0]
    time_steps = tf.shape(inputs)[1]
    if mask is None:
        row_steps = tf.fill([batch_size], time_steps)
        source_rows = tf.range(batch_size)
        step_positions = tf.broadcast_to(tf.range(time_steps), (batch_size, time_steps))
    else:
        # The kernel runs the rows longest first and reads each row's valid steps where
        # they are, so neither the inputs nor the outputs are copied into another order.
        order, _, lengths, source_rows = _valid_step_order(mask)
        row_steps = tf.gather(lengths, source_rows)
        step_positions = tf.gather(order, source_rows)
    flat_bias = (
        tf.zeros((num_experts * gate_units,), dtype=kernel.dtype)
        if bias is None
        else tf.reshape(bias, (-1,))
    )
    return _compiled_lstm.run(
        inputs,
        tf.reshape(kernel, (input_dim, num_experts * gate_units)),
        flat_bias,
        recurrent_kernel,
        tf.cast(row_steps, tf.int32),
        tf.cast(source_rows, tf.int32),
        tf.cast(step_positions, tf.int32),
        return_sequences,
    )


def _run_block_lstm(inputs, time_major, row_steps, kernel, recurrent_kernel, bias):
    """Return `(time, batch, experts, units)` outputs from one `BlockLSTM` per expert."""
    import tensorflow as tf

    num_experts, units, gate_units = recurrent_kernel.shape
    batch_size = tf.shape(inputs)[0]
    time_steps = tf.shape(inputs)[1]

    def steps_of(chunk_row_steps):
        # The concatenated 0 makes an empty chunk run no step.
        return tf.reduce_max(tf.concat([chunk_row_steps, [0]], axis=0))

    # Gate columns in the Keras order [i, f, c, o] -> the kernel's order [i, c, f, o].
    gate_order = tf.concat(
        [tf.range(start * units, (start + 1) * units) for start in (0, 2, 1, 3)], axis=0
    )
    no_peephole = tf.zeros((units,), dtype=inputs.dtype)

    # Expert e's kernel of the fused op is [W_e; U_e]: ([x_t, h_{t-1}]) @ [W_e; U_e] + b_e
    # = x_t W_e + h_{t-1} U_e + b_e, the same z_t as the layer's step.
    expert_kernels, expert_biases = [], []
    for expert in range(num_experts):
        expert_kernel = tf.concat([kernel[:, expert, :], recurrent_kernel[expert]], axis=0)
        expert_kernels.append(tf.gather(expert_kernel, gate_order, axis=1))
        expert_biases.append(
            tf.zeros((gate_units,), dtype=inputs.dtype)
            if bias is None
            else tf.gather(bias[expert], gate_order)
        )

    def run_rows(rows_time_major, steps):
        """Run every expert over (time, rows, features); return (time, rows, experts, units).

        The experts stop after `steps` time steps, and their later outputs are not read.
        """
        zero_state = tf.zeros((tf.shape(rows_time_major)[1], units), dtype=inputs.dtype)
        expert_outputs = []
        for expert_kernel, expert_bias in zip(expert_kernels, expert_biases):
            block = tf.raw_ops.BlockLSTM(
                seq_len_max=tf.cast(steps, tf.int64),
                x=rows_time_major,
                cs_prev=zero_state,
                h_prev=zero_state,
                w=expert_kernel,
                wci=no_peephole,
                wcf=no_peephole,
                wco=no_peephole,
                b=expert_bias,
                forget_bias=0.0,  # The forget bias lives in b, as in Keras.
                cell_clip=-1.0,  # A negative value turns clipping off.
                use_peephole=False,
            )
            expert_outputs.append(block.h)
        return tf.stack(expert_outputs, axis=2)

    # Large batches run in chunks of at most ROWS_PER_OP rows, as even as possible.
    static_batch = inputs.shape[0]
    if static_batch is not None:
        num_chunks = max(1, -(-static_batch // ROWS_PER_OP))
        chunk_sizes = [
            static_batch // num_chunks + (1 if index < static_batch % num_chunks else 0)
            for index in range(num_chunks)
        ]
        chunks = tf.split(time_major, chunk_sizes, axis=1) if num_chunks > 1 else [time_major]
        chunk_row_steps = tf.split(row_steps, chunk_sizes) if num_chunks > 1 else [row_steps]
        chunk_outputs = [
            run_rows(chunk, steps_of(steps)) for chunk, steps in zip(chunks, chunk_row_steps)
        ]
        outputs = tf.concat(chunk_outputs, axis=1) if num_chunks > 1 else chunk_outputs[0]
    else:
        # An unknown batch size (as in `model.fit`'s traced step) takes a loop over
        # chunks of equal size. The last rows are zero padding, fewer than the chunk count.
        num_chunks = tf.maximum(1, (batch_size + ROWS_PER_OP - 1) // ROWS_PER_OP)
        chunk_rows = (batch_size + num_chunks - 1) // num_chunks
        padding_rows = num_chunks * chunk_rows - batch_size
        padded = tf.pad(time_major, [[0, 0], [0, padding_rows], [0, 0]])
        chunks = tf.transpose(
            tf.reshape(padded, (time_steps, num_chunks, chunk_rows, -1)), [1, 0, 2, 3]
        )
        # Padding rows have no valid step, so they do not lengthen their chunk.
        padded_row_steps = tf.pad(row_steps, [[0, padding_rows]])
        chunk_steps = tf.reduce_max(tf.reshape(padded_row_steps, (num_chunks, chunk_rows)), axis=1)
        chunk_outputs = tf.map_fn(
            lambda chunk_and_steps: run_rows(*chunk_and_steps),
            (chunks, chunk_steps),
            parallel_iterations=CHUNKS_IN_PARALLEL,
            fn_output_signature=tf.TensorSpec((None, None, num_experts, units), inputs.dtype),
        )
        chunk_outputs = tf.transpose(chunk_outputs, [1, 0, 2, 3, 4])
        outputs = tf.reshape(
            chunk_outputs, (time_steps, num_chunks * chunk_rows, num_experts, units)
        )[:, :batch_size]
    return outputs
