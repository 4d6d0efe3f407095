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

from mtl_layers.compat import is_input_tensor, is_keras_tensor, keras
from mtl_layers.layers._initializers import copy_initializer
from mtl_layers.layers.packed_embedding import PackedEmbedding

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
        vocabulary: Known values of a categorical feature, a sequence (not one string):
            strings for `"categorical"`, integers for `"integer_categorical"`. Unknown
            values map to one out-of-vocabulary bucket.
        mean: Mean of a numeric feature on the training data.
        variance: Variance of a numeric feature on the training data (> 0). For a
            column that is constant in training, pass 1.0.
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
        if isinstance(self.vocabulary, (str, bytes)):
            raise ValueError(
                f"`vocabulary` must be a sequence of values, not one string, which would be "
                f"split into characters. Wrap a single value in a tuple. Received: "
                f"vocabulary={self.vocabulary!r} for feature {self.name!r}"
            )
        object.__setattr__(self, "vocabulary", tuple(self.vocabulary))
        if self.kind != "numeric" and not self.vocabulary:
            raise ValueError(
                f"`vocabulary` must be non-empty for the {self.kind} feature {self.name!r}. "
                "Received: vocabulary=()"
            )
        self._check_vocabulary_types()
        if self.kind == "numeric":
            if not math.isfinite(self.mean) or not math.isfinite(self.variance) or self.variance <= 0:
                raise ValueError(
                    "`mean` must be finite and `variance` finite and > 0, because values are "
                    "divided by sqrt(variance). For a column that is constant in training, "
                    f"pass variance=1.0. Received: mean={self.mean!r}, "
                    f"variance={self.variance!r} for feature {self.name!r}"
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

    def _check_vocabulary_types(self) -> None:
        if self.kind == "categorical":
            wrong = [value for value in self.vocabulary if not isinstance(value, str)]
            expected = "strings, as StringLookup takes them"
        elif self.kind == "integer_categorical":
            wrong = [value for value in self.vocabulary if not _is_integer(value)]
            expected = "integers, as IntegerLookup takes them"
        else:
            return
        if wrong:
            raise ValueError(
                f"`vocabulary` of the {self.kind} feature {self.name!r} must contain "
                f"{expected}. Received {len(wrong)} of {len(self.vocabulary)} values of "
                f"another type, the first {wrong[0]!r} ({type(wrong[0]).__name__})."
            )

    @property
    def dtype(self) -> str:
        """Dtype of the raw input."""
        return {"numeric": "float32", "categorical": "string", "integer_categorical": "int64"}[
            self.kind
        ]


def _is_integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _check_feature_specs(features) -> Tuple[FeatureSpec, ...]:
    features = tuple(features)
    if not features:
        raise ValueError("`features` must contain at least one FeatureSpec. Received: ()")
    names = [spec.name for spec in features]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"Feature names must be unique. Received duplicates: {duplicates}")
    return features


# Input names of the packed layout (`packed=True`) of preprocessed features.
PACKED_NUMERIC = "numeric_features"
PACKED_CATEGORICAL = "categorical_ids"


def _check_flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be True or False. Received: {name}={value!r}")
    return value


def _packed_embedding_dim(features) -> Optional[int]:
    """Return the common embedding size of the categorical features (None without any)."""
    sizes = {spec.name: spec.embedding_dim for spec in features if spec.kind != "numeric"}
    if len(set(sizes.values())) > 1:
        raise ValueError(
            "`packed=True` embeds all categorical features from one table, so they need the "
            f"same `embedding_dim`. Received: {sizes}. Give them one size, or use packed=False."
        )
    return next(iter(sizes.values()), None)


