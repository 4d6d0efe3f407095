"""TaskGate: a softmax gate that mixes expert outputs for one task."""

import numbers
from typing import Optional

from mtl_layers.compat import keras, mean_aggregation, no_autocast, ops, register_serializable
from mtl_layers.layers import _validation


@register_serializable
class TaskGate(keras.layers.Layer):
    """A per-task softmax gate over the outputs of an `ExpertBank`.

    For one task k the gate computes weights from the gate input x and returns the
    weighted sum of the expert outputs, as in Multi-gate Mixture-of-Experts (Ma et al.,
    "Modeling Task Relationships in Multi-task Learning with Multi-gate
    Mixture-of-Experts", KDD 2018):

        g_k(x) = softmax(W_gk x / temperature),    f_k(x) = sum_i g_k(x)_i f_i(x)

    Sparse gating keeps only the `top_k` largest logits per example and renormalises
    over them. Noisy gating adds Gaussian noise to the logits in training, following the
    noisy top-k gating of Shazeer et al., "Outrageously Large Neural Networks: The
    Sparsely-Gated Mixture-of-Experts Layer", ICLR 2017. That paper learns a per-expert
    noise scale, softplus(x W_noise). Here `noise_stddev` is one fixed standard deviation
    for every expert and example, which is the paper's form with the noise scale held
    constant. The noise is applied before the top-k selection, so it also spreads which
    experts are chosen.

    The logits, the softmax and the mixing weights are computed in float32 under every
    mixed precision policy, so large logits never overflow float16; the mixture is
    returned in the dtype of the expert outputs.

    Gate collapse (one expert taking all the weight) is visible and can be discouraged:
    the layer keeps `expert_utilization`, an exponential moving average of the mean gate
    weight per expert over training batches (`mtl.callbacks.ExpertUtilization` writes it
    into the training logs), and `load_balance_weight` > 0 adds the importance loss of
    Shazeer et al. (2017), the squared coefficient of variation of the per-expert sum of
    gate weights over the batch, times the coefficient, with `add_loss`.

    Args:
        num_experts: Number of experts to mix, an integer >= 1. It must match the expert
            axis of the expert outputs.
        top_k: Keep only the k largest logits per example, an integer in
            `[1, num_experts]`, or None for dense softmax gating.
        temperature: Positive divisor of the logits. Values below 1 sharpen the gate.
        noise_stddev: Standard deviation (>= 0) of Gaussian noise added to the logits in
            training only. 0 disables it.
        return_weights: When True the layer returns `(mixture, gate_weights)`.
        load_balance_weight: Coefficient (>= 0) of the load-balancing loss. 0 disables it.
        utilization_momentum: Momentum in `[0, 1)` of the `expert_utilization` average.
        use_bias: Whether the gate logits add a bias.
        kernel_initializer: Initializer of the gate kernel.
        kernel_regularizer: Regularizer of the gate kernel.
        **kwargs: Base layer keyword arguments such as `name` and `dtype`.

    Call arguments:
        expert_outputs: `(batch_size, ..., num_experts, units)`, for example the output of
            `ExpertBank`.
        gate_inputs: `(batch_size, ..., features)`, with the same leading axes as
            `expert_outputs`. With a time axis there is one gate per time step.
        training: Python boolean; noise and the utilization update apply only in training.

    A Keras mask on the inputs, for example from a masked `SequentialExpert`, is accepted
    and not passed on: the outputs carry no mask. Weigh per-step losses with the mask as
    sample weights instead: the mask as float32, which
    `mtl.models.sequence_sample_weights(tasks, mask)` returns per task.

    Output shape:
        `(batch_size, ..., units)`, and with `return_weights=True` also the gate weights
        `(batch_size, ..., num_experts)`, which sum to 1 over the last axis. The gate
        weights are float32 under every dtype policy; cast them before joining them with
        float16 or bfloat16 tensors.

    Example:

    >>> import numpy as np
    >>> import mtl_layers as mtl
    >>> x = np.random.normal(size=(2, 10)).astype("float32")
    >>> experts = mtl.ExpertBank(num_experts=4, units=8)(x)
    >>> mixture, weights = mtl.TaskGate(num_experts=4, return_weights=True)(experts, x)
    >>> tuple(mixture.shape), tuple(weights.shape)
    ((2, 8), (2, 4))
    """

    def __init__(
        self,
        num_experts: int,
        top_k: Optional[int] = None,
        temperature: float = 1.0,
        noise_stddev: float = 0.0,
        return_weights: bool = False,
        load_balance_weight: float = 0.0,
        utilization_momentum: float = 0.99,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        # Masked inputs are accepted without Keras's warning, and compute_mask drops the mask.
        self.supports_masking = True
        self.num_experts = _validation.check_positive_int("num_experts", num_experts)
        if top_k is not None:
            top_k = _validation.check_positive_int("top_k", top_k)
            if top_k > self.num_experts:
                raise ValueError(
                    "`top_k` must be at most `num_experts`. Received: "
                    f"top_k={top_k}, num_experts={self.num_experts}. Lower top_k or use "
                    "top_k=None for dense gating."
                )
        self.top_k = top_k
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, numbers.Real)
            or not 0.0 < temperature < float("inf")
        ):
            raise ValueError(
                f"`temperature` must be a finite number > 0. Received: temperature={temperature!r}"
            )
        self.temperature = float(temperature)
        self.noise_stddev = _validation.check_non_negative("noise_stddev", noise_stddev)
        self.return_weights = _validation.check_bool("return_weights", return_weights)
        self.load_balance_weight = _validation.check_non_negative(
            "load_balance_weight", load_balance_weight
        )
        self.utilization_momentum = _validation.check_rate(
            "utilization_momentum", utilization_momentum
        )
        self.use_bias = _validation.check_bool("use_bias", use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

        # The gate logits are a Dense sublayer with a float32 policy, so they stay in float32
        # under mixed precision. A sublayer also builds from the gate input's shape in both
        # Keras 3 and tf_keras (tf_keras passes only the first call argument's shape to build).
        self.logits_layer = keras.layers.Dense(
            self.num_experts,
            use_bias=self.use_bias,
            kernel_initializer=self.kernel_initializer,
            kernel_regularizer=self.kernel_regularizer,
            dtype="float32",
            name="gate_logits",
        )
        self.noise_layer = (
            keras.layers.GaussianNoise(self.noise_stddev, dtype="float32")
            if self.noise_stddev > 0
            else None
        )

    def build(self, expert_outputs_shape, gate_inputs_shape=None):
        expert_outputs_shape = tuple(expert_outputs_shape)
        if len(expert_outputs_shape) < 3:
            raise ValueError(
                "TaskGate expects expert outputs of shape (batch_size, ..., num_experts, "
                f"units) with rank >= 3. Received: expert_outputs shape={expert_outputs_shape}. "
                "Pass the output of ExpertBank as the first argument."
            )
        experts_axis = expert_outputs_shape[-2]
        if experts_axis is not None and experts_axis != self.num_experts:
            raise ValueError(
                "The expert axis of the expert outputs does not match `num_experts`. "
                f"Received: expert_outputs shape={expert_outputs_shape} (axis -2 = "
                f"{experts_axis}), num_experts={self.num_experts}. Set TaskGate's num_experts "
                "to the ExpertBank's num_experts."
            )
        if gate_inputs_shape is not None:
            self._check_gate_inputs_shape(expert_outputs_shape, tuple(gate_inputs_shape))
            self.logits_layer.build(tuple(gate_inputs_shape))
        # Under a tf.distribute strategy each replica gets an equal share of the batch, so
        # averaging the replicas' updates gives the statistic of the global batch. The
        # average is updated in float32 under every mixed precision policy.
        self.expert_utilization = self.add_weight(
            name="expert_utilization",
            shape=(self.num_experts,),
            initializer=keras.initializers.Constant(1.0 / self.num_experts),
            trainable=False,
            dtype="float32",
            aggregation=mean_aggregation(),
            **no_autocast(),
        )
        super().build(expert_outputs_shape)

    def _check_gate_inputs_shape(self, expert_outputs_shape, gate_inputs_shape):
        if len(gate_inputs_shape) != len(expert_outputs_shape) - 1:
            raise ValueError(
                "The gate inputs must have one axis fewer than the expert outputs: "
                "(batch_size, ..., features) for experts (batch_size, ..., num_experts, "
                f"units). Received: gate_inputs shape={gate_inputs_shape}, expert_outputs "
                f"shape={expert_outputs_shape}."
            )
        if gate_inputs_shape[-1] is None:
            raise ValueError(
                "The last axis (features) of the gate inputs must be known. Received: "
                f"gate_inputs shape={gate_inputs_shape}."
            )
        for axis, (gate_size, expert_size) in enumerate(
            zip(gate_inputs_shape[:-1], expert_outputs_shape[:-2])
        ):
            if gate_size is not None and expert_size is not None and gate_size != expert_size:
                raise ValueError(
                    f"Axis {axis} of the gate inputs and of the expert outputs differ. "
                    f"Received: gate_inputs shape={gate_inputs_shape}, expert_outputs "
                    f"shape={expert_outputs_shape}. Both must share the batch (and time) axes."
                )

    def call(self, expert_outputs, gate_inputs=None, training=None):
        # gate_inputs defaults to None so that leaving it out gets the message below.
        if gate_inputs is None:
            raise ValueError(
                "TaskGate needs `gate_inputs`, the features that the gate reads (for example "
                "the input of the ExpertBank). Received: gate_inputs=None."
            )
        if self.logits_layer.built:
            _validation.check_feature_count(
                self, gate_inputs, self.logits_layer.kernel.shape[0], "gate_inputs"
            )
        expert_dtype = ops.dtype(expert_outputs)
        if not expert_dtype.startswith(("float", "bfloat")):
            # The mixing weights are cast to the experts' dtype, and in an integer dtype
            # every weight below 1 would become 0.
            raise ValueError(
                "The expert outputs must be floating point. Received: expert_outputs dtype="
                f"{expert_dtype}. Cast them to float32 first."
            )
        if not self.logits_layer.built:
            # tf_keras reaches this point without having seen the gate input's shape.
            self._check_gate_inputs_shape(tuple(expert_outputs.shape), tuple(gate_inputs.shape))

        # Gate logits in float32: z_k = W_gk x + b_gk, then divided by the temperature.
        logits = self.logits_layer(ops.cast(gate_inputs, "float32"))
        if self.temperature != 1.0:
            logits = logits / self.temperature
        if self.noise_layer is not None:
            # Noisy gating (Shazeer et al., 2017): z + N(0, noise_stddev^2), training only.
            logits = self.noise_layer(logits, training=training)

        if self.top_k is None or self.top_k == self.num_experts:
            # g_k(x) = softmax(z_k); the fused softmax subtracts the row maximum, so any
            # finite logit gives finite weights.
            weights = ops.softmax(logits, axis=-1)
        else:
            # KeepTopK: zero all but the k largest logits, then renormalise. After subtracting
            # the row maximum, the kept maximum has exp(0) = 1, so the sum is >= 1.
            logits = logits - ops.max(logits, axis=-1, keepdims=True)
            _, top_indices = ops.top_k(logits, k=self.top_k)
            keep = ops.sum(ops.one_hot(top_indices, self.num_experts, dtype="float32"), axis=-2)
            weights = ops.exp(logits) * keep
            weights = weights / ops.sum(weights, axis=-1, keepdims=True)

        if training:
            self._track_utilization(weights)
        if self.load_balance_weight > 0:
            self.add_loss(self.load_balance_weight * self._importance_loss(weights))

        # f_k(x) = sum_i g_k(x)_i f_i(x), computed in the dtype of the expert outputs.
        # One batched matrix product: (..., 1, num_experts) @ (..., num_experts, units).
        mixing_weights = ops.cast(ops.expand_dims(weights, -2), expert_outputs.dtype)
        mixture = ops.squeeze(ops.matmul(mixing_weights, expert_outputs), axis=-2)
        if self.return_weights:
            return mixture, weights
        return mixture

    def _importance_loss(self, weights):
        # Importance(X)_i = sum over the batch (and time) of g(x)_i; loss = CV(Importance)^2.
        importance = ops.sum(ops.reshape(weights, (-1, self.num_experts)), axis=0)
        mean = ops.mean(importance)
        variance = ops.mean(ops.square(importance - mean))
        return variance / (ops.square(mean) + 1e-10)

    def _track_utilization(self, weights):
        rows = ops.reshape(weights, (-1, self.num_experts))
        count = ops.cast(ops.shape(rows)[0], "float32")
        batch_mean = ops.sum(rows, axis=0) / ops.maximum(count, 1.0)
        momentum = self.utilization_momentum
        previous = ops.convert_to_tensor(self.expert_utilization)
        updated = momentum * previous + (1.0 - momentum) * batch_mean
        # An empty batch (a replica's share of a short last batch can be one) leaves the
        # average unchanged instead of making it NaN for good.
        self.expert_utilization.assign(ops.where(count > 0, updated, previous))

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, expert_outputs_shape, gate_inputs_shape=None):
        expert_outputs_shape = tuple(expert_outputs_shape)
        mixture_shape = expert_outputs_shape[:-2] + expert_outputs_shape[-1:]
        if self.return_weights:
            return mixture_shape, expert_outputs_shape[:-2] + (self.num_experts,)
        return mixture_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_experts": self.num_experts,
                "top_k": self.top_k,
                "temperature": self.temperature,
                "noise_stddev": self.noise_stddev,
                "return_weights": self.return_weights,
                "load_balance_weight": self.load_balance_weight,
                "utilization_momentum": self.utilization_momentum,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            }
        )
        return config
