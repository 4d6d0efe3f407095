"""Raw-feature inputs and the preprocessing layers that encode them inside the model.

Preprocessing lives inside the model (lookups, embeddings, normalisation), so a saved or
exported model takes raw feature values: strings stay strings and numbers stay numbers.

For faster training, `preprocess_features` runs the lookups and the normalisation
once, in NumPy, and `build_feature_inputs(..., preprocessed=True)` builds a model that
takes its output. That model keeps only the embeddings, so XLA can compile its training
step (`jit_compile=True`), which it cannot do with string lookups inside.
"""

import dataclasses
import math
import numbers
import re
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from mtl_layers.compat import is_keras_tensor, keras

FEATURE_KINDS = ("numeric", "categorical", "integer_categorical")

# Input names become TensorFlow signature keys, which allow only these characters.
_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """Description of one raw input feature, a scalar per example.

    Args:
        name: Input name, a letter followed by letters, digits or underscores.
        kind: `"numeric"` (float, normalised with `mean` and `variance`),
            `"categorical"` (string, looked up in `vocabulary` and embedded) or
            `"integer_categorical"` (integer id, looked up in `vocabulary` and embedded).
        vocabulary: Known values of a categorical feature. Unknown values map to one
            out-of-vocabulary bucket.
        mean: Mean of a numeric feature on the training data.
        variance: Variance of a numeric feature on the training data (>= 0).
        embedding_dim: Embedding size of a categorical feature.
    """

    name: str
    kind: str
    vocabulary: Tuple = ()
    mean: float = 0.0
    variance: float = 1.0
    embedding_dim: int = 4

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME_PATTERN.match(self.name):
            raise ValueError(
                "`name` must start with a letter and contain only letters, digits and "
                f"underscores, because it names a model input. Received: name={self.name!r}"
            )
        if self.kind not in FEATURE_KINDS:
            raise ValueError(
                f"`kind` must be one of {FEATURE_KINDS}. Received: kind={self.kind!r} for "
                f"feature {self.name!r}"
            )
        object.__setattr__(self, "vocabulary", tuple(self.vocabulary))
        if self.kind != "numeric" and not self.vocabulary:
            raise ValueError(
                f"`vocabulary` must be non-empty for the {self.kind} feature {self.name!r}. "
                "Received: vocabulary=()"
            )
        if self.kind == "numeric":
            if not math.isfinite(self.mean) or not math.isfinite(self.variance) or self.variance < 0:
                raise ValueError(
                    "`mean` must be finite and `variance` finite and >= 0. Received: "
                    f"mean={self.mean!r}, variance={self.variance!r} for feature {self.name!r}"
                )
        if (
            isinstance(self.embedding_dim, bool)
            or not isinstance(self.embedding_dim, numbers.Integral)
            or self.embedding_dim < 1
        ):
            raise ValueError(
                f"`embedding_dim` must be an integer >= 1. Received: "
                f"embedding_dim={self.embedding_dim!r} for feature {self.name!r}"
            )

    @property
    def dtype(self) -> str:
        """Dtype of the raw input."""
        return {"numeric": "float32", "categorical": "string", "integer_categorical": "int64"}[
            self.kind
        ]


def _check_feature_specs(features) -> Tuple[FeatureSpec, ...]:
    features = tuple(features)
    if not features:
        raise ValueError("`features` must contain at least one FeatureSpec. Received: ()")
    names = [spec.name for spec in features]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"Feature names must be unique. Received duplicates: {duplicates}")
    return features


def build_feature_inputs(
    features: Sequence[FeatureSpec], preprocessed: bool = False
) -> Tuple[Dict[str, "keras.KerasTensor"], "keras.KerasTensor"]:
    """Create one named scalar input per feature and encode them into one tensor.

    Numeric features are normalised, categorical features looked up and embedded; the
    encodings are concatenated along the last axis.

    Args:
        features: The `FeatureSpec` of every input feature.
        preprocessed: With `False` the inputs take raw values and the model runs the
            lookups and the normalisation. With `True` the inputs take the output of
            `preprocess_features` (int32 vocabulary indices and normalised float32
            numbers), and the model keeps only the embeddings. For the same seed, both
            create the same embedding weights in the same order, so the two models
            compute the same outputs.

    Returns:
        `(inputs, encoded)`: a dict of `keras.Input`s of shape `(batch_size,)` keyed by
        feature name, and the encoded `(batch_size, encoded_dim)` tensor.
    """
    features = _check_feature_specs(features)
    if not isinstance(preprocessed, bool):
        raise ValueError(f"`preprocessed` must be True or False. Received: preprocessed={preprocessed!r}")

    inputs = {}
    encodings = []
    for spec in features:
        if preprocessed:
            dtype = "float32" if spec.kind == "numeric" else "int32"
        else:
            dtype = spec.dtype
        raw = keras.Input(shape=(), dtype=dtype, name=spec.name)
        inputs[spec.name] = raw
        column = keras.layers.Reshape((1,), name=f"{spec.name}_column")(raw)
        if spec.kind == "numeric":
            if preprocessed:
                encodings.append(column)
                continue
            encodings.append(
                keras.layers.Normalization(
                    mean=spec.mean, variance=spec.variance, name=f"{spec.name}_normalization"
                )(column)
            )
            continue
        if not preprocessed:
            lookup_class = (
                keras.layers.StringLookup
                if spec.kind == "categorical"
                else keras.layers.IntegerLookup
            )
            lookup = lookup_class(
                vocabulary=list(spec.vocabulary), num_oov_indices=1, name=f"{spec.name}_lookup"
            )
            column = lookup(column)
        embedding = keras.layers.Embedding(
            input_dim=len(spec.vocabulary) + 1,
            output_dim=spec.embedding_dim,
            name=f"{spec.name}_embedding",
        )
        embedded = embedding(column)
        encodings.append(
            keras.layers.Reshape((spec.embedding_dim,), name=f"{spec.name}_flat")(embedded)
        )

    if len(encodings) == 1:
        return inputs, encodings[0]
    return inputs, keras.layers.Concatenate(name="encoded_features")(encodings)


