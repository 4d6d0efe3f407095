"""TF Serving warm-up records: PredictionLog protos replayed when a model version loads.

TF Serving reads `assets.extra/tf_serving_warmup_requests` inside a SavedModel version
folder, a TFRecord file of `tensorflow.serving.PredictionLog` protos, and runs each
request before it marks the version available. The first real requests then skip the
one-time graph and kernel initialisation. TF Serving's SavedModel warm-up guide
(tensorflow.org/tfx/serving/saved_model_warmup) allows at most 1,000 records.
"""

import os
import pathlib
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

    Raises:
        ValueError: An input is missing, the inputs have different lengths, there are
            no examples, or a value cannot be converted to the input's dtype.
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
    for name, spec in specs.items():
        values = np.asarray(examples[name])
        if values.ndim == 0:
            raise ValueError(
                f"`warmup_examples[{name!r}]` must have a batch axis. Received a scalar: {values!r}"
            )
        values = values[:count]
        if spec.dtype == tf.string and values.dtype.kind in "biufc":
            raise ValueError(
                f"`warmup_examples[{name!r}]` contains numbers ({values.dtype}), but the input "
                f"{name!r} takes strings. Pass the raw string values of that feature, as "
                "requests will send them."
            )
        try:
            if spec.dtype == tf.string:
                selected[name] = np.array(
                    [value.decode() if isinstance(value, bytes) else str(value) for value in values.ravel()],
                    dtype=object,
                ).reshape(values.shape)
            else:
                selected[name] = values.astype(spec.dtype.as_numpy_dtype)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"`warmup_examples[{name!r}]` cannot be converted to the input dtype "
                f"{spec.dtype.name}: {error}"
            ) from error
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
    lengths = {name: len(values) for name, values in selected.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"`warmup_examples` inputs must have equal lengths. Received: {lengths}")
    if not next(iter(lengths.values())):
        raise ValueError("`warmup_examples` must contain at least one example. Received: 0")
    return selected


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
    return [
        prediction_log_pb2.PredictionLog.FromString(record.numpy())
        for record in tf.data.TFRecordDataset(str(path))
    ]


def request_inputs(log) -> Dict[str, tf.Tensor]:
    """Return the inputs of a PredictionLog's predict request as tensors, keyed by name."""
    return {
        name: tf.constant(tf.make_ndarray(proto))
        for name, proto in log.predict_log.request.inputs.items()
    }
