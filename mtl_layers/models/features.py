"""Raw-feature inputs and the preprocessing layers that encode them inside the model.

Preprocessing lives inside the model (lookups, embeddings, normalisation), so a saved or
exported model takes raw feature values: strings stay strings and numbers stay numbers.
"""

import dataclasses
import math
import numbers
import re
from typing import Dict, Optional, Sequence, Tuple

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


def build_feature_inputs(
    features: Sequence[FeatureSpec],
) -> Tuple[Dict[str, "keras.KerasTensor"], "keras.KerasTensor"]:
    """Create one named scalar input per feature and encode them into one tensor.

    Numeric features are normalised, categorical features looked up and embedded; the
    encodings are concatenated along the last axis.

    Returns:
        `(inputs, encoded)`: a dict of `keras.Input`s of shape `(batch_size,)` keyed by
        feature name, and the encoded `(batch_size, encoded_dim)` tensor.
    """
    features = tuple(features)
    if not features:
        raise ValueError("`features` must contain at least one FeatureSpec. Received: ()")
    names = [spec.name for spec in features]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"Feature names must be unique. Received duplicates: {duplicates}")

    inputs = {}
    encodings = []
    for spec in features:
        raw = keras.Input(shape=(), dtype=spec.dtype, name=spec.name)
        inputs[spec.name] = raw
        column = keras.layers.Reshape((1,), name=f"{spec.name}_column")(raw)
        if spec.kind == "numeric":
            encodings.append(
                keras.layers.Normalization(
                    mean=spec.mean, variance=spec.variance, name=f"{spec.name}_normalization"
                )(column)
            )
            continue
        lookup_class = (
            keras.layers.StringLookup
            if spec.kind == "categorical"
            else keras.layers.IntegerLookup
        )
        lookup = lookup_class(
            vocabulary=list(spec.vocabulary), num_oov_indices=1, name=f"{spec.name}_lookup"
        )
        embedding = keras.layers.Embedding(
            input_dim=len(spec.vocabulary) + 1,
            output_dim=spec.embedding_dim,
            name=f"{spec.name}_embedding",
        )
        embedded = embedding(lookup(column))
        encodings.append(
            keras.layers.Reshape((spec.embedding_dim,), name=f"{spec.name}_flat")(embedded)
        )

    if len(encodings) == 1:
        return inputs, encodings[0]
    return inputs, keras.layers.Concatenate(name="encoded_features")(encodings)


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
