"""Export a Keras model as a versioned SavedModel that TF Serving loads."""

import contextlib
import logging as python_logging
import os
import pathlib
import re
import shutil
import tempfile
from typing import Dict, Iterator, Mapping, Optional, Sequence, Union

import tensorflow as tf
from absl import logging

from mtl_layers.compat import IS_KERAS_2, backend_name
from mtl_layers.export import warmup
from mtl_layers.layers import _compiled_lstm

SERVING_SIGNATURE = "serving_default"
EXAMPLE_SIGNATURE = "serving_tf_example"
_VERSION_PATTERN = re.compile(r"^\d+$")
# TF Serving parses version folder names as int64.
_MAX_VERSION = 2**63 - 1
# Entries of a SavedModel version folder besides saved_model.pb.
_SAVED_MODEL_ENTRIES = ("variables", "assets", "assets.extra", "fingerprint.pb", "saved_model.pbtxt")


def _serving_model(model):
    """Return the functional model to export: `model`, or its `serving_model` attribute.

    Models that are not functional, such as the TensorFlow Recommenders models of
    `mtl_layers.tfrs`, expose the functional model that maps raw features to outputs as
    `serving_model`.
    """
    serving_model = getattr(model, "serving_model", None)
    if serving_model is not None:
        return serving_model
    try:
        model.input
    except (AttributeError, ValueError) as error:
        raise ValueError(
            f"Cannot export {type(model).__name__} {getattr(model, 'name', '')!r}: it has no "
            "defined inputs. Export a functional Keras model (every builder in "
            "`mtl_layers.models` returns one), or give the model a `serving_model` attribute "
            "that holds the functional model from raw features to task outputs."
        ) from error
    return model


def _input_items(model):
    """Return `(name, symbolic input)` pairs in the order the model takes its inputs."""
    structure = model.input
    if isinstance(structure, dict):
        return list(structure.items())
    tensors = structure if isinstance(structure, (list, tuple)) else [structure]
    return [(tensor.name.split(":")[0], tensor) for tensor in tensors]


def _input_specs(model) -> Dict[str, tf.TensorSpec]:
    """Return one TensorSpec per model input, keyed and named by the input's name."""
    specs = {}
    for name, tensor in _input_items(model):
        if name in specs:
            raise ValueError(
                f"Model {model.name!r} has two inputs named {name!r}. Give every "
                "`keras.Input` a unique `name`, because it becomes a signature input key."
            )
        dtype = tf.as_dtype(tensor.dtype)
        specs[name] = tf.TensorSpec(shape=tuple(tensor.shape), dtype=dtype, name=name)
    return specs


def _call_model(model, features: Dict[str, tf.Tensor]):
    """Call `model` on named features, in the input structure the model was built with."""
    if isinstance(model.input, dict):
        return model(features, training=False)
    names = [name for name, _ in _input_items(model)]
    if len(names) == 1:
        return model(features[names[0]], training=False)
    return model([features[name] for name in names], training=False)


def _output_dict(model, outputs) -> Dict[str, tf.Tensor]:
    """Return the model outputs keyed by output name (the task names for our builders)."""
    if isinstance(outputs, dict):
        return dict(outputs)
    if not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    return dict(zip(model.output_names, outputs))


def _example_parsing_spec(specs: Dict[str, tf.TensorSpec]) -> Dict[str, object]:
    """Return the `tf.io.parse_example` features that rebuild every model input.

    An input with a known shape after the batch axis parses as a `FixedLenFeature`. An
    input whose first axis after the batch axis is unknown, such as a sequence of
    `(batch, time, features)` with a mask of `(batch, time)`, parses as a
    `FixedLenSequenceFeature`: each example stores its own number of steps, and the batch
    is padded to its longest example with zeros (False for a boolean mask).
    """
    parsing = {}
    for name, spec in specs.items():
        dtype = spec.dtype
        if dtype.is_floating:
            parse_dtype = tf.float32
        elif dtype.is_integer or dtype.is_bool:
            parse_dtype = tf.int64
        else:
            parse_dtype = tf.string
        example_shape = spec.shape[1:]
        if example_shape.is_fully_defined():
            parsing[name] = tf.io.FixedLenFeature(shape=example_shape, dtype=parse_dtype)
        elif example_shape[0] is None and example_shape[1:].is_fully_defined():
            parsing[name] = tf.io.FixedLenSequenceFeature(
                shape=example_shape[1:], dtype=parse_dtype, allow_missing=True
            )
        else:
            raise ValueError(
                f"Input {name!r} has shape {tuple(spec.shape)}, and the tf.Example signature "
                "can only read inputs whose axes after the batch axis are all known, or all "
                "but the first (a variable number of steps). Give the other axes a size in "
                "its `keras.Input(shape=...)`."
            )
    return parsing


