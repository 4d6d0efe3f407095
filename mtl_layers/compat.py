"""Select the Keras implementation that the library's layers and models use.

TensorFlow Recommenders 0.7 imports only when `tf.keras` is Keras 2, which TensorFlow
provides through the `tf_keras` package when `TF_USE_LEGACY_KERAS=1` is set before
TensorFlow is imported. Every layer in this package subclasses the `Layer` class of the
Keras that TensorFlow uses in this process, and writes its math once with `keras.ops`
from the Keras 3 package. With the TensorFlow backend those ops take and return
`tf.Tensor`s, so the same code runs inside Keras 3 layers and inside `tf_keras` layers.

Attributes:
    keras: the `keras` module in Keras 3 mode, the `tf_keras` module in Keras 2 mode.
    ops: `keras.ops` from the Keras 3 package, used for all layer math.
    IS_KERAS_2: True when the process runs in Keras 2 (`tf_keras`) mode.
"""

import os

# TensorFlow reads the same variable with the same accepted values (tf.keras lazy loader).
_LEGACY_KERAS_VALUES = ("1", "true", "True")


def uses_legacy_keras() -> bool:
    """Return True when `TF_USE_LEGACY_KERAS` selects Keras 2 (`tf_keras`)."""
    return os.environ.get("TF_USE_LEGACY_KERAS", "") in _LEGACY_KERAS_VALUES


IS_KERAS_2 = uses_legacy_keras()

if IS_KERAS_2:
    try:
        import tf_keras as keras
    except ImportError as error:
        raise ImportError(
            "TF_USE_LEGACY_KERAS=1 is set, so mtl_layers needs the `tf_keras` package, "
            "which is not installed. Install it with `pip install tf-keras` at the "
            "same release as `tensorflow`, or unset TF_USE_LEGACY_KERAS to use Keras 3."
        ) from error

    import keras as _keras3

    if _keras3.backend.backend() != "tensorflow":
        raise ImportError(
            "TF_USE_LEGACY_KERAS=1 runs the layers inside `tf_keras`, which needs the "
            "Keras 3 ops on the TensorFlow backend. Received: "
            f"KERAS_BACKEND={_keras3.backend.backend()!r}. Unset KERAS_BACKEND or set "
            "it to 'tensorflow'."
        )
    ops = _keras3.ops
else:
    import keras

    ops = keras.ops


def backend_name() -> str:
    """Return the Keras backend that runs the layer math: "tensorflow" in Keras 2 mode."""
    return "tensorflow" if IS_KERAS_2 else keras.backend.backend()


def in_xla_context() -> bool:
    """Return True when the current TensorFlow graph is being compiled by XLA.

    TensorFlow-only fast paths (fused kernels, ops with run-time output shapes) check this
    to fall back to plain keras.ops. If TensorFlow's private helper moves, this returns
    True, so callers keep to the fallback, which is always correct.
    """
    import tensorflow as tf

    try:
        from tensorflow.python.ops import control_flow_util
    except ImportError:
        return True
    if tf.executing_eagerly():
        return False
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def mean_aggregation():
    """Return the `add_weight(aggregation=...)` value that averages updates across replicas.

    Keras 3 takes the string `"mean"`; `tf_keras` takes `tf.VariableAggregation.MEAN`.
    """
    if IS_KERAS_2:
        import tensorflow as tf

        return tf.VariableAggregation.MEAN
    return "mean"


def no_autocast():
    """Return the `add_weight` keyword that keeps a float32 weight float32 inside `call`.

    Under a mixed precision policy both Keras modes cast float weights to the compute dtype
    when `call` reads them; a statistic updated in float32 must opt out.
    """
    if IS_KERAS_2:
        return {"experimental_autocast": False}
    return {"autocast": False}


def register_serializable(cls):
    """Register `cls` with the active Keras so saved models reload by name."""
    return keras.saving.register_keras_serializable(package="mtl_layers")(cls)


def is_keras_tensor(value) -> bool:
    """Return True for a symbolic tensor of the active Keras (a functional-model input)."""
    if IS_KERAS_2:
        try:
            return keras.backend.is_keras_tensor(value)
        except ValueError:
            # tf_keras raises for values that are not tensors at all, such as NumPy arrays.
            return False
    return isinstance(value, keras.KerasTensor)


def is_input_tensor(value) -> bool:
    """Return True when `value` is the tensor of a `keras.Input`, not the output of a layer."""
    history = getattr(value, "_keras_history", None)
    # Keras 3 names the producing layer `operation`, tf_keras names it `layer`.
    layer = getattr(history, "operation", None) or getattr(history, "layer", None)
    return isinstance(layer, keras.layers.InputLayer)
