"""Small sequence layers that the MoSE model builders need around the experts."""

from mtl_layers.compat import keras, ops, register_serializable


def _float_mask(mask, like):
    return ops.cast(ops.expand_dims(ops.not_equal(ops.cast(mask, "int32"), 0), -1), like.dtype)


@register_serializable
class ClearMask(keras.layers.Layer):
    """Pass the input through unchanged and drop its Keras mask.

    The task outputs of the sequence models are trained with explicit per-step sample
    weights. Dropping the mask before the towers keeps Keras from also applying it to the
    losses, which Keras 3 and `tf_keras` do with different normalisations.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs):
        # A new tensor: Keras 3 keeps the mask attached to the input tensor object.
        return ops.copy(inputs)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return input_shape


@register_serializable
class ZeroPaddedSteps(keras.layers.Layer):
    """Set the features of padded time steps to zero, so that NaN there cannot spread.

    `keras.layers.LSTM` computes its step at padded positions too and then keeps the
    previous state. A NaN in a padded input leaves the outputs finite but makes the
    weight gradients NaN. The MoSE builders apply this layer before the shared bottom.

    Call arguments:
        inputs: `(batch_size, time, features)`.
        mask: `(batch_size, time)` boolean or 0/1 tensor, True or 1 at valid steps. The
            output carries it on as its Keras mask.

    Output shape:
        The input shape.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:
            return inputs
        valid = ops.expand_dims(ops.not_equal(ops.cast(mask, "int32"), 0), -1)
        return ops.where(valid, inputs, ops.zeros_like(inputs))

    def compute_mask(self, inputs, mask=None):
        return mask

    def compute_output_shape(self, input_shape):
        return input_shape


@register_serializable
class LastValidStep(keras.layers.Layer):
    """Select each row's features at its last valid time step.

    Call arguments:
        inputs: `(batch_size, time, ...)`.
        mask: `(batch_size, time)` boolean or 0/1 tensor, or None for the last step.

    Output shape:
        `(batch_size, ...)`. A row without any valid step gets zeros.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:
            return inputs[:, -1]
        valid = ops.cast(ops.not_equal(ops.cast(mask, "int32"), 0), "int32")
        positions = ops.arange(1, ops.shape(inputs)[1] + 1, dtype="int32")
        # Index of the last valid step, or -1 (then clipped to 0 and zeroed) for none.
        last = ops.max(valid * positions, axis=1) - 1
        index = ops.reshape(ops.maximum(last, 0), (-1, 1) + (1,) * (len(inputs.shape) - 2))
        selected = ops.squeeze(ops.take_along_axis(inputs, index, axis=1), axis=1)
        has_valid = ops.reshape(last >= 0, (-1,) + (1,) * (len(inputs.shape) - 2))
        return ops.where(has_valid, selected, ops.zeros_like(selected))

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + tuple(input_shape[2:])


@register_serializable
class CausalMeanPooling(keras.layers.Layer):
    """Append to each step's features the mean of the features over the valid steps so far.

    This gives non-sequential (feed-forward) models the history that an LSTM reads:
    output_t = [x_t, mean_{s <= t, s valid} x_s], with x_t replaced by zeros at padded steps
    and the mean zero before the first valid step.

    Call arguments:
        inputs: `(batch_size, time, features)`.
        mask: Optional `(batch_size, time)` boolean or 0/1 tensor.

    Output shape:
        `(batch_size, time, 2 * features)`.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:
            weights = ops.ones_like(inputs[..., :1])
        else:
            weights = _float_mask(mask, inputs)
            inputs = ops.where(weights > 0, inputs, ops.zeros_like(inputs))
        counts = ops.cumsum(weights, axis=1)
        means = ops.cumsum(inputs, axis=1) / ops.maximum(counts, 1.0)
        return ops.concatenate([inputs, means], axis=-1)

    def compute_mask(self, inputs, mask=None):
        return mask

    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        features = None if input_shape[-1] is None else 2 * input_shape[-1]
        return input_shape[:-1] + (features,)