def next_version(export_dir: Union[str, os.PathLike]) -> int:
    """Return one more than the highest numeric entry name in `export_dir` (or 1).

    Every entry counts, not only version folders. A file or a broken symbolic link named
    `3` also blocks version 3, so the result is free and above all of them.
    """
    export_dir = pathlib.Path(export_dir).expanduser()
    versions = [
        int(entry.name)
        for entry in export_dir.iterdir()
        if _VERSION_PATTERN.match(entry.name)
    ] if export_dir.is_dir() else []
    return max(versions, default=0) + 1


def _looks_like_version(folder: pathlib.Path) -> bool:
    """Return whether `folder` (with a numeric name) is, or sits among, SavedModel versions.

    A damaged version may lack `saved_model.pb` but still hold its variables or assets.
    A complete version beside it also marks the parent as a model's folder of versions.
    """
    if any((folder / name).exists() for name in _SAVED_MODEL_ENTRIES):
        return True
    parent = folder.parent
    if not parent.is_dir():
        return False
    return any(
        _VERSION_PATTERN.match(sibling.name) and (sibling / "saved_model.pb").exists()
        for sibling in parent.iterdir()
        if sibling != folder
    )


def check_export_dir(export_dir) -> pathlib.Path:
    """Return `export_dir` as a Path with `~` expanded, or raise ValueError if it is unusable.

    `export_saved_model` calls it first. A script can call it before training, so that a
    path that cannot hold versions fails before the work is done.
    """
    if not isinstance(export_dir, (str, os.PathLike)) or not isinstance(
        os.fspath(export_dir), str
    ):
        raise ValueError(
            "`export_dir` must be a path (a str or pathlib.Path) to the folder of the model's "
            f"versions, such as 'exports/my_model'. Received: export_dir={export_dir!r}"
        )
    if not os.fspath(export_dir).strip():
        raise ValueError(
            "`export_dir` must name the folder of the model's versions. Received an empty "
            f"path: export_dir={export_dir!r}. Pass a folder such as 'exports/my_model'."
        )
    export_dir = pathlib.Path(export_dir).expanduser()
    if (export_dir / "saved_model.pb").exists():
        raise ValueError(
            f"`export_dir` must be the folder that contains the numbered versions, but "
            f"{str(export_dir)!r} is itself a SavedModel (it contains saved_model.pb). "
            f"Pass its parent, {str(export_dir.parent)!r}, so the new version sits beside it "
            "where TF Serving finds it."
        )
    if _VERSION_PATTERN.match(export_dir.name) and _looks_like_version(export_dir):
        raise ValueError(
            f"`export_dir` must be the folder that contains the numbered versions, but "
            f"{str(export_dir)!r} looks like a version itself: its name is a number, and it "
            "or a numbered folder beside it contains SavedModel files. TF Serving would read it "
            f"as a version of {str(export_dir.parent)!r}, and a version inside it would "
            f"never load. Pass {str(export_dir.parent)!r}, or a folder whose name is not a "
            "number."
        )
    blocking = next(
        (
            parent
            for parent in export_dir.parents
            if os.path.lexists(parent) and not parent.is_dir()
        ),
        None,
    )
    if blocking is not None:
        kind = "a broken symbolic link" if not blocking.exists() else "a file"
        raise ValueError(
            f"`export_dir` {str(export_dir)!r} lies below {str(blocking)!r}, which is {kind}, "
            "so the folder cannot be created. Pass a path below a folder."
        )
    if export_dir.is_symlink() and not export_dir.exists():
        raise ValueError(
            "`export_dir` must be a folder or a path that does not exist yet. Received: "
            f"export_dir={str(export_dir)!r}, a broken symbolic link to "
            f"{os.readlink(export_dir)!r}. Create its target folder or pass another path."
        )
    if export_dir.exists() and not export_dir.is_dir():
        raise ValueError(
            "`export_dir` must be a folder that contains numbered versions (or a path that does not "
            f"exist yet). Received: export_dir={str(export_dir)!r}, an existing file. Pass a folder "
            "such as 'exports/my_model'."
        )
    return export_dir


def _op_error_summary(message: str) -> str:
    """Return the op's own message from a TensorFlow error, without the traceback of the graph."""
    skipped = ("Graph execution error", "Detected at node", "File ", "[[")
    lines = [line.strip() for line in message.splitlines()]
    details = [line for line in lines if line and not line.startswith(skipped)]
    return details[0] if details else message.strip()