def build_feature_inputs(
    features: Sequence[FeatureSpec],
    preprocessed: bool = False,
    packed: bool = False,
    embeddings_initializer="uniform",
    embeddings_regularizer=None,
) -> Tuple[Dict[str, "keras.KerasTensor"], "keras.KerasTensor"]:
    """Create the model inputs of the features and encode them into one tensor.

    Numeric features are normalised, categorical features looked up and embedded; the
    encodings are concatenated along the last axis.

    Args:
        features: The `FeatureSpec` of every input feature.
        preprocessed: With `False` the inputs take raw values and the model runs the
            lookups and the normalisation. With `True` the inputs take the output of
            `preprocess_features` (int32 vocabulary indices and normalised float32
            numbers), and the model keeps only the embeddings. For the same seed and
            `packed` value, both create the same weights in the same order, so the two
            models compute the same outputs and a model trained on preprocessed inputs
            hands its weights to the raw-feature model for export.
        packed: With `False`, every categorical feature has its own embedding table and
            the encoding follows the order of `features`. With `True`, one
            `PackedEmbedding` table holds all categorical features (they need the same
            `embedding_dim`), and the encoding is the numeric features, then the
            categorical embeddings, each in the order of `features`. With `preprocessed`
            too, the model has two inputs instead of one per feature:
            `"numeric_features"` `(batch_size, num_numeric)` and `"categorical_ids"`
            `(batch_size, num_categorical)`, as `preprocess_features(..., packed=True)`
            returns them. The packed layout runs fewer ops per step, which speeds up
            training of small models.
        embeddings_initializer: Initializer of every embedding table, as
            `keras.layers.Embedding` takes it. Each table gets its own copy, and a seeded
            initializer's seed is offset by the table's position, so no two tables start
            equal.
        embeddings_regularizer: Regularizer of every embedding table, for example
            `keras.regularizers.L2(1e-5)`.

    Returns:
        `(inputs, encoded)`: a dict of `keras.Input`s keyed by input name, and the
        encoded `(batch_size, encoded_dim)` tensor. Without `preprocessed` and `packed`
        together, there is one input of shape `(batch_size,)` per feature, named after it.
    """
    features = _check_feature_specs(features)
    preprocessed = _check_flag("preprocessed", preprocessed)
    packed = _check_flag("packed", packed)
    tables = _EmbeddingTables(embeddings_initializer, embeddings_regularizer)
    if packed:
        return _build_packed_inputs(features, preprocessed, tables)

    inputs = {}
    encodings = []
    for spec in features:
        raw = _raw_input(spec, preprocessed)
        inputs[spec.name] = raw
        column = keras.layers.Reshape((1,), name=f"{spec.name}_column")(raw)
        if spec.kind == "numeric":
            encodings.append(column if preprocessed else _normalize(spec, column))
            continue
        if not preprocessed:
            column = _lookup(spec, column)
        embedding = keras.layers.Embedding(
            input_dim=len(spec.vocabulary) + 1,
            output_dim=spec.embedding_dim,
            name=f"{spec.name}_embedding",
            **tables.next_arguments(),
        )
        embedded = embedding(column)
        encodings.append(
            keras.layers.Reshape((spec.embedding_dim,), name=f"{spec.name}_flat")(embedded)
        )

    return inputs, _concatenate(encodings, name="encoded_features")


def _raw_input(spec: FeatureSpec, preprocessed: bool):
    if preprocessed:
        dtype = "float32" if spec.kind == "numeric" else "int32"
    else:
        dtype = spec.dtype
    return keras.Input(shape=(), dtype=dtype, name=spec.name)


def _normalize(spec: FeatureSpec, column):
    return keras.layers.Normalization(
        mean=spec.mean, variance=spec.variance, name=f"{spec.name}_normalization"
    )(column)


def _lookup(spec: FeatureSpec, column):
    lookup_class = (
        keras.layers.StringLookup if spec.kind == "categorical" else keras.layers.IntegerLookup
    )
    lookup = lookup_class(
        vocabulary=list(spec.vocabulary), num_oov_indices=1, name=f"{spec.name}_lookup"
    )
    return lookup(column)


class _EmbeddingTables:
    """Hand out the initializer and regularizer arguments of each new embedding table."""

    def __init__(self, initializer, regularizer):
        self._initializer = keras.initializers.get(initializer)
        self._regularizer = keras.regularizers.get(regularizer)
        self._count = 0

    def next_arguments(self) -> dict:
        # Each table gets its own initializer copy, seeded one apart, so no two tables start equal.
        initializer = copy_initializer(self._initializer, seed_offset=self._count)
        self._count += 1
        return {"embeddings_initializer": initializer, "embeddings_regularizer": self._regularizer}


def _build_packed_inputs(features, preprocessed: bool, tables: _EmbeddingTables):
    """Build the `packed=True` layout of `build_feature_inputs`."""
    numeric = [spec for spec in features if spec.kind == "numeric"]
    categorical = [spec for spec in features if spec.kind != "numeric"]
    embedding_dim = _packed_embedding_dim(features)

    inputs = {}
    blocks = []
    if numeric:
        blocks.append(_packed_block(numeric, preprocessed, inputs, PACKED_NUMERIC, "float32", _normalize))
    if categorical:
        ids = _packed_block(categorical, preprocessed, inputs, PACKED_CATEGORICAL, "int32", _lookup)
        embedding = PackedEmbedding(
            vocabulary_sizes=[len(spec.vocabulary) + 1 for spec in categorical],
            output_dim=embedding_dim,
            name="categorical_embedding",
            **tables.next_arguments(),
        )
        blocks.append(embedding(ids))
    return inputs, _concatenate(blocks, name="encoded_features")


def _packed_block(specs, preprocessed: bool, inputs: dict, name: str, dtype: str, encode):
    """Return one matrix column per spec: a preprocessed input, or raw inputs encoded."""
    if preprocessed:
        inputs[name] = keras.Input(shape=(len(specs),), dtype=dtype, name=name)
        return inputs[name]
    columns = []
    for spec in specs:
        inputs[spec.name] = _raw_input(spec, preprocessed=False)
        column = keras.layers.Reshape((1,), name=f"{spec.name}_column")(inputs[spec.name])
        columns.append(encode(spec, column))
    return _concatenate(columns, name=name)


def _concatenate(tensors, name: str):
    if len(tensors) == 1:
        return tensors[0]
    return keras.layers.Concatenate(name=name)(tensors)


