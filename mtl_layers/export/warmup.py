"""TF Serving warm-up records: PredictionLog protos replayed when a model version loads.

TF Serving reads `assets.extra/tf_serving_warmup_requests` inside a SavedModel version
folder, a TFRecord file of `tensorflow.serving.PredictionLog` protos, and runs each
request before it marks the version available. The first real requests then skip the
one-time graph and kernel initialisation. TF Serving's SavedModel warm-up guide
(tensorflow.org/tfx/serving/saved_model_warmup) allows at most 1,000 records.
"""

import os
import pathlib
import re
from typing import Dict, List, Mapping, Sequence

import numpy as np
import tensorflow as tf

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000


def _serving_apis():
    try:
        from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
    except ImportError as error:
        raise ImportError(
            "Writing TF Serving warm-up records needs the `tensorflow-serving-api` package, "
            "which is not installed. Install it with `pip install mtl_layers[serving]`, or "
            "pass `warmup_examples=None` to export without warm-up records."
        ) from error
    return predict_pb2, prediction_log_pb2


def select_examples(
    examples: Mapping[str, Sequence], specs: Mapping[str, tf.TensorSpec], count: int
) -> Dict[str, np.ndarray]:
    """Return the first `count` examples of each input in `specs`, cast to the input's dtype.

    Keys of `examples` that are not model inputs (labels, for example) are dropped.

    A mask input is a boolean `(batch_size, time)` input with a variable number of steps.
    When the model has one, every input with a variable number of steps must have the
    mask's number of steps, because the mask marks their valid steps.

    Raises:
        ValueError: An input is missing or has another shape per example than the model
            input. The inputs have different batch sizes or numbers of steps, or there
            are no examples. A value cannot be converted to the input's dtype, or a
            selected example contains NaN or infinite values.
    """
    if not isinstance(examples, Mapping):
        raise ValueError(
            "`warmup_examples` must be a dict of feature arrays keyed by input name. "
            f"Received: {type(examples).__name__}"
        )
    missing = sorted(name for name in specs if name not in examples)
    if missing:
        raise ValueError(
            f"`warmup_examples` has no values for the model inputs {missing}. Received keys: "
            f"{sorted(examples)}. Pass real examples of every input."
        )
    selected = {}
    shapes = {}
    for name, spec in specs.items():
        values = np.asarray(examples[name])
        if values.ndim == 0:
            raise ValueError(
                f"`warmup_examples[{name!r}]` must have a batch axis. Received a scalar: {values!r}"
            )
        shapes[name] = values.shape
        values = values[:count]
        selected[name] = _convert_to_input_dtype(name, values, spec)
        expected_shape = tuple(spec.shape[1:])
        actual_shape = tuple(selected[name].shape[1:])
        if len(actual_shape) != len(expected_shape) or any(
            expected is not None and expected != actual
            for expected, actual in zip(expected_shape, actual_shape)
        ):
            raise ValueError(
                f"`warmup_examples[{name!r}]` has examples of shape {actual_shape}, but the "
                f"input expects {expected_shape} (None matches any size)."
            )
    _check_batch_sizes(shapes)
    _check_steps(shapes, specs)
    if not len(next(iter(selected.values()))):
        raise ValueError("`warmup_examples` must contain at least one example. Received: 0")
    return selected


def _convert_to_input_dtype(name: str, values: np.ndarray, spec: tf.TensorSpec) -> np.ndarray:
    """Return `values` in the dtype of `spec`, or raise ValueError if they do not fit it."""
    if spec.dtype == tf.string and values.dtype.kind in "biufc":
        raise ValueError(
            f"`warmup_examples[{name!r}]` contains numbers ({values.dtype}), but the input "
            f"{name!r} takes strings. Pass the raw string values of that feature, as "
            "requests will send them."
        )
    _check_finite(name, values)
    try:
        if spec.dtype == tf.string:
            converted = np.array(
                [value.decode() if isinstance(value, bytes) else str(value) for value in values.ravel()],
                dtype=object,
            ).reshape(values.shape)
        else:
            # An overflow is reported by the finite check below, not as a warning.
            with np.errstate(over="ignore"):
                converted = values.astype(spec.dtype.as_numpy_dtype)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"`warmup_examples[{name!r}]` cannot be converted to the input dtype "
            f"{spec.dtype.name}: {error}"
        ) from error
    # A float64 value beyond the float32 range becomes infinite in the cast.
    _check_finite(name, converted)
    return converted


def _check_finite(name: str, values: np.ndarray):
    """Raise ValueError if the float or complex `values` contain NaN or infinite values."""
    if values.dtype.kind not in "fc":
        return
    finite = np.isfinite(values)
    if finite.all():
        return
    first = tuple(int(index) for index in np.argwhere(~finite)[0])
    raise ValueError(
        f"`warmup_examples[{name!r}]` contains {int((~finite).sum())} NaN or infinite values "
        f"(the first at index {first}: {values[first].item()}). TF Serving replays warm-up "
        "records as real requests, so pass examples with finite values, for example rows "
        "without missing values or with them replaced as the model's preprocessing does."
    )


