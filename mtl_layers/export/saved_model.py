"""Export a Keras model as a versioned SavedModel that TF Serving loads."""

import os
import pathlib
import re
import shutil
import tempfile
from typing import Dict, Optional, Union

import tensorflow as tf
from absl import logging

from mtl_layers.compat import IS_KERAS_2

SERVING_SIGNATURE = "serving_default"
EXAMPLE_SIGNATURE = "serving_tf_example"
_VERSION_PATTERN = re.compile(r"^\d+$")


def _input_specs(model) -> Dict[str, tf.TensorSpec]:
    """Return one TensorSpec per model input, keyed and named by the input's name."""
    structure = model.input
    if isinstance(structure, dict):
        items = list(structure.items())
    else:
        tensors = structure if isinstance(structure, (list, tuple)) else [structure]
        items = [(tensor.name.split(":")[0], tensor) for tensor in tensors]
    specs = {}
    for name, tensor in items:
        dtype = tf.as_dtype(tensor.dtype)
        specs[name] = tf.TensorSpec(shape=tuple(tensor.shape), dtype=dtype, name=name)
    return specs


def _output_dict(model, outputs) -> Dict[str, tf.Tensor]:
    if isinstance(outputs, dict):
        return dict(outputs)
    if not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    return dict(zip(model.output_names, outputs))


def _example_parsing_spec(specs: Dict[str, tf.TensorSpec]) -> Dict[str, tf.io.FixedLenFeature]:
    parsing = {}
    for name, spec in specs.items():
        dtype = spec.dtype
        if dtype.is_floating:
            parse_dtype = tf.float32
        elif dtype.is_integer or dtype.is_bool:
            parse_dtype = tf.int64
        else:
            parse_dtype = tf.string
        parsing[name] = tf.io.FixedLenFeature(shape=spec.shape[1:], dtype=parse_dtype)
    return parsing


def next_version(export_dir: Union[str, os.PathLike]) -> int:
    """Return one more than the highest numeric version folder in `export_dir` (or 1)."""
    export_dir = pathlib.Path(export_dir)
    versions = [
        int(entry.name)
        for entry in export_dir.iterdir()
        if entry.is_dir() and _VERSION_PATTERN.match(entry.name)
    ] if export_dir.is_dir() else []
    return max(versions, default=0) + 1


def export_saved_model(
    model,
    export_dir: Union[str, os.PathLike],
    version: Optional[int] = None,
) -> pathlib.Path:
    """Export `model` to `export_dir/<version>/` for TF Serving and return that path.

    The SavedModel has two signatures:
    * `serving_default` takes the model's raw inputs by name with their own dtypes
      (strings stay strings, integer ids stay integers) and returns one output per task,
      named after the task. Labels are never inputs.
    * `serving_tf_example` takes a batch of serialized `tf.train.Example` protos
      (`examples`, a string vector) that hold the same features, and returns the same
      outputs.

    TF Serving polls `export_dir` and loads the highest numeric version it finds, so the
    version is written to a temporary sibling folder and renamed into place only when
    complete. An existing version is never overwritten.

    Works for Keras 3 models and, with `TF_USE_LEGACY_KERAS=1`, for `tf_keras` models,
    including models that were never called.

    Args:
        model: A Keras model with named inputs (a functional model from
            `mtl_layers.models` has one input per raw feature).
        export_dir: Base folder of all versions; created if missing.
        version: Version number (an integer >= 1). Defaults to the next free number.

    Returns:
        The path of the new version folder.

    Raises:
        FileExistsError: `export_dir/<version>` exists already; nothing is changed.
        ValueError: `version` is not an integer >= 1.
    """
    export_dir = pathlib.Path(export_dir)
    if version is None:
        version = next_version(export_dir)
    elif isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"`version` must be an integer >= 1. Received: version={version!r}")
    target = export_dir / str(version)
    if target.exists():
        raise FileExistsError(
            f"Version {version} already exists at {target}; it was left unchanged. Pass "
            "another `version`, or omit it to use the next free number."
        )
    export_dir.mkdir(parents=True, exist_ok=True)

    specs = _input_specs(model)
    parsing_spec = _example_parsing_spec(specs)

    # A tf.Module owns the model so that its variables are saved with the signatures.
    module = tf.Module()
    module.model = model

    @tf.function(input_signature=[specs])
    def serve(features):
        return _output_dict(model, model(features, training=False))

    @tf.function(input_signature=[tf.TensorSpec(shape=(None,), dtype=tf.string, name="examples")])
    def serve_examples(examples):
        parsed = tf.io.parse_example(examples, parsing_spec)
        features = {name: tf.cast(parsed[name], specs[name].dtype) for name in specs}
        return _output_dict(model, model(features, training=False))

    module.serve = serve
    module.serve_examples = serve_examples
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{version}.incomplete-", dir=export_dir))
    try:
        tf.saved_model.save(
            module,
            str(staging),
            signatures={
                SERVING_SIGNATURE: serve.get_concrete_function(),
                EXAMPLE_SIGNATURE: serve_examples.get_concrete_function(),
            },
        )
        # rename() fails instead of replacing when another writer created the version.
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logging.info(
        "Exported %s (%s) to %s", model.name, "tf_keras" if IS_KERAS_2 else "Keras 3", target
    )
    return target