def preprocess_features(
    features: Sequence[FeatureSpec], values: Mapping[str, "np.ndarray"]
) -> Dict[str, np.ndarray]:
    """Encode raw feature columns as the model's preprocessing layers do, in NumPy.

    The result feeds a model built with `build_feature_inputs(..., preprocessed=True)`.

    Args:
        features: The `FeatureSpec` of every input feature.
        values: One array of raw values per feature name, all of the same length.
            Extra keys are ignored.

    Returns:
        A dict keyed by feature name. Numeric features become float32
        `(x - mean) / max(sqrt(variance), 1e-7)`, as `keras.layers.Normalization`
        computes. Categorical features become int32 indices: `1 + position` in the
        vocabulary, and 0 for a value not in it, as a lookup layer with one
        out-of-vocabulary index assigns.

    Raises:
        ValueError: when a feature is missing, the columns differ in length, or a
            numeric column contains NaN or infinity.
    """
    features = _check_feature_specs(features)
    missing = [spec.name for spec in features if spec.name not in values]
    if missing:
        raise ValueError(
            f"`values` has no column for the features {missing}. Received columns: {sorted(values)}"
        )
    lengths = {spec.name: len(values[spec.name]) for spec in features}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"Every feature column must have the same length. Received lengths: {lengths}")

    encoded = {}
    for spec in features:
        column = np.asarray(values[spec.name])
        if spec.kind == "numeric":
            column = column.astype(np.float64)
            bad = np.flatnonzero(~np.isfinite(column))
            if bad.size:
                raise ValueError(
                    f"The numeric feature {spec.name!r} contains {bad.size} NaN or infinite values, "
                    f"the first at row {bad[0]} ({column.reshape(-1)[bad[0]]!r}). Replace them (for "
                    "example with the training mean) before preprocessing."
                )
            scale = max(math.sqrt(spec.variance), 1e-7)
            encoded[spec.name] = ((column - spec.mean) / scale).astype(np.float32)
            continue
        if column.dtype.kind == "S":
            column = np.char.decode(column, "utf-8")
        # Look up each distinct value once, then scatter the indices back to the rows.
        distinct, positions = np.unique(column, return_inverse=True)
        vocabulary_index = {value: index + 1 for index, value in enumerate(spec.vocabulary)}
        # `tolist` turns NumPy scalars into the Python values that the vocabulary contains.
        distinct_indices = np.array(
            [vocabulary_index.get(value, 0) for value in distinct.tolist()], dtype=np.int32
        )
        encoded[spec.name] = distinct_indices[positions.reshape(-1)].reshape(column.shape)
    return encoded


def resolve_features(features, model_inputs=None):
    """Return `(model_inputs, encoded_tensor)` from a feature tensor or FeatureSpecs.

    Args:
        features: A symbolic Keras tensor of encoded features, or a sequence of
            `FeatureSpec`s, from which named raw inputs and preprocessing are created.
        model_inputs: The model inputs that `features` was computed from, when it is not
            itself a `keras.Input`. Unused with FeatureSpecs.
    """
    if isinstance(features, (list, tuple)) and features and all(
        isinstance(spec, FeatureSpec) for spec in features
    ):
        return build_feature_inputs(features)
    if not is_keras_tensor(features):
        raise ValueError(
            "`features` must be a symbolic Keras tensor (for example `keras.Input((16,))`) "
            f"or a non-empty list of FeatureSpec. Received: features={features!r}"
        )
    if len(features.shape) < 2:
        raise ValueError(
            "`features` must have shape (batch_size, features) or more axes. Received: "
            f"shape={tuple(features.shape)}"
        )
    return (features if model_inputs is None else model_inputs), features