def _warmup_features(warmup_examples, specs, count):
    """Return up to `count` warm-up examples as NumPy arrays, or None for no warm-up."""
    if warmup_examples is None:
        return None
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(
            f"`num_warmup_examples` must be an integer >= 1. Received: {count!r}"
        )
    if isinstance(warmup_examples, tf.data.Dataset):
        # A batched dataset of `features` or `(features, labels)`: its first batch.
        element = next(iter(warmup_examples.take(1)), None)
        if element is None:
            raise ValueError("`warmup_examples` is an empty dataset. Pass real examples.")
        if isinstance(element, tuple):
            element = element[0]
        warmup_examples = {name: value.numpy() for name, value in element.items()}
    return warmup.select_examples(warmup_examples, specs, count)


class _DropTensorFlowInfo(python_logging.Filter):
    """Drop records below WARNING that TensorFlow's own modules log."""

    def filter(self, record: python_logging.LogRecord) -> bool:
        from_tensorflow = f"{os.sep}tensorflow{os.sep}" in record.pathname
        return record.levelno >= python_logging.WARNING or not from_tensorflow


@contextlib.contextmanager
def _tensorflow_warnings_only() -> Iterator[None]:
    """Hide TensorFlow's INFO records while the SavedModel is written.

    `tf.saved_model.save` logs internal details at INFO: captured resource names it
    renames, sharding times and the temporary folder's assets. A script that logs at INFO
    (absl's default) would print them all; warnings and errors still pass. TensorFlow
    logs them through its own "tensorflow" logger and, in some modules, through absl's.
    """
    loggers = [python_logging.getLogger(name) for name in ("tensorflow", "absl")]
    drop_tensorflow_info = _DropTensorFlowInfo()
    for logger in loggers:
        logger.addFilter(drop_tensorflow_info)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop_tensorflow_info)


