"""PackedEmbedding: the embeddings of several categorical features in one table."""

from typing import Sequence

from mtl_layers.compat import keras, ops, register_serializable
from mtl_layers.layers import _validation


@register_serializable
class PackedEmbedding(keras.layers.Layer):
    """Embed several categorical features with one table and one lookup.

    Each feature keeps its own rows: feature `f` owns `vocabulary_sizes[f]` rows of
    the table, starting after the rows of the features before it. The layer adds each
    feature's row offset to its ids and gathers all rows in one lookup. For valid ids
    the result equals one `keras.layers.Embedding` per feature followed by a
    concatenation, but a training step runs one gather and updates one variable instead
    of one per feature. That matters when the model is small and the step is short
    (census-style tabular models, where per-feature ops dominate the step time).

    An id outside `0 .. vocabulary_sizes[f] - 1` gives a vector of zeros, so it never
    reads a row of another feature. Ids from `preprocess_features` or from Keras lookup
    layers with one out-of-vocabulary index are always valid: they use 0 for unknown
    values, so `vocabulary_sizes[f]` is the vocabulary size plus one.

    Args:
        vocabulary_sizes: The number of ids of each feature, a non-empty sequence of
            integers >= 1. Feature `f` takes ids `0 .. vocabulary_sizes[f] - 1`.
        output_dim: Embedding size of every feature, an integer >= 1.
        embeddings_initializer: Initializer of the table.
        embeddings_regularizer: Regularizer of the table.
        **kwargs: Base layer keyword arguments such as `name` and `dtype`.

    Input shape:
        Integer ids of shape `(batch_size, num_features)`, one column per feature in
        the order of `vocabulary_sizes`. Float ids are rounded down to integers, and NaN
        counts as out of range.

    Output shape:
        `(batch_size, num_features * output_dim)`: feature `f`'s vector fills columns
        `f * output_dim` to `(f + 1) * output_dim - 1`.

    Example:

    >>> import numpy as np
    >>> import mtl_layers as mtl
    >>> layer = mtl.PackedEmbedding(vocabulary_sizes=[3, 5], output_dim=4)
    >>> tuple(layer(np.array([[0, 4], [2, 1]])).shape)
    (2, 8)
    """

    def __init__(
        self,
        vocabulary_sizes: Sequence[int],
        output_dim: int,
        embeddings_initializer="uniform",
        embeddings_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        # A set or dict has a length but no order, and the order maps sizes to id columns.
        if isinstance(vocabulary_sizes, (str, bytes, set, frozenset, dict)) or not hasattr(
            vocabulary_sizes, "__len__"
        ):
            raise ValueError(
                "`vocabulary_sizes` must be a non-empty sequence (list or tuple) of integers "
                f">= 1, in the order of the id columns. Received: vocabulary_sizes={vocabulary_sizes!r}"
            )
        if len(vocabulary_sizes) == 0:
            raise ValueError(
                "`vocabulary_sizes` must be a non-empty sequence of integers >= 1. "
                "Received: vocabulary_sizes=[]"
            )
        self.vocabulary_sizes = [
            _validation.check_positive_int(f"vocabulary_sizes[{index}]", size)
            for index, size in enumerate(vocabulary_sizes)
        ]
        self.output_dim = _validation.check_positive_int("output_dim", output_dim)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.embeddings_regularizer = keras.regularizers.get(embeddings_regularizer)

        # Row offset of each feature in the table: the sizes of the features before it.
        self._offsets = [sum(self.vocabulary_sizes[:index]) for index in range(len(self.vocabulary_sizes))]

    def _check_ids_shape(self, input_shape):
        if len(input_shape) != 2 or input_shape[1] not in (None, len(self.vocabulary_sizes)):
            raise ValueError(
                f"PackedEmbedding expects ids of shape (batch_size, {len(self.vocabulary_sizes)}), "
                "one column per entry of `vocabulary_sizes`. Received: input "
                f"shape={input_shape}."
            )

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        self._check_ids_shape(input_shape)
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(sum(self.vocabulary_sizes), self.output_dim),
            initializer=self.embeddings_initializer,
            regularizer=self.embeddings_regularizer,
        )
        super().build(input_shape)

    def call(self, ids):
        # Keras checks the shape only when it builds the layer; later calls come here.
        self._check_ids_shape(tuple(ids.shape))
        if "float" in str(ops.dtype(ids)):
            # Rounding down keeps -0.5 out of range (a cast would truncate it to row 0),
            # and a NaN id, which each backend casts differently, counts as out of range.
            ids = ops.where(ops.isnan(ids), -1.0, ops.floor(ids))

        # Clipping before the cast keeps an int64 id beyond the int32 range out of range.
        # The cast alone would wrap 2**32 + 1 to 1.
        ids = ops.cast(ops.clip(ids, -1, max(self.vocabulary_sizes)), "int32")

        # An id outside [0, vocabulary_sizes[f]) reads row 0 and is zeroed below, so it
        # cannot reach a row of a neighbouring feature.
        valid = ops.logical_and(
            ops.greater_equal(ids, 0),
            ops.less(ids, ops.convert_to_tensor(self.vocabulary_sizes, dtype="int32")),
        )

        # Row of feature f's id in the shared table: offset_f + id.
        rows = ops.where(valid, ids + ops.convert_to_tensor(self._offsets, dtype="int32"), 0)

        vectors = ops.take(self.embeddings, rows, axis=0)  # (batch, features, output_dim)
        vectors = vectors * ops.expand_dims(ops.cast(valid, vectors.dtype), -1)
        return ops.reshape(vectors, (-1, len(self.vocabulary_sizes) * self.output_dim))

    def compute_output_shape(self, input_shape):
        return (tuple(input_shape)[0], len(self.vocabulary_sizes) * self.output_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_sizes": list(self.vocabulary_sizes),
                "output_dim": self.output_dim,
                "embeddings_initializer": keras.initializers.serialize(
                    self.embeddings_initializer
                ),
                "embeddings_regularizer": keras.regularizers.serialize(
                    self.embeddings_regularizer
                ),
            }
        )
        return config
