"""Pytest plugin for running the layer and model-builder tests on JAX and PyTorch.

`tests/run.sh` loads it with `-p keras_backend_plugin` when `KERAS_BACKEND` is `jax` or
`torch`. The library code is backend-neutral, but some tests check it with TensorFlow
tools (`tf.GradientTape`, `tf.saved_model`, `Tensor.numpy()`), or with raw string
features, which Keras preprocessing layers look up inside a model only on the TensorFlow
backend. This plugin skips those tests, each with its reason: the ones listed in
SKIPPED, and any other whose own source uses one of SOURCE_PATTERNS.
`tests/scale/backends_test.py` compares every layer's outputs and training step with
TensorFlow on both backends, so the skipped checks of numbers are still covered there.
A test that reads values with `keras.ops.convert_to_numpy` and computes gradients with the
`gradients` fixture of `tests/layers/conftest.py` runs on every backend.

On the TensorFlow backend the plugin changes nothing.
"""

import inspect
import os

import pytest

GRADIENT_TAPE = "computes gradients with tf.GradientTape, which sees only TensorFlow variables"
NUMPY_METHOD = "reads outputs or weights with `.numpy()`, which JAX arrays do not have"
TORCH_NUMPY = (
    "converts layer outputs with np.asarray; PyTorch refuses it for tensors that require "
    "grad (use keras.ops.convert_to_numpy)"
)
SAVED_MODEL = "exports with tf.function and tf.saved_model, which trace TensorFlow tensors only"
FLOAT64 = (
    "compares output dtypes with the TensorFlow object tf.float64 (and JAX computes float64 "
    "only with jax_enable_x64 set)"
)
JAX_FLOAT64 = "computes in float64, which JAX does only with jax_enable_x64 set"
STRING_FEATURES = (
    "feeds raw string features; StringLookup runs inside a model only on the TensorFlow "
    "backend (on other backends, look strings up in the tf.data pipeline)"
)

# {test file: {test function: {backend: reason}}}
SKIPPED = {
    "tests/layers/hypergrid_dense_test.py": {
        "test_saved_model_export_with_task_id": {"jax": SAVED_MODEL, "torch": SAVED_MODEL},
    },
    "tests/layers/sequential_expert_test.py": {
        "test_layer_dtype_reaches_outputs": {"jax": JAX_FLOAT64},
        "test_saved_model_export": {"jax": SAVED_MODEL, "torch": SAVED_MODEL},
    },
    "tests/models/builders_test.py": {
        name: {"jax": STRING_FEATURES, "torch": STRING_FEATURES}
        for name in (
            "test_builder_outputs_named_per_task",
            "test_builder_trains_with_both_label_shapes",
            "test_model_keras_file_round_trip",
        )
    },
}


# Tests not in SKIPPED are matched by what their own source calls, so new tests that use
# these TensorFlow-only tools are skipped too: (text in the source, {backend: reason}).
SOURCE_PATTERNS = (
    ("tf.GradientTape", {"jax": GRADIENT_TAPE, "torch": GRADIENT_TAPE}),
    ("tf.saved_model", {"jax": SAVED_MODEL, "torch": SAVED_MODEL}),
    ("tf.float64", {"jax": FLOAT64, "torch": FLOAT64}),
    (".numpy()", {"jax": NUMPY_METHOD, "torch": TORCH_NUMPY}),
)


def _reason_from_source(item, backend):
    try:
        source = inspect.getsource(item.function)
    except (AttributeError, OSError, TypeError):
        return None
    for text, reasons in SOURCE_PATTERNS:
        if text in source and backend in reasons:
            return reasons[backend]
    return None


def _backend():
    import keras

    return keras.backend.backend()


def pytest_report_header(config):
    return f"Keras backend: {_backend()} (KERAS_BACKEND={os.environ.get('KERAS_BACKEND', '')!r})"


def pytest_collection_modifyitems(config, items):
    backend = _backend()
    if backend == "tensorflow":
        return
    root = str(config.rootpath)
    for item in items:
        relative = os.path.relpath(str(item.path), root).replace(os.sep, "/")
        function_name = getattr(item, "originalname", None) or item.name.split("[")[0]
        reason = SKIPPED.get(relative, {}).get(function_name, {}).get(backend)
        if reason is None:
            reason = _reason_from_source(item, backend)
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=f"{backend} backend: test {reason}"))