def export_saved_model(
    model,
    export_dir: Union[str, os.PathLike],
    version: Optional[int] = None,
    warmup_examples: Optional[Union[Mapping[str, Sequence], tf.data.Dataset]] = None,
    num_warmup_examples: int = 8,
    model_name: Optional[str] = None,
) -> pathlib.Path:
    """Export `model` to `export_dir/<version>/` for TF Serving and return that path.

    The SavedModel has two signatures:
    * `serving_default` takes the model's raw inputs by name with their own dtypes
      (strings stay strings, integer ids stay integers) and returns one output per task,
      named after the task. Labels are never inputs.
    * `serving_tf_example` takes a batch of serialized `tf.train.Example` protos
      (`examples`, a string vector) that hold the same features, and returns the same
      outputs.

    With `warmup_examples`, the version also contains TF Serving warm-up records
    (`assets.extra/tf_serving_warmup_requests`): predict requests for both signatures at
    batch 1 and at `num_warmup_examples`. The records are run through the model before
    the version is published, so a bad example fails the export instead of the server.

    TF Serving polls `export_dir` and loads the highest numeric version it finds, so the
    version is written to a temporary sibling folder (a name TF Serving ignores) and
    renamed into place only when complete. An existing version is never overwritten.

    Works for Keras 3 models and, with `TF_USE_LEGACY_KERAS=1`, for `tf_keras` models,
    including models that were never called, dict or list inputs and any number of
    outputs. Models that are not functional export their `serving_model` attribute.

    Args:
        model: A functional Keras model with named inputs (a model from
            `mtl_layers.models` has one input per raw feature), or an object with a
            `serving_model` attribute that contains one.
        export_dir: Base folder of all versions; created if missing. A leading `~` is
            expanded to the home folder.
        version: Version number (an integer >= 1). Defaults to one more than the highest
            numeric name in `export_dir`, counting files and broken symbolic links too.
        warmup_examples: Real examples for the warm-up records: a dict of arrays keyed
            by input name (other keys, such as labels, are ignored) or a batched
            `tf.data.Dataset` of such dicts or of `(features, labels)` pairs, whose
            first batch is used. None writes no warm-up records.
        num_warmup_examples: How many of `warmup_examples` the larger requests use, at
            most; with fewer examples they use all of them.
        model_name: The model name in the warm-up requests. Defaults to the name of
            `export_dir`, which is the model name in TF Serving's usual layout
            `/models/<model_name>/<version>`.

    Returns:
        The path of the new version folder.

    Raises:
        FileExistsError: `export_dir/<version>` exists already (a folder, a file or a
            broken symbolic link); nothing is changed.
        ValueError: `export_dir` is not a str or path, is empty, an existing file, a
            broken symbolic link, below a file or a SavedModel version folder itself,
            `version` is not an integer >= 1, the model has no defined inputs, or
            `warmup_examples` does not match the model inputs (missing inputs, other
            shapes or dtypes, unequal batch sizes or time lengths, NaN or infinite
            values).
    """
    if backend_name() != "tensorflow":
        raise ValueError(
            "`export_saved_model` traces the model into TensorFlow serving signatures, so it "
            "needs the TensorFlow backend. Received: Keras backend "
            f"{backend_name()!r}. Save the model with model.save('model.keras'), load it "
            "in a process with KERAS_BACKEND=tensorflow and export it there. On JAX, "
            "model.export(path, format='tf_saved_model') also writes a SavedModel, without "
            "the tf.train.Example signature and warm-up records."
        )
    export_dir = check_export_dir(export_dir)
    if version is None:
        version = next_version(export_dir)
        if version > _MAX_VERSION:
            raise ValueError(
                f"`export_dir` {str(export_dir)!r} contains an entry numbered {version - 1}, so "
                f"the next version would be {version}, above {_MAX_VERSION}, the largest "
                "version TF Serving reads (an int64). Rename that entry, or pass `version`."
            )
    elif (
        isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= _MAX_VERSION
    ):
        raise ValueError(
            f"`version` must be an integer from 1 to {_MAX_VERSION} (TF Serving reads "
            f"versions as int64). Received: version={version!r}"
        )
    target = export_dir / str(version)
    if target.is_dir():
        raise FileExistsError(
            f"Version {version} already exists at {target}; it was left unchanged. Pass "
            "another `version`, or omit it to use the next free number."
        )
    if os.path.lexists(target):
        kind = "a broken symbolic link" if not target.exists() else "a file"
        raise FileExistsError(
            f"Cannot write version {version}: {target} is {kind}, which was left unchanged. "
            "Move or delete it, pass another `version`, or omit `version` to use the next "
            "free number."
        )

    served = _serving_model(model)
    specs = _input_specs(served)
    parsing_spec = _example_parsing_spec(specs)
    warmup_features = _warmup_features(warmup_examples, specs, num_warmup_examples)
    if model_name is None:
        model_name = export_dir.resolve().name

    # A tf.Module owns the model so that its variables are saved with the signatures.
    module = tf.Module()
    module.model = served

    @tf.function(input_signature=[specs])
    def serve(features):
        return _output_dict(served, _call_model(served, features))

    @tf.function(input_signature=[tf.TensorSpec(shape=(None,), dtype=tf.string, name="examples")])
    def serve_examples(examples):
        parsed = tf.io.parse_example(examples, parsing_spec)
        features = {name: tf.cast(parsed[name], specs[name].dtype) for name in specs}
        return _output_dict(served, _call_model(served, features))

    module.serve = serve
    module.serve_examples = serve_examples
    # The serving graphs must hold only TensorFlow's own ops, which TF Serving has.
    with _compiled_lstm.disabled():
        signatures = {
            SERVING_SIGNATURE: serve.get_concrete_function(),
            EXAMPLE_SIGNATURE: serve_examples.get_concrete_function(),
        }

    warmup_logs = []
    if warmup_features is not None:
        warmup_logs = warmup.build_warmup_logs(
            warmup_features, model_name, SERVING_SIGNATURE, EXAMPLE_SIGNATURE
        )
        # Fail here, before anything is written, when a warm-up request cannot run.
        for log in warmup_logs:
            signature = log.predict_log.request.model_spec.signature_name
            inputs = warmup.request_inputs(log)
            try:
                signatures[signature](**inputs)
            except tf.errors.InvalidArgumentError as error:
                shapes = {name: tuple(value.shape) for name, value in inputs.items()}
                raise ValueError(
                    f"The model failed on the warm-up request to {signature!r} with input "
                    f"shapes {shapes}, so `warmup_examples` does not match the model inputs: "
                    f"{_op_error_summary(error.message).rstrip('.')}. Pass examples that the model "
                    "accepts."
                ) from error
    else:
        logging.warning(
            "Exporting %s without TF Serving warm-up records; pass `warmup_examples` (a few "
            "real examples) so the first requests do not pay for initialisation.",
            served.name,
        )

    export_dir.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{version}.incomplete-", dir=export_dir))
    # mkdtemp creates the folder with mode 0700; give it the mode a plain mkdir would get,
    # so a model server running as another user can read the published version.
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)
    try:
        with _tensorflow_warnings_only():
            tf.saved_model.save(module, str(staging), signatures=signatures)
        if warmup_logs:
            warmup.write_warmup_file(staging, warmup_logs)
        # rename() fails when another writer created a non-empty folder of this version
        # in the meantime; an empty folder is replaced, which loses nothing.
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logging.info(
        "Exported %s (%s) to %s with %d warm-up records",
        served.name, "tf_keras" if IS_KERAS_2 else "Keras 3", target, len(warmup_logs),
    )  # fmt: skip
    return target
