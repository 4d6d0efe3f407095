"""SequentialExpert: a bank of LSTM experts advanced together in one recurrent loop."""

from mtl_layers.compat import keras, ops, register_serializable
from mtl_layers.layers import _compiled_lstm, _fused_lstm, _initializers, _validation

# LSTM gate order in every kernel and bias, the same as `keras.layers.LSTM`: input, forget,
# cell candidate, output.
_NUM_GATES = 4


class _StepConstants:
    """Values that the step cell reads from its `SequentialExpert`.

    A plain object, so neither Keras mode tracks the variables it refers to a second time.
    `SequentialExpert.build` sets the variables. `prepare` derives the step weights from
    them once per call, outside the loop over time, and `clear` drops them after the loop.
    A cell called on its own (as `tf_keras` does when it saves a model) derives them itself.
    """

    def __init__(self):
        self.kernel = None
        self.recurrent_kernel = None
        self.bias = None
        self.recurrent_mask = None
        self._prepared = None

    def prepare(self, matmul_dtype, state_dtype):
        self._prepared = self.step_weights(matmul_dtype, state_dtype)

    def clear(self):
        self._prepared = None
        self.recurrent_mask = None

    def step_weights(self, matmul_dtype, state_dtype):
        """Return `(input_kernel, input_bias, recurrent_kernels)` for the step cell.

        `input_kernel` is the fused `(features, num_experts * 4 * units)` kernel of every
        expert and gate, expert-major along the last axis. `input_bias` is the matching
        flat bias in `state_dtype`, or None. `recurrent_kernels` lists expert e's
        `(units, 4 * units)` kernel U_e.
        """
        if self._prepared is not None:
            return self._prepared
        input_dim, num_experts, gate_units = self.kernel.shape
        input_kernel = ops.cast(
            ops.reshape(self.kernel, (input_dim, num_experts * gate_units)), matmul_dtype
        )
        input_bias = None
        if self.bias is not None:
            input_bias = ops.cast(ops.reshape(self.bias, (-1,)), state_dtype)
        recurrent_kernel = ops.cast(self.recurrent_kernel, matmul_dtype)
        recurrent_kernels = [recurrent_kernel[expert] for expert in range(num_experts)]
        return input_kernel, input_bias, recurrent_kernels


