"""ExpertBank: all experts of a mixture-of-experts layer computed together."""

from typing import Sequence, Union

from mtl_layers.compat import keras, ops, register_serializable
from mtl_layers.layers import _initializers, _validation


@register_serializable
class ExpertBank(keras.layers.Layer):
    """A bank of expert MLPs that all read the same input.

    Each expert is an MLP with the hidden sizes in `units`. The bank computes the first
    layer of every expert as one matrix product with the experts' kernels concatenated
    along the output axis, and each deeper layer as one batched matrix product over the
    expert axis, so the cost is that of a single Dense layer of `num_experts * units[0]`
    units plus the batched deeper layers. There is no Python loop over experts.

    Each expert's kernel is drawn independently from `kernel_initializer`: with a seeded
    initializer expert `e` uses `seed + e`, so experts never start as copies of each other.

    This is the expert network of the Multi-gate Mixture-of-Experts (MMoE) model of
    Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate
    Mixture-of-Experts", KDD 2018, where every task's gate mixes the same experts.

    Args:
        num_experts: Number of experts, an integer >= 1.
        units: Hidden sizes of each expert, an integer (one layer) or a non-empty list of
            integers (a multi-layer MLP). The last entry is the expert output size.
        activation: Activation after every expert layer. Defaults to `"relu"`.
        dropout: Dropout rate in `[0, 1)` applied after every expert layer in training.
        use_bias: Whether the expert layers add a bias.
        kernel_initializer: Initializer for one expert's kernel; see above for seeds.
        bias_initializer: Initializer for the biases.
        kernel_regularizer: Regularizer for all expert kernels.
        bias_regularizer: Regularizer for all expert biases.
        **kwargs: Base layer keyword arguments such as `name` and `dtype`.

    Input shape:
        `(batch_size, ..., features)`, a tensor of rank 2 or more.

    Output shape:
        `(batch_size, ..., num_experts, units[-1])`.

    Example:

    >>> import numpy as np
    >>> import mtl_layers as mtl
    >>> experts = mtl.ExpertBank(num_experts=4, units=[32, 16])
    >>> tuple(experts(np.zeros((2, 10), "float32")).shape)
    (2, 4, 16)
    """

    def __init__(
        self,
        num_experts: int,
        units: Union[int, Sequence[int]],
        activation="relu",
        dropout: float = 0.0,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_experts = _validation.check_positive_int("num_experts", num_experts)
        self.units = _validation.check_units("units", units)
        self.activation = keras.activations.get(activation)
        self.dropout = _validation.check_rate("dropout", dropout)
        self.use_bias = _validation.check_bool("use_bias", use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.dropout_layer = keras.layers.Dropout(self.dropout) if self.dropout > 0 else None
        self.kernels = []
        self.biases = []

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) < 2:
            raise ValueError(
                "ExpertBank expects inputs of shape (batch_size, ..., features) with rank "
                f">= 2. Received: input_shape={input_shape}. Add a feature axis, for example "
                "with `keras.ops.expand_dims(x, -1)`."
            )
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(
                "The last axis (features) of the ExpertBank input must be known when the "
                f"layer is built. Received: input_shape={input_shape}."
            )

        # First layer: a (features, num_experts, units[0]) kernel, stored so that reshaping
        # it to (features, num_experts * units[0]) costs nothing. Column block e of that
        # matrix is expert e's kernel, so one matrix product computes every expert.
        first_units = self.units[0]
        stacked_kernel = self.add_weight(
            name="kernel_0",
            shape=(input_dim, self.num_experts, first_units),
            initializer=_initializers.stacked_initializer(
                self.kernel_initializer, self.num_experts, axis=1
            ),
            regularizer=self.kernel_regularizer,
        )
        self.kernels = [stacked_kernel]
        self.biases = []
        if self.use_bias:
            self.biases.append(
                self.add_weight(
                    name="bias_0",
                    shape=(self.num_experts, first_units),
                    initializer=_initializers.stacked_initializer(
                        self.bias_initializer, self.num_experts
                    ),
                    regularizer=self.bias_regularizer,
                )
            )

        # Deeper layers: one (num_experts, units_in, units_out) kernel each, applied as a
        # batched matrix product over the expert axis.
        for depth in range(1, len(self.units)):
            self.kernels.append(
                self.add_weight(
                    name=f"kernel_{depth}",
                    shape=(self.num_experts, self.units[depth - 1], self.units[depth]),
                    initializer=_initializers.stacked_initializer(
                        self.kernel_initializer, self.num_experts
                    ),
                    regularizer=self.kernel_regularizer,
                )
            )
            if self.use_bias:
                self.biases.append(
                    self.add_weight(
                        name=f"bias_{depth}",
                        shape=(self.num_experts, self.units[depth]),
                        initializer=_initializers.stacked_initializer(
                            self.bias_initializer, self.num_experts
                        ),
                        regularizer=self.bias_regularizer,
                    )
                )
        # Later calls with another feature count then fail with a message naming both.
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: input_dim})
        super().build(input_shape)

    def call(self, inputs, training=None):
        input_dim = self.kernels[0].shape[0]
        _validation.check_feature_count(self, inputs, input_dim)
        first_units = self.units[0]

        # h_e = act(x W_e + b_e) for all experts e at once: x @ [W_1 | W_2 | ... | W_E].
        fused_kernel = ops.reshape(self.kernels[0], (input_dim, self.num_experts * first_units))
        flat_inputs = inputs if len(inputs.shape) == 2 else ops.reshape(inputs, (-1, input_dim))
        hidden = ops.matmul(flat_inputs, fused_kernel)
        if self.use_bias:
            hidden = hidden + ops.reshape(self.biases[0], (-1,))
        hidden = ops.reshape(hidden, (-1, self.num_experts, first_units))
        hidden = self._activate_and_drop(hidden, training)

        # Deeper layers: h_e <- act(h_e V_e + c_e), batched over the expert axis.
        for depth in range(1, len(self.units)):
            hidden = ops.einsum("bei,eio->beo", hidden, self.kernels[depth])
            if self.use_bias:
                hidden = hidden + self.biases[depth]
            hidden = self._activate_and_drop(hidden, training)

        if len(inputs.shape) == 2:
            return hidden
        leading_shape = tuple(ops.shape(inputs)[:-1])
        return ops.reshape(hidden, leading_shape + (self.num_experts, self.units[-1]))

    def _activate_and_drop(self, hidden, training):
        if self.activation is not None:
            hidden = self.activation(hidden)
        if self.dropout_layer is not None:
            hidden = self.dropout_layer(hidden, training=training)
        return hidden

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.num_experts, self.units[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_experts": self.num_experts,
                "units": list(self.units),
                "activation": keras.activations.serialize(self.activation),
                "dropout": self.dropout,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            }
        )
        return config
