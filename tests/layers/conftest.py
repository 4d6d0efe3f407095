"""Backend-neutral helpers for the layer tests, as fixtures.

`tests/run.sh` runs the layer tests on TensorFlow (in Keras 3 and Keras 2 mode), JAX and
PyTorch. Tests read values with `ops.convert_to_numpy` and compute gradients with the
`gradients` fixture, so the same test runs on every backend.
"""

import numpy as np
import pytest

from mtl_layers.compat import IS_KERAS_2, keras, ops


def _backend() -> str:
    # tf_keras has no backend choice: Keras 2 mode always runs on TensorFlow.
    return "tensorflow" if IS_KERAS_2 else keras.backend.backend()


def _tensorflow_gradients(loss_fn, variables, inputs):
    import tensorflow as tf

    tensors = [tf.constant(value) for value in inputs]
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        loss = loss_fn(*tensors)
    gradients = tape.gradient(loss, list(variables) + tensors)
    # Embedding lookups give IndexedSlices; make them dense like the other backends' results.
    return [
        tf.convert_to_tensor(gradient) if isinstance(gradient, tf.IndexedSlices) else gradient
        for gradient in gradients
    ]


def _jax_gradients(loss_fn, variables, inputs):
    import jax

    def loss_of(variable_values, input_values):
        # The layers read `variable_values` in place of the variables' stored values, so
        # JAX can differentiate with respect to them.
        with keras.StatelessScope(state_mapping=list(zip(variables, variable_values))):
            return loss_fn(*input_values)

    values = [variable.value for variable in variables]
    tensors = [ops.convert_to_tensor(value) for value in inputs]
    variable_gradients, input_gradients = jax.grad(loss_of, argnums=(0, 1))(values, tensors)
    return list(variable_gradients) + list(input_gradients)


def _torch_gradients(loss_fn, variables, inputs):
    import torch

    tensors = [ops.convert_to_tensor(value).requires_grad_(True) for value in inputs]
    loss = loss_fn(*tensors)
    sources = [variable.value for variable in variables] + tensors
    return list(torch.autograd.grad(loss, sources, allow_unused=True))


_GRADIENT_FUNCTIONS = {
    "tensorflow": _tensorflow_gradients,
    "jax": _jax_gradients,
    "torch": _torch_gradients,
}


def compute_gradients(loss_fn, variables, inputs=()):
    """Compute the gradients of a scalar loss on the active Keras backend.

    Args:
        loss_fn: A function of the tensors made from `inputs` that calls the layers and
            returns a scalar, computed with `ops`. Combine tensors with NumPy arrays
            through `ops` functions such as `ops.subtract`, because on PyTorch a tensor
            minus a NumPy array fails.
        variables: Keras variables that the layers read, for example
            `layer.trainable_weights`. Build the layers before the call.
        inputs: NumPy float arrays, passed to `loss_fn` as tensors of the backend.

    Returns:
        One NumPy array per variable, then one per input. Where the loss does not depend
        on a value, its gradient is zeros: TensorFlow and PyTorch report no gradient
        there, and JAX zeros.
    """
    backend = _backend()
    if backend not in _GRADIENT_FUNCTIONS:
        raise ValueError(
            f"No gradient function for the Keras backend {backend!r}. Expected one of "
            f"{sorted(_GRADIENT_FUNCTIONS)}."
        )
    variables = list(variables)
    gradients = _GRADIENT_FUNCTIONS[backend](loss_fn, variables, inputs)
    shapes = [tuple(variable.shape) for variable in variables] + [np.shape(value) for value in inputs]
    return [
        np.zeros(shape, "float32") if gradient is None else ops.convert_to_numpy(gradient)
        for gradient, shape in zip(gradients, shapes)
    ]


@pytest.fixture
def gradients():
    """Return `compute_gradients`, which works on every Keras backend."""
    return compute_gradients