class _ExpertStepCell(keras.layers.Layer):
    """One LSTM step of all experts, run by `keras.layers.RNN`. It owns no weights.

    The states are the hidden and cell states of all experts, flattened to
    `(batch_size, num_experts * units)` because `keras.layers.RNN` masks states with a
    batch-first layout. The step input is x_t, `(batch_size, features)`; the cell projects
    it for every expert and gate with the fused input kernel.

    The cell computes in the variable dtype of its `SequentialExpert` (float32 under the
    mixed policies), so the gate sums and both states are float32. Only the two matrix
    products run in `matmul_dtype`, the layer's compute dtype.
    """

    def __init__(
        self,
        num_experts,
        units,
        activation,
        recurrent_activation,
        constants,
        matmul_dtype,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_experts = num_experts
        self.units = units
        self.activation = activation
        self.recurrent_activation = recurrent_activation
        self.matmul_dtype = matmul_dtype
        self.state_size = [num_experts * units, num_experts * units]
        self.output_size = num_experts * units
        self._constants = constants

    def build(self, input_shape):
        self.built = True

    def get_initial_state(self, inputs=None, batch_size=None, dtype=None):
        # Keras 3 passes only `batch_size`, and `tf_keras` also passes the dtype of the loop's
        # inputs. That dtype is ignored because the states always get this cell's dtype.
        del inputs, dtype
        return [ops.zeros((batch_size, size), dtype=self.compute_dtype) for size in self.state_size]

    def call(self, inputs, states):
        hidden, cell = states
        batch_size = ops.shape(inputs)[0]
        recurrent_input = hidden
        if self._constants.recurrent_mask is not None:
            recurrent_input = hidden * self._constants.recurrent_mask
        # x_t [W_1 | ... | W_E] + b for every expert and gate in one product with the fused
        # kernel: (B, F) @ (F, E·4U). Projecting inside the loop keeps the loop's input at
        # (B, T, F) instead of (B, T, E·4U), which saves memory traffic at large batches.
        # Under a mixed policy both products run in the compute dtype (float16 or bfloat16)
        # and the gate sum below is in this cell's dtype (float32).
        input_kernel, input_bias, recurrent_kernels = self._constants.step_weights(
            self.matmul_dtype, self.compute_dtype
        )
        input_projection = ops.cast(
            ops.matmul(ops.cast(inputs, self.matmul_dtype), input_kernel), self.compute_dtype
        )
        if input_bias is not None:
            input_projection = input_projection + input_bias
        recurrent_input = ops.cast(recurrent_input, self.matmul_dtype)

        # h_{t-1} U_e: one (B, U) @ (U, 4U) product per expert, concatenated expert-major to
        # (B, E·4U). One batched product over the expert axis needs two transposes of
        # (B, E, U) at every step. Measured with benchmarks/sequential_expert.py on CPU
        # (TensorFlow 2.21, 2 cores), the per-expert form ran the training step 1.8-2.3x
        # faster at batch 32-64 and 1.04-1.16x faster at batch 256.
        expert_states = ops.split(recurrent_input, self.num_experts, axis=-1)
        recurrent_projection = ops.concatenate(
            [
                ops.matmul(state, kernel)
                for state, kernel in zip(expert_states, recurrent_kernels)
            ],
            axis=-1,
        )
        gates = ops.reshape(
            input_projection + ops.cast(recurrent_projection, self.compute_dtype),
            (batch_size, self.num_experts, _NUM_GATES * self.units),
        )
        input_gate, forget_gate, candidate, output_gate = ops.split(gates, _NUM_GATES, -1)

        # c_t = f * c_{t-1} + i * tanh(z_c),  h_t = o * tanh(c_t)
        cell = ops.reshape(cell, (batch_size, self.num_experts, self.units))
        new_cell = self.recurrent_activation(forget_gate) * cell + self.recurrent_activation(
            input_gate
        ) * self.activation(candidate)
        new_hidden = self.recurrent_activation(output_gate) * self.activation(new_cell)

        flat_size = self.num_experts * self.units
        new_hidden = ops.reshape(new_hidden, (batch_size, flat_size))
        new_cell = ops.reshape(new_cell, (batch_size, flat_size))
        return new_hidden, [new_hidden, new_cell]


@register_serializable
class SequentialExpert(keras.layers.Layer):
    """A bank of LSTM experts that all read the same sequence, in one recurrent loop.

    This is the sequential expert of the Mixture of Sequential Experts (MoSE) model of
    Qin et al., "Multitask Mixture of Sequential Experts for User Activity Streams",
    KDD 2020: every expert is an LSTM over the shared-bottom sequence, and per-task gates
    mix the experts at every time step (`TaskGate` accepts the time axis).

    Each expert e is a standard LSTM (Hochreiter and Schmidhuber, 1997), with the gate
    order and defaults of `keras.layers.LSTM`:

        z_t = x_t W_e + h_{t-1} U_e + b_e = [z_i, z_f, z_c, z_o]
        i = sigmoid(z_i), f = sigmoid(z_f), o = sigmoid(z_o)
        c_t = f * c_{t-1} + i * tanh(z_c),    h_t = o * tanh(c_t)

    All experts advance together in one `keras.layers.RNN` loop over time, whose step cell
    carries every expert's states. At each step one product with a fused kernel of
    `features x (num_experts * 4 * units)` projects x_t for every expert and gate, and the
    recurrent products h_{t-1} U_e follow, one small product per expert. One loop replaces
    the `num_experts` loops of separate layers, and the recurrent cost stays that of the
    experts' own kernels: one LSTM of `num_experts * units` units would multiply by a
    kernel `num_experts` times larger, coupling all experts.

    Masking is exact. At a padded step every expert keeps its state and repeats its
    previous output (zeros before the first valid step, as `keras.layers.LSTM` does), and
    padded inputs are replaced by zeros before the projection, so they reach neither the
    outputs nor the gradients. Left and right padding both work, and a row without any
    valid step returns zeros.

    Each expert's kernels are drawn independently (a seeded initializer gives expert e the
    seed `seed + e`), so experts never start as copies of each other.

    On the TensorFlow backend the layer runs a fused kernel whenever it computes the same
    function: float32, the default activations, no active recurrent dropout, and no XLA
    compilation. Training calls (`training=True`, as `fit` passes it) run the package's
    compiled multi-expert kernel: one op for all experts, forward and backward, built with
    the local C++ compiler on first use (`mtl_layers/layers/kernels/multi_expert_lstm.cc`).
    Other calls, and the graphs that exports keep, run TensorFlow's `BlockLSTM`, one op
    per expert, which every TensorFlow binary (TF Serving included) has. Where the kernel
    cannot be compiled, training runs `BlockLSTM` too, after one warning, and so it does
    with `MTL_LAYERS_COMPILED_KERNELS=0` or a visible GPU. The keras.ops loop above serves
    every other case and the other backends. All paths give the same outputs and
    gradients, for any mask. Gradients of gradients need `use_fused_kernel=False`.
    Measured with `benchmarks/sequential_expert.py` (CPU, 2 cores), a training step with
    the compiled kernel took 2-8x less CPU time than K separate `keras.layers.LSTM`
    layers at batch 32-512; see docs/mose.md.

    Under the `mixed_float16` and `mixed_bfloat16` policies the two matrix products run in
    the compute dtype, while the gate pre-activations, the gates and the hidden and cell
    states stay float32. The outputs are cast to the compute dtype.

    Args:
        num_experts: Number of LSTM experts, an integer >= 1.
        units: State size of each expert, an integer >= 1.
        return_sequences: When True return every step's output, otherwise only the
            output at the last valid step of each row.
        activation: Cell and output activation. Defaults to `"tanh"`.
        recurrent_activation: Gate activation. Defaults to `"sigmoid"`.
        dropout: Rate in `[0, 1)` of the dropout on the inputs in training. One mask per
            example and feature is drawn for the whole sequence and shared by all experts
            and gates, because one fused projection serves them all.
        recurrent_dropout: Rate in `[0, 1)` of the dropout on the recurrent state in
            training. One mask per example, expert and unit is drawn for the whole
            sequence and shared by the four gates.
        use_bias: Whether the gates add a bias.
        unit_forget_bias: When True the forget-gate bias starts at 1 (Jozefowicz et al.,
            2015), as in `keras.layers.LSTM`.
        kernel_initializer: Initializer of one expert's input kernel.
        recurrent_initializer: Initializer of one expert's recurrent kernel.
        bias_initializer: Initializer of the biases.
        kernel_regularizer: Regularizer of all input kernels.
        recurrent_regularizer: Regularizer of all recurrent kernels.
        bias_regularizer: Regularizer of all biases.
        use_fused_kernel: `"auto"` (the default) runs a fused kernel (see above) whenever
            it computes the same function, and the keras.ops loop otherwise. True requires
            a fused kernel and raises a `ValueError` that names the reason: at
            construction for a backend, dtype policy or activation it does not support,
            and at the call under XLA or with recurrent dropout in training. False always
            runs the keras.ops loop.
        **kwargs: Base layer keyword arguments such as `name` and `dtype`.

    Call arguments:
        inputs: `(batch_size, time, features)`.
        mask: Optional `(batch_size, time)` boolean or 0/1 tensor, True at valid steps.
            A mask attached by an earlier layer (for example `Embedding(mask_zero=True)`)
            is used automatically.
        training: Python boolean; dropout applies only in training, and training calls
            run the compiled kernel.

    Output shape:
        `(batch_size, time, num_experts, units)` with `return_sequences=True`, otherwise
        `(batch_size, num_experts, units)`. With `return_sequences=True` the layer passes
        the mask on.

    Example:

    >>> import numpy as np
    >>> import mtl_layers as mtl
    >>> x = np.random.normal(size=(2, 5, 3)).astype("float32")
    >>> mask = np.array([[1, 1, 1, 0, 0], [0, 1, 1, 1, 1]], bool)
    >>> tuple(mtl.SequentialExpert(num_experts=4, units=8)(x, mask=mask).shape)
    (2, 5, 4, 8)
    """

    def __init__(
        self,
        num_experts: int,
        units: int,
        return_sequences: bool = True,
        activation="tanh",
        recurrent_activation="sigmoid",
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        use_bias: bool = True,
        unit_forget_bias: bool = True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        use_fused_kernel="auto",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_experts = _validation.check_positive_int("num_experts", num_experts)
        self.units = _validation.check_positive_int("units", units)
        self.return_sequences = _validation.check_bool("return_sequences", return_sequences)
        self.activation = keras.activations.get(activation)
        self.recurrent_activation = keras.activations.get(recurrent_activation)
        self.dropout = _validation.check_rate("dropout", dropout)
        self.recurrent_dropout = _validation.check_rate("recurrent_dropout", recurrent_dropout)
        self.use_bias = _validation.check_bool("use_bias", use_bias)
        self.unit_forget_bias = _validation.check_bool("unit_forget_bias", unit_forget_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.recurrent_initializer = keras.initializers.get(recurrent_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = keras.regularizers.get(recurrent_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.use_fused_kernel = _validation.check_auto_or_bool(
            "use_fused_kernel", use_fused_kernel
        )
        if self.use_fused_kernel is True:
            reason = _fused_lstm.configuration_reason(self)
            if reason is not None:
                raise ValueError(
                    f"`use_fused_kernel=True` is not possible for this layer: {reason}. "
                    "Pass use_fused_kernel='auto' to use the keras.ops loop where the fused "
                    "kernel does not apply."
                )
        self.supports_masking = True

        # The loop carries the states in the variable dtype, which is float32 under the
        # mixed policies and the compute dtype otherwise. A float16 or bfloat16 cell state
        # would drop the small updates that c_t = f * c_{t-1} + i * tanh(z_c) adds when f is
        # close to 1, and drift over long sequences. The sublayers get explicit dtypes
        # because the global policy could differ from this layer's.
        self._state_dtype = self.dtype_policy.variable_dtype

        # Dropout sublayers draw the masks, so both Keras modes handle seeds and `training`.
        # The input mask is constant over time (noise shape (batch, 1, features)). The
        # recurrent mask multiplies the hidden state, so it has the state dtype.
        self.input_dropout_layer = (
            keras.layers.Dropout(
                self.dropout, noise_shape=(None, 1, None), dtype=self.dtype_policy
            )
            if self.dropout > 0
            else None
        )
        self.recurrent_dropout_layer = (
            keras.layers.Dropout(self.recurrent_dropout, dtype=self._state_dtype)
            if self.recurrent_dropout > 0
            else None
        )

        self._step_constants = _StepConstants()
        self.expert_loop = keras.layers.RNN(
            _ExpertStepCell(
                self.num_experts,
                self.units,
                self.activation,
                self.recurrent_activation,
                self._step_constants,
                matmul_dtype=self.compute_dtype,
                name="expert_step",
                dtype=self._state_dtype,
            ),
            return_sequences=self.return_sequences,
            name="expert_loop",
            dtype=self._state_dtype,
        )

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 3:
            raise ValueError(
                "SequentialExpert expects inputs of shape (batch_size, time, features). "
                f"Received: input_shape={input_shape}. Add a time axis, for example with "
                "`keras.ops.expand_dims(x, 1)`, or a feature axis with `expand_dims(x, -1)`."
            )
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(
                "The last axis (features) of the SequentialExpert input must be known when "
                f"the layer is built. Received: input_shape={input_shape}."
            )
        gate_units = _NUM_GATES * self.units

        # (features, num_experts, 4 * units): reshaping it to (features, num_experts * 4 *
        # units) costs nothing, and column block e of that matrix is expert e's LSTM kernel.
        self.kernel = self.add_weight(
            name="kernel",
            shape=(input_dim, self.num_experts, gate_units),
            initializer=_initializers.stacked_initializer(
                self.kernel_initializer, self.num_experts, axis=1
            ),
            regularizer=self.kernel_regularizer,
        )
        self.recurrent_kernel = self.add_weight(
            name="recurrent_kernel",
            shape=(self.num_experts, self.units, gate_units),
            initializer=_initializers.stacked_initializer(
                self.recurrent_initializer, self.num_experts
            ),
            regularizer=self.recurrent_regularizer,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.num_experts, gate_units),
                initializer=self._bias_initializer,
                regularizer=self.bias_regularizer,
            )
        else:
            self.bias = None
        self._step_constants.kernel = self.kernel
        self._step_constants.recurrent_kernel = self.recurrent_kernel
        self._step_constants.bias = self.bias
        # Build the loop even when the fused kernel serves every call: tf_keras warns about
        # an unbuilt sublayer when it saves the model.
        self.expert_loop.build((None, None, input_dim))
        # Later calls with another feature count then fail with a message naming both.
        self.input_spec = keras.layers.InputSpec(ndim=3, axes={-1: input_dim})
        super().build(input_shape)

    def _bias_initializer(self, shape, dtype=None):
        num_experts, gate_units = shape
        if not self.unit_forget_bias:
            return self.bias_initializer(shape, dtype=dtype)
        units = gate_units // _NUM_GATES
        input_bias = self.bias_initializer((num_experts, units), dtype=dtype)
        forget_bias = ops.ones((num_experts, units), dtype=dtype)
        rest = self.bias_initializer((num_experts, 2 * units), dtype=dtype)
        return ops.concatenate([input_bias, forget_bias, rest], axis=-1)

    def call(self, inputs, mask=None, training=None):
        input_dim = self.kernel.shape[0]
        _validation.check_feature_count(self, inputs, input_dim)
        gate_units = _NUM_GATES * self.units
        batch_size = ops.shape(inputs)[0]
        time_steps = ops.shape(inputs)[1]

        if inputs.shape[1] == 0:
            # No step at all: every row is a row without a valid step, whose outputs are
            # zeros. The loop cannot run zero steps.
            outputs_shape = (batch_size, 0) if self.return_sequences else (batch_size,)
            return ops.zeros(outputs_shape + (self.num_experts, self.units), dtype=self.compute_dtype)

        if mask is not None:
            mask = self._check_mask(mask, inputs)
            # Padded inputs never reach the projection, so even a NaN there changes nothing.
            inputs = ops.where(ops.expand_dims(mask, -1), inputs, ops.zeros_like(inputs))
        if self.input_dropout_layer is not None:
            inputs = self.input_dropout_layer(inputs, training=training)

        recurrent_mask = None
        if self.recurrent_dropout_layer is not None and training:
            recurrent_mask = self.recurrent_dropout_layer(
                ops.ones((batch_size, self.num_experts * self.units), dtype=self._state_dtype),
                training=training,
            )

        outputs = self._run_fused_kernel(inputs, mask, recurrent_mask, training)
        if outputs is None:
            # `keras.layers.RNN` runs the loop over time and applies the mask: at a padded
            # step it keeps the states and repeats the previous output (zeros before the
            # first valid step), and with `return_sequences=False` it returns the last
            # valid step's output. The kernels are reshaped and cast once here instead of at
            # every step of the loop.
            self._step_constants.prepare(self.compute_dtype, self._state_dtype)
            self._step_constants.recurrent_mask = recurrent_mask
            try:
                outputs = self.expert_loop(inputs, mask=mask)
            finally:
                self._step_constants.clear()

        outputs = ops.cast(outputs, self.compute_dtype)
        if self.return_sequences:
            return ops.reshape(outputs, (batch_size, time_steps, self.num_experts, self.units))
        return ops.reshape(outputs, (batch_size, self.num_experts, self.units))

    def _run_fused_kernel(self, inputs, mask, recurrent_mask, training):
        """Return the experts' outputs from the fused kernel, or None to run the loop."""
        if self.use_fused_kernel is False:
            return None
        reason = _fused_lstm.call_reason(self, recurrent_mask, inputs)
        if reason is not None:
            if self.use_fused_kernel is True:
                raise ValueError(
                    "`use_fused_kernel=True` cannot be used in this call: "
                    f"{reason}. Pass use_fused_kernel='auto' to fall back to the keras.ops "
                    "loop where the fused kernel does not apply."
                )
            return None
        return _fused_lstm.run_experts(
            inputs,
            mask,
            self.kernel,
            self.recurrent_kernel,
            self.bias,
            self.return_sequences,
            compiled=_compiled_lstm.unavailable_reason(training) is None,
        )

    def _check_mask(self, mask, inputs):
        if len(mask.shape) != 2:
            raise ValueError(
                "The mask of SequentialExpert must have shape (batch_size, time). Received: "
                f"mask shape={tuple(mask.shape)}, inputs shape={tuple(inputs.shape)}."
            )
        for axis in (0, 1):
            mask_size, input_size = mask.shape[axis], inputs.shape[axis]
            if mask_size is not None and input_size is not None and mask_size != input_size:
                raise ValueError(
                    f"Axis {axis} of the mask and of the inputs differ. Received: mask "
                    f"shape={tuple(mask.shape)}, inputs shape={tuple(inputs.shape)}. The mask "
                    "must have one entry per example and time step."
                )
        if mask.dtype != "bool":
            mask = ops.not_equal(mask, 0)
        return mask

    def compute_mask(self, inputs, mask=None):
        if self.return_sequences:
            return mask
        return None

    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if self.return_sequences:
            return input_shape[:2] + (self.num_experts, self.units)
        return (input_shape[0], self.num_experts, self.units)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_experts": self.num_experts,
                "units": self.units,
                "return_sequences": self.return_sequences,
                "activation": keras.activations.serialize(self.activation),
                "recurrent_activation": keras.activations.serialize(self.recurrent_activation),
                "dropout": self.dropout,
                "recurrent_dropout": self.recurrent_dropout,
                "use_bias": self.use_bias,
                "unit_forget_bias": self.unit_forget_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "recurrent_initializer": keras.initializers.serialize(
                    self.recurrent_initializer
                ),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "recurrent_regularizer": keras.regularizers.serialize(
                    self.recurrent_regularizer
                ),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
                "use_fused_kernel": self.use_fused_kernel,
            }
        )
        return config