def preprocess_features(
    features: Sequence[FeatureSpec], values: Mapping[str, "np.ndarray"], packed: bool = False
) -> Dict[str, np.ndarray]:
    """Encode raw feature columns as the model's preprocessing layers do, in NumPy.

    The result feeds a model built with `build_feature_inputs(..., preprocessed=True)`.

    Args:
        features: The `FeatureSpec` of every input feature.
        values: One array of raw values per feature name, all of the same length.
            Extra keys are ignored.
        packed: Return the two matrices that a model built with
            `build_feature_inputs(..., preprocessed=True, packed=True)` takes, instead
            of one column per feature.

    Returns:
        A dict of NumPy arrays. Without `packed`, it is keyed by feature name, and
        numeric features become float32
        `(x - mean) / max(sqrt(variance), 1e-7)`, as `keras.layers.Normalization`
        computes. Categorical features become int32 indices: `1 + position` in the
        vocabulary, and 0 for a value not in it, as a lookup layer with one
        out-of-vocabulary index assigns. Values are not converted between types, so a
        `"categorical"` column must hold strings (or UTF-8 bytes) and an
        `"integer_categorical"` column integers. With `packed`, the columns are stacked in
        the order of `features`: `"numeric_features"` (float32, one column per numeric
        feature) and `"categorical_ids"` (int32, one column per categorical feature);
        a matrix without columns is left out.

    Raises:
        ValueError: when a feature is missing, the columns differ in length, a
            numeric column contains NaN or infinity, or a categorical column contains
            values of the wrong type.
    """
    features = _check_feature_specs(features)
    packed = _check_flag("packed", packed)
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
                    f"the first at row {bad[0]} ({float(column.reshape(-1)[bad[0]])}). Replace them (for "
                    "example with the training mean) before preprocessing."
                )
            scale = max(math.sqrt(spec.variance), 1e-7)
            encoded[spec.name] = ((column - spec.mean) / scale).astype(np.float32)
            continue
        if column.dtype.kind == "S":
            column = np.char.decode(column, "utf-8")
        # Look up each distinct value once, then scatter the indices back to the rows.
        try:
            distinct, positions = np.unique(column, return_inverse=True)
        except TypeError as error:
            # np.unique sorts, which fails on an object column that mixes types.
            raise _categorical_type_error(spec, column.dtype, f"mixed types ({error})") from error
        # `tolist` turns NumPy scalars into the Python values that the vocabulary contains.
        distinct = _check_categorical_values(spec, column.dtype, distinct.tolist())
        vocabulary_index = {value: index + 1 for index, value in enumerate(spec.vocabulary)}
        distinct_indices = np.array(
            [vocabulary_index.get(value, 0) for value in distinct], dtype=np.int32
        )
        encoded[spec.name] = distinct_indices[positions.reshape(-1)].reshape(column.shape)
    if not packed:
        return encoded

    _packed_embedding_dim(features)
    matrices = {}
    for name, kinds in ((PACKED_NUMERIC, ("numeric",)), (PACKED_CATEGORICAL, ("categorical", "integer_categorical"))):
        columns = [encoded[spec.name].reshape(-1) for spec in features if spec.kind in kinds]
        if columns:
            matrices[name] = np.stack(columns, axis=1)
    return matrices


def _check_categorical_values(spec: FeatureSpec, dtype, distinct: list) -> list:
    """Return the distinct values of a categorical column, with bytes decoded as UTF-8.

    Raises ValueError when a value has the wrong type for `spec.kind`, because such a
    value never matches the vocabulary and would silently become out-of-vocabulary.
    """
    if spec.kind == "categorical":
        distinct = [value.decode("utf-8") if isinstance(value, bytes) else value for value in distinct]
        wrong = [value for value in distinct if not isinstance(value, str)]
    else:
        wrong = [value for value in distinct if not _is_integer(value)]
    if wrong:
        raise _categorical_type_error(spec, dtype, f"for example {wrong[0]!r} ({type(wrong[0]).__name__})")
    return distinct


def _categorical_type_error(spec: FeatureSpec, dtype, detail: str) -> ValueError:
    if spec.kind == "categorical":
        expected = "strings"
        fix = (
            "Convert the column with `.astype(str)`, or declare the feature "
            "integer_categorical with an integer vocabulary."
        )
    else:
        expected = "integers"
        fix = "Convert the column with `.astype(np.int64)`."
    return ValueError(
        f"The {spec.kind} feature {spec.name!r} must contain {expected}, the type of its "
        f"vocabulary, because values of another type never match it. Received dtype "
        f"{dtype}, {detail}. {fix}"
    )


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
    if model_inputs is None and not is_input_tensor(features):
        raise ValueError(
            "`model_inputs` must be given when `features` is computed by layers from other "
            "inputs; otherwise the model would start at `features` and leave those layers "
            "out. Pass the `keras.Input` tensors, for example model_inputs=[raw_input]. "
            f"Received: model_inputs=None, features={features!r}"
        )
    return (features if model_inputs is None else model_inputs), features