def _check_batch_sizes(shapes: Mapping[str, tuple]):
    """Raise ValueError unless every input in `shapes` has the same batch size."""
    first_name, first_shape = next(iter(shapes.items()))
    for name, shape in shapes.items():
        if shape[0] != first_shape[0]:
            raise ValueError(
                "`warmup_examples` inputs must have the same batch size (first axis). "
                f"Received: {first_name!r} of shape {first_shape} and {name!r} of shape "
                f"{shape}. Pass the same examples of every input."
            )


def _check_steps(shapes: Mapping[str, tuple], specs: Mapping[str, tf.TensorSpec]):
    """Raise ValueError unless every variable-length input has the mask's number of steps."""
    variable = [
        name for name, spec in specs.items() if spec.shape.rank >= 2 and spec.shape[1] is None
    ]
    masks = [
        name for name in variable if specs[name].shape.rank == 2 and specs[name].dtype == tf.bool
    ]
    if not masks:
        return
    mask = masks[0]
    for name in variable:
        if shapes[name][1] != shapes[mask][1]:
            raise ValueError(
                f"`warmup_examples[{name!r}]` must have as many steps (axis 1) as the mask "
                f"`warmup_examples[{mask!r}]`, because the mask marks its valid steps. "
                f"Received: {name!r} of shape {shapes[name]} and {mask!r} of shape "
                f"{shapes[mask]}. Pad or truncate them to one number of steps."
            )


def to_tf_examples(features: Mapping[str, np.ndarray]) -> List[bytes]:
    """Serialize each row of `features` as a `tf.train.Example` with one feature per input."""
    count = len(next(iter(features.values())))
    serialized = []
    for index in range(count):
        proto = tf.train.Example()
        for name, values in features.items():
            flat = np.asarray(values[index]).reshape(-1)
            feature = proto.features.feature[name]
            if flat.dtype == object or flat.dtype.kind in "SU":
                feature.bytes_list.value.extend(
                    value if isinstance(value, bytes) else str(value).encode() for value in flat
                )
            elif flat.dtype.kind == "f":
                feature.float_list.value.extend(flat.tolist())
            else:
                feature.int64_list.value.extend(int(value) for value in flat)
        serialized.append(proto.SerializeToString())
    return serialized


def build_warmup_logs(
    features: Mapping[str, np.ndarray],
    model_name: str,
    raw_signature: str,
    example_signature: str,
) -> list:
    """Return PredictionLog protos that call both serving signatures on `features`.

    The records are, in order: `raw_signature` with the first example (batch 1),
    `raw_signature` with all examples, and `example_signature` with all examples as
    serialized `tf.train.Example`s, so warm-up covers batch 1 and a larger batch.
    """
    predict_pb2, prediction_log_pb2 = _serving_apis()
    count = len(next(iter(features.values())))

    def predict_log(signature, inputs):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = signature
        for name, values in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(values))
        return prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)
        )

    logs = [predict_log(raw_signature, {name: values[:1] for name, values in features.items()})]
    if count > 1:
        logs.append(predict_log(raw_signature, features))
    serialized = np.array(to_tf_examples(features), dtype=object)
    logs.append(predict_log(example_signature, {"examples": serialized}))
    return logs


def write_warmup_file(saved_model_dir, logs) -> pathlib.Path:
    """Write `logs` to `saved_model_dir/assets.extra/tf_serving_warmup_requests`."""
    if len(logs) > MAX_WARMUP_RECORDS:
        raise ValueError(
            f"TF Serving reads at most {MAX_WARMUP_RECORDS} warm-up records. Received: {len(logs)}"
        )
    path = pathlib.Path(saved_model_dir) / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return path


def read_warmup_file(saved_model_dir) -> list:
    """Return the PredictionLog protos stored in a SavedModel's warm-up file."""
    _, prediction_log_pb2 = _serving_apis()
    path = pathlib.Path(saved_model_dir) / WARMUP_FILE
    if not path.is_file():
        raise FileNotFoundError(f"No warm-up file at {path}.")
    try:
        records = [record.numpy() for record in tf.data.TFRecordDataset(str(path))]
    except tf.errors.DataLossError as error:
        raise ValueError(
            f"The warm-up file {path} is corrupt or truncated ({_reason(error.message)}). "
            "Export the model again to write a new version with a complete file."
        ) from error
    return [prediction_log_pb2.PredictionLog.FromString(record) for record in records]


def request_inputs(log) -> Dict[str, tf.Tensor]:
    """Return the inputs of a PredictionLog's predict request as tensors, keyed by name."""
    return {
        name: tf.constant(tf.make_ndarray(proto))
        for name, proto in log.predict_log.request.inputs.items()
    }


def _reason(message: str) -> str:
    """Return the cause in a TensorFlow error message, without its function and node names."""
    first_line = message.splitlines()[0] if message else ""
    # "{{function_node __wrapped__IteratorGetNext...}} truncated record at 0' failed with
    # Read less bytes than requested" -> "truncated record at 0' failed with ...".
    return re.sub(r"\{\{[^}]*\}\}\s*", "", first_line).strip()
